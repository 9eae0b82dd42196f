#!/usr/bin/env python3
"""Gradient checkpointing along time (``recompute``): training memory and time against T.

Usage::

    python bench/recompute.py [--T 1000 2000 5000 10000 20000] [--N 8] [--H 256] [--C 256]
                              [--reps 5] [--skip-memory] [--json out.json] [--plot bench/recompute.png]

One training call = an LSTM forward and backward over ``x: [T, N, C]`` float32 with a
gradient of ones, the input gradient included.

- **Memory**: each (library, variant, T) runs in a fresh process, which resets its peak resident
  set (``/proc/self/clear_refs``) after a warm-up and reports ``VmHWM - VmRSS``: what the call
  added at its peak (outputs, caches, gradients; the inputs excluded). Variants: rnnkit with the
  full cache, rnnkit ``recompute="sqrt"``, and ``torch.nn.LSTM`` (autograd keeps every step's
  activations) when torch is installed.
- **Time**: at the largest T, the full-cache and the checkpointed call alternate in one process
  in blocks (``--reps`` calls of one, then of the other; the first block of each is a warm-up),
  so a noisy stretch of the machine hits both and the OpenMP pool's spinning after one variant
  is not charged to the other. Reported: min / median / max and the ratio of the medians.

The gradients of both rnnkit variants are compared (largest relative difference).

Shapes
------
x: [T, N, C], y: [T, N, H]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np

CHILD = r"""
import sys
import numpy as np

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

lib, variant, T, N, C, H = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
rng = np.random.default_rng(0)
x = rng.standard_normal((T, N, C), dtype=np.float32)
if lib == "rnnkit":
    from rnnkit import _recurrent
    w = {"w_ih": rng.uniform(-0.1, 0.1, (4 * H, C)).astype(np.float32),
         "w_hh": rng.uniform(-0.1, 0.1, (4 * H, H)).astype(np.float32),
         "b_ih": np.zeros(4 * H, np.float32), "b_hh": np.zeros(4 * H, np.float32)}
    dy = np.ones((T, N, H), np.float32)
    recompute = None if variant == "full" else variant
    def call(t):
        run = _recurrent.forward("lstm", x[:t], w, recompute=recompute if t == T else None)
        _recurrent.backward("lstm", run.cache, dy[:t])
else:
    import torch
    torch.set_num_threads(int(sys.argv[7]))
    lstm = torch.nn.LSTM(C, H)
    xt = torch.from_numpy(x).requires_grad_()
    def call(t):
        y, _ = lstm(xt[:t])
        y.sum().backward()
call(4)  # warm-up: libraries loaded, thread pool started
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := VmRSS
before = status("VmRSS")
call(T)
print(status("VmHWM") - before)
"""


def peak_memory(lib: str, variant: str, T: int, N: int, C: int, H: int, threads: int) -> int:
    r = subprocess.run([sys.executable, "-c", CHILD, lib, variant, str(T), str(N), str(C), str(H), str(threads)],
                       capture_output=True, text=True, timeout=1200)
    if r.returncode != 0:
        raise RuntimeError(f"{lib} {variant} T={T} failed:\n{r.stderr[-2000:]}")
    return int(r.stdout.split()[-1])


def timing(T: int, N: int, C: int, H: int, reps: int) -> Dict[str, Dict[str, float]]:
    from rnnkit import _recurrent

    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, C), dtype=np.float32)
    w = {"w_ih": rng.uniform(-0.1, 0.1, (4 * H, C)).astype(np.float32),
         "w_hh": rng.uniform(-0.1, 0.1, (4 * H, H)).astype(np.float32),
         "b_ih": np.zeros(4 * H, np.float32), "b_hh": np.zeros(4 * H, np.float32)}
    dy = rng.standard_normal((T, N, H), dtype=np.float32)
    grads: Dict[str, Dict[str, np.ndarray]] = {}
    times: Dict[str, List[float]] = {"full": [], "sqrt": []}
    for block in range(4):  # full, sqrt, sqrt, full, ... (ABBA); block 0/1 are the warm-ups
        order = ["full", "sqrt"] if block % 2 == 0 else ["sqrt", "full"]
        for variant in order:
            for _ in range(reps):
                t0 = time.perf_counter()
                run = _recurrent.forward("lstm", x, w, recompute=None if variant == "full" else "sqrt")
                dx, _, g = _recurrent.backward("lstm", run.cache, dy)
                dt = time.perf_counter() - t0
                del run
                if block > 0:
                    times[variant].append(dt)
                grads[variant] = dict(g, dx=dx)
    rel = max(float(np.max(np.abs(grads["sqrt"][k] - grads["full"][k])) / max(float(np.max(np.abs(grads["full"][k]))), 1e-30))
              for k in grads["full"])
    out = {v: {"min_s": min(ts), "median_s": statistics.median(ts), "max_s": max(ts), "n": len(ts)}
           for v, ts in times.items()}
    out["ratio_of_medians"] = {"sqrt_over_full": out["sqrt"]["median_s"] / out["full"]["median_s"]}
    out["max_relative_grad_difference"] = {"value": rel}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, nargs="+", default=[1000, 2000, 5000, 10000, 20000])
    ap.add_argument("--N", type=int, default=8)
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--C", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-memory", action="store_true", help="only the timing at the largest T")
    ap.add_argument("--json")
    ap.add_argument("--plot")
    a = ap.parse_args()

    import rnnkit

    rnnkit.set_num_threads(a.threads)
    try:
        import torch  # noqa: F401
        libs = [("rnnkit", "full"), ("rnnkit", "sqrt"), ("torch", "full")]
    except ImportError:
        libs = [("rnnkit", "full"), ("rnnkit", "sqrt")]
    print(f"{platform.processor() or platform.machine()}, {a.threads} threads; LSTM float32 N={a.N} C={a.C} H={a.H}; "
          f"load average {os.getloadavg()[0]:.2f}")
    mem: Dict[str, Dict[int, int]] = {f"{lib} {v}": {} for lib, v in libs}
    if not a.skip_memory:
        print(f"{'T':>7} " + " ".join(f"{k + ' MB':>15}" for k in mem) + "   sqrt/full")
    for T in ([] if a.skip_memory else a.T):
        row = {}
        for lib, v in libs:
            row[f"{lib} {v}"] = mem[f"{lib} {v}"][T] = peak_memory(lib, v, T, a.N, a.C, a.H, a.threads)
        print(f"{T:>7} " + " ".join(f"{row[k] / 1e6:>15.1f}" for k in mem)
              + f"   {row['rnnkit sqrt'] / row['rnnkit full']:>8.1%}")
    Tmax = max(a.T)
    t = timing(Tmax, a.N, a.C, a.H, a.reps)
    for v in ("full", "sqrt"):
        s = t[v]
        print(f"time at T={Tmax} {v:>5}: min {s['min_s'] * 1e3:.0f} / median {s['median_s'] * 1e3:.0f} / "
              f"max {s['max_s'] * 1e3:.0f} ms ({s['n']} calls)")
    print(f"ratio of medians sqrt / full: {t['ratio_of_medians']['sqrt_over_full']:.2f}x; "
          f"largest relative gradient difference {t['max_relative_grad_difference']['value']:.1e}; "
          f"load average {os.getloadavg()[0]:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "memory_bytes": mem, "timing": t, "loadavg": os.getloadavg()}, f, indent=1)
    if a.plot and not a.skip_memory:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for k, series in mem.items():
            Ts = sorted(series)
            ax.loglog(Ts, [series[T] / 1e6 for T in Ts], "o-", label=k)
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("peak training memory (MB)")
        ax.set_title(f"LSTM forward + backward, N={a.N}, C={a.C}, H={a.H}, float32")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=100)
        print(f"wrote {a.plot}")


if __name__ == "__main__":
    main()
