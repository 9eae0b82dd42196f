"""rnnkit.set_num_threads / get_num_threads / build_info, and results independent of the thread
count (1 vs 2 threads on shapes large enough to take the parallel pointwise and GEMM paths)."""
from __future__ import annotations

import numpy as np
import pytest

import rnnkit

from helpers import make_params, run_backward, run_forward

pytestmark = pytest.mark.threads




def test_get_num_threads_is_positive_int():
    n = rnnkit.get_num_threads()
    assert isinstance(n, int) and n >= 1


def test_set_get_round_trip(restore_threads):
    info = rnnkit.build_info()
    for n in (1, 2, 3):
        rnnkit.set_num_threads(n)
        # without OpenMP the kernels are single-threaded whatever is asked
        assert rnnkit.get_num_threads() == (n if info["openmp"] else 1)
    rnnkit.set_num_threads(np.int64(2))
    assert rnnkit.get_num_threads() == (2 if info["openmp"] else 1)


@pytest.mark.parametrize("bad", [1.0, 2.5, "2", None, True, np.float64(2.0), [2]])
def test_set_num_threads_rejects_non_int(restore_threads, bad):
    before = rnnkit.get_num_threads()
    with pytest.raises(TypeError, match=r"^n\b"):
        rnnkit.set_num_threads(bad)
    assert rnnkit.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, -100])
def test_set_num_threads_rejects_below_one(restore_threads, bad):
    before = rnnkit.get_num_threads()
    with pytest.raises(ValueError, match=r"^n\b"):
        rnnkit.set_num_threads(bad)
    assert rnnkit.get_num_threads() == before


def test_build_info():
    info = rnnkit.build_info()
    assert isinstance(info, dict)
    assert {"simd", "openmp", "num_threads", "eigen_version"} <= set(info)
    assert isinstance(info["simd"], str) and info["simd"]
    assert isinstance(info["openmp"], bool)
    assert isinstance(info["num_threads"], int) and info["num_threads"] == rnnkit.get_num_threads()
    assert isinstance(info["eigen_version"], str)
    assert [int(v) for v in info["eigen_version"].split(".")][0] >= 3
    # a fresh copy each call
    info["simd"] = "changed"
    assert rnnkit.build_info()["simd"] != "changed"


# (cell, T, N, C, H, masked): N * G * H >= 16384 so the pointwise row pass is split across threads
BIG = [
    ("lstm", 20, 64, 128, 128, False),
    ("lstm", 20, 64, 128, 128, True),
    ("gru", 12, 64, 96, 96, True),
    ("rnn_tanh", 12, 160, 96, 128, False),
]

# Tolerances, relative to max|.| of the float64 result of the same inputs:
# - forward outputs: the per-step GEMMs and pointwise passes give the same float32 result with 1
#   or 2 threads; 1e-6.
# - gradients: dx, dh0, dw_* and db_* come from float32 GEMMs/reductions over up to T*N = 1920
#   products that Eigen blocks differently with 2 threads, so the last bits change. Measured
#   differences are ~1e-6, the same size as either result's own distance to float64; 4e-6
#   (~35 float32 ulps of the largest entry) bounds that, and both thread counts must be equally
#   close to float64.
TOL_FORWARD = 1e-6
TOL_GRAD = 4e-6


def _run_all(cell, x, h0, c0, p, dy, dh, dc, mask):
    y, h_n, c_n, cache = run_forward(cell, x, h0, c0, p, mask=mask)
    g = run_backward(cell, cache, dy, dh, dc)
    res = {"y": y, "h_n": h_n, **{k: v for k, v in g.items() if v is not None}}
    if c_n is not None:
        res["c_n"] = c_n
    return res


@pytest.fixture
def loop_plan(request):
    """Forces how the 2-thread time loops share each step ('rows' or 'columns', see core.h
    LoopPlan), so that both paths run on the same shapes; back to 'auto' afterwards."""
    from rnnkit import _core
    _core._set_loop_plan(request.param)
    yield request.param
    _core._set_loop_plan("auto")


def test_set_loop_plan_rejects_unknown_mode():
    from rnnkit import _core
    with pytest.raises(ValueError, match="mode must be 'auto', 'serial', 'rows' or 'columns'"):
        _core._set_loop_plan("diagonal")


@pytest.mark.parametrize("loop_plan", ["auto", "rows", "columns"], indirect=True)
@pytest.mark.parametrize("cell,T,N,C,H,masked", BIG,
                         ids=[f"{b[0]}-{'mask' if b[5] else 'nomask'}" for b in BIG])
def test_one_and_two_threads_agree(restore_threads, loop_plan, cell, T, N, C, H, masked):
    """float32, every output and gradient, 1 thread vs 2 threads sharing each step by rows, by
    columns, or as the automatic policy chooses (tolerances above)."""
    if not rnnkit.build_info()["openmp"]:
        pytest.skip("built without OpenMP: one thread only")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((T, N, C))
    p = make_params(rng, cell, C, H)
    h0 = rng.standard_normal((N, H)) * 0.5
    c0 = rng.standard_normal((N, H)) * 0.5 if cell == "lstm" else None
    dy = rng.standard_normal((T, N, H))
    dh = rng.standard_normal((N, H))
    dc = rng.standard_normal((N, H)) if cell == "lstm" else None
    mask = (rng.random((T, N)) < 0.8) if masked else None

    def f32(a):
        return None if a is None else a.astype(np.float32)

    args32 = (f32(x), f32(h0), f32(c0), {k: f32(v) for k, v in p.items()}, f32(dy), f32(dh),
              f32(dc), mask)
    rnnkit.set_num_threads(1)
    r64 = _run_all(cell, x, h0, c0, p, dy, dh, dc, mask)
    r1 = _run_all(cell, *args32)
    rnnkit.set_num_threads(2)
    assert rnnkit.get_num_threads() == 2
    r2 = _run_all(cell, *args32)
    assert r1.keys() == r2.keys() == r64.keys()
    for k in r1:
        assert r1[k].dtype == r2[k].dtype == np.float32
        scale = float(np.max(np.abs(r64[k])))
        assert scale > 0, k
        tol = TOL_FORWARD if k in ("y", "h_n", "c_n") else TOL_GRAD
        d12 = float(np.max(np.abs(r1[k] - r2[k]))) / scale
        assert d12 <= tol, f"{cell}: {k} 1 vs 2 threads differ by {d12:.2e} (relative) > {tol:.0e}"
        for nt, r in ((1, r1), (2, r2)):
            e = float(np.max(np.abs(r[k] - r64[k]))) / scale
            assert e <= TOL_GRAD, f"{cell}: {k} with {nt} thread(s) is {e:.2e} from float64"
