#!/usr/bin/env python3
"""Recurrent cells with non-default activations against the default pair, in one process.

Usage::

    python bench/activations.py [--shape 50x32x128x128] [--threads 1] [--rounds 5] [--calls 20]

For each cell (LSTM, GRU: every activation φ in tanh/relu/linear and σ in sigmoid/hard_sigmoid;
Elman RNN: φ only), times one forward + backward (with dx) of :mod:`rnnkit.functional` on
``T x N x C x H`` float32. Variants run interleaved in blocks: every round runs each variant's
``--calls`` calls back to back (after 3 warm-up calls, so the thread pool's spinning after a call
does not leak into the next variant), the variants' order rotating each round. Reported per
variant: min / median / max of the per-round medians, and the ratio of its median to the default
pair's median (1.00 = same speed; the ratio is what to read on a noisy machine).
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np

import rnnkit
from rnnkit import functional as F

PHIS = ("tanh", "relu", "linear")
SIGMAS = ("sigmoid", "hard_sigmoid")


def _call(cell, x, p, phi, sig):
    if cell == "rnn":
        o = F.rnn_forward(x, None, **p, nonlinearity=phi)
        F.rnn_backward(o.cache, o.y)
    elif cell == "lstm":
        o = F.lstm_forward(x, None, None, **p, activation=phi, recurrent_activation=sig)
        F.lstm_backward(o.cache, o.y)
    else:
        o = F.gru_forward(x, None, **p, activation=phi, recurrent_activation=sig)
        F.gru_backward(o.cache, o.y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="50x32x128x128", help="TxNxCxH")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=20)
    a = ap.parse_args()
    T, N, C, H = map(int, a.shape.split("x"))
    rnnkit.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((T, N, C)) * 0.5).astype(np.float32)
    print(f"shape T={T} N={N} C={C} H={H} float32, threads={a.threads}, {a.rounds} rounds x "
          f"{a.calls} calls, forward + backward")
    for cell, G in (("rnn", 1), ("lstm", 4), ("gru", 3)):
        s = 1.0 / np.sqrt(H)
        p = {"w_ih": rng.uniform(-s, s, (G * H, C)).astype(np.float32),
             "w_hh": rng.uniform(-s, s, (G * H, H)).astype(np.float32),
             "b_ih": rng.uniform(-s, s, G * H).astype(np.float32),
             "b_hh": rng.uniform(-s, s, G * H).astype(np.float32)}
        variants = [(phi, "sigmoid") for phi in PHIS] if cell == "rnn" else \
            list(itertools.product(PHIS, SIGMAS))
        med = {v: [] for v in variants}
        for r in range(a.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                for _ in range(3):
                    _call(cell, x, p, *v)
                ts = []
                for _ in range(a.calls):
                    t0 = time.perf_counter()
                    _call(cell, x, p, *v)
                    ts.append(time.perf_counter() - t0)
                med[v].append(statistics.median(ts))
        base = statistics.median(med[variants[0]])
        for v in variants:
            m = med[v]
            label = f"{cell:4s} {v[0]:6s}" + ("" if cell == "rnn" else f" {v[1]:12s}")
            print(f"{label}  {1e3 * min(m):7.3f} / {1e3 * statistics.median(m):7.3f} / "
                  f"{1e3 * max(m):7.3f} ms   ratio to default {statistics.median(m) / base:.2f}")


if __name__ == "__main__":
    main()
