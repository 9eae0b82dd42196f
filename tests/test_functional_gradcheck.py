"""float64 finite-difference checks of every gradient of every backward, torch-free.

Loss: L = sum(y * Wy) + sum(h_n * Wh) [+ sum(c_n * Wc)] with fixed random Wy, Wh, Wc, so the
backward gets dy = Wy, dh_n = Wh, dc_n = Wc. Every entry of dx, dh0, [dc0,] dw_ih, dw_hh, db_ih and
db_hh is compared with central differences (eps = 1e-6); the error measure is
rel_err(a, b) = max|a - b| / max(max|b|, 1e-8) and must be < 1e-6.

Also: the forward against a pure NumPy reference (float64 and float32), None states/gradients
equal to zeros, and backward being repeatable (the cache is not consumed).
"""
from __future__ import annotations

import numpy as np
import pytest

from helpers import (CELLS, has_cell_state, make_params, mask_with_holes, numerical_grad,
                     ref_forward, rel_err, relu_margin, run_backward, run_forward)

GRAD_TOL = 1e-6
FD_EPS = 1e-6
RELU_MIN_MARGIN = 1e-3   # no valid ReLU pre-activation closer than this to the kink

# name: (T, N, C, H, mask kind, reverse, zero_output_for_mask, (has b_ih, has b_hh), h0 given)
# a name containing "rdrop" also passes a recurrent_dropout_mask (a constant, not differentiated)
CONFIGS = {
    "plain": (3, 2, 3, 5, None, False, False, (True, True), True),
    "holes": (5, 3, 2, 5, "holes", False, False, (True, True), True),
    "holes_zero_out": (5, 3, 2, 5, "holes", False, True, (True, True), True),
    "reverse": (4, 2, 3, 4, None, True, False, (True, True), True),
    "reverse_holes": (5, 3, 2, 5, "holes", True, False, (True, True), True),
    "reverse_holes_zero_out": (5, 3, 4, 5, "holes", True, True, (True, True), True),
    "no_bias_no_h0": (3, 2, 2, 3, None, False, False, (False, False), False),
    "no_bias_holes": (4, 3, 2, 5, "holes", False, True, (False, False), True),
    "ih_bias_only": (3, 2, 3, 5, "holes", False, False, (True, False), True),
    "hh_bias_only": (3, 2, 3, 5, None, True, False, (False, True), True),
    "T1_N1_C1_H7": (1, 1, 1, 7, None, False, False, (True, True), True),
    "N1_C1_H7_holes": (4, 1, 1, 7, "holes", False, False, (True, True), True),
    "T1_masked_rev": (1, 3, 2, 5, "holes", True, True, (True, True), True),
    "rdrop": (4, 2, 3, 5, None, False, False, (True, True), True),
    "rdrop_reverse_holes": (5, 3, 2, 5, "holes", True, False, (True, True), True),
}

# Wide enough (G*H and H >= 32 columns) for the time loops to split the recurrent products by
# columns on 2 threads, as well as by batch rows; checked under each plan with 2 threads.
THREADED_CONFIGS = {
    "threaded_rdrop_reverse_holes_zero_out": (4, 5, 3, 32, "holes", True, True, (True, True), True),
}
CONFIGS.update(THREADED_CONFIGS)


def _close(a, b, err_msg=""):
    """Equal up to rounding: results are not bitwise reproducible across calls because Eigen's
    vectorised reductions depend on the alignment of the buffers (differences of ~1 ulp)."""
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15, err_msg=err_msg)


def _setup(cell, name, seed=0):
    """Builds inputs, parameters and the loss weights of one configuration (seeded)."""
    T, N, C, H, mkind, reverse, zero, bias, with_h0 = CONFIGS[name]
    mask = mask_with_holes(T, N) if mkind == "holes" else None
    for attempt in range(200):
        rng = np.random.default_rng([seed, attempt, CELLS.index(cell), len(name)])
        x = rng.standard_normal((T, N, C))
        h0 = rng.standard_normal((N, H)) * 0.5 if with_h0 else None
        c0 = rng.standard_normal((N, H)) * 0.5 if (with_h0 and has_cell_state(cell)) else None
        p = make_params(rng, cell, C, H, bias=bias, scale=0.6)
        rd = None
        if "rdrop" in name:  # Keras-style: keep with prob 0.6, scaled by 1/0.6
            rd = (rng.random((N, H)) < 0.6) / 0.6
        if cell != "rnn_relu" or relu_margin(x, h0, p, mask, reverse, rd) > RELU_MIN_MARGIN:
            break
    else:  # pragma: no cover
        pytest.fail("no kink-free seed found for rnn_relu")
    wy = rng.standard_normal((T, N, H))
    wh = rng.standard_normal((N, H))
    wc = rng.standard_normal((N, H)) if has_cell_state(cell) else None
    kw = dict(mask=mask, reverse=reverse, zero_output_for_mask=zero)
    if rd is not None:
        kw["recurrent_dropout_mask"] = rd
    return x, h0, c0, p, wy, wh, wc, kw


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(cell, name):
    x, h0, c0, p, wy, wh, wc, kw = _setup(cell, name)
    N, H = x.shape[1], p["w_hh"].shape[1]

    # analytic gradients first (the cache references x and the weights, which FD perturbs)
    y, h_n, c_n, cache = run_forward(cell, x, h0, c0, p, **kw)
    grads = run_backward(cell, cache, wy, wh, wc)

    # FD needs concrete state arrays; None must behave as zeros
    h0_arr = np.zeros((N, H)) if h0 is None else h0
    c0_arr = None
    if has_cell_state(cell):
        c0_arr = np.zeros((N, H)) if c0 is None else c0

    def loss():
        y_, hn_, cn_, _ = run_forward(cell, x, h0_arr, c0_arr, p, **kw)
        val = np.sum(y_ * wy) + np.sum(hn_ * wh)
        if cn_ is not None:
            val += np.sum(cn_ * wc)
        return float(val)

    wrt = {"dx": x, "dh0": h0_arr, "dw_ih": p["w_ih"], "dw_hh": p["w_hh"],
           "db_ih": p["b_ih"], "db_hh": p["b_hh"]}
    if has_cell_state(cell):
        wrt["dc0"] = c0_arr
    assert set(wrt) == set(grads)

    for gname, arr in wrt.items():
        if arr is None:  # the bias does not exist: its gradient must be None
            assert grads[gname] is None, f"{gname} should be None without that bias"
            continue
        g = grads[gname]
        assert g.shape == arr.shape and g.dtype == np.float64, gname
        assert np.all(np.isfinite(g)), gname
        num = numerical_grad(loss, arr, FD_EPS)
        err = rel_err(g, num)
        assert err < GRAD_TOL, (f"{cell}/{name}: {gname} relative error {err:.3e} "
                                f"(max|num|={np.max(np.abs(num)):.3e})")


@pytest.mark.threads
@pytest.mark.parametrize("plan", ["rows", "columns"])
@pytest.mark.parametrize("name", list(THREADED_CONFIGS))
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences_on_two_threads(cell, name, plan, restore_threads):
    """The same check with the time loops forced onto 2 threads, sharing each step by batch rows
    or by columns of the recurrent product (core.h LoopPlan)."""
    import rnnkit
    from rnnkit import _core
    if not rnnkit.build_info()["openmp"]:
        pytest.skip("built without OpenMP: one thread only")
    rnnkit.set_num_threads(2)
    _core._set_loop_plan(plan)
    try:
        test_gradients_match_finite_differences(cell, name)
    finally:
        _core._set_loop_plan("auto")


@pytest.mark.parametrize("name", ["holes", "reverse_holes_zero_out", "no_bias_no_h0", "T1_N1_C1_H7",
                                  "rdrop", "rdrop_reverse_holes"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_forward_matches_numpy_reference(cell, name, dtype, tol):
    x, h0, c0, p, *_rest, kw = _setup(cell, name)
    ry, rh, rc, _ = ref_forward(cell, x, h0, c0, p, **kw)
    cast = (lambda a: None if a is None else a.astype(dtype))
    pc = {k: cast(v) for k, v in p.items()}
    kw = {k: (cast(v) if k == "recurrent_dropout_mask" else v) for k, v in kw.items()}
    y, h_n, c_n, _ = run_forward(cell, cast(x), cast(h0), cast(c0), pc, **kw)
    assert y.dtype == dtype and h_n.dtype == dtype
    assert rel_err(y, ry) < tol
    assert rel_err(h_n, rh) < tol
    if has_cell_state(cell):
        assert c_n.dtype == dtype
        assert rel_err(c_n, rc) < tol


@pytest.mark.parametrize("cell", CELLS)
def test_fully_masked_sample_is_identity(cell):
    """A sample masked at every step keeps h0 (and c0); its outputs are h0 (or 0); all its input
    gradients are 0 and its state gradients pass straight through."""
    x, h0, c0, p, wy, wh, wc, kw = _setup(cell, "holes")
    mask = kw["mask"]
    assert not mask[:, 2].any()
    for zero in (False, True):
        y, h_n, c_n, cache = run_forward(cell, x, h0, c0, p, mask=mask, zero_output_for_mask=zero)
        np.testing.assert_array_equal(h_n[2], h0[2])
        if has_cell_state(cell):
            np.testing.assert_array_equal(c_n[2], c0[2])
        expect_y = np.zeros_like(y[:, 2]) if zero else np.broadcast_to(h0[2], y[:, 2].shape)
        np.testing.assert_array_equal(y[:, 2], expect_y)
        g = run_backward(cell, cache, wy, wh, wc)
        np.testing.assert_array_equal(g["dx"][:, 2], 0.0)
        expect_dh0 = wh[2] + (0.0 if zero else wy[:, 2].sum(axis=0))
        np.testing.assert_allclose(g["dh0"][2], expect_dh0, rtol=1e-13, atol=1e-13)
        if has_cell_state(cell):
            np.testing.assert_array_equal(g["dc0"][2], wc[2])


@pytest.mark.parametrize("cell", CELLS)
def test_none_state_and_none_grads_equal_zeros(cell):
    # not bitwise: Eigen's vectorised reductions depend on buffer alignment (last-ulp changes)
    eq = _close
    x, _, _, p, wy, _, _, kw = _setup(cell, "holes")
    N, H = x.shape[1], p["w_hh"].shape[1]
    z = np.zeros((N, H))
    y1, h1, c1, cache1 = run_forward(cell, x, None, None, p, **kw)
    y2, h2, c2, cache2 = run_forward(cell, x, z, z.copy() if has_cell_state(cell) else None, p, **kw)
    eq(y1, y2)
    eq(h1, h2)
    if has_cell_state(cell):
        eq(c1, c2)
    g_none = run_backward(cell, cache1, wy, None, None)
    g_zero = run_backward(cell, cache1, wy, z, z if has_cell_state(cell) else None)
    for k in g_none:
        eq(g_none[k], g_zero[k], err_msg=k)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_is_repeatable_and_keeps_the_cache(cell):
    """Calling backward twice on one cache gives identical gradients; the cache is unchanged."""
    x, h0, c0, p, wy, wh, wc, kw = _setup(cell, "reverse_holes_zero_out")
    y, h_n, c_n, cache = run_forward(cell, x, h0, c0, p, **kw)
    before = {k: v.copy() for k, v in vars(cache).items() if isinstance(v, np.ndarray)}
    g1 = run_backward(cell, cache, wy, wh, wc)
    g2 = run_backward(cell, cache, wy, wh, wc)
    for k in g1:
        if g1[k] is None:
            assert g2[k] is None
        else:
            _close(g1[k], g2[k], err_msg=k)
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(cache, k), v, err_msg=f"cache.{k} was modified")


@pytest.mark.parametrize("cell", CELLS)
def test_bias_gradients_are_independent_arrays(cell):
    """For RNN/LSTM db_ih == db_hh mathematically; they must still be distinct arrays."""
    x, h0, c0, p, wy, wh, wc, kw = _setup(cell, "plain")
    *_, cache = run_forward(cell, x, h0, c0, p, **kw)
    g = run_backward(cell, cache, wy, wh, wc)
    assert not np.shares_memory(g["db_ih"], g["db_hh"])
    if cell != "gru":
        np.testing.assert_array_equal(g["db_ih"], g["db_hh"])


@pytest.mark.parametrize("cell", CELLS)
def test_recurrent_dropout_mask_of_ones_is_no_dropout(cell):
    x, h0, c0, p, wy, wh, wc, kw = _setup(cell, "holes")
    ones = np.ones((x.shape[1], p["w_hh"].shape[1]))
    a = run_forward(cell, x, h0, c0, p, **kw)
    b = run_forward(cell, x, h0, c0, p, recurrent_dropout_mask=ones, **kw)
    for u, v in zip(a[:3], b[:3]):
        if u is not None:
            _close(u, v)
    ga = run_backward(cell, a[3], wy, wh, wc)
    gb = run_backward(cell, b[3], wy, wh, wc)
    for k in ga:
        _close(ga[k], gb[k], err_msg=k)
