"""Data-parallel training on MPI ranks vs threads in one process, on the seed model.

Run (2 ranks; the script sets each rank's threads itself)::

    OMP_NUM_THREADS=1 mpiexec -n 2 python bench/distributed.py [--blocks 4] [--json out.json]

Model: ``LSTM(64, return_sequences) -> LSTM(32, return_sequences) -> Dense(10, softmax)``,
2048 samples x 50 steps x 32 features float32, one-hot targets, Adam, categorical
cross-entropy, ``metrics=["accuracy"]``, global batch 64 in both configurations:

- ``2x1``: 2 ranks x 1 thread, ``fit(batch_size=32, distributed=True)``;
- ``1x2``: rank 0 alone with 2 threads, ``fit(batch_size=64)``, while rank 1 sleeps (polling
  for rank 0's "done" every 2 ms, so it takes no core).

The two alternate in blocks of one epoch (32 steps) each, a fresh model per block, the first
2 steps of a block and its last (which holds the end-of-epoch work) left out. Per step: the
time from one ``on_train_batch_begin`` to the next, and (2x1) the time spent inside the
gradient ``Allreduce`` (:func:`rnnkit.distributed.stats`; it includes waiting for the slower
rank). A synchronized micro-benchmark of ``Allreduce`` on a buffer of the gradient's size gives
the transfer cost alone.

Shapes
------
x ``[2048, 50, 32]`` float32, y ``[2048, 50, 10]`` one-hot.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any, Dict, List

import numpy as np

import rnnkit
from rnnkit import callbacks
from rnnkit import distributed as dist
from rnnkit.layers import LSTM, Dense
from rnnkit.models import Sequential

N, T, C, K = 2048, 50, 32, 10
GLOBAL_BATCH = 64
SKIP_FIRST = 2
DONE_TAG = 7


def data() -> Any:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, T, C), dtype=np.float32)
    y = np.eye(K, dtype=np.float32)[rng.integers(0, K, size=(N, T))]
    return x, y


def seed_model() -> Sequential:
    np.random.seed(0)
    model = Sequential([LSTM(64, return_sequences=True, input_shape=(T, C)),
                        LSTM(32, return_sequences=True), Dense(K, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


class StepTimer(callbacks.Callback):
    """Wall time between consecutive batch starts, and the Allreduce seconds within each step."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: List[float] = []
        self.reduce_marks: List[float] = []

    def _mark(self) -> None:
        self.marks.append(time.perf_counter())
        self.reduce_marks.append(dist.stats()["allreduce_seconds"])

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self._mark()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._mark()

    def steps(self) -> List[float]:
        d = np.diff(self.marks)
        return [float(v) for v in d[SKIP_FIRST:-1]]

    def reduce(self) -> List[float]:
        d = np.diff(self.reduce_marks)
        return [float(v) for v in d[SKIP_FIRST:-1]]


def run_2x1(x: np.ndarray, y: np.ndarray) -> Dict[str, List[float]]:
    rnnkit.set_num_threads(1)
    dist.barrier()
    model = seed_model()
    timer = StepTimer()
    model.fit(x, y, batch_size=GLOBAL_BATCH // dist.size(), epochs=1, shuffle=True, seed=1, verbose=0,
              callbacks=[timer], distributed=True)
    return {"step": timer.steps(), "allreduce": timer.reduce()}


def run_1x2(x: np.ndarray, y: np.ndarray) -> Dict[str, List[float]]:
    c = dist.comm()
    dist.barrier()
    if dist.rank() != 0:
        while not c.Iprobe(source=0, tag=DONE_TAG):
            time.sleep(0.002)
        c.Recv(np.empty(1), source=0, tag=DONE_TAG)
        return {}
    rnnkit.set_num_threads(2)
    model = seed_model()
    timer = StepTimer()
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=True, seed=1, verbose=0, callbacks=[timer])
    for r in range(1, dist.size()):
        c.Send(np.zeros(1), dest=r, tag=DONE_TAG)
    return {"step": timer.steps(), "allreduce": []}


def allreduce_micro(nbytes: int, reps: int = 300) -> Dict[str, float]:
    """Seconds per in-place SUM Allreduce of ``nbytes`` (float32), ranks synchronized first."""
    from mpi4py import MPI

    c = dist.comm()
    buf = np.ones(max(nbytes // 4, 1), dtype=np.float32)
    times = []
    for _ in range(reps):
        c.Barrier()
        t0 = time.perf_counter()
        c.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        times.append(time.perf_counter() - t0)
    worst = np.array([float(np.median(times))])
    c.Allreduce(MPI.IN_PLACE, worst, op=MPI.MAX)
    return {"bytes": float(buf.nbytes), "median_s": float(worst[0]), "min_s": float(min(times))}


def summary(v: List[float]) -> Dict[str, float]:
    return {"n": len(v), "min_ms": 1e3 * min(v), "median_ms": 1e3 * statistics.median(v),
            "max_ms": 1e3 * max(v), "mean_ms": 1e3 * statistics.fmean(v)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=4, help="blocks (epochs) per configuration")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dist.init()
    if dist.size() != 2:
        raise SystemExit(f"run on 2 ranks (mpiexec -n 2), got {dist.size()}")
    x, y = data()
    load_start = os.getloadavg()
    # warm-up: one short fit of each kind (buffer pool, imports)
    model = seed_model()
    model.fit(x[:256], y[:256], batch_size=32, epochs=1, verbose=0, distributed=True)
    raw: Dict[str, Dict[str, List[float]]] = {"2x1": {"step": [], "allreduce": []},
                                              "1x2": {"step": [], "allreduce": []}}
    order = []
    for b in range(args.blocks):
        for cfg in (("2x1", "1x2") if b % 2 == 0 else ("1x2", "2x1")):
            order.append(cfg)
            dist.reset_stats()
            res = run_2x1(x, y) if cfg == "2x1" else run_1x2(x, y)
            for k, v in res.items():
                raw[cfg][k].extend(v)
    rnnkit.set_num_threads(1)
    grad_bytes = int(sum(p.nbytes for p in seed_model().trainable_variables()[0]))
    dist.reset_stats()
    run_small = seed_model()
    run_small.fit(x[:128], y[:128], batch_size=32, epochs=1, verbose=0, distributed=True)
    s = dist.stats()
    reduced_bytes = int(s["allreduce_bytes"] / max(s["steps"], 1))
    calls = s["allreduce_calls"] / max(s["steps"], 1)
    micro = allreduce_micro(reduced_bytes)
    tiny = allreduce_micro(8)
    load_end = os.getloadavg()
    # per rank (2x1): median step, median Allreduce, median step minus its Allreduce (compute)
    st, ar_ = np.array(raw["2x1"]["step"]), np.array(raw["2x1"]["allreduce"])
    mine = np.array([np.median(st), np.median(ar_), np.median(st - ar_)])
    per_rank = np.empty((dist.size(), 3)) if dist.is_main() else None
    dist.comm().Gather(mine, per_rank, root=0)
    if not dist.is_main():
        return
    assert per_rank is not None
    out: Dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "rnnkit": rnnkit.__version__, "build": rnnkit.build_info(),
                    "loadavg_start": load_start, "loadavg_end": load_end},
        "order": order, "gradient_bytes": grad_bytes, "allreduce_bytes_per_step": reduced_bytes,
        "allreduce_calls_per_step": calls, "allreduce_micro": micro, "allreduce_8_bytes": tiny,
        "raw": raw,
        "summary": {cfg: {"step": summary(v["step"]),
                          **({"allreduce": summary(v["allreduce"])} if v["allreduce"] else {})}
                    for cfg, v in raw.items()},
    }
    a, b = out["summary"]["2x1"], out["summary"]["1x2"]
    share = statistics.fmean(raw["2x1"]["allreduce"]) / statistics.fmean(raw["2x1"]["step"])
    out["allreduce_share_2x1"] = share
    out["per_rank_2x1_ms"] = [{"step": 1e3 * r[0], "allreduce": 1e3 * r[1], "compute": 1e3 * r[2]}
                              for r in per_rank]
    compute = float(np.min(per_rank[:, 2]))  # the rank that waited least: its own work per step
    out["compute_per_step_s"] = compute
    params = grad_bytes / 4
    flops = 6 * params * (GLOBAL_BATCH // 2) * T  # ~2 FLOP per weight per sample-step forward, 4 backward
    out["achieved_gflops_per_rank"] = flops / compute / 1e9
    model_rows = []
    for gbit, alpha in ((10, 20e-6), (100, 2e-6)):
        bw = gbit * 1e9 / 8
        for p in (2, 4, 8, 16, 32, 64):
            a_time = 2 * (p - 1) / p * reduced_bytes / bw + 2 * (p - 1) * alpha
            model_rows.append({"gbit": gbit, "latency_s": alpha, "p": p, "allreduce_s": a_time,
                               "efficiency": compute / (compute + a_time)})
    out["scaling_model"] = model_rows
    print(f"seed model, {N}x{T}x{C} float32, Adam, global batch {GLOBAL_BATCH}; load average "
          f"{load_start[0]:.2f} at start, {load_end[0]:.2f} at end; blocks {' '.join(order)}")
    print(f"{'config':8} {'steps':>5} {'min ms':>8} {'median':>8} {'max':>8} {'mean':>8}")
    for cfg, s_ in (("2x1", a["step"]), ("1x2", b["step"])):
        print(f"{cfg:8} {s_['n']:5d} {s_['min_ms']:8.2f} {s_['median_ms']:8.2f} {s_['max_ms']:8.2f} "
              f"{s_['mean_ms']:8.2f}")
    ar = a["allreduce"]
    print(f"2x1 allreduce per step: {reduced_bytes} bytes in {calls:g} call(s) (gradients "
          f"{grad_bytes} bytes + scalars); inside Allreduce min/median/max {ar['min_ms']:.3f}/"
          f"{ar['median_ms']:.3f}/{ar['max_ms']:.3f} ms, mean {ar['mean_ms']:.3f} ms = "
          f"{100 * share:.1f}% of the step (includes waiting for the other rank)")
    print(f"synchronized Allreduce of {reduced_bytes} bytes: median {1e6 * micro['median_s']:.1f} us "
          f"(8 bytes: {1e6 * tiny['median_s']:.1f} us)")
    print(f"speed-up 2x1 over 1x2 (median step): {b['step']['median_ms'] / a['step']['median_ms']:.2f}x")
    for r, d in enumerate(out["per_rank_2x1_ms"]):
        print(f"rank {r} (2x1) medians: step {d['step']:.2f} ms, in Allreduce {d['allreduce']:.3f} ms, "
              f"compute {d['compute']:.2f} ms")
    print(f"compute per step {1e3 * compute:.2f} ms for {flops / 1e6:.0f} MFLOP "
          f"(~{out['achieved_gflops_per_rank']:.0f} GFLOP/s per rank, 6 x params x b x T)")
    print("ring allreduce model 2(p-1)/p x bytes / bandwidth + 2(p-1) x latency; efficiency "
          "compute / (compute + allreduce):")
    for row in model_rows:
        print(f"  {row['gbit']:3d} Gbit/s, {1e6 * row['latency_s']:4.0f} us latency, p={row['p']:2d}: "
              f"allreduce {1e3 * row['allreduce_s']:.3f} ms, efficiency {100 * row['efficiency']:.0f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
