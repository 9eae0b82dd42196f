"""rnnkit._rows: the C++ row reductions over the last axis agree with NumPy (float32 and float64,
any leading shape, K = 1, NaN rows, non-contiguous and integer inputs through the fallback), and
give the same bits wherever the array sits in memory."""
from __future__ import annotations

import numpy as np
import pytest

from rnnkit import _rows

SHAPES = [(7,), (1, 1), (5, 1), (3, 10), (4, 6, 10), (2, 3, 4, 33), (1600, 10)]


def _np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-7), (np.float64, 1e-15)])
def test_against_numpy(rng, shape, dtype, tol):
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    s = _rows.softmax_last_axis(x)
    assert s.dtype == dtype and s.shape == x.shape
    np.testing.assert_allclose(s, _np_softmax(x.astype(np.float64)), rtol=8 * tol, atol=tol)
    np.testing.assert_allclose(_rows.sum_last_axis(x), x.astype(np.float64).sum(axis=-1),
                               rtol=16 * tol, atol=16 * tol * np.abs(x).sum(axis=-1).max())
    assert _rows.sum_last_axis(x, keepdims=True).shape == x.shape[:-1] + (1,)
    a = _rows.argmax_last_axis(x)
    assert a.dtype == np.int64
    np.testing.assert_array_equal(a, np.argmax(x, axis=-1))


def test_argmax_ties_and_nan_follow_numpy():
    x = np.array([[1.0, 3.0, 3.0, 2.0], [np.nan, 1.0, 5.0, np.nan], [1.0, 9.0, np.nan, 9.0],
                  [-np.inf, -np.inf, -np.inf, -np.inf], [0.0, np.inf, np.inf, 1.0]])
    for dtype in (np.float32, np.float64):
        np.testing.assert_array_equal(_rows.argmax_last_axis(x.astype(dtype)), np.argmax(x, -1))


def test_softmax_of_extreme_rows():
    x = np.array([[1000.0, 0.0, -1000.0], [-1e30, -1e30, -1e30], [np.nan, 0.0, 1.0]], np.float32)
    s = _rows.softmax_last_axis(x)
    np.testing.assert_allclose(s[0], [1.0, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(s[1], [1 / 3] * 3, rtol=1e-6)
    assert np.all(np.isnan(s[2]))


def test_fallbacks_for_other_layouts_and_types(rng):
    x = rng.standard_normal((6, 8))
    view = x[:, ::2]  # not contiguous
    np.testing.assert_allclose(_rows.softmax_last_axis(view), _np_softmax(view), rtol=1e-14)
    np.testing.assert_array_equal(_rows.argmax_last_axis(view), np.argmax(view, axis=-1))
    ints = np.array([[1, 5, 2], [7, 0, 7]])
    np.testing.assert_array_equal(_rows.argmax_last_axis(ints), [1, 0])
    np.testing.assert_array_equal(_rows.sum_last_axis(ints), [8, 14])
    np.testing.assert_allclose(_rows.sum_rows_of_matrix(x), x.sum(axis=0), rtol=1e-13)
    np.testing.assert_array_equal(_rows.sum_rows_of_matrix(ints), ints.sum(axis=0))
    with pytest.raises(ValueError):
        _rows.argmax_last_axis(np.zeros((3, 0)))


def test_softmax_bits_do_not_depend_on_alignment(rng):
    x = rng.standard_normal((37, 10)).astype(np.float32)
    ref = _rows.softmax_last_axis(x)
    buf = np.empty(x.size + 16, np.float32)
    for off in range(16):  # every offset within a 64-byte line
        y = buf[off:off + x.size].reshape(x.shape)
        y[...] = x
        np.testing.assert_array_equal(_rows.softmax_last_axis(y), ref)
