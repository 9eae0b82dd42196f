"""Distributed scoring: an LSTM anomaly scorer over a large synthetic set of series, split across
MPI ranks with :func:`rnnkit.distributed.predict` and gathered, in order, on rank 0.

Run it on 2 ranks (1 thread each on a 2-core machine)::

    OMP_NUM_THREADS=1 mpiexec -n 2 python examples/distributed_scoring.py
    mpiexec -n 4 -hosts a,b python -m mpi4py examples/distributed_scoring.py --samples 400000

(``pip install "rnnkit[mpi]"`` first; ``-m mpi4py`` makes an error on one rank stop them all.)

The series are never materialised as one array: :class:`SyntheticSeries` has a ``shape`` and
makes rows on demand (block ``k`` from ``np.random.default_rng([seed, k])``), so a rank builds
only the rows of its own slice. A memory-mapped ``.npy`` (``np.load(path, mmap_mode="r")``)
works the same way for real data. Every rank builds the model from the same seed and
``broadcast_model`` makes sure they all hold rank 0's weights.

Shapes
------
series ``[N, T, C]`` float32 -> scores ``[N, 1]`` (a probability that the series is anomalous).
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Tuple

import numpy as np

import rnnkit
from rnnkit import distributed as dist
from rnnkit.layers import LSTM, Dense
from rnnkit.models import Sequential


class SyntheticSeries:
    """``N`` noisy multichannel sine waves, some with a burst (an anomaly), made on demand.

    Shapes
    ------
    ``shape == (N, T, C)``; ``series[lo:hi]`` -> ``[hi - lo, T, C]`` float32.
    """

    BLOCK = 1024

    def __init__(self, n: int, timesteps: int, channels: int, seed: int = 0) -> None:
        self.shape: Tuple[int, int, int] = (n, timesteps, channels)
        self.seed = seed

    def __len__(self) -> int:
        return self.shape[0]

    def _block(self, k: int) -> np.ndarray:
        n, T, C = self.shape
        rows = min(self.BLOCK, n - k * self.BLOCK)
        rng = np.random.default_rng([self.seed, k])
        t = np.arange(T, dtype=np.float32)[None, :, None]
        freq = rng.uniform(0.05, 0.3, size=(rows, 1, C)).astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, size=(rows, 1, C)).astype(np.float32)
        x = np.sin(freq * t + phase) + 0.1 * rng.standard_normal((rows, T, C)).astype(np.float32)
        burst = rng.random(rows) < 0.05
        start = rng.integers(0, max(T - 5, 1), size=rows)
        for i in np.flatnonzero(burst):
            x[i, start[i]:start[i] + 5] += 3.0
        return x.astype(np.float32)

    def __getitem__(self, idx: Any) -> np.ndarray:
        if not isinstance(idx, slice):
            raise TypeError("SyntheticSeries: only slices (series[lo:hi])")
        lo, hi, step = idx.indices(self.shape[0])
        if step != 1:
            raise TypeError("SyntheticSeries: only contiguous slices")
        if hi <= lo:
            return np.empty((0,) + self.shape[1:], dtype=np.float32)
        first, last = lo // self.BLOCK, (hi - 1) // self.BLOCK
        blocks = np.concatenate([self._block(k) for k in range(first, last + 1)])
        return blocks[lo - first * self.BLOCK:hi - first * self.BLOCK]


def build_model(timesteps: int, channels: int) -> Sequential:
    np.random.seed(0)  # the same weights on every rank (broadcast_model checks it anyway)
    return Sequential([LSTM(64, input_shape=(timesteps, channels)), Dense(1, activation="sigmoid")])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--timesteps", type=int, default=50)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--check", action="store_true",
                    help="rank 0 also scores the first and last 500 series alone and compares")
    args = ap.parse_args()

    dist.init()
    series = SyntheticSeries(args.samples, args.timesteps, args.channels)
    model = build_model(args.timesteps, args.channels)
    dist.broadcast_model(model)
    dist.barrier()
    t0 = time.perf_counter()
    scores = dist.predict(model, series, batch_size=args.batch_size)
    dist.barrier()
    elapsed = time.perf_counter() - t0
    if not dist.is_main():
        return
    n = len(series)
    print(f"scored {n} series on {dist.size()} ranks x {rnnkit.get_num_threads()} thread(s) in "
          f"{elapsed:.2f} s ({n / elapsed:,.0f} series/s); scores {scores.shape} {scores.dtype}")
    top = np.argsort(scores[:, 0])[::-1][:5]
    print("most anomalous:", ", ".join(f"#{i} ({scores[i, 0]:.3f})" for i in top))
    if args.check:
        k = min(500, n)
        head = model.predict(series[0:k], batch_size=args.batch_size, verbose=0)
        tail = model.predict(series[n - k:n], batch_size=args.batch_size, verbose=0)
        diff = max(float(np.max(np.abs(head - scores[:k]))), float(np.max(np.abs(tail - scores[n - k:]))))
        ok = diff <= 1e-6  # the same rows in other batches: equal up to float32 rounding
        print(f"check: max |distributed - local| = {diff:g} ({'ok' if ok else 'FAILED'})")
        if not ok:
            raise SystemExit("check failed: distributed scores differ from local ones")


if __name__ == "__main__":
    main()
