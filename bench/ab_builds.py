#!/usr/bin/env python3
"""Two rnnkit builds (two Python environments, e.g. before and after a change) on one workload,
measured in one run.

Usage::

    python bench/ab_builds.py --a /path/to/venv_a/bin/python --b /path/to/venv_b/bin/python \
                              [--workload fit | lstm:train:50x32x128x128 | gru:fwd:100x1x256x256 ...]
                              [--threads 1 2] [--rounds 5] [--reps 3]

Workloads:

- ``fit`` (default): seconds per epoch of the seed model ``LSTM(64, return_sequences) ->
  LSTM(32, return_sequences) -> Dense(10, softmax)`` on 2048 x 50 x 32 float32 samples, batch 32,
  Adam, categorical cross-entropy, ``verbose=0`` (``--reps`` timed epochs per process after a
  warm-up fit of 2 batches);
- ``<cell>:<fwd|train>:TxNxCxH``: one whole-sequence call of :mod:`rnnkit.functional` (``train``
  = forward + backward with the input gradient), the median of 20 calls per rep after 5 warm-up
  calls.

Each round starts a fresh process per environment (A then B, then B then A in the next round, so
that neither always runs second). The environments run alternately, never at the same time,
with the same thread count (``OMP_NUM_THREADS``, ``rnnkit.set_num_threads`` and NumPy's BLAS via
threadpoolctl when present). Reported: min / median / max seconds over all timed reps, and the
ratio of medians A/B (> 1: B faster).
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
    import json, statistics, sys, time
    import numpy as np
    threads, reps, workload = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        pass
    import rnnkit
    rnnkit.set_num_threads(threads)
    times = []
    if workload == "fit":
        from rnnkit.layers import LSTM, Dense
        from rnnkit.models import Sequential
        rng = np.random.default_rng(0)
        n, T, C, K = 2048, 50, 32, 10
        x = rng.standard_normal((n, T, C)).astype(np.float32)
        y = np.eye(K, dtype=np.float32)[rng.integers(0, K, (n, T))]
        np.random.seed(0)
        m = Sequential([LSTM(64, return_sequences=True, input_shape=(T, C)), LSTM(32, return_sequences=True),
                        Dense(K, activation="softmax")])
        m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        m.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0)   # warm-up
        for _ in range(reps):
            t0 = time.perf_counter()
            m.fit(x, y, epochs=1, batch_size=32, verbose=0)
            times.append(time.perf_counter() - t0)
    else:
        from rnnkit import functional as F
        cell, mode, dims = workload.split(":")
        T, N, C, H = (int(v) for v in dims.split("x"))
        G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((T, N, C)).astype(np.float32)
        w_ih = (rng.standard_normal((G * H, C)) / np.sqrt(H)).astype(np.float32)
        w_hh = (rng.standard_normal((G * H, H)) / np.sqrt(H)).astype(np.float32)
        b = np.zeros(G * H, np.float32)
        fwd, bwd = getattr(F, cell + "_forward"), getattr(F, cell + "_backward")
        states = (None, None) if cell == "lstm" else (None,)
        dy = np.ones((T, N, H), np.float32)

        def once():
            o = fwd(x, *states, w_ih, w_hh, b, b)
            if mode == "train":
                bwd(o.cache, dy)

        for _ in range(5):
            once()
        for _ in range(reps):
            s = []
            for _ in range(20):
                t0 = time.perf_counter()
                once()
                s.append(time.perf_counter() - t0)
            times.append(statistics.median(s))
    print(json.dumps({"version": rnnkit.__version__, "file": rnnkit.__file__, "times": times}))
""")


def run(python: str, threads: int, reps: int, workload: str) -> Dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    out = subprocess.run([python, "-c", WORKLOAD, str(threads), str(reps), workload], env=env,
                         capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True, help="python of environment A (e.g. the build before a change)")
    p.add_argument("--b", required=True, help="python of environment B")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--workload", default="fit", help="fit, or <cell>:<fwd|train>:TxNxCxH")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per process")
    p.add_argument("--json", help="write the raw samples here")
    args = p.parse_args()
    raw: Dict[str, Dict[str, List[float]]] = {}
    for threads in args.threads:
        res: Dict[str, List[float]] = {"A": [], "B": []}
        for r in range(args.rounds):
            order = ("A", "B") if r % 2 == 0 else ("B", "A")
            for who in order:
                d = run(args.a if who == "A" else args.b, threads, args.reps, args.workload)
                res[who].extend(d["times"])
            print(f"threads {threads} round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        raw[str(threads)] = res
        ma, mb = statistics.median(res["A"]), statistics.median(res["B"])
        unit, k = ("s/epoch", 1.0) if args.workload == "fit" else ("ms", 1e3)
        print(f"{args.workload} threads={threads}  A: {k * ma:.3f} {unit} ({k * min(res['A']):.3f}-"
              f"{k * max(res['A']):.3f})  B: {k * mb:.3f} {unit} ({k * min(res['B']):.3f}-{k * max(res['B']):.3f})"
              f"  A/B = {ma / mb:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
