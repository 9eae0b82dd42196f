r"""The one recurrent op under both API styles: one layer, one direction, time-major.

The Keras-style layers (:mod:`rnnkit.layers.recurrent`) and the PyTorch-style modules
(:mod:`rnnkit.nn`) are thin adapters over this module: they translate names, defaults, batch-first
conventions and state layouts, and call :func:`forward` / :func:`backward` here, which are the only
Python code that runs a cell kernel (through :mod:`rnnkit.functional`). The multi-layer stack
(:func:`stack_forward`), the merge of two directions (:func:`merge`) and the dropout masks
(:func:`dropout_mask`) exist here once as well.

Cells
-----
``rnn``, ``lstm`` (i, f, g, o), ``gru`` (PyTorch's r, z, n form,
Keras ``reset_after=True``) and ``gru_v1`` (Keras ``reset_after=False``: the reset gate before
the recurrent product, no recurrent bias), each with an ``activation`` (tanh, relu, linear) and
gates' ``recurrent_activation`` (sigmoid, hard_sigmoid; not ``rnn``). An ``lstm`` may have a
projection ``w_hr [P, H]`` (LSTMP: the state h is P wide). ``lstm_ln`` and ``gru_ln`` are the
LayerNorm cells (haste's formulation; extra weights :data:`LN_KEYS`). Weights are a dict in rnnkit's layout (see
:mod:`rnnkit._layouts`): ``{"w_ih", "w_hh", "b_ih", "b_hh"}``, biases may be None.

A call's cache is returned to the caller and passed back to :func:`backward`; nothing of a call is
kept on a shared object.

Shapes
------
``x: [T, N, C]`` (any memory layout; copied once when not C-contiguous), ``initial``: a list of
``[N, H]`` per state (``[h]`` or ``[h, c]``, entries may be None = zeros), ``mask: [T, N]`` bool,
``rd: [N, H]`` recurrent dropout scale -> ``y: [T, N, H]`` (position t = input step t, also when
``reverse``), ``finals``: a list of ``[N, H]``.
"""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from rnnkit import functional as F

__all__ = ["CELLS", "n_states", "gates", "forward", "backward", "Run", "dropout_mask",
           "MERGE_MODES", "merge", "merge_backward", "stack_forward", "stack_backward",
           "SegmentedCache", "segment_length", "state_widths"]

Array = np.ndarray
Weights = Dict[str, Optional[Array]]  # w_ih, w_hh, b_ih, b_hh (and w_hr for an LSTMP)

CELLS = ("rnn", "lstm", "gru", "gru_v1", "lstm_ln", "gru_ln")
_GATES = {"rnn": 1, "lstm": 4, "gru": 3, "gru_v1": 3, "lstm_ln": 4, "gru_ln": 3}
# the LayerNorm cells' extra weights (rnnkit.functional.layernorm_*_forward)
LN_KEYS = {"lstm_ln": ("gamma_x", "gamma_h", "gamma_c", "beta_c"), "gru_ln": ("gamma_x", "gamma_h")}


def gates(cell: str) -> int:
    """G: 1 (rnn), 4 (lstm, lstm_ln), 3 (gru, gru_v1, gru_ln)."""
    return _GATES[cell]


def n_states(cell: str) -> int:
    """2 for lstm and lstm_ln (h, c), else 1 (h)."""
    return 2 if cell in ("lstm", "lstm_ln") else 1


class Run(NamedTuple):
    """One direction's forward: outputs, final states and the cache for :func:`backward`."""
    y: Array              # [T, N, H]
    finals: List[Array]   # [h_n] or [h_n, c_n], each [N, H]
    cache: Any


def forward(cell: str, x: Array, w: Weights, initial: Optional[Sequence[Optional[Array]]] = None, *,
            mask: Optional[Array] = None, reverse: bool = False, zero_output: bool = False,
            rd: Optional[Array] = None, activation: str = "tanh",
            recurrent_activation: str = "sigmoid", zoneout_h: Any = None, zoneout_c: Any = None,
            recompute: Any = None) -> Run:
    """One layer, one direction, the whole sequence.

    Parameters
    ----------
    cell
        One of :data:`CELLS`.
    x, w, initial, mask, rd
        See the module's Shapes (``w``: rnnkit layout).
    reverse
        Run from ``t = T-1`` down to 0 (outputs stay at their own time index).
    zero_output
        Masked steps output zeros instead of the carried state.
    activation, recurrent_activation
        The cell's activation and its gates' (see :data:`rnnkit._checks.CELL_ACTIVATIONS`,
        :data:`rnnkit._checks.GATE_ACTIVATIONS`; ``rnn`` has no gates).
    zoneout_h, zoneout_c
        Zoneout of h (lstm, gru, gru_v1) and of c (lstm): None, a probability (inference) or a
        mask ``[T, N, H]`` (training), see :func:`rnnkit.functional.lstm_forward`.
    recompute
        None (keep every step's cache for the backward), a segment length ``S`` or ``"sqrt"``
        (``S = ceil(sqrt(T))``): gradient checkpointing along time. The forward keeps only the
        states at the segments' starts; :func:`backward` reruns each segment's forward from its
        start, last segment first, just before its backward. Memory for the backward: O(T/S + S)
        states instead of O(T) caches; time: one more forward. Gradients equal the full cache's
        up to summation order (the weight gradients are summed over segments).

    Shapes
    ------
    x: [T, N, C] -> y: [T, N, H], finals: [N, H] each
    """
    seg = segment_length(recompute, x.shape[0])
    if seg is not None:
        return _forward_segmented(cell, x, w, initial, seg, dict(
            mask=mask, reverse=reverse, zero_output=zero_output, rd=rd, activation=activation,
            recurrent_activation=recurrent_activation, zoneout_h=zoneout_h, zoneout_c=zoneout_c))
    init = list(initial) if initial is not None else [None] * n_states(cell)
    kw = dict(mask=mask, reverse=reverse, zero_output_for_mask=zero_output, recurrent_dropout_mask=rd)
    acts = dict(activation=activation, recurrent_activation=recurrent_activation)
    if cell in LN_KEYS:
        if zoneout_h is not None or zoneout_c is not None:
            raise ValueError(f"zoneout: the LayerNorm cell {cell} has no zoneout")
        ln = {k: w.get(k) for k in LN_KEYS[cell]}
        if cell == "lstm_ln":
            o = F.layernorm_lstm_forward(x, init[0], init[1], w["w_ih"], w["w_hh"], w.get("b_ih"), w.get("b_hh"),
                                         **ln, **kw, **acts)
            return Run(o.y, [o.h_n, o.c_n], o.cache)
        o = F.layernorm_gru_forward(x, init[0], w["w_ih"], w["w_hh"], w.get("b_ih"), w.get("b_hh"), **ln, **kw,
                                    **acts)
        return Run(o.y, [o.h_n], o.cache)
    if (zoneout_c is not None and cell != "lstm") or (zoneout_h is not None and cell == "rnn"):
        raise ValueError(f"zoneout: the {cell} cell has no zoneout of "
                         f"{'c' if zoneout_c is not None and cell != 'lstm' else 'h'}")
    if cell == "lstm":
        o = F.lstm_forward(x, init[0], init[1], w["w_ih"], w["w_hh"], w.get("b_ih"), w.get("b_hh"), **kw,
                           **acts, w_hr=w.get("w_hr"), zoneout_h=zoneout_h, zoneout_c=zoneout_c)
        return Run(o.y, [o.h_n, o.c_n], o.cache)
    if cell in ("gru", "gru_v1"):
        o = F.gru_forward(x, init[0], w["w_ih"], w["w_hh"], w.get("b_ih"), w.get("b_hh"), **kw, **acts,
                          reset_after=cell == "gru", zoneout_h=zoneout_h)
    elif cell == "rnn":
        o = F.rnn_forward(x, init[0], w["w_ih"], w["w_hh"], w.get("b_ih"), w.get("b_hh"),
                          nonlinearity=activation, **kw)
    else:
        raise ValueError(f"cell: expected one of {CELLS}, got {cell!r}")
    return Run(o.y, [o.h_n], o.cache)


def backward(cell: str, cache: Any, dy: Array, d_finals: Optional[Sequence[Optional[Array]]] = None,
             *, need_dx: bool = True, dh_norms: Optional[Array] = None
             ) -> Tuple[Optional[Array], List[Array], Dict[str, Array]]:
    """Backpropagation through time for one :func:`forward`.

    Returns ``(dx, d_initial, grads)``: ``dx`` (None when ``need_dx`` is False), the gradients
    w.r.t. the initial states (one per state, also for zero initial states), and the parameter
    gradients keyed like the weights (only the biases the forward had).

    Shapes
    ------
    dy: [T, N, H], d_finals: [N, H] each (None = zeros), dh_norms: [T, N] float64 (optional
    output: ‖dL/dh_t‖ of every step and sample)
    -> dx: [T, N, C], d_initial: [N, H] each, grads: shapes of the weights
    """
    if isinstance(cache, SegmentedCache):
        return _backward_segmented(cell, cache, dy, d_finals, need_dx, dh_norms)
    d = list(d_finals) if d_finals is not None else [None] * n_states(cell)
    if cell in LN_KEYS:
        if cell == "lstm_ln":
            g = F.layernorm_lstm_backward(cache, dy, d[0], d[1], need_dx=need_dx, dh_norms=dh_norms)
            d_init = [g.dh0, g.dc0]
            extra = {"gamma_x": g.dgamma_x, "gamma_h": g.dgamma_h, "gamma_c": g.dgamma_c, "beta_c": g.dbeta_c}
        else:
            g = F.layernorm_gru_backward(cache, dy, d[0], need_dx=need_dx, dh_norms=dh_norms)
            d_init = [g.dh0]
            extra = {"gamma_x": g.dgamma_x, "gamma_h": g.dgamma_h}
        grads = {"w_ih": g.dw_ih, "w_hh": g.dw_hh, **extra}
        if g.db_ih is not None:
            grads["b_ih"] = g.db_ih
        if g.db_hh is not None:
            grads["b_hh"] = g.db_hh
        return g.dx, d_init, grads
    if cell == "lstm":
        g = F.lstm_backward(cache, dy, d[0], d[1], need_dx=need_dx, dh_norms=dh_norms)
        d_init = [g.dh0, g.dc0]
    elif cell in ("gru", "gru_v1"):
        g = F.gru_backward(cache, dy, d[0], need_dx=need_dx, dh_norms=dh_norms)
        d_init = [g.dh0]
    elif cell == "rnn":
        g = F.rnn_backward(cache, dy, d[0], need_dx=need_dx, dh_norms=dh_norms)
        d_init = [g.dh0]
    else:
        raise ValueError(f"cell: expected one of {CELLS}, got {cell!r}")
    grads = {"w_ih": g.dw_ih, "w_hh": g.dw_hh}
    if g.db_ih is not None:
        grads["b_ih"] = g.db_ih
    if g.db_hh is not None:
        grads["b_hh"] = g.db_hh
    if getattr(g, "dw_hr", None) is not None:
        grads["w_hr"] = g.dw_hr
    return g.dx, d_init, grads


# ---- gradient checkpointing along time ----------------------------------------------------------

class SegmentedCache(NamedTuple):
    """A :func:`forward` with ``recompute``: what reruns each segment (no step's gates are kept).

    ``segments`` are ``(a, b)`` time ranges in the order the forward ran them (last first when
    ``reverse``), ``starts[i]`` the states entering segment i (``[N, H]`` each)."""
    x: Array                              # [T, N, C] the input (a reference, not a copy)
    w: Weights
    segments: List[Tuple[int, int]]
    starts: List[List[Array]]
    widths: List[int]                     # the widths of h (and c)
    options: Dict[str, Any]               # forward's keyword arguments


def segment_length(recompute: Any, T: int) -> Optional[int]:
    """The segment length of ``recompute`` (None, an int >= 1 or ``"sqrt"``) for T steps, or None
    when the whole sequence is one segment (nothing to recompute)."""
    if recompute is None:
        return None
    if isinstance(recompute, str):
        if recompute != "sqrt":
            raise ValueError(f"recompute: expected None, a segment length or 'sqrt', got {recompute!r}")
        seg = int(np.ceil(np.sqrt(T)))
    elif isinstance(recompute, (int, np.integer)) and not isinstance(recompute, bool) and recompute >= 1:
        seg = int(recompute)
    else:
        raise ValueError(f"recompute: expected None, a segment length >= 1 or 'sqrt', got {recompute!r}")
    return None if seg >= T else seg


def _time_slice(v: Any, a: int, b: int) -> Any:
    """Steps [a, b) of a per-step option (a mask [T, N] or a zoneout mask [T, N, H]); anything
    else (None, a probability, rd [N, H]) is the same for every step."""
    return v[a:b] if isinstance(v, np.ndarray) and v.ndim >= 2 and v.shape[0] > 0 else v


def _segment_options(options: Dict[str, Any], a: int, b: int) -> Dict[str, Any]:
    return {k: (_time_slice(v, a, b) if k in ("mask", "zoneout_h", "zoneout_c") else v)
            for k, v in options.items()}


def _forward_segmented(cell: str, x: Array, w: Weights, initial: Optional[Sequence[Optional[Array]]],
                       seg: int, options: Dict[str, Any]) -> Run:
    """:func:`forward` in segments of ``seg`` steps, keeping only each segment's starting states.

    Shapes
    ------
    x: [T, N, C] -> y: [T, N, H], finals: [N, H] each
    """
    T = x.shape[0]
    bounds = [(a, min(a + seg, T)) for a in range(0, T, seg)]
    if options["reverse"]:
        bounds.reverse()  # a reverse direction runs from the last step down
    states: List[Optional[Array]] = list(initial) if initial is not None else [None] * n_states(cell)
    y: Optional[Array] = None
    starts: List[List[Array]] = []
    for a, b in bounds:
        r = forward(cell, x[a:b], w, states, **_segment_options(options, a, b))
        if y is None:
            y = np.empty((T,) + r.y.shape[1:], dtype=r.y.dtype)
        y[a:b] = r.y
        # the states entering this segment (zeros made explicit: the backward reruns from them)
        starts.append([np.zeros_like(f) if s is None else s for s, f in zip(states, r.finals)])
        states = list(r.finals)
        del r  # the segment's cache goes now: only the starting states stay
    assert y is not None
    widths = [f.shape[-1] for f in states]
    return Run(y, [np.asarray(f) for f in states], SegmentedCache(x, w, bounds, starts, widths, options))


def _backward_segmented(cell: str, cache: SegmentedCache, dy: Array,
                        d_finals: Optional[Sequence[Optional[Array]]], need_dx: bool,
                        dh_norms: Optional[Array]) -> Tuple[Optional[Array], List[Array], Dict[str, Array]]:
    """:func:`backward` of a segmented forward: the segments last-run first, each rerun from its
    starting states and backpropagated with the state gradient the later segment handed back.

    Shapes
    ------
    dy: [T, N, H], d_finals: [N, H] each -> dx: [T, N, C], d_initial: [N, H] each, grads
    """
    T = cache.x.shape[0]
    dx: Optional[Array] = None
    carry: List[Optional[Array]] = list(d_finals) if d_finals is not None else [None] * n_states(cell)
    total: Dict[str, Array] = {}
    for (a, b), start in zip(reversed(cache.segments), reversed(cache.starts)):
        run = forward(cell, cache.x[a:b], cache.w, start, **_segment_options(cache.options, a, b))
        dxs, carry_new, g = backward(cell, run.cache, np.ascontiguousarray(dy[a:b]), carry, need_dx=need_dx,
                                     dh_norms=None if dh_norms is None else dh_norms[a:b])
        del run
        carry = list(carry_new)
        for k, v in g.items():
            # dW = sum over segments of each segment's dW
            total[k] = v if k not in total else total[k] + v
        if dxs is not None:
            if dx is None:
                dx = np.empty((T,) + dxs.shape[1:], dtype=dxs.dtype)
            dx[a:b] = dxs
    return dx, [np.asarray(c) for c in carry], total


def state_widths(cache: Any) -> List[int]:
    """The widths of h (and c) of one :func:`forward`'s cache."""
    if isinstance(cache, SegmentedCache):
        return list(cache.widths)
    widths = [cache.S.shape[-1]]
    if getattr(cache, "c_states", None) is not None:
        widths.append(cache.c_states.shape[-1])
    return widths


# ---- dropout ------------------------------------------------------------------------------------

def dropout_mask(rng: np.random.Generator, rate: float, shape: Tuple[int, ...], dtype: Any) -> Array:
    """Inverted dropout: each entry is ``0`` with probability ``rate``, else ``1 / (1 - rate)``.

    Shapes
    ------
    -> ``shape``
    """
    keep = rng.random(shape) >= rate
    return keep.astype(dtype) * np.asarray(1.0 / (1.0 - rate), dtype=dtype)


# ---- two directions -------------------------------------------------------------------------------

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def merge(mode: Optional[str], yf: Array, yb: Array) -> Any:
    """The outputs of the two directions combined along the last axis (``None``: the pair).

    Shapes
    ------
    yf, yb: [..., H] -> [..., 2H] (concat), [..., H] (sum, mul, ave) or ``[yf, yb]``
    """
    if mode == "concat":
        return np.concatenate([yf, yb], axis=-1)
    if mode == "sum":
        return yf + yb
    if mode == "ave":
        return (yf + yb) / 2
    if mode == "mul":
        return yf * yb
    return [yf, yb]


def merge_backward(mode: Optional[str], d: Any, yf: Array, yb: Array) -> Tuple[Optional[Array], Optional[Array]]:
    """The gradients of the two directions' outputs from the gradient of :func:`merge`'s result
    (``d`` None: both None; mode None: ``d`` is the pair).

    Shapes
    ------
    d: like merge's result -> dyf, dyb: [..., H]
    """
    if mode is None:
        return d[0], d[1]
    if d is None:
        return None, None
    H = yf.shape[-1]
    if mode == "concat":
        return d[..., :H], d[..., H:]
    if mode == "sum":
        return d, d
    if mode == "ave":
        half = d / 2
        return half, half
    return d * yb, d * yf


# ---- stacks of layers (PyTorch's num_layers / bidirectional) ---------------------------------------

class StackCache(NamedTuple):
    cell: str
    caches: List[List[Any]]             # [layer][direction]
    drop: List[Optional[Array]]         # [layer] dropout scale applied to the layer's output
    ys: List[List[Array]]               # [layer][direction] outputs (for the merge's backward)


def stack_forward(cell: str, x: Array, weights: Sequence[Sequence[Weights]],
                  initial: Optional[Sequence[Optional[Array]]] = None, *, mask: Optional[Array] = None,
                  zero_output: bool = True, dropout: float = 0.0, rng: Optional[np.random.Generator] = None,
                  activation: str = "tanh", recompute: Any = None) -> Tuple[Array, List[Array], StackCache]:
    """``L`` layers of ``D`` directions (forward, then reverse), each layer's directions
    concatenated and, between layers, multiplied by a dropout mask when ``dropout > 0``.

    Parameters
    ----------
    weights
        ``weights[layer][direction]`` in rnnkit's layout.
    initial
        One array per state, ``[L*D, N, H]`` (entry ``layer*D + direction``), or None = zeros.
    recompute
        Gradient checkpointing along time for every layer and direction (see :func:`forward`).

    Shapes
    ------
    x: [T, N, C] -> y: [T, N, D*H], finals: [L*D, N, H] per state
    """
    L, D = len(weights), len(weights[0])
    ns = n_states(cell)
    Hs = weights[0][0]["w_hh"].shape[1]  # h: H, or P with an LSTM projection
    w_hr = weights[0][0].get("w_hr")
    H = Hs if w_hr is None else w_hr.shape[1]  # the cell state c
    T, N = x.shape[0], x.shape[1]
    finals = [np.empty((L * D, N, Hs if i == 0 else H), dtype=x.dtype) for i in range(ns)]
    caches: List[List[Any]] = []
    drops: List[Optional[Array]] = []
    ys_all: List[List[Array]] = []
    inp = x
    for layer in range(L):
        ys, cs = [], []
        for d in range(D):
            k = layer * D + d
            init = None if initial is None else [None if s is None else s[k] for s in initial]
            r = forward(cell, inp, weights[layer][d], init, mask=mask, reverse=d == 1,
                        zero_output=zero_output, activation=activation, recompute=recompute)
            for store, f in zip(finals, r.finals):
                store[k] = f
            ys.append(r.y)
            cs.append(r.cache)
        out = ys[0] if D == 1 else merge("concat", ys[0], ys[1])
        dm = None
        if dropout > 0 and layer < L - 1:
            assert rng is not None
            dm = dropout_mask(rng, dropout, out.shape, out.dtype)
            out = out * dm
        caches.append(cs)
        drops.append(dm)
        ys_all.append(ys)
        inp = out
    return inp, finals, StackCache(cell, caches, drops, ys_all)


def stack_backward(cache: StackCache, dy: Array, d_finals: Optional[Sequence[Optional[Array]]] = None,
                   *, need_dx: bool = True) -> Tuple[Optional[Array], List[Array], List[List[Dict[str, Array]]]]:
    """Backpropagation through :func:`stack_forward`.

    Shapes
    ------
    dy: [T, N, D*H], d_finals: [L*D, N, H] per state (None = zeros)
    -> dx: [T, N, C], d_initial: [L*D, N, H] per state, grads[layer][direction]
    (with an LSTM projection, h is P wide: dy [T, N, D*P], h's d_finals and d_initial [L*D, N, P])
    """
    cell = cache.cell
    L, D = len(cache.caches), len(cache.caches[0])
    T, N = dy.shape[0], dy.shape[1]
    widths = state_widths(cache.caches[0][0])  # h (and the cell state c)
    d_init = [np.empty((L * D, N, w), dtype=dy.dtype) for w in widths]
    grads: List[List[Dict[str, Array]]] = [[{} for _ in range(D)] for _ in range(L)]
    d = dy
    for layer in reversed(range(L)):
        if cache.drop[layer] is not None:
            d = d * cache.drop[layer]
        parts = (d,) if D == 1 else merge_backward("concat", d, *cache.ys[layer])
        dx_sum: Optional[Array] = None
        for di in range(D):
            k = layer * D + di
            dfin = None if d_finals is None else [
                None if g is None else np.ascontiguousarray(g[k]) for g in d_finals]
            dx, dini, g = backward(cell, cache.caches[layer][di], np.ascontiguousarray(parts[di]), dfin,
                                   need_dx=need_dx or layer > 0)
            for store, v in zip(d_init, dini):
                store[k] = v
            grads[layer][di] = g
            if dx is not None:
                dx_sum = dx if dx_sum is None else dx_sum + dx
        d = dx_sum
    return d, d_init, grads
