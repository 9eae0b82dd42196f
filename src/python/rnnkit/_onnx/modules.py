"""ONNX forms of the PyTorch-style modules (:mod:`rnnkit.nn`): ``RNN``/``LSTM``/``GRU`` (any
``num_layers``, ``bidirectional``, ``batch_first``; not ``proj_size``), ``Linear``,
``Embedding``, ``Dropout`` and ``Sequential`` chains of them.

A recurrent module is one ONNX operator per layer (both directions in one
``direction="bidirectional"`` operator); its layers are joined with ``Transpose``+``Reshape``
(``[T, D, N, H] -> [T, N, D*H]``). Initial states are zeros and there is no ``lengths`` input:
the graph computes ``module(x)``. Inter-layer dropout is left out (inference).

Layouts: the ``"bm"`` name of a :class:`~rnnkit._onnx.graph.Value` here is the array as the
module sees it (``[T, N, C]`` for a recurrent module without ``batch_first``); ``"tm"`` has its
first two axes swapped. An ONNX recurrent operator reads and writes ``[T, N, ...]``.

Shapes
------
``nn.LSTM``: input ``[N, T, C]`` (``batch_first``) or ``[T, N, C]`` -> ``output`` (same
layout, ``D*H`` features), ``h_n``/``c_n [D*num_layers, N, H]``.
"""
from __future__ import annotations

from typing import Any, List, Tuple

import numpy as np

from rnnkit import nn
from rnnkit._onnx import recurrent as rec
from rnnkit._onnx.graph import Builder, ExportError, Value

__all__ = ["Signature", "module_signature", "emit_module"]

_RECURRENT = (nn.RNN, nn.LSTM, nn.GRU)
_CELLS = {nn.RNN: "rnn", nn.LSTM: "lstm", nn.GRU: "gru"}
_KNOWN = (nn.RNN, nn.LSTM, nn.GRU, nn.Linear, nn.Embedding, nn.Dropout, nn.Sequential)


def _chain(module: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    """``(path, module)`` of each module that runs, in order (nested Sequentials flattened)."""
    if type(module) is not nn.Sequential:
        return [(prefix or type(module).__name__, module)]
    out: List[Tuple[str, Any]] = []
    for name, m in module.named_children():
        out += _chain(m, f"{prefix}.{name}" if prefix else name)
    return out


def _check(path: str, m: Any) -> None:
    kind = type(m).__name__
    if type(m) not in _KNOWN:
        raise ExportError(f"{path} ({kind}): module: has no ONNX export (exportable rnnkit.nn modules: RNN, "
                          "LSTM, GRU, Linear, Embedding, Dropout, and Sequential chains of them)")
    if type(m) in _RECURRENT and m.proj_size:
        raise ExportError(f"{path} ({kind}): proj_size: the ONNX LSTM operator has no projection "
                          f"(proj_size={m.proj_size}); only modules without proj_size export")


class Signature:
    """The graph's input and outputs for a module: ``dtype`` (``"float32"`` or ``"int64"``),
    ``rank``, ``features`` (the last axis, None for indices), ``time_major`` (the input's first
    axis is time: a recurrent module without ``batch_first``) and the output ``names``."""

    def __init__(self, dtype: str, rank: int, features: Any, time_major: bool, names: List[str]) -> None:
        self.dtype, self.rank, self.features, self.time_major, self.names = dtype, rank, features, time_major, names


def module_signature(module: Any) -> Signature:
    """The input and outputs of the graph of ``module`` (checked: every module exportable, a
    recurrent module only last).

    The input rank comes from the recurrent module (3) counting back over the Embeddings before
    it; without one it is 2 (``[N, C]`` into a Linear, ``[N, T]`` indices into an Embedding).
    """
    chain = _chain(module)
    if not chain:
        raise ExportError("model: the Sequential has no modules")
    for i, (path, m) in enumerate(chain):
        _check(path, m)
        if type(m) in _RECURRENT and i != len(chain) - 1:
            raise ExportError(f"{path} ({type(m).__name__}): module: a recurrent module returns (output, h_n) and "
                              "cannot feed the next module of a Sequential; only the last module may be recurrent")
    last = chain[-1][1]
    recurrent = type(last) in _RECURRENT
    embeddings = sum(type(m) is nn.Embedding for _, m in chain)
    if recurrent:
        rank = 3 - embeddings
        if rank < 1:
            raise ExportError("model: cannot tell the input's rank (several Embeddings before the recurrent module)")
    else:
        rank = 2
    names = ["output"] + ((["h_n", "c_n"] if type(last) is nn.LSTM else ["h_n"]) if recurrent else [])
    time_major = recurrent and not last.batch_first
    first = chain[0][1]
    if type(first) is nn.Embedding:
        return Signature("int64", rank, None, time_major, names)
    for _, m in chain:
        if type(m) is nn.Dropout:
            continue
        size = m.input_size if type(m) in _RECURRENT else m.in_features
        return Signature("float32", rank, int(size), time_major, names)
    raise ExportError("model: cannot tell the input's feature size (the Sequential holds only Dropout)")


def _recurrent(b: Builder, m: Any, x_tm: str, where: str) -> List[Value]:
    """``output, h_n(, c_n)`` of a recurrent module over ``x_tm [T, N, C]``."""
    cell = _CELLS[type(m)]
    act = getattr(m, "nonlinearity", "tanh")
    D = m.num_directions
    inp = x_tm
    hs: List[str] = []
    cs: List[str] = []
    for layer in range(m.num_layers):
        specs = [rec.RecurrentSpec(m, cell, m.hidden_size, m.direction_weights(layer, d == 1), activation=act,
                                   go_backwards=d == 1) for d in range(D)]
        hint = f"{where}/l{layer}"
        Y, Yh, Yc = rec.rnn_node(b, specs, inp, None, None, hint)
        hs.append(Yh)
        if Yc is not None:
            cs.append(Yc)
        if D == 1:
            inp = b.squeeze(Y, [1], f"{hint}/y")
        else:  # [T, 2, N, H] -> [T, N, 2H]: forward features then reverse, as torch
            inp = b.op("Reshape", [b.op("Transpose", [Y], perm=[0, 2, 1, 3]), b.ints([0, 0, -1], "shape")],
                       f"{hint}/y")
    out = Value(b, inp, 3, layout="tm" if m.batch_first else "bm")
    outs = [out, Value(b, hs[0] if len(hs) == 1 else b.op("Concat", hs, f"{where}/h_n", axis=0), 3)]
    if cs:
        outs.append(Value(b, cs[0] if len(cs) == 1 else b.op("Concat", cs, f"{where}/c_n", axis=0), 3))
    return outs


def emit_module(b: Builder, module: Any, x: Value) -> List[Value]:
    """The outputs of ``module(x)`` in the eval mode: ``[output]``, or ``[output, h_n(, c_n)]``
    when the (last) module is recurrent.

    Shapes
    ------
    x: the module's input -> its outputs (see the module documentation)
    """
    cur = x
    for path, m in _chain(module):
        t = type(m)
        if t is nn.Dropout:
            continue
        if t is nn.Linear:
            W = b.const(np.ascontiguousarray(np.asarray(m.weight.data, np.float32).T), f"{path}/weight")
            B = b.const(np.asarray(m.bias.data, np.float32), f"{path}/bias") if m.bias is not None else None
            if cur.rank == 2:
                cur = Value(b, b.op("Gemm", [cur.bm, W, B], path), 2)
            else:
                lay = cur.layout
                y = b.op("MatMul", [cur.get(lay), W], path)
                if B is not None:
                    y = b.op("Add", [y, B], path)
                cur = Value(b, y, cur.rank, layout=lay)
        elif t is nn.Embedding:
            lay = cur.layout
            E = b.const(np.asarray(m.weight.data, np.float32), f"{path}/weight")
            cur = Value(b, b.op("Gather", [E, cur.get(lay)], path, axis=0), cur.rank + 1, layout=lay)
        else:
            if cur.rank != 3:
                raise ExportError(f"{path} ({t.__name__}): input: expected 3 dimensions, got {cur.rank}")
            return _recurrent(b, m, cur.get("tm" if m.batch_first else "bm"), path)
    return [cur]
