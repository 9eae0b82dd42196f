r"""The one table of recurrent weight layouts: rnnkit's (= PyTorch's), Keras 3's and ONNX's.

rnnkit stores every recurrent weight as PyTorch does, gate blocks stacked along the rows:
``w_ih [G*H, C]``, ``w_hh [G*H, H]``, ``b_ih``/``b_hh [G*H]``. The Keras-style layers, the
``nn`` modules, :mod:`rnnkit.interop` and the ONNX exporter all convert through this module.

=====  ================  ======================  ===================
cell   rnnkit / PyTorch  Keras 3                 ONNX
=====  ================  ======================  ===================
rnn    h                 h                       h
lstm   i, f, g, o        i, f, c, o (same)       i, o, f, c
gru    r, z, n           z, r, h                 z, r, h
=====  ================  ======================  ===================

Keras stores the transposes (``kernel [C, G*U]``, ``recurrent_kernel [U, G*U]``) and one bias:
``[G*U]`` for SimpleRNN/LSTM (``b_ih + b_hh``; read back into ``b_ih`` with ``b_hh = 0``), ``[2, 3U]``
for a GRU with ``reset_after=True`` (input row, recurrent row) and ``[3U]`` with
``reset_after=False`` (input bias only: that form has no recurrent bias, and no PyTorch
equivalent, but rnnkit's own kernel keeps the same row layout for it). ONNX stacks directions:
``W [D, G*H, C]``, ``R [D, G*H, H]``, ``B [D, 2*G*H]`` (input biases, then recurrent biases).

Shapes
------
Every function documents its own; ``G`` is 1 (rnn), 4 (lstm) or 3 (gru).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["GATES", "GATE_ORDER", "gate_perm", "permute_gates", "keras_to_internal",
           "internal_to_keras", "keras_weight_shapes", "stack_onnx", "unstack_onnx"]

Array = np.ndarray

#: gates per cell (G)
GATES: Dict[str, int] = {"rnn": 1, "lstm": 4, "gru": 3}

#: the gate blocks of each framework, in stored order (same letters mean the same gate)
GATE_ORDER: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "rnnkit": {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")},
    "keras": {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("z", "r", "n")},
    "onnx": {"rnn": ("h",), "lstm": ("i", "o", "f", "g"), "gru": ("z", "r", "n")},
}


def gate_perm(cell: str, src: str, dst: str) -> Tuple[int, ...]:
    """Block indices ``p`` such that block ``j`` in ``dst``'s order is block ``p[j]`` in
    ``src``'s (``src``, ``dst`` in ``'rnnkit'``, ``'keras'``, ``'onnx'``)."""
    s, d = GATE_ORDER[src][cell], GATE_ORDER[dst][cell]
    return tuple(s.index(g) for g in d)


def permute_gates(a: Array, cell: str, src: str, dst: str, axis: int = 0) -> Array:
    """``a`` with its gate blocks along ``axis`` reordered from ``src``'s order to ``dst``'s
    (a fresh C-contiguous array).

    Shapes
    ------
    a: [..., G*H, ...] (``G*H`` along ``axis``) -> the same shape
    """
    perm = gate_perm(cell, src, dst)
    blocks = np.split(np.asarray(a), len(perm), axis=axis)
    return np.ascontiguousarray(np.concatenate([blocks[p] for p in perm], axis=axis))


def keras_weight_shapes(cell: str, C: int, U: int, use_bias: bool = True,
                        reset_after: bool = True) -> List[Tuple[int, ...]]:
    """The shapes of a Keras layer's ``get_weights()``: ``[kernel, recurrent_kernel(, bias)]``.

    Shapes
    ------
    -> [(C, G*U), (U, G*U)] plus (G*U,), or (2, 3U) for a GRU with ``reset_after``
    """
    G = GATES[cell]
    shapes = [(C, G * U), (U, G * U)]
    if use_bias:
        shapes.append((2, G * U) if cell == "gru" and reset_after else (G * U,))
    return shapes


def keras_to_internal(cell: str, kernel: Array, recurrent: Array, bias: Optional[Array],
                      reset_after: bool = True) -> Dict[str, Optional[Array]]:
    """Keras weights -> rnnkit's ``{"w_ih", "w_hh", "b_ih", "b_hh"}`` (fresh arrays; biases None
    when absent: ``b_hh`` is None also for Keras's single SimpleRNN/LSTM bias and for a
    ``reset_after=False`` GRU, which has no recurrent bias).

    Shapes
    ------
    kernel: [C, G*U], recurrent: [U, G*U], bias: [G*U] (GRU reset_after: [2, 3U])
    -> w_ih: [G*U, C], w_hh: [G*U, U], b_ih, b_hh: [G*U]
    """
    out: Dict[str, Optional[Array]] = {
        "w_ih": permute_gates(np.asarray(kernel).T, cell, "keras", "rnnkit"),
        "w_hh": permute_gates(np.asarray(recurrent).T, cell, "keras", "rnnkit"),
        "b_ih": None, "b_hh": None}
    if bias is not None:
        bias = np.asarray(bias)
        if cell == "gru" and reset_after:
            out["b_ih"] = permute_gates(bias[0], cell, "keras", "rnnkit")
            out["b_hh"] = permute_gates(bias[1], cell, "keras", "rnnkit")
        else:
            out["b_ih"] = permute_gates(bias, cell, "keras", "rnnkit")
    return out


def internal_to_keras(cell: str, w_ih: Array, w_hh: Array, b_ih: Optional[Array] = None,
                      b_hh: Optional[Array] = None, reset_after: bool = True,
                      use_bias: Optional[bool] = None) -> List[Array]:
    """rnnkit's weights -> Keras's ``[kernel, recurrent_kernel(, bias)]`` (fresh arrays). A
    missing bias counts as zeros; the bias is left out when both are None (or ``use_bias`` is
    False). SimpleRNN/LSTM get ``b_ih + b_hh``; a GRU ``[2, 3U]`` with ``reset_after``, else
    ``b_ih`` (a ``b_hh`` cannot be expressed there and must be zero or None).

    Shapes
    ------
    w_ih: [G*U, C], w_hh: [G*U, U], b_ih, b_hh: [G*U]
    -> kernel: [C, G*U], recurrent: [U, G*U], bias: [G*U] (GRU reset_after: [2, 3U])
    """
    out = [np.ascontiguousarray(permute_gates(w_ih, cell, "rnnkit", "keras").T),
           np.ascontiguousarray(permute_gates(w_hh, cell, "rnnkit", "keras").T)]
    if use_bias is None:
        use_bias = b_ih is not None or b_hh is not None
    if not use_bias:
        return out
    zeros = np.zeros(np.shape(w_hh)[0], np.asarray(w_hh).dtype)
    bi = zeros if b_ih is None else np.asarray(b_ih)
    bh = zeros if b_hh is None else np.asarray(b_hh)
    if cell == "gru" and reset_after:
        out.append(np.stack([permute_gates(bi, cell, "rnnkit", "keras"),
                             permute_gates(bh, cell, "rnnkit", "keras")]))
    elif cell == "gru":
        if np.any(bh):
            raise ValueError("b_hh: a GRU with reset_after=False has no recurrent bias; expected None "
                             "or zeros")
        out.append(permute_gates(bi, cell, "rnnkit", "keras"))
    else:
        out.append(bi + bh)
    return out


def stack_onnx(cell: str, directions: Sequence[Dict[str, Optional[Array]]]
               ) -> Dict[str, Optional[Array]]:
    """One or two directions of rnnkit weights -> the ONNX operator's ``W``, ``R``, ``B`` (``B``
    None when no direction has a bias; a missing bias otherwise counts as zeros).

    Shapes
    ------
    per direction w_ih: [G*H, C], w_hh: [G*H, H], b_ih, b_hh: [G*H]
    -> W: [D, G*H, C], R: [D, G*H, H], B: [D, 2*G*H]
    """
    W = np.stack([permute_gates(d["w_ih"], cell, "rnnkit", "onnx") for d in directions])
    R = np.stack([permute_gates(d["w_hh"], cell, "rnnkit", "onnx") for d in directions])
    B = None
    if any(d.get("b_ih") is not None or d.get("b_hh") is not None for d in directions):
        zeros = np.zeros(R.shape[1], R.dtype)
        B = np.stack([np.concatenate([
            permute_gates(zeros if d.get("b_ih") is None else d["b_ih"], cell, "rnnkit", "onnx"),
            permute_gates(zeros if d.get("b_hh") is None else d["b_hh"], cell, "rnnkit", "onnx")])
            for d in directions])
    return {"W": W, "R": R, "B": B}


def unstack_onnx(cell: str, W: Array, R: Array, B: Optional[Array]) -> List[Dict[str, Optional[Array]]]:
    """The ONNX operator's ``W``, ``R``, ``B`` -> rnnkit weights per direction (biases None when
    ``B`` is None).

    Shapes
    ------
    W: [D, G*H, C], R: [D, G*H, H], B: [D, 2*G*H] -> per direction w_ih: [G*H, C], w_hh: [G*H, H],
    b_ih, b_hh: [G*H]
    """
    GH = R.shape[1]
    return [{"w_ih": permute_gates(W[d], cell, "onnx", "rnnkit"),
             "w_hh": permute_gates(R[d], cell, "onnx", "rnnkit"),
             "b_ih": None if B is None else permute_gates(B[d, :GH], cell, "onnx", "rnnkit"),
             "b_hh": None if B is None else permute_gates(B[d, GH:], cell, "onnx", "rnnkit")}
            for d in range(R.shape[0])]
