"""Fast reductions over the short last axis of class-score arrays (private).

NumPy reduces a handful of contiguous elements per row slowly: ``p.sum(axis=-1)`` or
``p.argmax(axis=-1)`` over a ``[32, 50, 10]`` float32 array costs ~50 us, 5-10x an elementwise pass
over the same data, and a training step of a small sequence model does several of them (softmax,
loss, accuracy). These helpers run one pass in C++ (``_core.*_rows``) for float32 / float64
arrays whose rows lie contiguously (C-contiguous, or a batch-major view of time-major memory, as
a model's outputs are) and fall back to NumPy for anything else, with the same results.

Shapes
------
``x``: ``[..., K]`` with ``K >= 1``; reductions return ``[...]`` (or ``[..., 1]`` with keepdims).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from rnnkit import _core
from rnnkit._checks import memory_perm

_FAST = (np.float32, np.float64)


def _memory_order(x: np.ndarray) -> Optional[Tuple[int, ...]]:
    """The axis order in which ``x`` is a C-contiguous float array with the last axis last (the
    identity, or ``(1, 0, 2)`` for a batch-major view of time-major memory), or None when the
    compiled row kernels cannot take it."""
    if not (type(x) is np.ndarray and x.dtype.type in _FAST and x.ndim >= 1 and x.size > 0
            and x.flags.aligned):
        return None
    if x.flags.c_contiguous:
        return tuple(range(x.ndim))
    perm = memory_perm(x)
    return perm if perm != tuple(range(x.ndim)) else None


def _in_memory_order(x: np.ndarray, perm: Tuple[int, ...]) -> np.ndarray:
    """``x`` transposed to ``perm`` (a C-contiguous view; the identity costs nothing)."""
    return x if perm == tuple(range(x.ndim)) else x.transpose(perm)


def _back(y: np.ndarray, perm: Tuple[int, ...]) -> np.ndarray:
    """A result computed in ``perm`` order, viewed in the caller's axis order (the reduced last
    axis, if dropped, never moves)."""
    if perm == tuple(range(len(perm))):
        return y
    if perm == (1, 0, 2):  # its own inverse
        return y.transpose(perm if y.ndim == 3 else (1, 0))
    inv = tuple(int(i) for i in np.argsort(perm))
    return y.transpose(inv if y.ndim == len(perm) else inv[:-1])


def softmax_last_axis(x: np.ndarray) -> np.ndarray:
    """``exp(x - max) / sum(exp(x - max))`` over the last axis, a new array of x's shape (in x's
    memory order)."""
    perm = _memory_order(x)
    if perm is not None:
        return _back(_core.softmax_rows(_in_memory_order(x, perm)), perm)
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    e /= np.sum(e, axis=-1, keepdims=True)
    return e


def sum_last_axis(x: np.ndarray, keepdims: bool = False) -> np.ndarray:
    """``x.sum(axis=-1, keepdims=keepdims)``."""
    perm = _memory_order(x)
    if perm is not None:
        s = _back(_core.sum_rows(_in_memory_order(x, perm)), perm)
        return s[..., None] if keepdims else s
    return np.sum(x, axis=-1, keepdims=keepdims)


def argmax_last_axis(x: np.ndarray) -> np.ndarray:
    """``x.argmax(axis=-1)`` (int64; the first of equal maxima, the first NaN if any)."""
    perm = _memory_order(x)
    if perm is not None:
        return _back(_core.argmax_rows(_in_memory_order(x, perm)), perm)
    return np.argmax(x, axis=-1)


def sum_rows_of_matrix(a: np.ndarray) -> np.ndarray:
    """``a.sum(axis=0)`` of a 2-D float array as one BLAS product ``ones @ a`` (NumPy's axis-0
    reduction of a tall, narrow matrix is ~6x slower)."""
    if type(a) is np.ndarray and a.ndim == 2 and a.dtype.type in _FAST and a.shape[0] > 0:
        return np.ones(a.shape[0], dtype=a.dtype) @ a
    return a.sum(axis=0)
