#!/usr/bin/env python3
"""Does rnnkit's idle thread pool slow the library called right after it?

Usage::

    python bench/neighbours.py [--threads 2] [--pairs 40] [--rounds 4] [--json out.json]

A neighbour op (NumPy's sgemm through OpenBLAS, ``torch.mm``, and an ONNX Runtime session
running one MatMul, each on ``--threads`` threads, about 5-10 ms) is timed in two settings,
alternating in rounds in one process:

- ``alone``: ``--pairs`` calls of the neighbour back to back;
- ``after rnnkit``: ``--pairs`` times an rnnkit LSTM forward at (50, 32, 128, 128) on
  ``--threads`` threads (about 2-4 ms), then the neighbour call, timing the neighbour only.

After an OpenMP parallel region its worker threads spin for a while before they sleep (libgomp's
``GOMP_SPINCOUNT``, ``OMP_WAIT_POLICY``); if they spin on the cores the neighbour wants, its
call right after is slower. Reported: the neighbour's median time in both settings and their
ratio (1.00 = no effect), with min / max, and the OpenMP settings in the environment.

Shapes
------
rnnkit: x [50, 32, 128] -> y [50, 32, 128]; neighbours: [1024, 1024] x [1024, 1024] float32
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Callable, Dict, List

import numpy as np

import rnnkit
from rnnkit import functional as F


def neighbours(threads: int) -> Dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1024, 1024), dtype=np.float32)
    b = rng.standard_normal((1024, 1024), dtype=np.float32)
    out: Dict[str, Callable[[], object]] = {"numpy sgemm": lambda: a @ b}
    try:
        import torch

        torch.set_num_threads(threads)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        out["torch.mm"] = lambda: torch.mm(ta, tb)
    except ImportError:
        pass
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("MatMul", ["A", "B"], ["C"])], "mm",
            [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1024, 1024])],
            [helper.make_tensor_value_info("C", TensorProto.FLOAT, [1024, 1024])],
            [helper.make_tensor("B", TensorProto.FLOAT, [1024, 1024], b.ravel())])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        out["onnxruntime MatMul"] = lambda: sess.run(None, {"A": a})
        del onnx
    except ImportError:
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--json")
    a = ap.parse_args()
    rnnkit.set_num_threads(a.threads)
    rng = np.random.default_rng(1)
    T, N, C, H = 50, 32, 128, 128
    x = rng.standard_normal((T, N, C), dtype=np.float32)
    w_ih = rng.uniform(-0.1, 0.1, (4 * H, C)).astype(np.float32)
    w_hh = rng.uniform(-0.1, 0.1, (4 * H, H)).astype(np.float32)

    def rnnkit_call() -> None:
        F.lstm_forward(x, None, None, w_ih, w_hh)

    env = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS") if k in os.environ}
    print(f"{a.threads} threads; environment {env or '(no OpenMP settings)'}; load average {os.getloadavg()[0]:.2f}")
    results = {}
    for name, op in neighbours(a.threads).items():
        for _ in range(3):
            op()
            rnnkit_call()
        times: Dict[str, List[float]] = {"alone": [], "after rnnkit": []}
        for r in range(a.rounds):
            for setting in (("alone", "after rnnkit") if r % 2 == 0 else ("after rnnkit", "alone")):
                for _ in range(a.pairs):
                    if setting == "after rnnkit":
                        rnnkit_call()
                    t0 = time.perf_counter()
                    op()
                    times[setting].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["after rnnkit"] / med["alone"]
        results[name] = {k: {"min_ms": min(v) * 1e3, "median_ms": med[k] * 1e3, "max_ms": max(v) * 1e3}
                         for k, v in times.items()}
        results[name]["ratio"] = ratio
        print(f"{name:<20} alone {med['alone'] * 1e3:7.2f} ms (min {min(times['alone']) * 1e3:.2f}, max "
              f"{max(times['alone']) * 1e3:.2f})   after rnnkit {med['after rnnkit'] * 1e3:7.2f} ms (min "
              f"{min(times['after rnnkit']) * 1e3:.2f}, max {max(times['after rnnkit']) * 1e3:.2f})   ratio {ratio:.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"threads": a.threads, "env": env, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
