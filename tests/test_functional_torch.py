"""Parity with torch.nn.RNN / LSTM / GRU: outputs, final states and every gradient.

Loss on both sides: L = sum(y * dy) + sum(h_n * dh_n) [+ sum(c_n * dc_n)] with random dy, dh_n,
dc_n. Tolerances (numpy.testing.assert_allclose, elementwise |a - b| <= atol + rtol * |b|):
float64 rtol=1e-9, atol=1e-10; float32 rtol=1e-4, atol=1e-5.

Masks are checked against pack_padded_sequence on right-padded batches (y at valid positions,
h_n = state after each sample's last valid step, padded outputs 0 with zero_output_for_mask=True
like pad_packed_sequence), reverse=True against torch on the time-flipped sequence, and
reverse+mask against the reverse half of a bidirectional packed module.
"""
from __future__ import annotations

import numpy as np
import pytest

from helpers import (CELLS, has_cell_state, make_params, right_padded_mask, run_backward,
                     run_forward, torch_reference)

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

TOLS = {np.float64: dict(rtol=1e-9, atol=1e-10), np.float32: dict(rtol=1e-4, atol=1e-5)}
DTYPES = [np.float64, np.float32]
SHAPES = [(1, 1, 1, 1), (5, 3, 4, 7), (7, 4, 16, 32), (3, 9, 5, 13)]   # (T, N, C, H)
GRAD_NAMES = ("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh")


@pytest.fixture(autouse=True, scope="module")
def _torch_one_thread():
    """Small problems: one torch thread is faster and leaves the other core alone."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _data(cell, T, N, C, H, dtype, seed, bias=(True, True), h0=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N, C)).astype(dtype)
    p = make_params(rng, cell, C, H, bias=bias, dtype=dtype)
    s0 = (rng.standard_normal((N, H)) * 0.5).astype(dtype) if h0 else None
    c0 = (rng.standard_normal((N, H)) * 0.5).astype(dtype) if (h0 and has_cell_state(cell)) else None
    dy = rng.standard_normal((T, N, H)).astype(dtype)
    dh = rng.standard_normal((N, H)).astype(dtype)
    dc = rng.standard_normal((N, H)).astype(dtype) if has_cell_state(cell) else None
    return x, s0, c0, p, dy, dh, dc


def _compare(cell, ours, ref, tol, skip=()):
    y, h_n, c_n, grads = ours
    np.testing.assert_allclose(y, ref["y"], **tol, err_msg="y")
    np.testing.assert_allclose(h_n, ref["h_n"], **tol, err_msg="h_n")
    if has_cell_state(cell):
        np.testing.assert_allclose(c_n, ref["c_n"], **tol, err_msg="c_n")
    for k in GRAD_NAMES:
        if k not in grads or k in skip:
            continue
        if ref[k] is None:
            assert grads[k] is None, k
        else:
            assert grads[k] is not None and grads[k].dtype == ref[k].dtype, k
            np.testing.assert_allclose(grads[k], ref[k], **tol, err_msg=k)


def _ours(cell, x, h0, c0, p, dy, dh, dc, **kw):
    y, h_n, c_n, cache = run_forward(cell, x, h0, c0, p, **kw)
    assert y.dtype == x.dtype
    return y, h_n, c_n, run_backward(cell, cache, dy, dh, dc)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T%dN%dC%dH%d" % s)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch(cell, dtype, shape, bias):
    seed = [SHAPES.index(shape), CELLS.index(cell), int(bias)]
    x, h0, c0, p, dy, dh, dc = _data(cell, *shape, dtype, seed, bias=(bias, bias))
    ref = torch_reference(cell, x, h0, c0, p, dy, dh, dc)
    _compare(cell, _ours(cell, x, h0, c0, p, dy, dh, dc), ref, TOLS[dtype])


@pytest.mark.parametrize("which", ["b_ih", "b_hh"])
@pytest.mark.parametrize("cell", CELLS)
def test_single_bias_matches_torch_with_zero_other_bias(cell, which):
    """Only one of b_ih / b_hh given: same as torch with the other bias zero; the missing
    bias has gradient None."""
    bias = (which == "b_ih", which == "b_hh")
    x, h0, c0, p, dy, dh, dc = _data(cell, 4, 3, 3, 6, np.float64, 7, bias=bias)
    ref = torch_reference(cell, x, h0, c0, p, dy, dh, dc)
    _compare(cell, _ours(cell, x, h0, c0, p, dy, dh, dc), ref, TOLS[np.float64])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_no_initial_state_matches_torch(cell, dtype):
    x, h0, c0, p, dy, dh, dc = _data(cell, 5, 3, 4, 6, dtype, 11, h0=False)
    assert h0 is None and c0 is None
    ref = torch_reference(cell, x, None, None, p, dy, dh, dc)
    _compare(cell, _ours(cell, x, None, None, p, dy, dh, dc), ref, TOLS[dtype])


@pytest.mark.parametrize("shape", [(5, 3, 4, 7), (6, 5, 3, 10)], ids=lambda s: "T%dN%dC%dH%d" % s)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_reverse_matches_torch_on_flipped_sequence(cell, dtype, shape):
    x, h0, c0, p, dy, dh, dc = _data(cell, *shape, dtype, [3, CELLS.index(cell)])
    ref = torch_reference(cell, x, h0, c0, p, dy, dh, dc, reverse=True)
    _compare(cell, _ours(cell, x, h0, c0, p, dy, dh, dc, reverse=True), ref, TOLS[dtype])


LENGTHS = {
    "mixed": (6, [6, 3, 1, 5]),    # unsorted, includes length 1 and full length
    "allfull": (4, [4, 4]),
    "N1": (5, [2]),
}


@pytest.mark.parametrize("lens", list(LENGTHS))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_mask_zero_output_matches_packed_sequence(cell, dtype, lens):
    """zero_output_for_mask=True on a right-padded batch == pack_padded_sequence +
    pad_packed_sequence: same y (0 at padded steps), h_n, c_n and every gradient (dy is
    arbitrary everywhere, padded dy is ignored by both)."""
    T, lengths = LENGTHS[lens]
    N = len(lengths)
    x, h0, c0, p, dy, dh, dc = _data(cell, T, N, 3, 6, dtype, [5, CELLS.index(cell), T, N])
    mask = right_padded_mask(lengths, T)
    ref = torch_reference(cell, x, h0, c0, p, dy, dh, dc, lengths=lengths)
    ours = _ours(cell, x, h0, c0, p, dy, dh, dc, mask=mask, zero_output_for_mask=True)
    assert np.all(ours[0][~mask] == 0)
    _compare(cell, ours, ref, TOLS[dtype])
    # padded positions of x get no gradient
    assert np.all(ours[3]["dx"][~mask] == 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_mask_carry_output_matches_packed_sequence(cell, dtype):
    """Default masking (padded outputs = carried state): valid outputs and h_n match torch's
    packed run; padded outputs equal each sample's final state; with dy zero at padded steps the
    gradients equal torch's."""
    T, lengths = LENGTHS["mixed"]
    N = len(lengths)
    x, h0, c0, p, dy, dh, dc = _data(cell, T, N, 4, 5, dtype, [6, CELLS.index(cell)])
    mask = right_padded_mask(lengths, T)
    dy = dy * mask[:, :, None].astype(dtype)
    ref = torch_reference(cell, x, h0, c0, p, dy, dh, dc, lengths=lengths)
    y, h_n, c_n, grads = _ours(cell, x, h0, c0, p, dy, dh, dc, mask=mask)
    tol = TOLS[dtype]
    np.testing.assert_allclose(y[mask], ref["y"][mask], **tol)
    for n, L in enumerate(lengths):
        # carried state after the last valid step, bit-identical to h_n
        np.testing.assert_array_equal(y[L:, n], np.broadcast_to(h_n[n], y[L:, n].shape))
    y_cmp = np.where(mask[:, :, None], y, 0)
    _compare(cell, (y_cmp, h_n, c_n, grads), ref, tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_carry_output_gradient_through_padded_steps(cell, dtype):
    """Default masking with dy non-zero at padded steps: those outputs are h_n itself, so the
    gradients equal torch's packed run with dh_n += sum of the padded dy of each sample."""
    T, lengths = LENGTHS["mixed"]
    N = len(lengths)
    x, h0, c0, p, dy, dh, dc = _data(cell, T, N, 3, 5, dtype, [8, CELLS.index(cell)])
    mask = right_padded_mask(lengths, T)
    pad = (~mask)[:, :, None].astype(dtype)
    dh_eff = dh + (dy * pad).sum(axis=0)
    ref = torch_reference(cell, x, h0, c0, p, dy * (1 - pad), dh_eff, dc, lengths=lengths)
    y, h_n, c_n, grads = _ours(cell, x, h0, c0, p, dy, dh, dc, mask=mask)
    _compare(cell, (np.where(mask[:, :, None], y, 0), h_n, c_n, grads), ref, TOLS[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_reverse_mask_matches_bidirectional_packed_reverse_half(cell, dtype):
    """reverse=True with a right-padded mask == the reverse direction of a bidirectional
    packed torch module (each sample runs from its last valid step down to 0)."""
    T, lengths = LENGTHS["mixed"]
    N = len(lengths)
    x, h0, c0, p, dy, dh, dc = _data(cell, T, N, 3, 6, dtype, [9, CELLS.index(cell)])
    mask = right_padded_mask(lengths, T)
    ref = torch_reference(cell, x, h0, c0, p, dy, dh, dc, lengths=lengths, reverse=True)
    ours = _ours(cell, x, h0, c0, p, dy, dh, dc, mask=mask, reverse=True, zero_output_for_mask=True)
    _compare(cell, ours, ref, TOLS[dtype])
