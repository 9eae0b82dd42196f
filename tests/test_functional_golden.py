"""rnnkit against stored PyTorch float64 results (tests/fixtures/golden_functional.npz, written
by tests/fixtures/make_golden.py), without torch.

Error measure: rel_err(a, b) = max|a - b| / max(max|b|, 1e-8) per array.
float64 must agree to 1e-10; the float32 cast of the same inputs to 1e-5.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from helpers import CELLS, has_cell_state, rel_err, run_backward, run_forward

PATH = os.path.join(os.path.dirname(__file__), "fixtures", "golden_functional.npz")
CASES = ("basic", "masked", "reverse")
OUTPUTS = ("y", "h_n", "c_n")
GRADS = ("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh")


@pytest.fixture(scope="module")
def golden():
    with np.load(PATH, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _case(golden, cell, case):
    pre = f"{cell}__{case}__"
    d = {k[len(pre):]: v for k, v in golden.items() if k.startswith(pre)}
    assert d, f"no golden data for {cell}/{case}"
    return d


def test_fixture_is_small_and_complete(golden):
    assert os.path.getsize(PATH) < 200_000
    for cell in CELLS:
        for case in CASES:
            d = _case(golden, cell, case)
            for k in ("x", "w_ih", "w_hh", "dy", "dh_n", "y", "h_n", "dx", "dh0", "dw_ih", "dw_hh"):
                assert k in d, f"{cell}/{case}: {k} missing"
                assert d[k].dtype == np.float64
            assert ("c_n" in d) == has_cell_state(cell)
            assert bool(d["reverse"]) == (case == "reverse")
            assert ("mask" in d) == (case == "masked")


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cell", CELLS)
def test_matches_golden(golden, cell, case, dtype, tol):
    d = _case(golden, cell, case)

    def get(k):
        return d[k].astype(dtype) if k in d else None

    p = {k: get(k) for k in ("w_ih", "w_hh", "b_ih", "b_hh")}
    kw = dict(mask=d.get("mask"), reverse=bool(d["reverse"]),
              zero_output_for_mask=bool(d["zero_output_for_mask"]))
    y, h_n, c_n, cache = run_forward(cell, get("x"), get("h0"), get("c0"), p, **kw)
    grads = run_backward(cell, cache, get("dy"), get("dh_n"), get("dc_n"))
    got = dict(y=y, h_n=h_n, c_n=c_n, **grads)
    for k in OUTPUTS + GRADS:
        if k not in d:
            assert got.get(k) is None, f"{k} should be None"
            continue
        assert got[k].dtype == dtype, k
        err = rel_err(got[k], d[k])
        assert err < tol, (
            f"{cell}/{case}/{np.dtype(dtype).name}: {k} relative error {err:.2e} >= {tol:.0e}")
