r"""Functional recurrent kernels: whole sequences, time-major, forward and backward.

Every function takes NumPy arrays in PyTorch's layout and returns NumPy arrays. Sizes:
``T`` time steps, ``N`` batch, ``C`` input features, ``H`` hidden units.

=========  =====================================================  ==================
cell       recurrence                                             gate order (G)
=========  =====================================================  ==================
RNN        :math:`h' = \phi(W_{ih} x + b_{ih} + W_{hh} h + b_{hh})`          (1)
LSTM       :math:`c' = \sigma(f) c + \sigma(i) \tanh(g)`, :math:`h' = \sigma(o)\tanh(c')`  i, f, g, o (4)
GRU        :math:`n = \tanh(W_{in}x + b_{in} + r (W_{hn}h + b_{hn}))`,
           :math:`h' = (1-z) n + z h`                               r, z, n (3)
=========  =====================================================  ==================

Shapes
------
- ``x: [T, N, C]``, ``h0``/``c0``: ``[N, H]`` (``None`` = zeros)
- ``w_ih: [G*H, C]``, ``w_hh: [G*H, H]``, ``b_ih``/``b_hh``: ``[G*H]`` (``None`` = no bias)
- ``mask: [T, N]`` bool (``None`` = every step valid)
- outputs ``y: [T, N, H]``, final states ``[N, H]``

Masks
-----
Where ``mask[t, n]`` is False the step is skipped for that sample: its state is carried forward
unchanged and its output ``y[t, n]`` is that carried state (the previous output, or the initial
state before any valid step — Keras's semantics); with ``zero_output_for_mask=True`` it is zero.
Masks may have holes anywhere, not only right padding.

``recurrent_dropout_mask: [N, H]`` (same dtype, already scaled by ``1/(1-rate)``) multiplies
:math:`h_{t-1}` where it enters the recurrent product, one mask per sequence (Keras's
``recurrent_dropout``); the state itself (and GRU's :math:`z \odot h_{t-1}` term) is not dropped.

``reverse=True`` runs the recurrence from ``t = T-1`` down to 0 and writes each output at its own
time index (the backward half of a bidirectional layer, Keras's ``go_backwards`` without the flip).

Dtypes and copies
-----------------
``x`` decides the precision (float32 or float64); every other array must have the same dtype,
else ``TypeError``. Arrays that are already C-contiguous with that dtype are used in place with
no copy; non-contiguous views are copied once (documented, as PyTorch's ``.contiguous()``).
The cache keeps references to ``x`` and the weights: do not modify them in place before calling
the backward function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Tuple

import numpy as np

from rnnkit import _core
from rnnkit._checks import FLOAT_DTYPES, as_float_array, as_mask, check_cell_activations, check_shape
from rnnkit._checks import recurrent_weights
from rnnkit._checks import shape_str as _shape_str

__all__ = [
    "rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
    "RNNCache", "LSTMCache", "GRUCache", "layernorm_lstm_forward", "layernorm_lstm_backward",
    "layernorm_gru_forward", "layernorm_gru_backward", "LayerNormLSTMCache", "LayerNormGRUCache",
]

Array = np.ndarray


# ---------------------------------------------------------------------------------------------
# caches and results
# ---------------------------------------------------------------------------------------------

# A state's zoneout as the kernels take it: a per-step array [T, N, W] (training masks) or a
# constant probability (inference); (None, 0.0) = none.
Zoneout = Tuple[Optional[Array], float]
NO_ZONEOUT: Zoneout = (None, 0.0)


@dataclass(frozen=True)
class _CacheBase:
    x: Array                 # [T, N, C]
    w_ih: Array              # [G*H, C]
    w_hh: Array              # [G*H, H]
    has_bias: Tuple[bool, bool]
    mask: Optional[Array]    # [T, N] bool
    reverse: bool
    zero_output_for_mask: bool
    S: Array                 # [T+1, N, H] states (h0 and the state after every step)
    rd: Optional[Array]      # [N, H] recurrent dropout mask (or None)
    zoneout_h: Zoneout = NO_ZONEOUT  # zoneout of h: [T, N, H] mask or a probability


@dataclass(frozen=True)
class RNNCache(_CacheBase):
    """What :func:`rnn_backward` needs from :func:`rnn_forward`."""
    nonlinearity: str = "tanh"


@dataclass(frozen=True)
class LSTMCache(_CacheBase):
    """What :func:`lstm_backward` needs from :func:`lstm_forward`."""
    c_states: Array = None   # [T+1, N, H]
    gates: Array = None      # [T, N, 4H] activated i, f, g, o
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    w_hr: Optional[Array] = None  # [P, H] the projection (LSTMP), or None
    m: Optional[Array] = None     # [T, N, H] o ⊙ φ(c) before the projection (LSTMP only)
    zoneout_c: Zoneout = NO_ZONEOUT  # zoneout of c: [T, N, H] mask or a probability
    c_new: Optional[Array] = None  # [T, N, H] the cell states before zoneout (zoneout of c only)


@dataclass(frozen=True)
class GRUCache(_CacheBase):
    """What :func:`gru_backward` needs from :func:`gru_forward`."""
    gates: Array = None      # [T, N, 3H] activated r, z, n
    hn: Array = None         # [T, N, H] W_hn h + b_hn (reset_after) or r ⊙ h̃ (reset_after=False)
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    reset_after: bool = True


class RNNOutput(NamedTuple):
    y: Array
    h_n: Array
    cache: RNNCache


class LSTMOutput(NamedTuple):
    y: Array
    h_n: Array
    c_n: Array
    cache: LSTMCache


class GRUOutput(NamedTuple):
    y: Array
    h_n: Array
    cache: GRUCache


class RNNGrads(NamedTuple):
    dx: Array
    dh0: Array
    dw_ih: Array
    dw_hh: Array
    db_ih: Optional[Array]
    db_hh: Optional[Array]


class LSTMGrads(NamedTuple):
    dx: Array
    dh0: Array
    dc0: Array
    dw_ih: Array
    dw_hh: Array
    db_ih: Optional[Array]
    db_hh: Optional[Array]
    dw_hr: Optional[Array] = None  # [P, H], with a projection


GRUGrads = RNNGrads


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------

class _Args(NamedTuple):
    x: Array
    states: Tuple[Optional[Array], ...]
    w_ih: Array
    w_hh: Array
    b_ih: Optional[Array]
    b_hh: Optional[Array]
    mask: Optional[Array]
    rd: Optional[Array]
    w_hr: Optional[Array] = None


def _validate(gates: int, cell: str, x, states, state_names, w_ih, w_hh, b_ih, b_hh, mask,
              rd, w_hr=None) -> _Args:
    x = as_float_array("x", x)
    if x.ndim != 3:
        raise ValueError(f"x: expected 3 dimensions [T, N, C] (time-major), got shape {x.shape}")
    T, N, C = x.shape
    if T == 0 or N == 0 or C == 0:
        raise ValueError(f"x: every size of [T, N, C] must be at least 1, got shape {x.shape}")
    dt = x.dtype
    w_ih, w_hh, b_ih, b_hh = recurrent_weights(gates, cell, w_ih, w_hh, b_ih, b_hh, dtype=dt, C=C,
                                               w_hr=w_hr)
    Hs = w_hh.shape[1]  # the state h: H, or P with a projection
    if w_hr is not None:
        w_hr = as_float_array("w_hr", w_hr, dt)
    H = Hs if w_hr is None else w_hr.shape[1]
    out_states = []
    for nm, s in zip(state_names, states):
        if s is not None:
            s = as_float_array(nm, s, dt)
            if nm == "c0" or w_hr is None:
                check_shape(nm, s, (N, H), "= (N, H)")
            else:
                check_shape(nm, s, (N, Hs), "= (N, P)")
        out_states.append(s)
    if mask is not None:
        mask = as_mask("mask", mask, (T, N))
    if rd is not None:
        rd = as_float_array("recurrent_dropout_mask", rd, dt)
        check_shape("recurrent_dropout_mask", rd, (N, Hs), "= (N, H)" if w_hr is None else "= (N, P)")
    return _Args(x, tuple(out_states), w_ih, w_hh, b_ih, b_hh, mask, rd, w_hr)


def _cache_array(name: str, a, dtype, shape) -> None:
    """Raises ValueError naming ``cache.<name>`` unless ``a`` is a C-contiguous, aligned array of
    ``dtype`` and ``shape`` (what the kernels read without a copy)."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"cache.{name}: expected an array of shape {_shape_str(shape)}, got "
                         f"{type(a).__name__}")
    if a.dtype != dtype or a.shape != tuple(shape) or not a.flags.c_contiguous or not a.flags.aligned:
        raise ValueError(f"cache.{name}: expected a C-contiguous {dtype} array "
                         f"{'(the dtype of cache.x) ' if name not in ('x', 'mask') else ''}of shape "
                         f"{_shape_str(shape)}, got {a.dtype} {_shape_str(a.shape)}"
                         f"{'' if a.flags.c_contiguous and a.flags.aligned else ' (not C-contiguous/aligned)'}")


def _check_cache(cache, cls, fn: str, gates: int) -> None:
    """Checks every field of a cache before a backward reads it: the class, then each array's
    dtype, shape and layout against the sizes of ``x`` and ``w_hh`` (an edited or mismatched
    cache raises ValueError naming the field)."""
    if not isinstance(cache, cls):
        raise TypeError(f"cache: expected the {cls.__name__} returned by {fn}, got {type(cache).__name__}")
    x = cache.x
    if not isinstance(x, np.ndarray) or x.dtype not in FLOAT_DTYPES or x.ndim != 3 or 0 in x.shape:
        got = f"{x.dtype} {_shape_str(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"cache.x: expected a float32/float64 array [T, N, C], got {got}")
    T, N, C = x.shape
    dt = x.dtype
    _cache_array("x", x, dt, (T, N, C))
    w_hh = cache.w_hh
    w_hr = cache.w_hr if isinstance(cache, LSTMCache) else None
    if w_hr is not None:
        if not isinstance(w_hr, np.ndarray) or w_hr.ndim != 2 or 0 in w_hr.shape:
            got = _shape_str(w_hr.shape) if isinstance(w_hr, np.ndarray) else type(w_hr).__name__
            raise ValueError(f"cache.w_hr: expected shape (P, H), got {got}")
        P, H = w_hr.shape
        _cache_array("w_hr", w_hr, dt, (P, H))
        _cache_array("w_hh", w_hh, dt, (gates * H, P))
    else:
        if not isinstance(w_hh, np.ndarray) or w_hh.ndim != 2 or w_hh.shape[1] == 0 \
                or w_hh.shape[0] != gates * w_hh.shape[1]:
            got = _shape_str(w_hh.shape) if isinstance(w_hh, np.ndarray) else type(w_hh).__name__
            raise ValueError(f"cache.w_hh: expected shape ({gates}*H, H), got {got}")
        H = P = w_hh.shape[1]
        _cache_array("w_hh", w_hh, dt, (gates * H, H))
    _cache_array("w_ih", cache.w_ih, dt, (gates * H, C))
    _cache_array("S", cache.S, dt, (T + 1, N, P))
    hb = cache.has_bias
    if not (isinstance(hb, tuple) and len(hb) == 2 and all(isinstance(b, bool) for b in hb)):
        raise ValueError(f"cache.has_bias: expected a pair of bools, got {hb!r:.80}")
    for name in ("reverse", "zero_output_for_mask"):
        if not isinstance(getattr(cache, name), bool):
            raise ValueError(f"cache.{name}: expected a bool, got {getattr(cache, name)!r:.80}")
    if cache.mask is not None:
        _cache_array("mask", cache.mask, np.dtype(bool), (T, N))
    if cache.rd is not None:
        _cache_array("rd", cache.rd, dt, (N, P))
    if isinstance(cache, RNNCache):
        check_cell_activations(cache.nonlinearity, None, names=("cache.nonlinearity", ""))
    else:
        check_cell_activations(cache.activation, cache.recurrent_activation,
                               names=("cache.activation", "cache.recurrent_activation"))
    _check_zoneout("zoneout_h", cache.zoneout_h, dt, (T, N, P))
    if isinstance(cache, LSTMCache):
        _cache_array("c_states", cache.c_states, dt, (T + 1, N, H))
        _cache_array("gates", cache.gates, dt, (T, N, 4 * H))
        if w_hr is not None:
            _cache_array("m", cache.m, dt, (T, N, H))
        _check_zoneout("zoneout_c", cache.zoneout_c, dt, (T, N, H))
        if cache.zoneout_c[0] is not None or cache.zoneout_c[1] != 0.0:
            _cache_array("c_new", cache.c_new, dt, (T, N, H))
    if isinstance(cache, GRUCache):
        if not isinstance(cache.reset_after, bool):
            raise ValueError(f"cache.reset_after: expected a bool, got {cache.reset_after!r:.80}")
        _cache_array("gates", cache.gates, dt, (T, N, 3 * H))
        if not isinstance(cache, LayerNormGRUCache):  # its own fields: _check_ln_cache
            _cache_array("hn", cache.hn, dt, (T, N, H))


def _grad_arg(name: str, a, like: Array, shape) -> Optional[Array]:
    if a is None:
        return None
    a = as_float_array(name, a, like.dtype)
    check_shape(name, a, shape)
    return a


def _zoneout(name: str, z: Any, shape: Tuple[int, ...], dtype: np.dtype) -> Zoneout:
    """A state's zoneout argument, checked: None (none), a probability in [0, 1) (inference: the
    expectation) or a per-step array of ``shape`` with values in [0, 1] (training masks, 1 =
    keep the previous value)."""
    if z is None:
        return NO_ZONEOUT
    if isinstance(z, (float, int, np.floating, np.integer)) and not isinstance(z, (bool, np.bool_)):
        p = float(z)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{name}: expected a zoneout probability in [0, 1) or a mask array, got {p}")
        return (None, p)
    a = as_float_array(name, z, dtype)
    check_shape(name, a, shape, "= (T, N, H)")
    if a.size and not (np.all(a >= 0) and np.all(a <= 1)):
        raise ValueError(f"{name}: expected mask values in [0, 1] (1 = keep the previous state)")
    return (a, 0.0)


def _check_zoneout(name: str, z: Any, dt: np.dtype, shape: Tuple[int, ...]) -> None:
    if not (isinstance(z, tuple) and len(z) == 2 and isinstance(z[1], float)):
        raise ValueError(f"cache.{name}: expected an (array or None, probability) pair, got {z!r:.80}")
    if z[0] is not None:
        _cache_array(name, z[0], dt, shape)


def _norms_out(a: Any, T: int, N: int) -> Optional[Array]:
    """The optional ``dh_norms`` output of a backward: a writeable C-contiguous float64 array
    ``[T, N]`` that receives ‖dL/dh_t‖ of every step and sample (what
    :mod:`rnnkit.diagnostics` reads), or None."""
    if a is None:
        return None
    if not (isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == (T, N)
            and a.flags.c_contiguous and a.flags.writeable):
        got = f"{a.dtype} {_shape_str(a.shape)}" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"dh_norms: expected a writeable C-contiguous float64 array of shape "
                         f"{_shape_str((T, N))}, got {got}")
    return a


def _bias_grads(cache: _CacheBase, db_ih: Array, db_hh: Array):
    has_ih, has_hh = cache.has_bias
    return (db_ih if has_ih else None), (db_hh if has_hh else None)


# ---------------------------------------------------------------------------------------------
# Elman RNN
# ---------------------------------------------------------------------------------------------

def rnn_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity: str = "tanh",
                mask=None, reverse: bool = False, zero_output_for_mask: bool = False,
                recurrent_dropout_mask=None) -> RNNOutput:
    r"""Elman RNN over a whole sequence: :math:`h_t = \mathrm{act}(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})`.

    Parameters
    ----------
    x, h0, w_ih, w_hh, b_ih, b_hh
        See Shapes; ``h0`` and the biases may be ``None``.
    nonlinearity
        ``'tanh'`` (PyTorch's default), ``'relu'`` or ``'linear'``.
    mask, reverse, zero_output_for_mask
        See the module documentation.

    Shapes
    ------
    x: [T, N, C], h0: [N, H], w_ih: [H, C], w_hh: [H, H], b_ih, b_hh: [H], mask: [T, N]
    -> y: [T, N, H], h_n: [N, H]

    Returns
    -------
    RNNOutput
        ``(y, h_n, cache)``; pass ``cache`` to :func:`rnn_backward`.
    """
    check_cell_activations(nonlinearity, None, names=("nonlinearity", ""))
    a = _validate(1, "RNN", x, (h0,), ("h0",), w_ih, w_hh, b_ih, b_hh, mask,
                  recurrent_dropout_mask)
    y, S = _core.rnn_forward(a.x, a.states[0], a.w_ih, a.w_hh, a.b_ih, a.b_hh, nonlinearity,
                             a.mask, a.rd, bool(reverse), bool(zero_output_for_mask))
    h_n = S[0 if reverse else -1].copy()
    cache = RNNCache(a.x, a.w_ih, a.w_hh, (a.b_ih is not None, a.b_hh is not None), a.mask,
                     bool(reverse), bool(zero_output_for_mask), S, a.rd, nonlinearity=nonlinearity)
    return RNNOutput(y, h_n, cache)


def rnn_backward(cache: RNNCache, dy, dh_n=None, *, need_dx: bool = True, dh_norms=None) -> RNNGrads:
    """Backpropagation through time for :func:`rnn_forward`.

    Shapes
    ------
    dy: [T, N, H], dh_n: [N, H] (``None`` = zeros)
    -> dx: [T, N, C], dh0: [N, H], dw_ih: [H, C], dw_hh: [H, H], db_ih, db_hh: [H] (``None``
    where the forward had no such bias)

    ``need_dx=False`` skips the input gradient (``dx`` is ``None``): one GEMM less, for a
    first layer whose input is data. ``dh_norms``: an optional float64 ``[T, N]`` array that
    receives ‖dL/dh_t‖ of every step and sample (every backward takes it).
    """
    _check_cache(cache, RNNCache, "rnn_forward", 1)
    T, N, H = cache.S.shape[0] - 1, cache.S.shape[1], cache.S.shape[2]
    dy = _grad_arg("dy", dy, cache.x, (T, N, H))
    if dy is None:
        raise ValueError("dy: expected an array of shape (T, N, H), got None")
    dh_n = _grad_arg("dh_n", dh_n, cache.x, (N, H))
    dx, dh0, dw_ih, dw_hh, db = _core.rnn_backward(
        cache.x, cache.w_ih, cache.w_hh, cache.nonlinearity, cache.mask, cache.rd, cache.reverse,
        cache.zero_output_for_mask, cache.S, dy, dh_n, bool(need_dx), dh_norms=_norms_out(dh_norms, T, N))
    return RNNGrads(dx, dh0, dw_ih, dw_hh, *_bias_grads(cache, db, db.copy()))


# ---------------------------------------------------------------------------------------------
# LSTM
# ---------------------------------------------------------------------------------------------

def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, *, mask=None, reverse: bool = False,
                 zero_output_for_mask: bool = False, recurrent_dropout_mask=None,
                 activation: str = "tanh", recurrent_activation: str = "sigmoid",
                 w_hr=None, zoneout_h=None, zoneout_c=None) -> LSTMOutput:
    r"""LSTM over a whole sequence, PyTorch's gate order i, f, g, o.

    .. math::
        i, f, o = \sigma(\cdot),\; g = \phi(\cdot) \text{ of } W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}\\
        c_t = f \odot c_{t-1} + i \odot g,\qquad h_t = o \odot \phi(c_t)

    :math:`\phi` is ``activation`` (``'tanh'``, ``'relu'`` or ``'linear'``) and :math:`\sigma`
    ``recurrent_activation`` (``'sigmoid'`` or Keras 3's ``'hard_sigmoid'``,
    :math:`\mathrm{clip}(x/6 + 1/2, 0, 1)`), as Keras's ``LSTM``; every pair runs in the fused
    kernels.

    With a projection ``w_hr: [P, H]`` (``torch.nn.LSTM(proj_size=P)``, LSTMP) the state is
    :math:`h_t = W_{hr} (o \odot \phi(c_t))` of size P: then ``w_hh`` is ``[4H, P]``, ``h0``,
    ``h_n`` and ``y``'s last axis are P wide, and the cell state stays H wide.

    Zoneout (Krueger et al. 2016): ``zoneout_h`` and ``zoneout_c`` are each None, a probability
    p in [0, 1) (inference: the expectation) or a mask ``[T, N, H]`` (``[T, N, P]`` for h with a
    projection) of values in [0, 1] (training: 1 keeps the previous value). Each state then moves
    only part of the way: :math:`c_t = c' + z_c \odot (c_{t-1} - c')`,
    :math:`h_t = h' + z_h \odot (h_{t-1} - h')`, where :math:`h'` comes from the un-zoned
    :math:`c'`.

    Shapes
    ------
    x: [T, N, C], h0, c0: [N, H], w_ih: [4H, C], w_hh: [4H, H], b_ih, b_hh: [4H], mask: [T, N]
    -> y: [T, N, H], h_n, c_n: [N, H]

    Returns
    -------
    LSTMOutput
        ``(y, h_n, c_n, cache)``; pass ``cache`` to :func:`lstm_backward`.
    """
    a = _validate(4, "LSTM", x, (h0, c0), ("h0", "c0"), w_ih, w_hh, b_ih, b_hh, mask,
                  recurrent_dropout_mask, w_hr)
    check_cell_activations(activation, recurrent_activation)
    T, N = a.x.shape[:2]
    Hs, H = a.w_hh.shape[1], a.w_hh.shape[0] // 4
    zh = _zoneout("zoneout_h", zoneout_h, (T, N, Hs), a.x.dtype)
    zc = _zoneout("zoneout_c", zoneout_c, (T, N, H), a.x.dtype)
    y, S, Cs, gates, m, c_new = _core.lstm_forward(
        a.x, a.states[0], a.states[1], a.w_ih, a.w_hh, a.b_ih, a.b_hh, a.mask, a.rd, bool(reverse),
        bool(zero_output_for_mask), activation, recurrent_activation, a.w_hr, zh[0], zh[1], zc[0], zc[1])
    last = 0 if reverse else -1
    cache = LSTMCache(a.x, a.w_ih, a.w_hh, (a.b_ih is not None, a.b_hh is not None), a.mask,
                      bool(reverse), bool(zero_output_for_mask), S, a.rd, zh, Cs, gates, activation,
                      recurrent_activation, a.w_hr, m, zc, c_new)
    return LSTMOutput(y, S[last].copy(), Cs[last].copy(), cache)


def lstm_backward(cache: LSTMCache, dy, dh_n=None, dc_n=None, *,
                  need_dx: bool = True, dh_norms=None) -> LSTMGrads:
    """Backpropagation through time for :func:`lstm_forward`.

    Shapes
    ------
    dy: [T, N, H], dh_n, dc_n: [N, H] (``None`` = zeros)
    -> dx: [T, N, C], dh0, dc0: [N, H], dw_ih: [4H, C], dw_hh: [4H, H], db_ih, db_hh: [4H]
    (with a projection: dy, dh_n, dh0: [.., P], dw_hh: [4H, P] and dw_hr: [P, H]; else dw_hr None)
    """
    _check_cache(cache, LSTMCache, "lstm_forward", 4)
    T, N, Hs = cache.S.shape[0] - 1, cache.S.shape[1], cache.S.shape[2]
    H = cache.c_states.shape[2]
    dy = _grad_arg("dy", dy, cache.x, (T, N, Hs))
    if dy is None:
        raise ValueError("dy: expected an array of shape (T, N, H), got None")
    dh_n = _grad_arg("dh_n", dh_n, cache.x, (N, Hs))
    dc_n = _grad_arg("dc_n", dc_n, cache.x, (N, H))
    dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr = _core.lstm_backward(
        cache.x, cache.w_ih, cache.w_hh, cache.mask, cache.rd, cache.reverse, cache.zero_output_for_mask,
        cache.S, cache.c_states, cache.gates, dy, dh_n, dc_n, bool(need_dx), cache.activation,
        cache.recurrent_activation, cache.w_hr, cache.m, cache.zoneout_h[0], cache.zoneout_h[1],
        cache.zoneout_c[0], cache.zoneout_c[1], cache.c_new, dh_norms=_norms_out(dh_norms, T, N))
    return LSTMGrads(dx, dh0, dc0, dw_ih, dw_hh, *_bias_grads(cache, db, db.copy()), dw_hr)


# ---------------------------------------------------------------------------------------------
# GRU
# ---------------------------------------------------------------------------------------------

def gru_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, mask=None, reverse: bool = False,
                zero_output_for_mask: bool = False, recurrent_dropout_mask=None,
                activation: str = "tanh", recurrent_activation: str = "sigmoid",
                reset_after: bool = True, zoneout_h=None) -> GRUOutput:
    r"""GRU over a whole sequence, gate order r, z, n. With ``reset_after=True`` (PyTorch's form,
    Keras 3's default) the reset gate multiplies the recurrent product:

    .. math::
        r, z = \sigma(W_{i\cdot} x_t + b_{i\cdot} + W_{h\cdot} h_{t-1} + b_{h\cdot})\\
        n = \phi(W_{in} x_t + b_{in} + r \odot (W_{hn} h_{t-1} + b_{hn})),\qquad
        h_t = (1 - z) \odot n + z \odot h_{t-1}

    With ``reset_after=False`` (Keras 2's default, the original form) it multiplies the state
    before the product, and there is no recurrent bias (``b_hh`` must be None):

    .. math::
        n = \phi(W_{in} x_t + b_{in} + W_{hn} (r \odot h_{t-1}))

    Both run in the fused kernels (the second with two recurrent products per step).

    ``zoneout_h``: None, a probability (inference) or a mask ``[T, N, H]`` (training), as in
    :func:`lstm_forward`: :math:`h_t = h' + z_h \odot (h_{t-1} - h')`.

    :math:`\phi` is ``activation`` (``'tanh'``, ``'relu'``, ``'linear'``) and :math:`\sigma`
    ``recurrent_activation`` (``'sigmoid'``, ``'hard_sigmoid'``), all in the fused kernels.

    Shapes
    ------
    x: [T, N, C], h0: [N, H], w_ih: [3H, C], w_hh: [3H, H], b_ih, b_hh: [3H], mask: [T, N]
    -> y: [T, N, H], h_n: [N, H]

    Returns
    -------
    GRUOutput
        ``(y, h_n, cache)``; pass ``cache`` to :func:`gru_backward`.
    """
    a = _validate(3, "GRU", x, (h0,), ("h0",), w_ih, w_hh, b_ih, b_hh, mask,
                  recurrent_dropout_mask)
    check_cell_activations(activation, recurrent_activation)
    if not reset_after and a.b_hh is not None:
        raise ValueError("b_hh: the GRU with reset_after=False has no recurrent bias, expected None")
    zh = _zoneout("zoneout_h", zoneout_h, a.x.shape[:2] + (a.w_hh.shape[1],), a.x.dtype)
    y, S, gates, hn = _core.gru_forward(a.x, a.states[0], a.w_ih, a.w_hh, a.b_ih, a.b_hh, a.mask,
                                        a.rd, bool(reverse), bool(zero_output_for_mask),
                                        activation, recurrent_activation, bool(reset_after), zh[0], zh[1])
    cache = GRUCache(a.x, a.w_ih, a.w_hh, (a.b_ih is not None, a.b_hh is not None), a.mask,
                     bool(reverse), bool(zero_output_for_mask), S, a.rd, zh, gates, hn, activation,
                     recurrent_activation, bool(reset_after))
    return GRUOutput(y, S[0 if reverse else -1].copy(), cache)


def gru_backward(cache: GRUCache, dy, dh_n=None, *, need_dx: bool = True, dh_norms=None) -> GRUGrads:
    """Backpropagation through time for :func:`gru_forward`.

    Shapes
    ------
    dy: [T, N, H], dh_n: [N, H] (``None`` = zeros)
    -> dx: [T, N, C], dh0: [N, H], dw_ih: [3H, C], dw_hh: [3H, H], db_ih, db_hh: [3H]
    """
    _check_cache(cache, GRUCache, "gru_forward", 3)
    T, N, H = cache.S.shape[0] - 1, cache.S.shape[1], cache.S.shape[2]
    dy = _grad_arg("dy", dy, cache.x, (T, N, H))
    if dy is None:
        raise ValueError("dy: expected an array of shape (T, N, H), got None")
    dh_n = _grad_arg("dh_n", dh_n, cache.x, (N, H))
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh = _core.gru_backward(
        cache.x, cache.w_ih, cache.w_hh, cache.mask, cache.rd, cache.reverse, cache.zero_output_for_mask,
        cache.S, cache.gates, cache.hn, dy, dh_n, bool(need_dx), cache.activation,
        cache.recurrent_activation, cache.reset_after, cache.zoneout_h[0], cache.zoneout_h[1],
        dh_norms=_norms_out(dh_norms, T, N))
    return GRUGrads(dx, dh0, dw_ih, dw_hh, *_bias_grads(cache, db_ih, db_hh))


# ---------------------------------------------------------------------------------------------
# LayerNorm LSTM and GRU (haste's formulation)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerNormLSTMCache(LSTMCache):
    """What :func:`layernorm_lstm_backward` needs from :func:`layernorm_lstm_forward`."""
    gamma_x: Array = None    # [4H]
    gamma_h: Array = None    # [4H]
    gamma_c: Array = None    # [H]
    beta_c: Array = None     # [H]
    x_hat: Array = None      # [T, N, 4H] LN(W_ih x)
    r_hat: Array = None      # [T, N, 4H] LN(W_hh h_{t-1})
    c_hat: Array = None      # [T, N, H] LN(c')
    rstd: Array = None       # [T, N, 3]


@dataclass(frozen=True)
class LayerNormGRUCache(GRUCache):
    """What :func:`layernorm_gru_backward` needs from :func:`layernorm_gru_forward`."""
    gamma_x: Array = None    # [3H]
    gamma_h: Array = None    # [3H]
    b_hh: Optional[Array] = None  # [3H] (its n part enters the backward)
    x_hat: Array = None      # [T, N, 3H]
    r_hat: Array = None      # [T, N, 3H]
    rstd: Array = None       # [T, N, 2]


class LayerNormLSTMGrads(NamedTuple):
    dx: Array
    dh0: Array
    dc0: Array
    dw_ih: Array
    dw_hh: Array
    db_ih: Optional[Array]
    db_hh: Optional[Array]
    dgamma_x: Array
    dgamma_h: Array
    dgamma_c: Array
    dbeta_c: Array


class LayerNormGRUGrads(NamedTuple):
    dx: Array
    dh0: Array
    dw_ih: Array
    dw_hh: Array
    db_ih: Optional[Array]
    db_hh: Optional[Array]
    dgamma_x: Array
    dgamma_h: Array


def _ln_param(name: str, a: Any, dtype: np.dtype, size: int) -> Array:
    a = as_float_array(name, a, dtype)
    check_shape(name, a, (size,))
    return a


def _check_ln_cache(cache: Any, G: int) -> None:
    """The LayerNorm fields of a cache, checked like the others (dtype, shape, layout)."""
    T, N = cache.x.shape[:2]
    H = cache.S.shape[2]
    dt = cache.x.dtype
    _cache_array("gamma_x", cache.gamma_x, dt, (G * H,))
    _cache_array("gamma_h", cache.gamma_h, dt, (G * H,))
    _cache_array("x_hat", cache.x_hat, dt, (T, N, G * H))
    _cache_array("r_hat", cache.r_hat, dt, (T, N, G * H))
    if G == 4:
        _cache_array("gamma_c", cache.gamma_c, dt, (H,))
        _cache_array("beta_c", cache.beta_c, dt, (H,))
        _cache_array("c_hat", cache.c_hat, dt, (T, N, H))
        _cache_array("rstd", cache.rstd, dt, (T, N, 3))
    else:
        if cache.b_hh is not None:
            _cache_array("b_hh", cache.b_hh, dt, (G * H,))
        _cache_array("rstd", cache.rstd, dt, (T, N, 2))


def layernorm_lstm_forward(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, gamma_x=None, gamma_h=None,
                           gamma_c=None, beta_c=None, *, mask=None, reverse: bool = False,
                           zero_output_for_mask: bool = False, recurrent_dropout_mask=None,
                           activation: str = "tanh", recurrent_activation: str = "sigmoid") -> LSTMOutput:
    r"""Layer-normalized LSTM over a whole sequence (haste's ``LayerNormLSTM``; Ba et al. 2016),
    PyTorch's gate order i, f, g, o:

    .. math::
        a = \gamma_x \odot \mathrm{LN}(W_{ih} x_t) + \gamma_h \odot \mathrm{LN}(W_{hh} h_{t-1})
            + b_{ih} + b_{hh}\\
        c_t = f \odot c_{t-1} + i \odot g,\qquad
        h_t = o \odot \phi(\gamma_c \odot \mathrm{LN}(c_t) + \beta_c)

    with :math:`\mathrm{LN}(v) = (v - \bar v) / \sqrt{\mathrm{var}(v) + 10^{-5}}` over each row
    (4H for the products, H for the cell state). ``gamma_x``, ``gamma_h`` default to ones and
    ``gamma_c``/``beta_c`` to ones/zeros. Masks, ``reverse``, recurrent dropout and the
    activations behave as in :func:`lstm_forward`; all in the fused kernels.

    Shapes
    ------
    x: [T, N, C], h0, c0: [N, H], w_ih: [4H, C], w_hh: [4H, H], b_ih, b_hh, gamma_x, gamma_h: [4H],
    gamma_c, beta_c: [H] -> y: [T, N, H], h_n, c_n: [N, H]
    """
    a = _validate(4, "LSTM", x, (h0, c0), ("h0", "c0"), w_ih, w_hh, b_ih, b_hh, mask,
                  recurrent_dropout_mask)
    check_cell_activations(activation, recurrent_activation)
    dt, H = a.x.dtype, a.w_hh.shape[1]
    gx = _ln_param("gamma_x", np.ones(4 * H, dt) if gamma_x is None else gamma_x, dt, 4 * H)
    gh = _ln_param("gamma_h", np.ones(4 * H, dt) if gamma_h is None else gamma_h, dt, 4 * H)
    gc = _ln_param("gamma_c", np.ones(H, dt) if gamma_c is None else gamma_c, dt, H)
    bc = _ln_param("beta_c", np.zeros(H, dt) if beta_c is None else beta_c, dt, H)
    y, S, Cs, gates, xh, rh, ch, rstd = _core.lstm_ln_forward(
        a.x, a.states[0], a.states[1], a.w_ih, a.w_hh, a.b_ih, a.b_hh, gx, gh, gc, bc, a.mask, a.rd,
        bool(reverse), bool(zero_output_for_mask), activation, recurrent_activation)
    last = 0 if reverse else -1
    cache = LayerNormLSTMCache(a.x, a.w_ih, a.w_hh, (a.b_ih is not None, a.b_hh is not None), a.mask,
                               bool(reverse), bool(zero_output_for_mask), S, a.rd, NO_ZONEOUT, Cs, gates,
                               activation, recurrent_activation, gamma_x=gx, gamma_h=gh, gamma_c=gc,
                               beta_c=bc, x_hat=xh, r_hat=rh, c_hat=ch, rstd=rstd)
    return LSTMOutput(y, S[last].copy(), Cs[last].copy(), cache)


def layernorm_lstm_backward(cache: LayerNormLSTMCache, dy, dh_n=None, dc_n=None, *,
                            need_dx: bool = True, dh_norms=None) -> LayerNormLSTMGrads:
    """Backpropagation through time for :func:`layernorm_lstm_forward`.

    Shapes
    ------
    dy: [T, N, H], dh_n, dc_n: [N, H] (``None`` = zeros)
    -> dx: [T, N, C], dh0, dc0: [N, H], dw_ih: [4H, C], dw_hh: [4H, H], db_ih, db_hh,
    dgamma_x, dgamma_h: [4H], dgamma_c, dbeta_c: [H]
    """
    _check_cache(cache, LayerNormLSTMCache, "layernorm_lstm_forward", 4)
    _check_ln_cache(cache, 4)
    T, N, H = cache.S.shape[0] - 1, cache.S.shape[1], cache.S.shape[2]
    dy = _grad_arg("dy", dy, cache.x, (T, N, H))
    if dy is None:
        raise ValueError("dy: expected an array of shape (T, N, H), got None")
    dh_n = _grad_arg("dh_n", dh_n, cache.x, (N, H))
    dc_n = _grad_arg("dc_n", dc_n, cache.x, (N, H))
    dx, dh0, dc0, dw_ih, dw_hh, db, dgx, dgh, dgc, dbc = _core.lstm_ln_backward(
        cache.x, cache.w_ih, cache.w_hh, cache.gamma_x, cache.gamma_h, cache.gamma_c, cache.beta_c,
        cache.mask, cache.rd, cache.reverse, cache.zero_output_for_mask, cache.S, cache.c_states,
        cache.gates, cache.x_hat, cache.r_hat, cache.c_hat, cache.rstd, dy, dh_n, dc_n, bool(need_dx),
        cache.activation, cache.recurrent_activation, dh_norms=_norms_out(dh_norms, T, N))
    return LayerNormLSTMGrads(dx, dh0, dc0, dw_ih, dw_hh, *_bias_grads(cache, db, db.copy()), dgx, dgh,
                              dgc, dbc)


def layernorm_gru_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, gamma_x=None, gamma_h=None, *,
                          mask=None, reverse: bool = False, zero_output_for_mask: bool = False,
                          recurrent_dropout_mask=None, activation: str = "tanh",
                          recurrent_activation: str = "sigmoid") -> GRUOutput:
    r"""Layer-normalized GRU over a whole sequence (haste's ``LayerNormGRU``), PyTorch's form and
    gate order r, z, n:

    .. math::
        X = \gamma_x \odot \mathrm{LN}(W_{ih} x_t) + b_{ih},\qquad
        R = \gamma_h \odot \mathrm{LN}(W_{hh} h_{t-1}) + b_{hh}\\
        r, z = \sigma(X_{r,z} + R_{r,z}),\quad n = \phi(X_n + r \odot R_n),\quad
        h_t = (1 - z) \odot n + z \odot h_{t-1}

    (LN over each row of 3H, eps 1e-5; gains default to ones). Masks, ``reverse``, recurrent
    dropout and the activations behave as in :func:`gru_forward`; all in the fused kernels.

    Shapes
    ------
    x: [T, N, C], h0: [N, H], w_ih: [3H, C], w_hh: [3H, H], b_ih, b_hh, gamma_x, gamma_h: [3H]
    -> y: [T, N, H], h_n: [N, H]
    """
    a = _validate(3, "GRU", x, (h0,), ("h0",), w_ih, w_hh, b_ih, b_hh, mask, recurrent_dropout_mask)
    check_cell_activations(activation, recurrent_activation)
    dt, H = a.x.dtype, a.w_hh.shape[1]
    gx = _ln_param("gamma_x", np.ones(3 * H, dt) if gamma_x is None else gamma_x, dt, 3 * H)
    gh = _ln_param("gamma_h", np.ones(3 * H, dt) if gamma_h is None else gamma_h, dt, 3 * H)
    y, S, gates, xh, rh, rstd = _core.gru_ln_forward(
        a.x, a.states[0], a.w_ih, a.w_hh, a.b_ih, a.b_hh, gx, gh, a.mask, a.rd, bool(reverse),
        bool(zero_output_for_mask), activation, recurrent_activation)
    cache = LayerNormGRUCache(a.x, a.w_ih, a.w_hh, (a.b_ih is not None, a.b_hh is not None), a.mask,
                              bool(reverse), bool(zero_output_for_mask), S, a.rd, NO_ZONEOUT, gates,
                              np.zeros((0,), dt), activation, recurrent_activation, True, gamma_x=gx,
                              gamma_h=gh, b_hh=a.b_hh, x_hat=xh, r_hat=rh, rstd=rstd)
    return GRUOutput(y, S[0 if reverse else -1].copy(), cache)


def layernorm_gru_backward(cache: LayerNormGRUCache, dy, dh_n=None, *,
                           need_dx: bool = True, dh_norms=None) -> LayerNormGRUGrads:
    """Backpropagation through time for :func:`layernorm_gru_forward`.

    Shapes
    ------
    dy: [T, N, H], dh_n: [N, H] (``None`` = zeros)
    -> dx: [T, N, C], dh0: [N, H], dw_ih: [3H, C], dw_hh: [3H, H], db_ih, db_hh, dgamma_x,
    dgamma_h: [3H]
    """
    _check_cache(cache, LayerNormGRUCache, "layernorm_gru_forward", 3)
    _check_ln_cache(cache, 3)
    T, N, H = cache.S.shape[0] - 1, cache.S.shape[1], cache.S.shape[2]
    dy = _grad_arg("dy", dy, cache.x, (T, N, H))
    if dy is None:
        raise ValueError("dy: expected an array of shape (T, N, H), got None")
    dh_n = _grad_arg("dh_n", dh_n, cache.x, (N, H))
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh, dgx, dgh = _core.gru_ln_backward(
        cache.x, cache.w_ih, cache.w_hh, cache.b_hh, cache.gamma_x, cache.gamma_h, cache.mask, cache.rd,
        cache.reverse, cache.zero_output_for_mask, cache.S, cache.gates, cache.x_hat, cache.r_hat,
        cache.rstd, dy, dh_n, bool(need_dx), cache.activation, cache.recurrent_activation,
        dh_norms=_norms_out(dh_norms, T, N))
    return LayerNormGRUGrads(dx, dh0, dw_ih, dw_hh, *_bias_grads(cache, db_ih, db_hh), dgx, dgh)
