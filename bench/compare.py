#!/usr/bin/env python3
"""rnnkit vs PyTorch on the CPU: one process, interleaved samples, same thread count.

Usage::

    python bench/compare.py [--quick] [--threads 1 2] [--samples 9] [--json out.json]
                            [--plot out.png] [--only lstm,gru,rnn,stream,fit,memory,denormal]

Sections (``--only`` picks a subset, comma separated):

- ``lstm``, ``gru``, ``rnn``: whole-sequence forward (``fwd``) and training step (``train`` =
  forward + backward giving input and weight gradients) over a (T, N, C, H) grid, at every thread
  count, against ``torch.nn.LSTM/GRU/RNN`` and (forward, when ``onnxruntime`` is installed) one
  ONNX ``LSTM``/``GRU``/``RNN`` node in ONNX Runtime with its default thread pool. NumPy's float32 matmul measured in the same run gives
  the sgemm ceiling used for the ``%sgemm`` column.
- ``stream``: per-step latency at batch 1 of ``rnnkit.streaming`` (``.step`` and ``.run`` over a
  chunk) against ``torch.nn.LSTMCell/GRUCell`` called step by step (and ``nn.LSTM/GRU`` over the
  same chunk, for reference), 1 thread.
- ``fit``: seconds per epoch of the seed Keras-style model in ``rnnkit.models.Sequential``,
  the same model as a plain PyTorch loop, Keras 3 with ``KERAS_BACKEND=torch``, and Keras 3 on
  JAX (when ``jax`` is installed; in a child process pinned to the same number of CPUs, driven
  epoch by epoch over a pipe so that it interleaves with the others).
- ``memory``: peak RSS increase of one LSTM training step at (100, 64, 512, 512), each library in
  a fresh subprocess.
- ``denormal``: LSTM forward at (100, 64, 256, 256) with ~1e-30 inputs and tiny weights (so the
  kernels meet subnormal numbers) against ordinary inputs.

Every timed comparison alternates the libraries (A, B, A, B, ...) after a warm-up, so a noisy
stretch of the machine hits both; the reported numbers are medians, with the min-max range next
to them. The grid alternates in blocks of about 30 ms: each library first makes one untimed call
(which absorbs the previous library's still-spinning thread pool), then its timed calls, whose
median is one sample. Libraries' pools spin for a while after a call (libgomp, ONNX Runtime), and
without the untimed call that spinning would be charged to whoever runs next. Inputs, weights and output gradients are created before the timed
region. Parts that need an API that is not there (``rnnkit.streaming``, ``rnnkit.models``, Keras)
are skipped with a printed note.
"""
from __future__ import annotations

import os

import sys

# Keras picks its backend when it is first imported: make it torch before anything can import it
# (the Keras-on-JAX worker, a child of this script, keeps the jax its parent set).
if "--_keras-jax-worker" not in sys.argv:
    os.environ["KERAS_BACKEND"] = "torch"

import argparse  # noqa: E402
import ctypes  # noqa: E402
import datetime as _dt  # noqa: E402
import gc  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple  # noqa: E402

import numpy as np  # noqa: E402

F32 = np.float32
GATES: Dict[str, int] = {"lstm": 4, "gru": 3, "rnn": 1}
CELL_NAMES: Dict[str, str] = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
SECTIONS: Tuple[str, ...] = ("lstm", "gru", "rnn", "cells", "stream", "fit", "memory", "denormal")

FULL_SHAPES: List[Tuple[int, int, int, int]] = [
    (100, 64, 256, 256), (100, 64, 512, 512), (50, 32, 128, 128), (200, 16, 64, 128), (100, 1, 256, 256),
]
QUICK_SHAPES: List[Tuple[int, int, int, int]] = [(50, 32, 128, 128), (100, 1, 256, 256)]
MEMORY_SHAPE: Tuple[int, int, int, int] = (100, 64, 512, 512)
DENORMAL_SHAPE: Tuple[int, int, int, int] = (100, 64, 256, 256)


def log(msg: str) -> None:
    """Progress output (stderr, so the tables on stdout stay clean)."""
    print(msg, file=sys.stderr, flush=True)


# =============================================================================================
# timing
# =============================================================================================

@dataclass
class Participant:
    """One contender of an interleaved measurement.

    ``fn`` is the timed work; ``before`` (untimed) runs before every call of ``fn``, e.g. to
    reset gradients or a carried state.
    """
    name: str
    fn: Callable[[], Any]
    before: Optional[Callable[[], Any]] = None


def interleaved(parts: Sequence[Participant], samples: int, warmup: int,
                block_seconds: float = 0.0) -> Dict[str, List[float]]:
    """Times every participant ``samples`` times, alternating A, B, A, B, ... after ``warmup``
    untimed rounds. Returns seconds per call, by name. The garbage collector is run between calls
    and kept off inside the timed regions.

    With ``block_seconds > 0`` the participants alternate in blocks: in every round each one
    first makes one untimed call (it absorbs the previous participant's thread pool, which may
    still be spinning, and refills the caches), then ``k`` timed calls in a row, ``k`` chosen
    from the last warm-up call so that a block lasts about ``block_seconds`` (1 to 25 calls).
    The sample is the block's median call. A library whose idle workers spin after a call thus
    never charges that spinning to the next library's timed calls."""
    out: Dict[str, List[float]] = {p.name: [] for p in parts}
    calls: Dict[str, int] = {p.name: 1 for p in parts}
    gc_was_enabled = gc.isenabled()

    def timed(p: Participant) -> float:
        if p.before is not None:
            p.before()
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        p.fn()
        t1 = time.perf_counter()
        gc.enable()
        return t1 - t0

    try:
        for rnd in range(max(warmup, 1 if block_seconds > 0 else 0) + samples):
            warm = rnd < max(warmup, 1 if block_seconds > 0 else 0)
            for p in parts:
                if block_seconds <= 0:
                    dt = timed(p)
                    if not warm:
                        out[p.name].append(dt)
                    continue
                settle = timed(p)  # untimed: absorbs the neighbour's spinning pool
                if warm:
                    calls[p.name] = int(min(25, max(1, np.ceil(block_seconds / max(settle, 1e-6)))))
                    continue
                out[p.name].append(float(np.median([timed(p) for _ in range(calls[p.name])])))
    finally:
        if gc_was_enabled:
            gc.enable()
        else:
            gc.disable()
    return out


def median(xs: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(xs))


def ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    """num / den, or None when either is missing."""
    if num is None or den is None or den == 0:
        return None
    return num / den


# =============================================================================================
# threads
# =============================================================================================

class BlasThreads:
    """Controls the thread count of NumPy's BLAS: with threadpoolctl when installed, else by
    calling OpenBLAS's ``*_set_num_threads`` found among the loaded libraries through ctypes."""

    _SYMBOLS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                "openblas_set_num_threads64_", "openblas_set_num_threads")

    def __init__(self) -> None:
        self.method = "none"
        self._setter: Optional[Callable[[int], None]] = None
        try:
            import threadpoolctl  # type: ignore[import-not-found]

            def _set(n: int) -> None:
                threadpoolctl.threadpool_limits(limits=n, user_api="blas")

            self._setter = _set
            self.method = f"threadpoolctl {threadpoolctl.__version__}"
            return
        except ImportError:
            pass
        for lib in loaded_libraries("openblas"):
            try:
                handle = ctypes.CDLL(lib)
            except OSError:
                continue
            for sym in self._SYMBOLS:
                fn = getattr(handle, sym, None)
                if fn is not None:
                    fn.argtypes = [ctypes.c_int]
                    fn.restype = None
                    self._setter = lambda n, fn=fn: fn(int(n))
                    self.method = f"ctypes {os.path.basename(lib)}:{sym} (threadpoolctl not installed)"
                    return
        self.method = "none: threadpoolctl not installed and no OpenBLAS symbol found; BLAS uses its default"

    def set(self, n: int) -> None:
        """Sets BLAS threads to ``n`` when a method is available."""
        if self._setter is not None:
            self._setter(n)


def loaded_libraries(needle: str) -> List[str]:
    """Shared libraries mapped into this process whose path contains ``needle``."""
    found: List[str] = []
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                if needle in os.path.basename(path) and path not in found:
                    found.append(path)
    except OSError:
        pass
    return found


class Threads:
    """Sets the same thread count for rnnkit, torch and NumPy's BLAS."""

    def __init__(self, rnnkit_mod: Any, torch_mod: Any) -> None:
        self.rk = rnnkit_mod
        self.torch = torch_mod
        self.blas = BlasThreads()

    def set(self, n: int) -> None:
        """Uses ``n`` threads everywhere."""
        self.rk.set_num_threads(n)
        self.torch.set_num_threads(n)
        self.blas.set(n)


# =============================================================================================
# machine description
# =============================================================================================

def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform.processor())."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> List[str]:
    """The SIMD-relevant CPU flags from /proc/cpuinfo."""
    wanted = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile", "f16c")
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def package_version(name: str) -> Optional[str]:
    """Installed version of a distribution, or None."""
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


def metadata(args: argparse.Namespace, rk: Any, torch: Any, threads: Threads) -> Dict[str, Any]:
    """Everything needed to read the numbers later: machine, versions, settings."""
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "argv": sys.argv,
        "quick": bool(args.quick),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "rnnkit": getattr(rk, "__version__", None),
        "rnnkit_build_info": rk.build_info(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "keras": package_version("keras"),
        "threadpoolctl": package_version("threadpoolctl"),
        "blas_thread_control": threads.blas.method,
        "openmp_libraries": loaded_libraries("omp"),
        "blas_libraries": loaded_libraries("blas"),
        "env": {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_PROC_BIND",
                                            "OMP_PLACES", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS") if k in os.environ},
        "threads": list(args.threads),
        "shapes": [list(sh) for sh in (args.shapes or (QUICK_SHAPES if args.quick else FULL_SHAPES))],
        "samples": args.samples,
        "warmup": args.warmup,
        "dtype": "float32",
    }


# =============================================================================================
# sgemm ceiling
# =============================================================================================

def bench_sgemm(n: int, samples: int, warmup: int) -> List[float]:
    """Seconds per float32 ``n x n @ n x n`` with NumPy (preallocated output)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=F32)
    b = rng.standard_normal((n, n), dtype=F32)
    c = np.empty((n, n), dtype=F32)
    res = interleaved([Participant("sgemm", lambda: np.matmul(a, b, out=c))], samples, warmup)
    time.sleep(0.2)  # let OpenBLAS's worker threads stop spinning before the next measurement
    return res["sgemm"]


# =============================================================================================
# whole-sequence grid
# =============================================================================================

def init_weights(rng: np.random.Generator, G: int, C: int, H: int, scale: float = 1.0) -> Dict[str, np.ndarray]:
    """PyTorch's default initialisation, uniform(-1/sqrt(H), 1/sqrt(H)), times ``scale``."""
    k = 1.0 / np.sqrt(H)

    def u(*shape: int) -> np.ndarray:
        return (rng.uniform(-k, k, size=shape) * scale).astype(F32)

    return {"w_ih": u(G * H, C), "w_hh": u(G * H, H), "b_ih": u(G * H), "b_hh": u(G * H)}


def torch_rnn_module(torch: Any, cell: str, C: int, H: int, w: Dict[str, np.ndarray]) -> Any:
    """``torch.nn.LSTM/GRU/RNN`` (time-major, one layer) holding the weights ``w``."""
    nn = torch.nn
    if cell == "lstm":
        mod = nn.LSTM(C, H)
    elif cell == "gru":
        mod = nn.GRU(C, H)
    else:
        mod = nn.RNN(C, H, nonlinearity="tanh")
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.from_numpy(w["w_ih"]))
        mod.weight_hh_l0.copy_(torch.from_numpy(w["w_hh"]))
        mod.bias_ih_l0.copy_(torch.from_numpy(w["b_ih"]))
        mod.bias_hh_l0.copy_(torch.from_numpy(w["b_hh"]))
    return mod


def rnnkit_forward(fn_mod: Any, cell: str, x: np.ndarray, h0: np.ndarray, c0: np.ndarray,
                   w: Dict[str, np.ndarray]) -> Tuple[np.ndarray, Any]:
    """Runs the rnnkit forward for ``cell``; returns (y, cache)."""
    if cell == "lstm":
        out = fn_mod.lstm_forward(x, h0, c0, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
        return out.y, out.cache
    if cell == "gru":
        out = fn_mod.gru_forward(x, h0, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
        return out.y, out.cache
    out = fn_mod.rnn_forward(x, h0, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], nonlinearity="tanh")
    return out.y, out.cache


def rnnkit_backward(fn_mod: Any, cell: str, cache: Any, dy: np.ndarray) -> Any:
    """Runs the rnnkit backward for ``cell``; returns the gradients."""
    return {"lstm": fn_mod.lstm_backward, "gru": fn_mod.gru_backward, "rnn": fn_mod.rnn_backward}[cell](cache, dy)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max|b|: how far rnnkit's result is from torch's."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64).reshape(np.shape(a))
    return float(np.max(np.abs(a64 - b64)) / max(float(np.max(np.abs(b64))), 1e-12))


def forward_flops(T: int, N: int, C: int, H: int, G: int) -> float:
    """2*T*N*(C+H)*G*H: the multiply-adds of the two GEMMs of a forward pass."""
    return 2.0 * T * N * (C + H) * G * H


# Blocks of about this long per participant and round in the grid (see ``interleaved``).
GRID_BLOCK_SECONDS = 0.03


def ort_rnn_session(cell: str, shape: Tuple[int, int, int, int], w: Dict[str, np.ndarray],
                    threads: int, notes: List[str]) -> Optional[Any]:
    """An ONNX Runtime session of one ONNX ``LSTM``/``GRU``/``RNN`` node holding the weights ``w``
    (GRU with ``linear_before_reset=1``, PyTorch's form), input X: [T, N, C] -> Y: [T, 1, N, H];
    ``threads`` intra-op threads, ORT's default (spinning) pool. None when onnxruntime is absent."""
    try:
        import onnxruntime as ort  # type: ignore[import-not-found]
        from onnx import TensorProto, helper, numpy_helper  # type: ignore[import-not-found]
    except ImportError as e:
        notes.append(f"grid: onnxruntime/onnx not importable ({e}); ONNX Runtime column skipped")
        return None
    from rnnkit._layouts import stack_onnx  # the one gate-order table

    T, N, C, H = shape
    st = stack_onnx(cell, [w])
    attrs: Dict[str, Any] = {"hidden_size": H}
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    node = helper.make_node({"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[cell], ["X", "W", "R", "B"], ["Y"], **attrs)
    graph = helper.make_graph(
        [node], "rnn", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, N, C])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(st[k]), k) for k in ("W", "R", "B")])
    opsets = [helper.make_opsetid("", 14)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def bench_grid_case(rk: Any, torch: Any, cell: str, mode: str, shape: Tuple[int, int, int, int],
                    samples: int, warmup: int, threads: int = 1,
                    notes: Optional[List[str]] = None) -> Dict[str, Any]:
    """One (cell, mode, shape) comparison at the current thread count: rnnkit against torch.nn,
    and in ``fwd`` mode against ONNX Runtime too (when installed), in blocks (``interleaved``)."""
    F = rk.functional
    T, N, C, H = shape
    G = GATES[cell]
    rng = np.random.default_rng(1234)
    w = init_weights(rng, G, C, H)
    x = rng.standard_normal((T, N, C), dtype=F32)
    dy = rng.standard_normal((T, N, H), dtype=F32)
    h0 = np.zeros((N, H), F32)
    c0 = np.zeros((N, H), F32)

    mod = torch_rnn_module(torch, cell, C, H, w)
    xt = torch.from_numpy(x.copy())
    dyt = torch.from_numpy(dy.copy())
    hx: Any = (torch.zeros(1, N, H), torch.zeros(1, N, H)) if cell == "lstm" else torch.zeros(1, N, H)
    params = list(mod.parameters())

    sess = None
    if mode == "fwd":
        def rk_fn() -> None:
            rnnkit_forward(F, cell, x, h0, c0, w)

        def th_fn() -> None:
            with torch.no_grad():
                mod(xt, hx)

        th_before = None
        # correctness check of what is timed
        y_rk, _ = rnnkit_forward(F, cell, x, h0, c0, w)
        with torch.no_grad():
            y_th = mod(xt, hx)[0].numpy()
        err = rel_err(y_rk, y_th)
        sess = ort_rnn_session(cell, shape, w, threads, notes if notes is not None else [])
        if sess is not None:
            feed = {"X": x}

            def ort_fn() -> None:
                sess.run(None, feed)

            err = max(err, rel_err(y_rk, sess.run(None, feed)[0][:, 0]))
    else:
        xt.requires_grad_(True)

        def rk_fn() -> None:
            _, cache = rnnkit_forward(F, cell, x, h0, c0, w)
            rnnkit_backward(F, cell, cache, dy)

        def th_zero() -> None:
            xt.grad = None
            for p in params:
                p.grad = None

        def th_fn() -> None:
            y, _ = mod(xt, hx)
            y.backward(dyt)

        th_before = th_zero
        _, cache = rnnkit_forward(F, cell, x, h0, c0, w)
        g = rnnkit_backward(F, cell, cache, dy)
        th_zero()
        th_fn()
        err = max(rel_err(g.dw_hh, mod.weight_hh_l0.grad.numpy()), rel_err(g.dw_ih, mod.weight_ih_l0.grad.numpy()),
                  rel_err(g.dx, xt.grad.numpy()))

    parts = [Participant("rnnkit", rk_fn), Participant("torch", th_fn, th_before)]
    if mode == "fwd" and sess is not None:
        parts.append(Participant("ort", ort_fn))
    res = interleaved(parts, samples, warmup, GRID_BLOCK_SECONDS)
    flops = forward_flops(T, N, C, H, G) * (3.0 if mode == "train" else 1.0)
    return {"cell": CELL_NAMES[cell], "mode": mode, "T": T, "N": N, "C": C, "H": H, "flops": flops,
            "max_rel_err": err, "rnnkit_s": res["rnnkit"], "torch_s": res["torch"], "ort_s": res.get("ort")}


def summarize_grid(row: Dict[str, Any], sgemm_gflops: Optional[float]) -> Dict[str, Any]:
    """Adds medians, ratio, GFLOP/s and % of sgemm to a grid row."""
    rk_m, th_m = median(row["rnnkit_s"]), median(row["torch_s"])
    gf = row["flops"] / rk_m / 1e9
    row.update({
        "rnnkit_median_ms": rk_m * 1e3, "torch_median_ms": th_m * 1e3,
        "rnnkit_min_ms": min(row["rnnkit_s"]) * 1e3, "rnnkit_max_ms": max(row["rnnkit_s"]) * 1e3,
        "torch_min_ms": min(row["torch_s"]) * 1e3, "torch_max_ms": max(row["torch_s"]) * 1e3,
        "ratio": th_m / rk_m,
        "ort_median_ms": None if not row.get("ort_s") else median(row["ort_s"]) * 1e3,
        "ratio_ort": None if not row.get("ort_s") else median(row["ort_s"]) / rk_m,
        "rnnkit_gflops": gf, "torch_gflops": row["flops"] / th_m / 1e9,
        "sgemm_gflops": sgemm_gflops,
        "pct_sgemm": None if not sgemm_gflops else 100.0 * gf / sgemm_gflops,
    })
    return row


# =============================================================================================
# more cells: LSTMP, LayerNorm LSTM, GRU reset_after=False, against their nearest torch equivalent;
# and the per-step cost of LayerNorm and zoneout against the plain LSTM (rnnkit only)
# =============================================================================================

CELL_VARIANTS: Tuple[str, ...] = ("lstmp", "lstm_ln", "gru_v1")
CELL_VARIANT_NAMES: Dict[str, str] = {
    "lstmp": "LSTMP (P=H/2)", "lstm_ln": "LayerNorm LSTM", "gru_v1": "GRU reset_after=False"}
CELL_VARIANT_REFS: Dict[str, str] = {
    "lstmp": "torch.nn.LSTM(proj_size=H/2)",
    "lstm_ln": "torch loop, nn.LayerNorm (haste's comparison)",
    "gru_v1": "torch.nn.GRU (its only form: reset after)"}


def _torch_ln_lstm(torch: Any, w: Dict[str, np.ndarray], H: int) -> Callable[[Any, Any, Any], Any]:
    """A LayerNorm LSTM written with torch ops the way haste users compare against: the input
    products of all steps as one matmul + LayerNorm, then a Python loop of the recurrent matmul,
    LayerNorm and the gates. Returns ``f(x, h0, c0) -> y``."""
    nn = torch.nn
    ln_x, ln_h, ln_c = nn.LayerNorm(4 * H), nn.LayerNorm(4 * H), nn.LayerNorm(H)
    w_ih, w_hh = torch.from_numpy(w["w_ih"]), torch.from_numpy(w["w_hh"])
    b = torch.from_numpy(w["b_ih"] + w["b_hh"])
    params = [w_ih, w_hh, b] + list(ln_x.parameters()) + list(ln_h.parameters()) + list(ln_c.parameters())

    def f(x: Any, h: Any, c: Any) -> Any:
        gx = ln_x(x @ w_ih.T)
        ys = []
        for t in range(x.shape[0]):
            a = gx[t] + ln_h(h @ w_hh.T) + b
            i, f_, g, o = a.chunk(4, dim=1)
            c = f_.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * torch.tanh(ln_c(c))
            ys.append(h)
        return torch.stack(ys)

    f.params = params  # type: ignore[attr-defined]
    return f


def bench_cells_case(rk: Any, torch: Any, variant: str, mode: str, shape: Tuple[int, int, int, int],
                     samples: int, warmup: int) -> Dict[str, Any]:
    """One (variant, mode, shape) comparison at the current thread count: rnnkit's fused kernel
    against the nearest torch equivalent (CELL_VARIANT_REFS), interleaved."""
    F = rk.functional
    T, N, C, H = shape
    G = 3 if variant == "gru_v1" else 4
    P = H // 2
    rng = np.random.default_rng(4321)
    w = init_weights(rng, G, C, H)
    if variant == "lstmp":
        k = 1.0 / np.sqrt(H)
        w["w_hh"] = rng.uniform(-k, k, (G * H, P)).astype(F32)
        w["w_hr"] = rng.uniform(-k, k, (P, H)).astype(F32)
    if variant == "gru_v1":
        w["b_hh"] = None
    Hs = P if variant == "lstmp" else H
    x = rng.standard_normal((T, N, C), dtype=F32)
    dy = rng.standard_normal((T, N, Hs), dtype=F32)
    xt = torch.from_numpy(x.copy())
    dyt = torch.from_numpy(dy.copy())

    if variant == "lstmp":
        mod = torch.nn.LSTM(C, H, proj_size=P)
        with torch.no_grad():
            for name, key in (("weight_ih_l0", "w_ih"), ("weight_hh_l0", "w_hh"), ("bias_ih_l0", "b_ih"),
                              ("bias_hh_l0", "b_hh"), ("weight_hr_l0", "w_hr")):
                getattr(mod, name).copy_(torch.from_numpy(w[key]))
        th_call = lambda: mod(xt)[0]  # noqa: E731
        th_params = list(mod.parameters())
        fwd = lambda: F.lstm_forward(x, None, None, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], w_hr=w["w_hr"])  # noqa: E731
        bwd = F.lstm_backward
        check = True
    elif variant == "lstm_ln":
        f = _torch_ln_lstm(torch, w, H)
        zeros = torch.zeros(N, H)
        th_call = lambda: f(xt, zeros, zeros)  # noqa: E731
        th_params = f.params
        fwd = lambda: F.layernorm_lstm_forward(x, None, None, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])  # noqa: E731
        bwd = F.layernorm_lstm_backward
        check = True
    else:
        mod = torch_rnn_module(torch, "gru", C, H, {**w, "b_hh": np.zeros(G * H, F32)})
        th_call = lambda: mod(xt)[0]  # noqa: E731
        th_params = list(mod.parameters())
        fwd = lambda: F.gru_forward(x, None, w["w_ih"], w["w_hh"], w["b_ih"], None, reset_after=False)  # noqa: E731
        bwd = F.gru_backward
        check = False  # another formulation: outputs differ by design

    err = None
    if check:
        with torch.no_grad():
            err = rel_err(fwd().y, th_call().numpy())
    if mode == "fwd":
        def rk_fn() -> None:
            fwd()

        def th_fn() -> None:
            with torch.no_grad():
                th_call()
        th_before = None
    else:
        xt.requires_grad_(True)
        for p in th_params:
            p.requires_grad_(True)

        def rk_fn() -> None:
            bwd(fwd().cache, dy)

        def th_zero() -> None:
            xt.grad = None
            for p in th_params:
                p.grad = None

        def th_fn() -> None:
            th_call().backward(dyt)
        th_before = th_zero

    res = interleaved([Participant("rnnkit", rk_fn), Participant("torch", th_fn, th_before)], samples, warmup)
    flops = 2.0 * T * N * G * H * (C + Hs) + (2.0 * T * N * H * P if variant == "lstmp" else 0.0)
    flops *= 3.0 if mode == "train" else 1.0
    return {"cell": CELL_VARIANT_NAMES[variant], "torch_ref": CELL_VARIANT_REFS[variant], "mode": mode,
            "T": T, "N": N, "C": C, "H": H, "flops": flops,
            "max_rel_err": -1.0 if err is None else err, "rnnkit_s": res["rnnkit"], "torch_s": res["torch"]}


def bench_cell_costs(rk: Any, shape: Tuple[int, int, int, int], samples: int, warmup: int) -> Dict[str, Any]:
    """The per-step cost of LayerNorm and of zoneout against the plain LSTM, forward + backward,
    rnnkit only, interleaved in one run (so the ratios mean something on a noisy machine)."""
    F = rk.functional
    T, N, C, H = shape
    rng = np.random.default_rng(99)
    w = init_weights(rng, 4, C, H)
    x = rng.standard_normal((T, N, C), dtype=F32)
    dy = rng.standard_normal((T, N, H), dtype=F32)
    zh = (rng.random((T, N, H)) < 0.1).astype(F32)
    zc = (rng.random((T, N, H)) < 0.5).astype(F32)
    args = (x, None, None, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
    variants = {
        "plain": lambda: F.lstm_backward(F.lstm_forward(*args).cache, dy),
        "layer_norm": lambda: F.layernorm_lstm_backward(F.layernorm_lstm_forward(*args).cache, dy),
        "zoneout h+c (masks)": lambda: F.lstm_backward(F.lstm_forward(*args, zoneout_h=zh, zoneout_c=zc).cache, dy),
    }
    res = interleaved([Participant(k, v) for k, v in variants.items()], samples, warmup)
    base = median(res["plain"])
    return {"T": T, "N": N, "C": C, "H": H, "seconds": res,
            "us_per_step": {k: median(v) / T * 1e6 for k, v in res.items()},
            "ratio_to_plain": {k: median(v) / base for k, v in res.items()}}


# =============================================================================================
# streaming
# =============================================================================================

def bench_stream(rk: Any, torch: Any, steps: int, chunk: int, samples: int, warmup: int,
                 notes: List[str]) -> List[Dict[str, Any]]:
    """Batch-1 per-step latency: rnnkit.streaming .step / .run vs torch cells, 1 thread."""
    try:
        import rnnkit.streaming as rks  # type: ignore[import-not-found]
    except ImportError as e:
        rks = None
        notes.append(f"stream: rnnkit.streaming not importable ({e}); only torch was measured")
        log(f"NOTE: {notes[-1]}")
    C, H = 64, 128
    rows: List[Dict[str, Any]] = []
    for cell in ("lstm", "gru"):
        G = GATES[cell]
        rng = np.random.default_rng(99)
        w = init_weights(rng, G, C, H)
        xs = rng.standard_normal((steps, 1, C), dtype=F32)
        x_steps = [xs[t] for t in range(steps)]                       # [1, C] views
        x_chunks = [xs[i:i + chunk] for i in range(0, steps, chunk)]  # [chunk, 1, C] views
        xts = torch.from_numpy(xs.copy())
        xt_steps = [xts[t] for t in range(steps)]
        xt_chunks = [xts[i:i + chunk] for i in range(0, steps, chunk)]

        torch_cell = (torch.nn.LSTMCell if cell == "lstm" else torch.nn.GRUCell)(C, H)
        seq = torch_rnn_module(torch, cell, C, H, w)
        with torch.no_grad():
            torch_cell.weight_ih.copy_(torch.from_numpy(w["w_ih"]))
            torch_cell.weight_hh.copy_(torch.from_numpy(w["w_hh"]))
            torch_cell.bias_ih.copy_(torch.from_numpy(w["b_ih"]))
            torch_cell.bias_hh.copy_(torch.from_numpy(w["b_hh"]))

        state: Dict[str, Any] = {}

        def th_reset() -> None:
            z = torch.zeros(1, H)
            state["cell"] = (z, z.clone()) if cell == "lstm" else z
            z3 = torch.zeros(1, 1, H)
            state["seq"] = (z3, z3.clone()) if cell == "lstm" else z3

        def th_cell_loop() -> None:
            s = state["cell"]
            with torch.no_grad():
                for xt in xt_steps:  # LSTMCell returns (h, c), GRUCell h: both are the next state
                    s = torch_cell(xt, s)
            state["cell"] = s

        def th_seq_loop() -> None:
            s = state["seq"]
            with torch.no_grad():
                for xc in xt_chunks:
                    _, s = seq(xc, s)
            state["seq"] = s

        parts = [Participant("torch_cell", th_cell_loop, th_reset),
                 Participant("torch_seq", th_seq_loop, th_reset)]
        err: Optional[float] = None
        if rks is not None:
            cls = getattr(rks, "LSTMStream" if cell == "lstm" else "GRUStream")
            stream = cls(w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], batch_size=1)

            def rk_step_loop() -> None:
                for xt in x_steps:
                    stream.step(xt)

            def rk_run_loop() -> None:
                for xc in x_chunks:
                    stream.run(xc)

            parts = [Participant("rnnkit_step", rk_step_loop, stream.reset),
                     Participant("rnnkit_run", rk_run_loop, stream.reset)] + parts
            # check: the first steps agree with the torch cell
            stream.reset()
            th_reset()
            s = state["cell"]
            e = 0.0
            with torch.no_grad():
                for t in range(min(steps, 5)):
                    h_rk = np.asarray(stream.step(x_steps[t]))
                    s = torch_cell(xt_steps[t], s)
                    h_th = (s[0] if cell == "lstm" else s).numpy()
                    e = max(e, rel_err(h_rk, h_th))
            err = e
            stream.reset()

        res = interleaved(parts, samples, warmup)
        us = {k: [v / steps * 1e6 for v in vs] for k, vs in res.items()}
        comparisons = [("step", "rnnkit_step", "torch_cell"), ("run", "rnnkit_run", "torch_cell"),
                       ("run", "rnnkit_run", "torch_seq")]
        for mode, rk_name, th_name in comparisons:
            rk_us = us.get(rk_name)
            th_us = us[th_name]
            rk_m = median(rk_us) if rk_us else None
            th_m = median(th_us)
            rows.append({
                "cell": CELL_NAMES[cell], "mode": mode if mode == "step" else f"run({chunk})",
                "torch_ref": "LSTMCell" if th_name == "torch_cell" and cell == "lstm" else
                             "GRUCell" if th_name == "torch_cell" else
                             f"nn.{CELL_NAMES[cell]}({chunk})",
                "C": C, "H": H, "steps_per_sample": steps, "threads": 1,
                "rnnkit_us": rk_us, "torch_us": th_us,
                "rnnkit_median_us": rk_m, "torch_median_us": th_m,
                "rnnkit_min_us": min(rk_us) if rk_us else None, "rnnkit_max_us": max(rk_us) if rk_us else None,
                "torch_min_us": min(th_us), "torch_max_us": max(th_us),
                "ratio": ratio(th_m, rk_m), "max_rel_err": err,
            })
    return rows


# =============================================================================================
# end-to-end fit
# =============================================================================================

def fit_data(n: int, T: int = 50, C: int = 32, classes: int = 10) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random inputs [n, T, C], integer labels [n, T] and their one-hot [n, T, classes]."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((n, T, C), dtype=F32)
    labels = rng.integers(0, classes, size=(n, T))
    Y = np.eye(classes, dtype=F32)[labels]
    return X, labels, Y


def make_rnnkit_fit(X: np.ndarray, Y: np.ndarray, batch: int, notes: List[str]) -> Optional[Tuple[Callable[[], Any], Callable[[], Any]]]:
    """(epoch, warm-up) callables for the seed model in rnnkit.models, or None when absent."""
    try:
        from rnnkit.layers import LSTM, Dense  # type: ignore[attr-defined]
        from rnnkit.models import Sequential  # type: ignore[import-not-found]
    except ImportError as e:
        notes.append(f"fit: rnnkit.models / rnnkit.layers.LSTM, Dense not importable ({e}); rnnkit part skipped")
        log(f"NOTE: {notes[-1]}")
        return None
    T, C = X.shape[1], X.shape[2]
    model = Sequential()
    model.add(LSTM(64, return_sequences=True, input_shape=(T, C)))
    model.add(LSTM(32, return_sequences=True))
    model.add(Dense(10, activation="softmax"))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    kw: Dict[str, Any] = {"epochs": 1, "batch_size": batch, "verbose": 0}
    try:
        if "shuffle" in inspect.signature(model.fit).parameters:
            kw["shuffle"] = False
    except (TypeError, ValueError):
        pass
    Xw, Yw = X[:2 * batch], Y[:2 * batch]
    return (lambda: model.fit(X, Y, **kw)), (lambda: model.fit(Xw, Yw, **kw))


def make_keras_fit(X: np.ndarray, Y: np.ndarray, batch: int, notes: List[str]) -> Optional[Tuple[Callable[[], Any], Callable[[], Any]]]:
    """(epoch, warm-up) callables for the seed model in Keras 3 on the torch backend, or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import keras  # type: ignore[import-not-found]
    except Exception as e:  # ImportError, or a broken backend
        notes.append(f"fit: keras not importable ({type(e).__name__}: {e}); Keras part skipped")
        log(f"NOTE: {notes[-1]}")
        return None
    if keras.backend.backend() != "torch":
        notes.append(f"fit: keras backend is {keras.backend.backend()!r}, not torch; Keras part skipped")
        log(f"NOTE: {notes[-1]}")
        return None
    T, C = X.shape[1], X.shape[2]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(shape=(T, C)),
        keras.layers.LSTM(64, return_sequences=True),
        keras.layers.LSTM(32, return_sequences=True),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    kw = {"epochs": 1, "batch_size": batch, "verbose": 0, "shuffle": False}
    Xw, Yw = X[:2 * batch], Y[:2 * batch]
    return (lambda: model.fit(X, Y, **kw)), (lambda: model.fit(Xw, Yw, **kw))


class KerasJaxWorker:
    """Keras 3 on the JAX backend in a child process (a process has one Keras backend, and this
    one's is torch), driven over a pipe so that its epochs interleave with the others'. The child
    is pinned to ``threads`` CPUs (``os.sched_setaffinity``), which bounds XLA's thread pool."""

    def __init__(self, n: int, batch: int, threads: int) -> None:
        env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--_keras-jax-worker", f"{n},{batch},{threads}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        line = self._read()
        if line != "ready":
            self.close()
            raise RuntimeError(f"Keras-JAX worker did not start: {line!r}")

    def _read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def epoch(self) -> None:
        """One timed epoch in the child (warm-up included in the constructor)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("epoch\n")
        self.proc.stdin.flush()
        if self._read() != "done":
            raise RuntimeError("Keras-JAX worker failed during an epoch")

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()


def keras_jax_worker(spec: str) -> None:
    """The child of ``KerasJaxWorker``: builds the seed model in Keras 3 (JAX backend), runs a
    warm-up epoch (XLA compiles), then one epoch per ``epoch`` line on stdin."""
    n, batch, threads = (int(v) for v in spec.split(","))
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import keras  # type: ignore[import-not-found]
        assert keras.backend.backend() == "jax", keras.backend.backend()
        X, _, Y = fit_data(n)
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input(shape=(X.shape[1], X.shape[2])),
            keras.layers.LSTM(64, return_sequences=True),
            keras.layers.LSTM(32, return_sequences=True),
            keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        kw = {"epochs": 1, "batch_size": batch, "verbose": 0, "shuffle": False}
        model.fit(X, Y, **kw)  # compiles the train step for the full and the last batch
    except Exception as e:  # reported to the parent as the first line
        print(f"error {type(e).__name__}: {e}", flush=True)
        return
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "epoch":
            break
        model.fit(X, Y, **kw)
        print("done", flush=True)


def make_torch_fit(torch: Any, X: np.ndarray, labels: np.ndarray, batch: int) -> Tuple[Callable[[], Any], Callable[[], Any]]:
    """(epoch, warm-up) callables for the seed model as a plain PyTorch loop: nn.LSTM x2 +
    nn.Linear, batch-first, Adam (Keras's defaults: lr 1e-3, eps 1e-7), cross-entropy averaged
    over batch and time, accuracy tracked like Keras's metric; the same batches in order."""
    nn = torch.nn
    T, C = X.shape[1], X.shape[2]

    class Seed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1 = nn.LSTM(C, 64, batch_first=True)
            self.l2 = nn.LSTM(64, 32, batch_first=True)
            self.fc = nn.Linear(32, 10)

        def forward(self, x: Any) -> Any:
            y, _ = self.l1(x)
            y, _ = self.l2(y)
            return self.fc(y)

    torch.manual_seed(0)
    model = Seed()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    Xt = torch.from_numpy(X)
    Lt = torch.from_numpy(labels.astype(np.int64))
    batches = [(Xt[i:i + batch], Lt[i:i + batch]) for i in range(0, X.shape[0], batch)]

    def run(bs: List[Tuple[Any, Any]]) -> float:
        correct = torch.zeros((), dtype=torch.int64)
        total = 0
        for xb, lb in bs:
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits.reshape(-1, 10), lb.reshape(-1))
            loss.backward()
            opt.step()
            with torch.no_grad():
                correct += (logits.argmax(-1) == lb).sum()
            total += lb.numel()
        return float(correct) / max(total, 1)

    return (lambda: run(batches)), (lambda: run(batches[:2]))


def bench_fit(rk: Any, torch: Any, n: int, epochs: int, batch: int, threads: int,
              notes: List[str]) -> Dict[str, Any]:
    """Seconds per epoch of the seed model for rnnkit, PyTorch, Keras(torch) and Keras(JAX, in a
    child process), interleaved epoch by epoch."""
    X, labels, Y = fit_data(n)
    parts: List[Participant] = []
    makers = [("rnnkit", lambda: make_rnnkit_fit(X, Y, batch, notes)),
              ("torch", lambda: make_torch_fit(torch, X, labels, batch)),
              ("keras", lambda: make_keras_fit(X, Y, batch, notes))]
    for name, mk in makers:
        made = mk()
        if made is None:
            continue
        epoch, warm = made
        warm()  # builds the model and the optimizer state
        parts.append(Participant(name, epoch))
    worker: Optional[KerasJaxWorker] = None
    try:
        import jax  # noqa: F401  # type: ignore[import-not-found]
        worker = KerasJaxWorker(n, batch, threads)
        parts.append(Participant("keras_jax", worker.epoch))
    except Exception as e:  # ImportError, or the child failed
        notes.append(f"fit: Keras on JAX skipped ({type(e).__name__}: {e})")
        log(f"NOTE: {notes[-1]}")
    try:
        res = interleaved(parts, epochs, warmup=0)
    finally:
        if worker is not None:
            worker.close()
    med = {k: median(v) for k, v in res.items()}
    return {
        "samples": n, "T": 50, "C": 32, "batch": batch, "epochs_timed": epochs,
        "seconds": res, "median_s": med,
        "ratio_torch": ratio(med.get("torch"), med.get("rnnkit")),
        "ratio_keras": ratio(med.get("keras"), med.get("rnnkit")),
        "ratio_keras_jax": ratio(med.get("keras_jax"), med.get("rnnkit")),
    }


# =============================================================================================
# peak memory (subprocesses)
# =============================================================================================

def _rss_kib(field_name: str) -> Optional[int]:
    """A VmRSS / VmHWM line of /proc/self/status, in KiB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def memory_child(lib: str, threads: int) -> None:
    """Runs in a fresh process: builds the inputs, then measures the peak RSS increase of one
    (and then a second) LSTM training step at MEMORY_SHAPE. Prints one JSON line."""
    T, N, C, H = MEMORY_SHAPE
    rng = np.random.default_rng(5)
    w = init_weights(rng, 4, C, H)
    x = rng.standard_normal((T, N, C), dtype=F32)
    dy = rng.standard_normal((T, N, H), dtype=F32)
    h0 = np.zeros((N, H), F32)
    c0 = np.zeros((N, H), F32)
    if lib == "rnnkit":
        import rnnkit
        rnnkit.set_num_threads(threads)
        Fm = rnnkit.functional

        def step() -> None:
            out = Fm.lstm_forward(x, h0, c0, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
            Fm.lstm_backward(out.cache, dy)
    else:
        import torch
        torch.set_num_threads(threads)
        mod = torch_rnn_module(torch, "lstm", C, H, w)
        xt = torch.from_numpy(x).requires_grad_(True)
        dyt = torch.from_numpy(dy)
        hx = (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None])
        params = list(mod.parameters())

        def step() -> None:
            xt.grad = None
            for p in params:
                p.grad = None
            y, _ = mod(xt, hx)
            y.backward(dyt)

    gc.collect()
    out: Dict[str, Any] = {"lib": lib, "threads": threads, "shape": list(MEMORY_SHAPE)}
    for k in ("first", "second"):
        gc.collect()
        reset_ok = _reset_peak_rss()
        rss0 = _rss_kib("VmRSS")
        ru0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        ru1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        hwm1 = _rss_kib("VmHWM")
        out[f"{k}_ru_maxrss_delta_mib"] = (ru1 - ru0) / 1024.0
        if reset_ok and rss0 is not None and hwm1 is not None:
            out[f"{k}_peak_delta_mib"] = (hwm1 - rss0) / 1024.0
            out["method"] = "VmHWM reset via /proc/self/clear_refs, minus VmRSS before the step"
        else:
            out[f"{k}_peak_delta_mib"] = out[f"{k}_ru_maxrss_delta_mib"]
            out["method"] = "ru_maxrss after - before"
    print(json.dumps(out), flush=True)


def bench_memory(threads: int, notes: List[str]) -> List[Dict[str, Any]]:
    """Runs :func:`memory_child` for each library in a fresh interpreter."""
    rows: List[Dict[str, Any]] = []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for lib in ("rnnkit", "torch"):
        cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", lib, "--threads", str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            notes.append(f"memory: {lib} child failed (rc={proc.returncode}): {proc.stderr.strip()[-400:]}")
            log(f"NOTE: {notes[-1]}")
    return rows


# =============================================================================================
# denormals
# =============================================================================================

def bench_denormal(rk: Any, torch: Any, samples: int, warmup: int, torch_T: int = 10,
                   torch_samples: int = 3) -> Dict[str, Any]:
    """LSTM forward with inputs ~1e-30 and weights scaled by 1e-8 (products ~1e-39, below
    float32's smallest normal 1.2e-38, so GEMMs and gates see subnormals) vs ordinary data.

    rnnkit runs at DENORMAL_SHAPE. PyTorch, for reference, runs the same data cut to the first
    ``torch_T`` steps with ``torch_samples`` samples and no warm-up: it does not flush subnormals
    and can be two orders of magnitude slower on them, which at the full shape would take minutes.
    """
    F = rk.functional
    T, N, C, H = DENORMAL_SHAPE
    rng = np.random.default_rng(3)
    w_norm = init_weights(rng, 4, C, H)
    w_tiny = {k: (v * F32(1e-8)).astype(F32) for k, v in w_norm.items()}
    w_tiny["b_ih"][:] = 0
    w_tiny["b_hh"][:] = 0
    x_norm = rng.standard_normal((T, N, C), dtype=F32)
    x_tiny = (x_norm * F32(1e-30)).astype(F32)
    h0 = np.zeros((N, H), F32)
    c0 = np.zeros((N, H), F32)

    def rkf(x: np.ndarray, w: Dict[str, np.ndarray]) -> Callable[[], None]:
        return lambda: F.lstm_forward(x, h0, c0, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])

    tiny = np.finfo(F32).tiny

    def frac(y: np.ndarray) -> Dict[str, float]:
        a = np.abs(y)
        return {"subnormal": float(np.mean((a > 0) & (a < tiny))), "zero": float(np.mean(a == 0)),
                "normal": float(np.mean(a >= tiny))}

    y_tiny = F.lstm_forward(x_tiny, h0, c0, w_tiny["w_ih"], w_tiny["w_hh"], w_tiny["b_ih"], w_tiny["b_hh"]).y
    res = interleaved([Participant("rnnkit_normal", rkf(x_norm, w_norm)),
                       Participant("rnnkit_tiny", rkf(x_tiny, w_tiny))], samples, warmup)

    # torch reference on the first torch_T steps
    mod_norm = torch_rnn_module(torch, "lstm", C, H, w_norm)
    mod_tiny = torch_rnn_module(torch, "lstm", C, H, w_tiny)
    xt_norm = torch.from_numpy(x_norm[:torch_T].copy())
    xt_tiny = torch.from_numpy(x_tiny[:torch_T].copy())
    hx = (torch.zeros(1, N, H), torch.zeros(1, N, H))

    def th(mod: Any, xt: Any) -> Callable[[], None]:
        def fn() -> None:
            with torch.no_grad():
                mod(xt, hx)
        return fn

    with torch.no_grad():
        yt_tiny = mod_tiny(xt_tiny, hx)[0].numpy()
    res.update(interleaved([Participant("torch_normal", th(mod_norm, xt_norm)),
                            Participant("torch_tiny", th(mod_tiny, xt_tiny))], torch_samples, 0))
    med = {k: median(v) for k, v in res.items()}
    return {
        "shape": list(DENORMAL_SHAPE), "torch_T": torch_T, "seconds": res, "median_s": med,
        "rnnkit_slowdown": med["rnnkit_tiny"] / med["rnnkit_normal"],
        "torch_slowdown": med["torch_tiny"] / med["torch_normal"],
        "rnnkit_y_tiny_fractions": frac(y_tiny), "torch_y_tiny_fractions": frac(yt_tiny),
    }


# =============================================================================================
# output
# =============================================================================================

def fmt(v: Optional[float], spec: str = ".2f") -> str:
    """Formats a number, '-' for None."""
    return "-" if v is None else format(v, spec)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> None:
    """Prints a plain aligned table; ``align`` gives 'l' or 'r' per column (default right)."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            a = align[i] if i < len(align) else "r"
            out.append(str(c).ljust(widths[i]) if a == "l" else str(c).rjust(widths[i]))
        return "  ".join(out)

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    print()


def report(results: Dict[str, Any]) -> None:
    """Prints every section's table."""
    m = results["meta"]
    print(f"\nrnnkit {m['rnnkit']} vs torch {m['torch']} | {m['cpu_model']} ({m['cpu_count']} cpus) | "
          f"build {m['rnnkit_build_info'].get('simd')} | {m['date']} | load avg at start "
          f"{' '.join(f'{v:.2f}' for v in m['loadavg_start'])}"
          + (" | QUICK (smoke) run" if m["quick"] else ""))
    print(f"BLAS threads: {m['blas_thread_control']} | OpenMP runtime(s): "
          f"{', '.join(os.path.basename(p) for p in m['openmp_libraries']) or '?'} | env: {m['env'] or '-'}\n")

    if results.get("sgemm"):
        print("NumPy float32 sgemm ceiling (same run)")
        print_table(["threads", "n", "GFLOP/s", "min-max GFLOP/s"],
                    [[str(s["threads"]), str(s["n"]), fmt(s["gflops_median"], ".1f"),
                      f"{fmt(s['gflops_min'], '.1f')}-{fmt(s['gflops_max'], '.1f')}"] for s in results["sgemm"]])

    if results.get("grid"):
        print("Whole sequence, float32, ratio = torch median / rnnkit median (>1: rnnkit faster)")
        rows = []
        for r in results["grid"]:
            flag = "" if r["max_rel_err"] < 1e-3 else " !"
            rows.append([r["cell"], r["mode"], str(r["T"]), str(r["N"]), str(r["C"]), str(r["H"]), str(r["threads"]),
                         fmt(r["rnnkit_median_ms"], ".3f"), fmt(r["torch_median_ms"], ".3f"),
                         fmt(r["ratio"], ".2f") + flag, fmt(r.get("ort_median_ms"), ".3f"), fmt(r.get("ratio_ort"), ".2f"),
                         fmt(r["rnnkit_gflops"], ".1f"), fmt(r["pct_sgemm"], ".0f"),
                         f"{r['rnnkit_min_ms']:.3f}-{r['rnnkit_max_ms']:.3f}",
                         f"{r['torch_min_ms']:.3f}-{r['torch_max_ms']:.3f}"])
        print_table(["cell", "mode", "T", "N", "C", "H", "thr", "rnnkit ms", "torch ms", "ratio", "ORT ms",
                     "ratio ORT", "GFLOP/s", "%sgemm", "rnnkit min-max", "torch min-max"], rows, "ll")
        by = {(r["cell"], r["mode"], r["T"], r["N"], r["C"], r["H"], r["threads"]): r for r in results["grid"]}
        scal = [[k[0], k[1], "x".join(map(str, k[2:6])), fmt(by[k]["rnnkit_median_ms"], ".3f"),
                 fmt(by[k[:6] + (2,)]["rnnkit_median_ms"], ".3f"),
                 fmt(by[k]["rnnkit_median_ms"] / by[k[:6] + (2,)]["rnnkit_median_ms"], ".2f")]
                for k in by if k[6] == 1 and k[:6] + (2,) in by]
        if scal:
            print("rnnkit, 1 thread against 2 (speed-up = 1-thread median / 2-thread median; the two "
                  "thread counts run at different times)")
            print_table(["cell", "mode", "TxNxCxH", "1 thr ms", "2 thr ms", "speed-up"], scal, "lll")
        bad = [r for r in results["grid"] if r["max_rel_err"] >= 1e-3]
        if bad:
            print(f"! {len(bad)} row(s) where rnnkit and torch outputs differ by a relative 1e-3 or more (see max_rel_err in the JSON)\n")

    if results.get("cells"):
        print("More cells, float32, ratio = torch median / rnnkit median (>1: rnnkit faster); "
              "torch ref: its nearest equivalent")
        rows = []
        for r in results["cells"]:
            rows.append([r["cell"], r["mode"], str(r["T"]), str(r["N"]), str(r["C"]), str(r["H"]), str(r["threads"]),
                         fmt(r["rnnkit_median_ms"], ".3f"), fmt(r["torch_median_ms"], ".3f"), fmt(r["ratio"], ".2f"),
                         fmt(r["pct_sgemm"], ".0f"), f"{r['rnnkit_min_ms']:.3f}-{r['rnnkit_max_ms']:.3f}",
                         f"{r['torch_min_ms']:.3f}-{r['torch_max_ms']:.3f}", r["torch_ref"]])
        print_table(["cell", "mode", "T", "N", "C", "H", "thr", "rnnkit ms", "torch ms", "ratio", "%sgemm",
                     "rnnkit min-max", "torch min-max", "torch ref"], rows, "ll")
    if results.get("cell_costs"):
        print("Per-step cost of LayerNorm and zoneout against the plain LSTM (rnnkit, forward + backward, "
              "interleaved)")
        rows = []
        for c in results["cell_costs"]:
            for k, v in c["us_per_step"].items():
                s = c["seconds"][k]
                rows.append([k, f"{c['T']}x{c['N']}x{c['C']}x{c['H']}", str(c["threads"]), fmt(v, ".1f"),
                             fmt(c["ratio_to_plain"][k], ".2f"), f"{min(s) * 1e3:.2f}-{max(s) * 1e3:.2f}"])
        print_table(["LSTM", "TxNxCxH", "thr", "us/step", "x plain", "min-max ms"], rows, "l")

    if results.get("stream"):
        print("Streaming, batch 1, 1 thread, microseconds per step (ratio = torch / rnnkit)")
        print_table(["cell", "mode", "torch ref", "C", "H", "rnnkit us/step", "torch us/step", "ratio",
                     "rnnkit min-max", "torch min-max"],
                    [[r["cell"], r["mode"], r["torch_ref"], str(r["C"]), str(r["H"]),
                      fmt(r["rnnkit_median_us"], ".2f"), fmt(r["torch_median_us"], ".2f"), fmt(r["ratio"], ".2f"),
                      "-" if r["rnnkit_min_us"] is None else f"{r['rnnkit_min_us']:.2f}-{r['rnnkit_max_us']:.2f}",
                      f"{r['torch_min_us']:.2f}-{r['torch_max_us']:.2f}"] for r in results["stream"]], "lll")

    if results.get("denormal"):
        print(f"Denormals: LSTM fwd {tuple(DENORMAL_SHAPE)}, inputs ~1e-30 and weights x1e-8 vs ordinary "
              "(slowdown = tiny median / normal median; target rnnkit <= 1.2). y sub/zero: fractions of "
              "the tiny run's outputs that are subnormal / exactly zero (zero = flushed).")
        rows = []
        for d in results["denormal"]:
            md = d["median_s"]
            fr, ft = d["rnnkit_y_tiny_fractions"], d["torch_y_tiny_fractions"]
            rows.append(["rnnkit", str(d["threads"]), str(DENORMAL_SHAPE[0]), fmt(md["rnnkit_normal"] * 1e3, ".3f"),
                         fmt(md["rnnkit_tiny"] * 1e3, ".3f"), fmt(d["rnnkit_slowdown"], ".2f"),
                         f"{fr['subnormal']:.2f}/{fr['zero']:.2f}"])
            rows.append(["torch (ref)", str(d["threads"]), str(d["torch_T"]), fmt(md["torch_normal"] * 1e3, ".3f"),
                         fmt(md["torch_tiny"] * 1e3, ".3f"), fmt(d["torch_slowdown"], ".2f"),
                         f"{ft['subnormal']:.2f}/{ft['zero']:.2f}"])
        print_table(["lib", "thr", "T", "normal ms", "tiny ms", "slowdown", "y sub/zero"], rows, "l")

    if results.get("memory"):
        print(f"Peak memory of one LSTM training step {tuple(MEMORY_SHAPE)}, fresh process per library (MiB)")
        mem = {r["lib"]: r for r in results["memory"]}
        rows = [[r["lib"], str(r["threads"]), fmt(r["first_peak_delta_mib"], ".1f"),
                 fmt(r["second_peak_delta_mib"], ".1f")] for r in results["memory"]]
        print_table(["lib", "thr", "peak +RSS step 1", "peak +RSS step 2"], rows, "l")
        if "rnnkit" in mem and "torch" in mem:
            print(f"ratio torch/rnnkit (step 1): {fmt(ratio(mem['torch']['first_peak_delta_mib'], mem['rnnkit']['first_peak_delta_mib']))}\n")

    if results.get("fit"):
        print("End to end: seconds per epoch of fit (seed model LSTM(64)->LSTM(32)->Dense(10), batch 32, Adam)")
        rows = []
        for f in results["fit"]:
            for lib in ("rnnkit", "torch", "keras", "keras_jax"):
                if lib in f["seconds"]:
                    s = f["seconds"][lib]
                    r = ratio(median(s), f["median_s"].get("rnnkit")) if lib != "rnnkit" else None
                    rows.append([lib, str(f["threads"]), f"{f['samples']}x{f['T']}x{f['C']}", fmt(median(s), ".3f"),
                                 f"{min(s):.3f}-{max(s):.3f}", fmt(r, ".2f")])
        print_table(["lib", "thr", "data", "s/epoch", "min-max", "ratio lib/rnnkit"], rows, "l")

    for n in results.get("notes", []):
        print(f"NOTE: {n}")


def plot(results: Dict[str, Any], path: str) -> None:
    """Horizontal bar chart of every torch/rnnkit ratio (>1: rnnkit faster or smaller)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels: List[str] = []
    values: List[float] = []
    colors: List[str] = []
    palette = {"LSTM": "tab:blue", "GRU": "tab:orange", "RNN": "tab:green", "stream": "tab:purple",
               "fit": "tab:red", "memory": "tab:gray", "ort": "tab:olive"}
    for r in results.get("grid", []):
        labels.append(f"{r['cell']} {r['mode']} {r['T']}x{r['N']}x{r['C']}x{r['H']} t{r['threads']}")
        values.append(r["ratio"])
        colors.append(palette[r["cell"]])
    for r in results.get("grid", []):
        if r.get("ratio_ort") is not None:
            labels.append(f"vs ORT: {r['cell']} fwd {r['T']}x{r['N']}x{r['C']}x{r['H']} t{r['threads']}")
            values.append(r["ratio_ort"])
            colors.append(palette["ort"])
    for r in results.get("stream", []):
        if r["ratio"] is not None:
            labels.append(f"stream {r['cell']} {r['mode']} vs {r['torch_ref']}")
            values.append(r["ratio"])
            colors.append(palette["stream"])
    for f in results.get("fit", []):
        for key, lib in (("ratio_torch", "PyTorch loop"), ("ratio_keras", "Keras(torch)"),
                         ("ratio_keras_jax", "Keras(JAX)")):
            if f.get(key) is not None:
                labels.append(f"fit vs {lib} t{f['threads']}")
                values.append(f[key])
                colors.append(palette["fit"])
    mem = {r["lib"]: r for r in results.get("memory", [])}
    if "rnnkit" in mem and "torch" in mem:
        v = ratio(mem["torch"]["first_peak_delta_mib"], mem["rnnkit"]["first_peak_delta_mib"])
        if v is not None:
            labels.append("peak memory LSTM train 100x64x512x512")
            values.append(v)
            colors.append(palette["memory"])
    if not values:
        log("plot: no ratios to plot")
        return
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.28 * len(values)))
    ypos = np.arange(len(values))[::-1]
    # bars start at 1.0, so on the log axis a slower rnnkit points left and a faster one right
    ax.barh(ypos, [v - 1.0 for v in values], left=1.0, color=colors)
    ax.set_yticks(ypos)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xscale("log")
    lo, hi = min(min(values), 0.5) / 1.3, max(max(values), 2.0) * 1.6
    ax.set_xlim(lo, hi)
    ticks = [t for t in (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if lo <= t <= hi]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.axvline(1.0, color="black", lw=1)
    ax.axvline(2.0, color="black", lw=1, ls="--")
    ax.set_xlabel("other / rnnkit, log scale (median time, or peak memory; > 1: rnnkit better); "
                  "torch unless the label names ONNX Runtime or Keras")
    m = results["meta"]
    ax.set_title(f"rnnkit {m['rnnkit']} vs torch {m['torch']}, {m['cpu_model']}, {m['date'][:10]}"
                 + (" (quick smoke run)" if m["quick"] else ""), fontsize=9)
    for y, v in zip(ypos, values):
        ax.text(v, y, f" {v:.2f} " if v >= 1 else f"{v:.2f} ", va="center", ha="left" if v >= 1 else "right",
                fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    log(f"wrote {path}")


# =============================================================================================
# main
# =============================================================================================

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few shapes, few samples: checks the script works")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    p.add_argument("--samples", type=int, default=None, help="timed samples per measurement (default 9, quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 2, quick 1)")
    p.add_argument("--json", metavar="PATH", help="write raw samples and summaries to PATH")
    p.add_argument("--plot", metavar="PATH", help="write a PNG bar chart of the ratios to PATH")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--shapes", default=None, metavar="TxNxCxH,...",
                   help="override the grid's shapes, e.g. 100x64x256x256,100x1x256x256")
    p.add_argument("--omp-wait-policy", choices=("active", "passive"), default=None,
                   help="set OMP_WAIT_POLICY for both libraries (default: leave the environment alone); "
                        "'passive' avoids spin-wait stalls on a machine shared with other jobs")
    p.add_argument("--_memory-child", dest="memory_child", choices=("rnnkit", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--_keras-jax-worker", dest="keras_jax_worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.samples is None:
        args.samples = 3 if args.quick else 9
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    only = [s.strip().lower() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        p.error(f"--only: unknown section(s) {unknown}; choose from {','.join(SECTIONS)}")
    args.only = only
    if args.shapes:
        try:
            args.shapes = [tuple(int(v) for v in item.lower().split("x")) for item in args.shapes.split(",") if item.strip()]
        except ValueError:
            p.error(f"--shapes: expected TxNxCxH[,TxNxCxH...], got {args.shapes!r}")
        if not args.shapes or any(len(sh) != 4 or min(sh) < 1 for sh in args.shapes):
            p.error("--shapes: expected TxNxCxH[,TxNxCxH...] of positive sizes")
    if args.samples < 1 or any(t < 1 for t in args.threads):
        p.error("--samples and --threads must be positive")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the selected sections and prints / writes the results."""
    args = parse_args(argv)
    if args.keras_jax_worker:
        keras_jax_worker(args.keras_jax_worker)
        return 0
    if args.memory_child:
        memory_child(args.memory_child, args.threads[0])
        return 0

    if args.omp_wait_policy:
        # read by the OpenMP runtime when it is loaded, i.e. by the imports below
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    import torch  # before rnnkit, so both share torch's OpenMP runtime (see README)
    import rnnkit

    threads = Threads(rnnkit, torch)
    notes: List[str] = []
    if not args.quick and args.samples < 9:
        notes.append(f"only {args.samples} samples per measurement (9 or more recommended)")
    if threads.blas.method.startswith("none"):
        notes.append(f"NumPy BLAS threads not controlled: {threads.blas.method}")
    results: Dict[str, Any] = {"meta": metadata(args, rnnkit, torch, threads), "notes": notes,
                               "sgemm": [], "grid": [], "cells": [], "cell_costs": [], "stream": [], "fit": [],
                               "memory": [], "denormal": []}
    t_start = time.perf_counter()
    shapes = args.shapes or (QUICK_SHAPES if args.quick else FULL_SHAPES)
    cells = [c for c in ("lstm", "gru", "rnn") if c in args.only]
    S, W = args.samples, args.warmup

    # ---- grid, with the sgemm ceiling measured before and after it at each thread count ------
    if cells:
        n_gemm = 1024 if args.quick else 2048
        total = len(args.threads) * len(cells) * 2 * len(shapes)
        k = 0
        for nt in args.threads:
            threads.set(nt)
            log(f"sgemm {n_gemm} x {n_gemm}, {nt} thread(s)")
            gemm_s = bench_sgemm(n_gemm, S, W)
            rows = []
            for cell in cells:
                for mode in ("fwd", "train"):
                    for shape in shapes:
                        k += 1
                        log(f"[{k}/{total}] {CELL_NAMES[cell]} {mode} T,N,C,H={shape} threads={nt}")
                        row = bench_grid_case(rnnkit, torch, cell, mode, shape, S, W, nt, notes)
                        row["threads"] = nt
                        rows.append(row)
            threads.set(nt)
            gemm_s += bench_sgemm(n_gemm, S, 0)
            flops = 2.0 * n_gemm ** 3
            gf = [flops / s / 1e9 for s in gemm_s]
            gf_med = flops / median(gemm_s) / 1e9
            results["sgemm"].append({"threads": nt, "n": n_gemm, "seconds": gemm_s, "gflops_median": gf_med,
                                     "gflops_min": min(gf), "gflops_max": max(gf)})
            results["grid"].extend(summarize_grid(r, gf_med) for r in rows)

    # ---- more cells (LSTMP, LayerNorm LSTM, GRU v1) and the costs of LayerNorm and zoneout -------
    if "cells" in args.only:
        cell_shapes = [s for s in shapes if s[1] > 1] or shapes
        for nt in args.threads:
            threads.set(nt)
            sg = [s["gflops_median"] for s in results["sgemm"] if s["threads"] == nt]
            for variant in CELL_VARIANTS:
                for mode in ("fwd", "train"):
                    for shape in cell_shapes:
                        log(f"{CELL_VARIANT_NAMES[variant]} {mode} T,N,C,H={shape} threads={nt}")
                        row = bench_cells_case(rnnkit, torch, variant, mode, shape, S, W)
                        row["threads"] = nt
                        results["cells"].append(summarize_grid(row, sg[0] if sg else None))
            log(f"LayerNorm/zoneout cost, threads={nt}")
            c = bench_cell_costs(rnnkit, (50, 32, 128, 128), S, W)
            c["threads"] = nt
            results["cell_costs"].append(c)

    # ---- streaming, 1 thread ------------------------------------------------------------------
    if "stream" in args.only:
        log("streaming, batch 1, 1 thread")
        threads.set(1)
        steps = 200 if args.quick else 1000
        results["stream"] = bench_stream(rnnkit, torch, steps, 100, S, W, notes)

    # ---- denormals ----------------------------------------------------------------------------
    if "denormal" in args.only:
        for nt in args.threads:
            log(f"denormals, {nt} thread(s)")
            threads.set(nt)
            d = bench_denormal(rnnkit, torch, S, W)
            d["threads"] = nt
            results["denormal"].append(d)

    # ---- memory (subprocesses) ----------------------------------------------------------------
    if "memory" in args.only:
        nt = args.threads[0]
        log(f"peak memory, fresh subprocess per library, {nt} thread(s)")
        results["memory"] = bench_memory(nt, notes)

    # ---- end to end fit (last: importing Keras must not touch the other sections) -------------
    if "fit" in args.only:
        n_fit = 256 if args.quick else 2048
        epochs = 2 if args.quick else 3
        for nt in args.threads:
            log(f"fit, {n_fit} samples, {epochs} timed epoch(s) each, {nt} thread(s)")
            threads.set(nt)
            f = bench_fit(rnnkit, torch, n_fit, epochs, 32, nt, notes)
            f["threads"] = nt
            results["fit"].append(f)

    results["meta"]["loadavg_end"] = list(os.getloadavg())
    results["meta"]["wall_seconds"] = time.perf_counter() - t_start
    # drop duplicate notes (the fit notes repeat per thread count)
    results["notes"] = list(dict.fromkeys(notes))
    report(results)
    print(f"total wall time {results['meta']['wall_seconds']:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=float)
        log(f"wrote {args.json}")
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
