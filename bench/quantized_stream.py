#!/usr/bin/env python3
"""Streams with float32, bfloat16 and int8 weights, and PyTorch's dynamically quantized LSTM.

Usage::

    python bench/quantized_stream.py [--threads 1] [--steps 2000] [--blocks 6] [--json out.json]

Rows:

- ``step``: one ``stream.step(x_t)`` of an LSTM(64 -> 128) and a GRU(64 -> 128) at batch 1 (the
  issue's streaming shape), microseconds per step. PyTorch's reference is
  ``torch.ao.quantization.quantize_dynamic(nn.LSTM, dtype=torch.qint8)`` called on one step with
  the carried ``(h, c)``, and the float ``nn.LSTM`` the same way (same weights).
- ``run``: ``stream.run(x)`` over a chunk of 100 steps at batch 64, C = H = 256 (the grid's
  forward shape), milliseconds per chunk; PyTorch's ``nn.LSTM`` and its ``quantize_dynamic``
  int8 version over the same chunk.

All variants of a row live in one process and alternate in blocks (``--steps`` steps, or 5
chunks, of one variant, then the next; the order reversed every other round; the first round is
a warm-up), so a noisy stretch of the machine hits all of them and no pool's spinning after one
variant is charged to the next. Reported: min / median / max over the blocks' per-step means
and the ratio of the medians to rnnkit's float32 stream. Accuracy: the largest output difference
of each reduced-precision stream from the float32 one over the same steps.

Shapes
------
step: x_t [1, 64] -> h [1, 128];  run: x [100, 64, 256] -> y [100, 64, 256]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List

import numpy as np

import rnnkit
from rnnkit import streaming


def timed_blocks(variants: Dict[str, Callable[[int], None]], per_block: int, rounds: int) -> Dict[str, List[float]]:
    """Mean seconds per call of each variant in each round (round 0 is a warm-up)."""
    out: Dict[str, List[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds + 1):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            variants[name](per_block)
            dt = (time.perf_counter() - t0) / per_block
            if r:
                out[name].append(dt)
    return out


def summarize(times: Dict[str, List[float]], unit: float, label: str) -> Dict[str, Dict[str, float]]:
    base = statistics.median(times["rnnkit float32"])
    res = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        res[name] = {"min": min(ts) * unit, "median": med * unit, "max": max(ts) * unit, "speedup_vs_f32": base / med}
        print(f"  {name:<26} {min(ts) * unit:9.2f} {med * unit:9.2f} {max(ts) * unit:9.2f}   "
              f"{base / med:5.2f}x  ({label})")
    return res


def step_row(cell: str, steps: int, rounds: int, torch_mod) -> Dict[str, object]:
    rng = np.random.default_rng(0)
    C, H = 64, 128
    G = 4 if cell == "lstm" else 3
    w = {"w_ih": rng.uniform(-0.2, 0.2, (G * H, C)).astype(np.float32),
         "w_hh": rng.uniform(-0.09, 0.09, (G * H, H)).astype(np.float32),
         "b_ih": rng.uniform(-0.1, 0.1, G * H).astype(np.float32),
         "b_hh": rng.uniform(-0.1, 0.1, G * H).astype(np.float32)}
    cls = streaming.LSTMStream if cell == "lstm" else streaming.GRUStream
    xs = rng.standard_normal((steps, 1, C)).astype(np.float32)
    streams = {p: cls(**w, precision=p) for p in streaming.PRECISIONS}
    variants: Dict[str, Callable[[int], None]] = {}
    for p, s in streams.items():
        def run(n: int, s=s) -> None:
            step = s.step
            for t in range(n):
                step(xs[t])
        variants[f"rnnkit {p}"] = run
    if torch_mod is not None:
        torch = torch_mod
        ref = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(C, H)
        with torch.no_grad():
            ref.weight_ih_l0.copy_(torch.from_numpy(w["w_ih"]))
            ref.weight_hh_l0.copy_(torch.from_numpy(w["w_hh"]))
            ref.bias_ih_l0.copy_(torch.from_numpy(w["b_ih"]))
            ref.bias_hh_l0.copy_(torch.from_numpy(w["b_hh"]))
        # quantize_dynamic swaps the children of the module it is given: hand it a container
        qref = torch.ao.quantization.quantize_dynamic(torch.nn.ModuleList([ref]), {type(ref)}, dtype=torch.qint8)[0]
        xt = torch.from_numpy(xs)  # [steps, 1, C]: one step is xt[t:t+1] (T = 1)

        for name, mod in (("torch float32", ref), ("torch quantize_dynamic int8", qref)):
            def run_t(n: int, mod=mod) -> None:
                state = None
                with torch.inference_mode():
                    for t in range(n):
                        _, state = mod(xt[t:t + 1], state)
            variants[name] = run_t
    times = timed_blocks(variants, steps, rounds)
    print(f"{cell.upper()}(64 -> 128) step at batch 1: min / median / max us per step, speed-up vs rnnkit float32")
    res = summarize(times, 1e6, "us/step")
    # accuracy: reduced precision against float32 over the same steps
    err = {}
    for p in ("bfloat16", "int8"):
        a, b = streams["float32"], streams[p]
        a.reset()
        b.reset()
        ya = a.run(xs[:500])
        yb = b.run(xs[:500])
        err[p] = float(np.abs(ya - yb).max())
    print(f"  largest |h - h_float32| over 500 steps: bfloat16 {err['bfloat16']:.1e}, int8 {err['int8']:.1e}")
    return {"times": res, "max_abs_err": err}


def run_row(rounds: int, torch_mod) -> Dict[str, object]:
    rng = np.random.default_rng(1)
    T, N, C, H = 100, 64, 256, 256
    w = {"w_ih": rng.uniform(-0.1, 0.1, (4 * H, C)).astype(np.float32),
         "w_hh": rng.uniform(-0.06, 0.06, (4 * H, H)).astype(np.float32),
         "b_ih": np.zeros(4 * H, np.float32), "b_hh": np.zeros(4 * H, np.float32)}
    x = rng.standard_normal((T, N, C)).astype(np.float32)
    streams = {p: streaming.LSTMStream(**w, batch_size=N, precision=p) for p in streaming.PRECISIONS}
    variants = {f"rnnkit {p}": (lambda n, s=s: [s.run(x) for _ in range(n)]) for p, s in streams.items()}
    if torch_mod is not None:
        torch = torch_mod
        ref = torch.nn.LSTM(C, H)
        with torch.no_grad():
            ref.weight_ih_l0.copy_(torch.from_numpy(w["w_ih"]))
            ref.weight_hh_l0.copy_(torch.from_numpy(w["w_hh"]))
            ref.bias_ih_l0.zero_()
            ref.bias_hh_l0.zero_()
        qref = torch.ao.quantization.quantize_dynamic(torch.nn.ModuleList([ref]), {torch.nn.LSTM}, dtype=torch.qint8)[0]
        xt = torch.from_numpy(x)

        for name, mod in (("torch float32", ref), ("torch quantize_dynamic int8", qref)):
            def run_t(n: int, mod=mod) -> None:
                with torch.inference_mode():
                    for _ in range(n):
                        mod(xt)
            variants[name] = run_t
    times = timed_blocks(variants, 5, rounds)
    print(f"LSTM chunk ({T}, {N}, {C}, {H}): min / median / max ms per chunk")
    return {"times": summarize(times, 1e3, "ms/chunk")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--json")
    a = ap.parse_args()
    rnnkit.set_num_threads(a.threads)
    try:
        import torch

        torch.set_num_threads(a.threads)
    except ImportError:
        torch = None
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    print(f"{platform.machine()}, {a.threads} thread(s), avx512_bf16={'avx512_bf16' in flags}, "
          f"avx512_vnni={'avx512_vnni' in flags}, load average {os.getloadavg()[0]:.2f}")
    out = {"threads": a.threads, "lstm_step": step_row("lstm", a.steps, a.blocks, torch),
           "gru_step": step_row("gru", a.steps, a.blocks, torch), "lstm_run": run_row(a.blocks, torch),
           "loadavg_end": os.getloadavg()}
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
