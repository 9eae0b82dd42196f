#!/usr/bin/env python3
"""Seconds per epoch of the seed model's ``fit`` under two Python environments (two rnnkit builds,
e.g. before and after a change), measured in one run.

Usage::

    python bench/ab_fit.py --a /path/to/venv_a/bin/python --b /path/to/venv_b/bin/python \
                           [--threads 1 2] [--rounds 5] [--epochs 3] [--samples 2048]

The seed model is ``LSTM(64, return_sequences) -> LSTM(32, return_sequences) -> Dense(10, softmax)``
on 2048 x 50 x 32 float32 samples, batch 32, Adam, categorical cross-entropy, ``verbose=0``.
Each round starts a fresh process per environment (A then B, then B then A in the next round, so
that neither always runs second); inside a process one warm-up fit of 2 batches precedes the timed
epochs. The environments run alternately, never at the same time, with the same thread count
(``OMP_NUM_THREADS``, ``rnnkit.set_num_threads`` and NumPy's BLAS via threadpoolctl when present).
Reported: min / median / max seconds per epoch over all timed epochs, and the ratio of medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from typing import Dict, List

WORKLOAD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    threads, epochs, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        pass
    import rnnkit
    rnnkit.set_num_threads(threads)
    from rnnkit.layers import LSTM, Dense
    from rnnkit.models import Sequential
    rng = np.random.default_rng(0)
    T, C, K = 50, 32, 10
    x = rng.standard_normal((n, T, C)).astype(np.float32)
    y = np.eye(K, dtype=np.float32)[rng.integers(0, K, (n, T))]
    np.random.seed(0)
    m = Sequential([LSTM(64, return_sequences=True, input_shape=(T, C)), LSTM(32, return_sequences=True),
                    Dense(K, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    m.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0)   # warm-up
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        m.fit(x, y, epochs=1, batch_size=32, verbose=0)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"version": rnnkit.__version__, "file": rnnkit.__file__, "times": times}))
""")


def run(python: str, threads: int, epochs: int, samples: int) -> Dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    out = subprocess.run([python, "-c", WORKLOAD, str(threads), str(epochs), str(samples)], env=env,
                         capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True, help="python of environment A (e.g. the build before a change)")
    p.add_argument("--b", required=True, help="python of environment B")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--json", help="write the raw samples here")
    args = p.parse_args()
    raw: Dict[str, Dict[str, List[float]]] = {}
    for threads in args.threads:
        res: Dict[str, List[float]] = {"A": [], "B": []}
        for r in range(args.rounds):
            order = ("A", "B") if r % 2 == 0 else ("B", "A")
            for who in order:
                d = run(args.a if who == "A" else args.b, threads, args.epochs, args.samples)
                res[who].extend(d["times"])
            print(f"threads {threads} round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        raw[str(threads)] = res
        ma, mb = statistics.median(res["A"]), statistics.median(res["B"])
        print(f"threads={threads}  A: {ma:.3f} s/epoch ({min(res['A']):.3f}-{max(res['A']):.3f})  "
              f"B: {mb:.3f} s/epoch ({min(res['B']):.3f}-{max(res['B']):.3f})  A/B = {ma / mb:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
