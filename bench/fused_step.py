#!/usr/bin/env python3
"""The fused training step (``compile(jit_compile='auto')``) against the per-layer path.

Usage::

    python bench/fused_step.py [--threads 1 2] [--epochs 7] [--samples 2048] [--json out.json]

The seed model, LSTM(64, return_sequences) -> LSTM(32, return_sequences) -> Dense(10, softmax),
on 2048 x 50 x 32 float32 random inputs and one-hot targets, batch 32, Adam, categorical
cross-entropy and accuracy, is built twice with the same initial weights: once with
``jit_compile=False`` (every layer, the loss and the metric in Python, the kernels per layer)
and once with the default (one C++ call per batch, :mod:`rnnkit.fused`). Their epochs alternate
in one process (A, B, A, B, ... after a warm-up epoch each), at each thread count; reported:
min / median / max seconds per epoch and the ratio of medians. Also reported: the seconds of an
epoch spent inside the recurrent kernels of the per-layer path (timers around ``_core``'s LSTM
calls), which is the bound a fused step approaches, and the machine's CPU and load.

Shapes
------
x: [2048, 50, 32] float32; y: [2048, 50, 10] one-hot.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any, Dict, List

import numpy as np

import rnnkit
from rnnkit import _core
from rnnkit.layers import LSTM, Dense
from rnnkit.models import Sequential


def seed_model(jit: Any) -> Sequential:
    """The seed model with fixed initial weights."""
    rnnkit.utils.set_random_seed(0)
    m = Sequential()
    m.add(LSTM(64, return_sequences=True, input_shape=(50, 32)))
    m.add(LSTM(32, return_sequences=True))
    m.add(Dense(10, activation="softmax"))
    m.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"], jit_compile=jit)
    return m


class KernelTimer:
    """Accumulates the seconds spent in _core.lstm_forward / lstm_backward (per-layer path)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._orig = {k: getattr(_core, k) for k in ("lstm_forward", "lstm_backward")}

    def __enter__(self) -> "KernelTimer":
        for k, f in self._orig.items():
            def timed(*a: Any, _f: Any = f, **kw: Any) -> Any:
                t = time.perf_counter()
                try:
                    return _f(*a, **kw)
                finally:
                    self.seconds += time.perf_counter() - t
            setattr(_core, k, timed)
        return self

    def __exit__(self, *exc: Any) -> None:
        for k, f in self._orig.items():
            setattr(_core, k, f)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=7, help="timed epochs per variant and thread count")
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--json", help="write the raw seconds here")
    args = p.parse_args()
    rng = np.random.default_rng(7)
    X = rng.standard_normal((args.samples, 50, 32), dtype=np.float32)
    Y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=(args.samples, 50))]
    kw: Dict[str, Any] = {"epochs": 1, "batch_size": 32, "verbose": 0, "shuffle": False}
    print(f"{cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    out: Dict[str, Any] = {"cpu": cpu_model(), "runs": []}
    for nt in args.threads:
        rnnkit.set_num_threads(nt)
        models = {"per-layer": seed_model(False), "fused": seed_model("auto")}
        secs: Dict[str, List[float]] = {k: [] for k in models}
        kernel: List[float] = []
        for m in models.values():
            m.fit(X, Y, **kw)  # warm-up epoch
        for _ in range(args.epochs):
            for name, m in models.items():
                if name == "per-layer":
                    with KernelTimer() as kt:
                        t0 = time.perf_counter()
                        m.fit(X, Y, **kw)
                        secs[name].append(time.perf_counter() - t0)
                    kernel.append(kt.seconds)
                else:
                    t0 = time.perf_counter()
                    m.fit(X, Y, **kw)
                    secs[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in secs.items()}
        for k, v in secs.items():
            print(f"threads {nt}  {k:9s}  {med[k]:.3f} s/epoch (min {min(v):.3f}, max {max(v):.3f})")
        print(f"threads {nt}  per-layer epoch inside the LSTM kernels: {statistics.median(kernel):.3f} s "
              f"(median); speed-up fused / per-layer {med['per-layer'] / med['fused']:.2f}x")
        out["runs"].append({"threads": nt, "seconds": secs, "kernel_seconds": kernel})
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
