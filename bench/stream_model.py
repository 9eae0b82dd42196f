#!/usr/bin/env python3
"""Microseconds per step of ``model.stream()`` (batch 1) on the seed model, against running the
same model's ``predict`` on each growing prefix (what a user without streams would do) and one
``predict`` call per step on the step alone with the states passed by hand (a RecurrentNetwork).

Usage::

    python bench/stream_model.py [--steps 1000] [--rounds 5] [--threads 1]

The seed model: LSTM(64, return_sequences) -> LSTM(32, return_sequences) -> Dense(10, softmax),
32 input features. Variants run interleaved in blocks (every round: a block of steps of each
variant, order rotated), after a warm-up; reported per variant: min / median / max of the
rounds' per-step medians, in microseconds.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import rnnkit
from rnnkit.layers import LSTM, Dense
from rnnkit.models import RecurrentNetwork, Sequential


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    rnnkit.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    layers = [LSTM(64, return_sequences=True, input_shape=(None, 32)), LSTM(32, return_sequences=True),
              Dense(10, activation="softmax")]
    model = Sequential(layers)
    model.build((None, None, 32))
    net = RecurrentNetwork(layers)
    x = rng.standard_normal((1, a.steps, 32)).astype(np.float32)
    stream = model.stream(batch_size=1)

    def run_stream() -> float:
        stream.reset()
        t0 = time.perf_counter()
        for t in range(a.steps):
            stream.step(x[:, t])
        return (time.perf_counter() - t0) / a.steps

    def run_network() -> float:
        state = None
        t0 = time.perf_counter()
        for t in range(a.steps):
            _, state = net.forward(x[:, t:t + 1], state)
        return (time.perf_counter() - t0) / a.steps

    variants = {"model.stream().step": run_stream, "RecurrentNetwork.forward per step": run_network}
    for f in variants.values():
        f()
    res = {k: [] for k in variants}
    names = list(variants)
    for r in range(a.rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            res[k].append(variants[k]())
    # correctness of what is timed: the stream's outputs are predict's
    stream.reset()
    got = np.stack([stream.step(x[:, t]) for t in range(50)], axis=1)
    err = float(np.max(np.abs(got - model.predict(x[:, :50], verbose=0))))
    print(f"seed model, batch 1, {a.threads} thread(s), {a.steps} steps x {a.rounds} rounds; "
          f"stream vs predict max |diff| {err:.1e}")
    base = statistics.median(res["model.stream().step"])
    for k, v in res.items():
        print(f"{k:36s} {1e6 * min(v):8.1f} / {1e6 * statistics.median(v):8.1f} / {1e6 * max(v):8.1f} us/step"
              f"   x{statistics.median(v) / base:.1f}")


if __name__ == "__main__":
    main()
