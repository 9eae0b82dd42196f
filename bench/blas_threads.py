#!/usr/bin/env python3
"""rnnkit's ``fit`` beside NumPy's BLAS thread pool: seconds per epoch of the seed model with the
BLAS pool limited to 1 thread during ``fit`` (what ``fit`` does, :mod:`rnnkit._blas`) and left at
its default thread count (``RNNKIT_FIT_BLAS_THREADS=default``).

Usage::

    python bench/blas_threads.py [--epochs-per-block 2] [--blocks 6] [--threads 2] [--json out.json]

The seed model (``LSTM(64) -> LSTM(32) -> Dense(10, softmax)``, 2048 x 50 x 32 float32, batch 32,
Adam, categorical cross-entropy) trains in one process; the two settings alternate in blocks
of ``--epochs-per-block`` epochs (ABBA order; the first block of each is a warm-up), so a noisy
stretch of the machine hits both and neither pool's spinning after a call is charged to the
other setting. The recurrent kernels run on rnnkit's OpenMP pool (``--threads``); ``Dense``, the
loss and the optimizer's NumPy work use NumPy's BLAS. Reported: min / median / max seconds per
epoch and the ratio of the medians (default / limited: above 1 means the default BLAS pool costs
time).

Shapes
------
x: [2048, 50, 32] float32, y: [2048, 50, 10] one-hot
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from typing import Dict, Iterator, List

import numpy as np
from threadpoolctl import threadpool_info

import rnnkit
from rnnkit.layers import LSTM, Dense
from rnnkit.models import Sequential


@contextlib.contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[key]
        else:
            os.environ[key] = old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs-per-block", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json")
    a = ap.parse_args()
    rnnkit.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2048, 50, 32)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, (2048, 50))]
    np.random.seed(0)
    model = Sequential([LSTM(64, return_sequences=True, input_shape=(50, 32)), LSTM(32, return_sequences=True),
                        Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    print(f"{platform.machine()}, rnnkit {a.threads} threads, BLAS: "
          + ", ".join(f"{p['internal_api']} {p['version']} ({p['num_threads']} threads)" for p in blas)
          + f"; load average {os.getloadavg()[0]:.2f}")
    settings = {"default": lambda: _env("RNNKIT_FIT_BLAS_THREADS", "default"), "blas=1": contextlib.nullcontext}
    times: Dict[str, List[float]] = {k: [] for k in settings}
    for block in range(2 * a.blocks):
        name = ["default", "blas=1"][(block + block // 2) % 2]  # A B B A A B ...
        with settings[name]():
            for _ in range(a.epochs_per_block):
                t0 = time.perf_counter()
                model.fit(x, y, batch_size=32, epochs=1, verbose=0)
                if block >= 2:
                    times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        print(f"{name:>8}: min {min(ts):.3f} / median {statistics.median(ts):.3f} / max {max(ts):.3f} s per epoch "
              f"({len(ts)} epochs)")
    ratio = statistics.median(times["default"]) / statistics.median(times["blas=1"])
    print(f"ratio of medians default / blas=1: {ratio:.3f}; load average {os.getloadavg()[0]:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"times": times, "ratio": ratio, "threads": a.threads, "blas": blas}, f, indent=1)


if __name__ == "__main__":
    main()
