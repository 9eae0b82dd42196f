"""ONNX forms of the Keras-style layers (:mod:`rnnkit.layers`) and of the models made of them.

One emitter per layer class (exact class: a subclass may compute something else and raises):
``emit(b, layer, inputs, mask, kwargs) -> Emitted`` with the layer's outputs, their mask (what
``layer.compute_mask`` gives) and, for recurrent layers, the final states. Masks are bool
:class:`~rnnkit._onnx.graph.Value` objects ``[N, T]`` computed in the graph, so that they follow
the data (``Embedding(mask_zero=True)``: ``x != 0``; ``Masking``: ``any(x != value, -1)``).

Each emitter knows the configuration keys it handles; any other key of ``layer.get_config()``
with a value other than None/False/0 raises (an option added later is never exported wrongly).

Shapes
------
As the layers' own: batch-major ``[N, T, C]`` for the model; recurrent layers compute
time-major inside (see :mod:`rnnkit._onnx.graph` for the layouts).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np
from onnx import TensorProto, numpy_helper

from rnnkit._onnx import recurrent as rec
from rnnkit._onnx.graph import Builder, ExportError, Value, emit_activation, unsupported
from rnnkit.layers import attention, conv, core, merge, normalization, pooling, recurrent, reshaping, rnn_cells, wrappers
from rnnkit.layers.base import Layer
from rnnkit.layers.input_layer import Input
from rnnkit.layers.symbolic import KerasTensor, flatten

__all__ = ["Emitted", "emit_layer", "emit_graph", "chain_tensors", "state_names", "EXPORTABLE"]

_BASE_KEYS = {"name", "dtype", "trainable", "input_shape"}
_RNN_KEYS = {"units", "activation", "use_bias", "kernel_initializer", "recurrent_initializer",
             "bias_initializer", "dropout", "recurrent_dropout", "seed", "return_sequences", "return_state",
             "go_backwards", "stateful", "unroll", "zero_output_for_mask", "recurrent_activation",
             "unit_forget_bias", "zoneout", "zoneout_cell", "reset_after",
             "recompute"}  # recompute: how training keeps its caches, nothing the graph computes


class Emitted:
    """What emitting one layer call gives: ``outputs`` (one Value per output), ``mask`` (as
    ``layer.compute_mask`` returns it: a Value, None, or a list per output) and ``finals`` (the
    final states of a recurrent layer, else None)."""

    def __init__(self, outputs: List[Value], mask: Any = None, finals: Optional[List[str]] = None) -> None:
        self.outputs = outputs
        self.mask = mask
        self.finals = finals


def _check_config(layer: Layer, known: set) -> None:
    """Raises for a configuration key the exporter does not handle, set to a non-default value."""
    for k, v in layer.get_config().items():
        if k in _BASE_KEYS or k in known:
            continue
        if v is None or v is False or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0):
            continue
        raise unsupported(layer, k, f"the ONNX exporter does not know this option (value {v!r}); "
                                    "it cannot be exported")


def _one(layer: Layer, inputs: Any) -> Value:
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != 1:
            raise unsupported(layer, "inputs", f"expected one tensor, got {len(inputs)}")
        inputs = inputs[0]
    return inputs


def _mask_value(mask: Any) -> Optional[Value]:
    if isinstance(mask, (list, tuple)):
        return mask[0] if mask else None
    return mask


def _common_layout(vals: Sequence[Value]) -> str:
    """``"tm"`` when every value (all of rank >= 2) already exists time-major, else ``"bm"``."""
    if vals and all(v.rank >= 2 and "tm" in v.names for v in vals):
        return "tm"
    return "bm"


def _params(layer: Layer, key: str) -> np.ndarray:
    return np.asarray(layer.params[key], dtype=np.float32)


def _weight(b: Builder, layer: Layer, key: str, value: Any = None) -> str:
    """The initializer of ``layer.params[key]`` (or of ``value`` derived from it), shared by
    every call of the layer."""
    arr = _params(layer, key) if value is None else value
    return b.const(arr, f"{layer.name}/{key}", key=(id(layer.params[key]), arr.shape))


# ---- core ---------------------------------------------------------------------------------------

def _dense(b: Builder, layer: core.Dense, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    K = _weight(b, layer, "kernel")
    bias = _weight(b, layer, "bias") if layer.use_bias else None
    if x.rank == 2:
        lay, z = "bm", b.op("Gemm", [x.bm, K, bias], layer.name)
    else:
        lay = x.layout
        z = b.op("MatMul", [x.get(lay), K], layer.name)
        if bias is not None:
            z = b.op("Add", [z, bias], layer.name)
    y = emit_activation(b, layer.activation.name, z, layer)
    return Emitted([Value(b, y, x.rank, layout=lay)], mask)


def _activation(b: Builder, layer: core.Activation, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    lay = x.layout
    return Emitted([Value(b, emit_activation(b, layer.activation.name, x.get(lay), layer), x.rank, layout=lay)],
                   mask)


def _dropout(b: Builder, layer: core.Dropout, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    return Emitted([_one(layer, inputs)], mask)  # inference: the identity


def _embedding(b: Builder, layer: core.Embedding, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    # indices [N, T] are gathered time-major: what a recurrent layer after it reads (the
    # transpose of the indices is the cheap one)
    lay = "tm" if x.rank == 2 else x.layout
    idx = x.get(lay)
    if x.dtype not in ("int64", "int32"):
        idx = b.op("Cast", [idx], f"{layer.name}/indices", to=TensorProto.INT64)
    E = _weight(b, layer, "embeddings")
    y = Value(b, b.op("Gather", [E, idx], layer.name, axis=0), x.rank + 1, layout=lay)
    out_mask = None
    if layer.mask_zero:
        zero = b.const(np.zeros((), np.int32 if x.dtype == "int32" else np.int64), "zero_idx")
        m = b.op("Not", [b.op("Equal", [idx, zero], f"{layer.name}/mask")], f"{layer.name}/mask")
        out_mask = Value(b, m, x.rank, layout=lay if x.rank >= 2 else "bm", dtype="bool")
    return Emitted([y], out_mask)


def _masking(b: Builder, layer: core.Masking, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    if x.rank < 2:
        raise unsupported(layer, "inputs", "expected at least 2 dimensions")
    lay = x.layout if x.rank >= 3 else "bm"
    xn = x.get(lay)
    ne = b.op("Not", [b.op("Equal", [xn, b.scalar(layer.mask_value)])], f"{layer.name}/mask")
    anyf = b.reduce("ReduceMax", b.op("Cast", [ne], to=TensorProto.FLOAT), [x.rank - 1], False, f"{layer.name}/mask")
    keep = b.op("Cast", [anyf], f"{layer.name}/mask", to=TensorProto.BOOL)
    y = b.op("Mul", [xn, b.unsqueeze(anyf, [x.rank - 1])], layer.name)
    return Emitted([Value(b, y, x.rank, layout=lay)], Value(b, keep, x.rank - 1, layout=lay if x.rank >= 3 else "bm",
                                                            dtype="bool"))


# ---- reshaping ------------------------------------------------------------------------------------

def _flatten(b: Builder, layer: reshaping.Flatten, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    if x.rank == 1:
        return Emitted([Value(b, b.unsqueeze(x.bm, [1], layer.name), 2)], None)
    return Emitted([Value(b, b.op("Flatten", [x.bm], layer.name, axis=1), 2)], None)


def _reshape(b: Builder, layer: reshaping.Reshape, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    shape = b.ints([0] + list(layer.target_shape), f"{layer.name}/shape")
    return Emitted([Value(b, b.op("Reshape", [x.bm, shape], layer.name), 1 + len(layer.target_shape))], None)


def _permute(b: Builder, layer: reshaping.Permute, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    return Emitted([Value(b, b.op("Transpose", [x.bm], layer.name, perm=[0] + list(layer.dims)), x.rank)], None)


def _repeat_vector(b: Builder, layer: reshaping.RepeatVector, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    if x.rank != 2:
        raise unsupported(layer, "inputs", f"expected 2 dimensions (batch, features), got {x.rank}")
    # time-major [n, N, C]: what a recurrent layer after it reads
    y = b.op("Expand", [b.unsqueeze(x.bm, [0]), b.ints([layer.n, 1, 1], "repeats")], layer.name)
    return Emitted([Value(b, y, 3, layout="tm")], None)


# ---- merging --------------------------------------------------------------------------------------

def _list(layer: Layer, inputs: Any) -> List[Value]:
    if not isinstance(inputs, (list, tuple)):
        raise unsupported(layer, "inputs", "expected a list of tensors")
    return list(inputs)


def _mask_list(mask: Any, n: int) -> Optional[List[Optional[Value]]]:
    if mask is None:
        return None
    ms = list(mask) if isinstance(mask, (list, tuple)) else [mask] * n
    return None if all(m is None for m in ms) else ms


def _or(b: Builder, masks: Sequence[Value], lay: str) -> Value:
    out = masks[0].get(lay if masks[0].rank >= 2 else "bm")
    for m in masks[1:]:
        out = b.op("Or", [out, m.get(lay if m.rank >= 2 else "bm")])
    r = masks[0].rank
    return Value(b, out, r, layout=lay if r >= 2 else "bm", dtype="bool")


def _elementwise(b: Builder, layer: Layer, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    xs = _list(layer, inputs)
    masks = _mask_list(mask, len(xs))
    ranks = {v.rank for v in xs}
    nd = max(ranks)
    lay = _common_layout(xs) if len(ranks) == 1 else "bm"
    names = []
    for v in xs:
        n = v.get(lay)
        if v.rank < nd:  # Keras: size-1 axes after the batch axis
            n = b.unsqueeze(n, list(range(1, 1 + nd - v.rank)), f"{layer.name}/expand")
        names.append(n)
    mlay = lay if nd - 1 >= 2 else "bm"
    # masks that change the values: only between inputs of one rank (as Keras)
    vm: Optional[List[Optional[str]]] = None
    if masks is not None and len(ranks) == 1:
        vm = [None if m is None else b.unsqueeze(m.get(mlay), [nd - 1], f"{layer.name}/mask") for m in masks]
    kind = type(layer)
    if kind is merge.Add or kind is merge.Average:
        out = names[0]
        for n in names[1:]:
            out = b.op("Add", [out, n], layer.name)
        if len(names) == 1:
            out = b.op("Identity", [out], layer.name)
        if kind is merge.Average:
            out = b.op("Div", [out, b.scalar(float(len(names)))], layer.name)
    elif kind is merge.Subtract:
        if len(names) != 2:
            raise unsupported(layer, "inputs", f"expected 2 tensors, got {len(names)}")
        out = b.op("Sub", names, layer.name)
    elif kind is merge.Multiply:
        fs = [n if vm is None or vm[i] is None else b.op("Where", [vm[i], n, b.scalar(1.0)])
              for i, n in enumerate(names)]
        out = fs[0] if len(fs) > 1 else b.op("Identity", [fs[0]], layer.name)
        for f in fs[1:]:
            out = b.op("Mul", [out, f], layer.name)
        if vm is not None and all(m is not None for m in vm):
            keep = vm[0]
            for m in vm[1:]:
                keep = b.op("Or", [keep, m])
            out = b.op("Where", [keep, out, b.zero()], layer.name)
    else:  # Maximum, Minimum: rnnkit's loop over the inputs
        better = "Greater" if kind is merge.Maximum else "Less"
        if vm is None:
            out = b.op("Max" if kind is merge.Maximum else "Min", names, layer.name)
        else:
            out, omask = names[0], vm[0]
            for i in range(1, len(names)):
                x, m = names[i], vm[i]
                if m is not None:
                    x = b.op("Where", [m, x, out])
                if omask is not None:
                    out = b.op("Where", [omask, out, x])
                omask = b.op("Or", [omask, m]) if (m is not None and omask is not None) else None
                out = b.op("Where", [b.op(better, [x, out]), x, out], layer.name)
            if len(names) == 1:
                out = b.op("Identity", [out], layer.name)
    y = Value(b, out, nd, layout=lay)
    out_mask = None
    if masks is not None and all(m is not None for m in masks):
        out_mask = _or(b, masks, mlay)
    return Emitted([y], out_mask)


def _ones_mask(b: Builder, x: Value, lay: str) -> Value:
    """An all-True mask for ``x`` (its shape without the last axis)."""
    shp = b.dims(x.get(lay), 0, x.rank - 1)
    m = b.op("ConstantOfShape", [shp], "ones_mask", value=numpy_helper.from_array(np.ones((1,), bool)))
    return Value(b, m, x.rank - 1, layout=lay if x.rank - 1 >= 2 else "bm", dtype="bool")


def _concatenate(b: Builder, layer: merge.Concatenate, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    xs = _list(layer, inputs)
    nd = xs[0].rank
    if any(v.rank != nd for v in xs):
        raise unsupported(layer, "inputs", "expected tensors of one rank")
    ax = layer.axis % nd
    lay = _common_layout(xs) if ax >= 2 else "bm"
    y = Value(b, b.op("Concat", [v.get(lay) for v in xs], layer.name, axis=ax), nd, layout=lay)
    masks = _mask_list(mask, len(xs))
    if masks is None:
        return Emitted([y], None)
    mlay = lay if nd - 1 >= 2 else "bm"
    if ax == nd - 1:
        if any(m is None for m in masks):
            return Emitted([y], _ones_mask(b, xs[0], mlay if nd >= 3 else "bm"))
        return Emitted([y], _or(b, masks, mlay))
    full = [(_ones_mask(b, v, "bm") if m is None else m).bm for v, m in zip(xs, masks)]
    return Emitted([y], Value(b, b.op("Concat", full, f"{layer.name}/mask", axis=ax), nd - 1, dtype="bool"))


def _dot(b: Builder, layer: merge.Dot, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    xs = _list(layer, inputs)
    if len(xs) != 2:
        raise unsupported(layer, "inputs", f"expected 2 tensors, got {len(xs)}")
    x, y = xs
    if x.rank not in (2, 3) or y.rank not in (2, 3):
        raise unsupported(layer, "inputs", f"only inputs of 2 or 3 dimensions are exported, got ranks "
                                           f"{x.rank} and {y.rank}")
    pair = (layer.axes, layer.axes) if isinstance(layer.axes, int) else layer.axes
    a1, a2 = pair[0] % x.rank, pair[1] % y.rank
    xn, yn = x.bm, y.bm
    if layer.normalize:
        eps = b.scalar(merge.EPSILON)
        xn = b.op("Div", [xn, b.op("Max", [b.reduce("ReduceL2", xn, [a1], True), eps])], f"{layer.name}/x")
        yn = b.op("Div", [yn, b.op("Max", [b.reduce("ReduceL2", yn, [a2], True), eps])], f"{layer.name}/y")
    if x.rank == 2 and y.rank == 2:
        out = b.reduce("ReduceSum", b.op("Mul", [xn, yn]), [1], True, layer.name)
        return Emitted([Value(b, out, 2)], None)
    # x -> [N, rx, K], y -> [N, K, ry]
    if x.rank == 3:
        xm = b.op("Transpose", [xn], perm=[0, 2, 1]) if a1 == 1 else xn
    else:
        xm = b.unsqueeze(xn, [1])
    if y.rank == 3:
        ym = b.op("Transpose", [yn], perm=[0, 2, 1]) if a2 == 2 else yn
    else:
        ym = b.unsqueeze(yn, [2])
    out = b.op("MatMul", [xm, ym], layer.name)
    if x.rank == 2:
        out = b.squeeze(out, [1], layer.name)
    elif y.rank == 2:
        out = b.squeeze(out, [2], layer.name)
    return Emitted([Value(b, out, max(2, x.rank + y.rank - 3))], None)


# ---- attention --------------------------------------------------------------------------------------

def _attention(b: Builder, layer: attention.Attention, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    xs = _list(layer, inputs)
    if len(xs) not in (2, 3) or any(v.rank != 3 for v in xs):
        raise unsupported(layer, "inputs", "expected [query, value] or [query, value, key] of 3 dimensions")
    q, v = xs[0].bm, xs[1].bm
    k = xs[2].bm if len(xs) > 2 else v
    additive = type(layer) is attention.AdditiveAttention
    nm = layer.name
    if additive or layer.score_mode == "concat":
        qk = b.op("Add", [b.unsqueeze(q, [2]), b.unsqueeze(k, [1])], f"{nm}/qk")  # [N, Tq, Tv, D]
        if additive:
            th = b.op("Tanh", [qk], f"{nm}/tanh")
            if layer.use_scale:
                th = b.op("Mul", [th, _weight(b, layer, "scale", _params(layer, "scale").reshape(-1))])
            scores = b.reduce("ReduceSum", th, [3], False, f"{nm}/scores")
        else:
            if layer.use_scale:
                qk = b.op("Mul", [qk, _weight(b, layer, "scale", _params(layer, "scale").reshape(()))])
            tsum = b.reduce("ReduceSum", b.op("Tanh", [qk]), [3], False, f"{nm}/scores")
            scores = b.op("Mul", [tsum, _weight(b, layer, "concat_score_weight",
                                                _params(layer, "concat_score_weight").reshape(()))], f"{nm}/scores")
    else:
        scores = b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 2, 1])], f"{nm}/scores")
        if layer.use_scale:
            scores = b.op("Mul", [scores, _weight(b, layer, "scale", _params(layer, "scale").reshape(()))])
    masks = _mask_list(mask, len(xs))
    qm = masks[0] if masks is not None else None
    vm = masks[1] if masks is not None and len(masks) > 1 else None
    allowed = None if vm is None else b.unsqueeze(vm.bm, [1], f"{nm}/allowed")
    if kw.get("use_causal_mask", False):
        tq = b.squeeze(b.dims(q, 1, 2), [0])
        tv = b.squeeze(b.dims(v, 1, 2), [0])
        zero, one = b.const(np.zeros((), np.int64), "zero_i64"), b.const(np.ones((), np.int64), "one_i64")
        i = b.unsqueeze(b.op("Range", [zero, tq, one]), [1])
        j = b.unsqueeze(b.op("Range", [zero, tv, one]), [0])
        causal = b.op("GreaterOrEqual", [i, j], f"{nm}/causal")
        allowed = causal if allowed is None else b.op("And", [allowed, causal], f"{nm}/allowed")
    if allowed is not None:
        low = b.op("Sub", [scores, b.scalar(attention.MASK_BIAS)])
        scores = b.op("Where", [allowed, scores, low], f"{nm}/scores")
    weights = b.op("Softmax", [scores], f"{nm}/weights", axis=-1)
    out = b.op("MatMul", [weights, v], nm)
    if qm is not None:
        out = b.op("Where", [b.unsqueeze(qm.bm, [2]), out, b.zero()], nm)
    outs = [Value(b, out, 3)]
    if kw.get("return_attention_scores", False):
        outs.append(Value(b, weights, 3))
    return Emitted(outs, qm)


# ---- normalization ------------------------------------------------------------------------------

def _layer_norm(b: Builder, layer: normalization.LayerNormalization, inputs: Any, mask: Any,
                kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    raw = layer.axis if isinstance(layer.axis, list) else [layer.axis]
    axes = sorted(a % x.rank for a in raw)
    k = len(axes)
    lay = x.layout if axes == [x.rank - 1] else "bm"
    xn = x.get(lay)
    gamma = _weight(b, layer, "gamma") if layer.scale else None
    beta = _weight(b, layer, "beta") if layer.center else None
    if b.opset >= 17 and (gamma is not None or beta is not None):
        if gamma is None:  # the operator needs a scale: ones of beta's shape
            gamma = b.const(np.ones(layer.params["beta"].shape, np.float32), f"{layer.name}/gamma")
        y = b.op("LayerNormalization", [xn, gamma, beta], layer.name, axis=-k, epsilon=layer.epsilon)
    else:  # the formula (rnnkit's order of operations)
        ax = list(range(x.rank - k, x.rank))
        mu = b.reduce("ReduceMean", xn, ax, True, f"{layer.name}/mean")
        d = b.op("Sub", [xn, mu])
        var = b.reduce("ReduceMean", b.op("Mul", [d, d]), ax, True, f"{layer.name}/var")
        y = b.op("Mul", [d, b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.scalar(layer.epsilon)])])])],
                 layer.name)
        if gamma is not None:
            y = b.op("Mul", [y, gamma], layer.name)
        if beta is not None:
            y = b.op("Add", [y, beta], layer.name)
    return Emitted([Value(b, y, x.rank, layout=lay)], mask)


def _batch_norm(b: Builder, layer: normalization.BatchNormalization, inputs: Any, mask: Any,
                kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    ax = layer.axis % x.rank
    lay = x.layout if ax == x.rank - 1 else "bm"
    bshape = (-1,) + (1,) * (x.rank - 1 - ax)
    p = layer.params
    rstd = (1.0 / np.sqrt(np.asarray(p["moving_variance"], np.float32) + np.float32(layer.epsilon))).astype(np.float32)
    y = b.op("Sub", [x.get(lay), _weight(b, layer, "moving_mean", _params(layer, "moving_mean").reshape(bshape))])
    y = b.op("Mul", [y, b.const(rstd.reshape(bshape), f"{layer.name}/rstd", key=(id(p["moving_variance"]), "rstd"))],
             layer.name)
    if layer.scale:
        y = b.op("Mul", [y, _weight(b, layer, "gamma", _params(layer, "gamma").reshape(bshape))], layer.name)
    if layer.center:
        y = b.op("Add", [y, _weight(b, layer, "beta", _params(layer, "beta").reshape(bshape))], layer.name)
    return Emitted([Value(b, y, x.rank, layout=lay)], mask)


# ---- pooling and convolution --------------------------------------------------------------------

def _global_pool(b: Builder, layer: Any, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    if x.rank != 3:
        raise unsupported(layer, "inputs", f"expected 3 dimensions, got {x.rank}")
    last = layer.data_format == "channels_last"
    lay = x.layout if last else "bm"
    ax = (0 if lay == "tm" else 1) if last else 2
    xn = x.get(lay)
    avg = type(layer) is pooling.GlobalAveragePooling1D
    keep = layer.keepdims
    m = _mask_value(mask)
    nm = layer.name
    if m is None:
        y = b.reduce("ReduceMean" if avg else "ReduceMax", xn, [ax], keep, nm)
    else:
        mb = m.get(lay) if last else m.bm  # [N, T] or [T, N]
        me = b.unsqueeze(mb, [2] if last else [1], f"{nm}/mask")  # broadcast over the channels
        if avg:
            mf = b.op("Cast", [me], to=TensorProto.FLOAT)
            num = b.reduce("ReduceSum", b.op("Where", [me, xn, b.zero()]), [ax], keep, f"{nm}/sum")
            cnt = b.op("Max", [b.reduce("ReduceSum", mf, [ax], keep, f"{nm}/count"), b.scalar(1.0)])
            y = b.op("Div", [num, cnt], nm)
        else:
            xs = b.op("Where", [me, xn, b.scalar(-np.inf)], f"{nm}/masked")
            r = b.reduce("ReduceMax", xs, [ax], keep, nm)
            some = b.op("Cast", [b.reduce("ReduceMax", b.op("Cast", [me], to=TensorProto.FLOAT), [ax], keep)],
                        f"{nm}/some", to=TensorProto.BOOL)
            y = b.op("Where", [some, r, b.zero()], nm)
    if not keep:
        return Emitted([Value(b, y, 2)], None)
    return Emitted([Value(b, y, 3, layout=lay)], None)


def _to_nct(b: Builder, x: Value, channels_last: bool) -> str:
    if not channels_last:
        return x.bm
    if "bm" in x.names:
        return b.op("Transpose", [x.bm], perm=[0, 2, 1])
    return b.op("Transpose", [x.tm], perm=[1, 2, 0])


def _from_nct(b: Builder, y: str, channels_last: bool) -> Value:
    if not channels_last:
        return Value(b, y, 3)
    return Value(b, b.op("Transpose", [y], perm=[2, 0, 1]), 3, layout="tm")


def _pool(b: Builder, layer: Any, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    if x.rank != 3:
        raise unsupported(layer, "inputs", f"expected 3 dimensions, got {x.rank}")
    last = layer.data_format == "channels_last"
    avg = type(layer) is pooling.AveragePooling1D
    attrs: Dict[str, Any] = dict(kernel_shape=[layer.pool_size], strides=[layer.strides],
                                 auto_pad="SAME_UPPER" if layer.padding == "same" else "VALID")
    if avg:
        attrs["count_include_pad"] = 0
    y = b.op("AveragePool" if avg else "MaxPool", [_to_nct(b, x, last)], layer.name, **attrs)
    return Emitted([_from_nct(b, y, last)], None)


def _conv1d(b: Builder, layer: conv.Conv1D, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    if x.rank != 3:
        raise unsupported(layer, "inputs", f"expected 3 dimensions, got {x.rank}")
    last = layer.data_format == "channels_last"
    W = _weight(b, layer, "kernel", np.ascontiguousarray(_params(layer, "kernel").transpose(2, 1, 0)))
    B = _weight(b, layer, "bias") if layer.use_bias else None
    attrs: Dict[str, Any] = dict(kernel_shape=[layer.kernel_size], strides=[layer.strides],
                                 dilations=[layer.dilation_rate], group=layer.groups)
    if layer.padding == "causal":
        attrs["pads"] = [layer.dilation_rate * (layer.kernel_size - 1), 0]
    else:
        attrs["auto_pad"] = "SAME_UPPER" if layer.padding == "same" else "VALID"
    y = b.op("Conv", [_to_nct(b, x, last), W, B], layer.name, **attrs)
    out = _from_nct(b, y, last)
    lay = out.layout
    act = emit_activation(b, layer.activation.name, out.get(lay), layer)
    return Emitted([Value(b, act, 3, layout=lay)], None)


# ---- wrappers -------------------------------------------------------------------------------------

_ROWWISE = (core.Dense, core.Activation, core.Dropout)


def _time_distributed(b: Builder, layer: wrappers.TimeDistributed, inputs: Any, mask: Any,
                      kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    inner = layer.layer
    if x.rank < 3:
        raise unsupported(layer, "inputs", f"expected at least 3 dimensions, got {x.rank}")
    if type(inner) in _ROWWISE:  # they act on the last axis: no folding needed
        res = emit_layer(b, inner, x, None, {})
        return Emitted([res.outputs[0]], mask)
    xb = x.bm
    folded = b.op("Reshape", [xb, b.op("Concat", [b.ints([-1], "minus_one"), b.dims(xb, 2)], axis=0)],
                  f"{layer.name}/fold")
    res = emit_layer(b, inner, Value(b, folded, x.rank - 1), None, {})
    if len(res.outputs) != 1:
        raise unsupported(layer, "layer", f"the wrapped layer returns {len(res.outputs)} outputs; expected one")
    y = res.outputs[0]
    yb = y.bm
    target = b.op("Concat", [b.dims(xb, 0, 2), b.dims(yb, 1)], axis=0)
    return Emitted([Value(b, b.op("Reshape", [yb, target], layer.name), y.rank + 1)], mask)


# ---- recurrent ------------------------------------------------------------------------------------

def _spec_of(layer: Layer, owner: Optional[Layer] = None, weights: Optional[Dict[str, Any]] = None
             ) -> rec.RecurrentSpec:
    """The :class:`~rnnkit._onnx.recurrent.RecurrentSpec` of a SimpleRNN/LSTM/GRU layer."""
    owner = owner or layer
    _check_config(layer, _RNN_KEYS)
    if layer.stateful:
        raise unsupported(owner, "stateful", "an ONNX graph keeps no state between runs; export a copy with "
                                             "stateful=False (or a RecurrentNetwork, whose graph takes and "
                                             "returns the states)")
    for opt in ("zoneout", "zoneout_cell"):
        if getattr(layer, opt, 0.0):
            raise unsupported(owner, opt, "zoneout at inference mixes the previous state into every step, "
                                          "which the ONNX recurrent operators cannot express")
    if layer.cell not in ("rnn", "lstm", "gru", "gru_v1"):
        raise unsupported(owner, "cell", f"the {layer.cell!r} kernel has no ONNX recurrent operator")
    ra = getattr(layer, "recurrent_activation", None)
    return rec.RecurrentSpec(owner, layer.cell, layer.units,
                             weights if weights is not None else layer.kernel_weights(),
                             activation=layer.activation.name,
                             recurrent_activation="sigmoid" if ra is None else ra.name,
                             go_backwards=layer.go_backwards, return_sequences=layer.return_sequences,
                             return_state=layer.return_state, zero_output_for_mask=layer.zero_output_for_mask)


def _rnn_spec(layer: Layer) -> rec.RecurrentSpec:
    """The spec of any exportable recurrent layer: SimpleRNN/LSTM/GRU or RNN of a built-in cell."""
    if type(layer) in (recurrent.SimpleRNN, recurrent.LSTM, recurrent.GRU):
        return _spec_of(layer)
    if type(layer) is rnn_cells.RNN:
        if not layer.fused:
            raise unsupported(layer, "cell", f"a {type(layer.cell).__name__} runs step by step in Python and has "
                                             "no ONNX form; RNN(SimpleRNNCell/LSTMCell/GRUCell) exports")
        seq = layer.cell.sequence_layer(name=layer.name, return_sequences=layer.return_sequences,
                                        return_state=layer.return_state, go_backwards=layer.go_backwards,
                                        stateful=layer.stateful, zero_output_for_mask=layer.zero_output_for_mask)
        return _spec_of(seq, owner=layer, weights={k: layer.cell.params.get(k)
                                                   for k in ("w_ih", "w_hh", "b_ih", "b_hh")})
    raise unsupported(layer, "layer", f"{type(layer).__name__} is not an exportable recurrent layer")


def _initial_states(layer: Layer, kw: Dict[str, Any], n: int) -> Optional[List[str]]:
    init = kw.get("initial_state")
    if init is None:
        return None
    leaves = flatten(init)
    if len(leaves) != n or not all(isinstance(v, Value) for v in leaves):
        raise unsupported(layer, "initial_state", f"expected {n} tensors of the model")
    return [v.bm for v in leaves]


def _run_directions(b: Builder, specs: Sequence[rec.RecurrentSpec], x: Value, mask: Optional[Value],
                    inits: Sequence[Optional[List[str]]], hint: str) -> List[rec.DirectionOutputs]:
    """Keras outputs of each spec over ``x``: one ONNX node when the specs can share one
    (forward + reverse of one cell), else one node each."""
    lengths = rec.mask_lengths(b, mask) if mask is not None else None
    pair = (len(specs) == 2 and rec.compatible(specs[0], specs[1]) and not specs[0].go_backwards
            and specs[1].go_backwards and (inits[0] is None) == (inits[1] is None))
    groups = [list(range(len(specs)))] if pair else [[i] for i in range(len(specs))]
    outs: List[Optional[rec.DirectionOutputs]] = [None] * len(specs)
    for g in groups:
        gs = [specs[i] for i in g]
        init_onnx = None
        if inits[g[0]] is not None:
            init_onnx = []
            for k in range(gs[0].n_states):
                parts = [b.unsqueeze(inits[i][k], [0]) for i in g]
                init_onnx.append(parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=0))
        h = hint if len(groups) == 1 else f"{hint}/{'backward' if gs[0].go_backwards else 'forward'}"
        Y, Yh, Yc = rec.rnn_node(b, gs, x.tm, lengths, init_onnx, h)
        for i, (y, hh, c) in zip(g, rec.split_directions(b, Y, Yh, Yc, len(g), h)):
            outs[i] = rec.keras_direction(b, specs[i], y, hh, c, mask, inits[i], h)
    return outs  # type: ignore[return-value]


def _recurrent(b: Builder, layer: Layer, inputs: Any, mask: Any, kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    if x.rank != 3:
        raise unsupported(layer, "inputs", f"expected 3 dimensions (batch, timesteps, features), got {x.rank}")
    spec = _rnn_spec(layer)
    m = _mask_value(mask)
    init = _initial_states(layer, kw, spec.n_states)
    out = _run_directions(b, [spec], x, m, [init], layer.name)[0]
    main = Value(b, rec.sequence(b, spec, out), 3, layout="tm") if spec.return_sequences else Value(b, out.last, 2)
    outs = [main]
    out_mask: Any = m if spec.return_sequences else None
    if spec.return_state:
        outs += [Value(b, f, 2) for f in out.finals]
        out_mask = [out_mask] + [None] * spec.n_states
    return Emitted(outs, out_mask, finals=list(out.finals))


def _bidirectional(b: Builder, layer: wrappers.Bidirectional, inputs: Any, mask: Any,
                   kw: Dict[str, Any]) -> Emitted:
    x = _one(layer, inputs)
    if x.rank != 3:
        raise unsupported(layer, "inputs", f"expected 3 dimensions (batch, timesteps, features), got {x.rank}")
    fl, bl = layer.forward_layer, layer.backward_layer
    sf, sb = _rnn_spec(fl), _rnn_spec(bl)
    m = _mask_value(mask)
    init = kw.get("initial_state")
    inits: List[Optional[List[str]]] = [None, None]
    if init is not None:
        leaves = flatten(init)
        if len(leaves) != sf.n_states + sb.n_states or not all(isinstance(v, Value) for v in leaves):
            raise unsupported(layer, "initial_state", f"expected {sf.n_states + sb.n_states} tensors of the model")
        inits = [[v.bm for v in leaves[:sf.n_states]], [v.bm for v in leaves[sf.n_states:]]]
    of, ob = _run_directions(b, [sf, sb], x, m, inits, layer.name)
    if layer.return_sequences:
        yf = Value(b, rec.sequence(b, sf, of), 3, layout="tm")
        # rnnkit flips the backward layer's returned sequence back in time
        yr = Value(b, ob.y_in if sb.go_backwards else b.flip0(ob.y_in), 3, layout="tm")
    else:
        yf, yr = Value(b, of.last, 2), Value(b, ob.last, 2)
    lay = yf.layout
    mode = layer.merge_mode
    nm = layer.name
    if mode is None:
        outs = [yf, yr]
    else:
        a, c = yf.get(lay), yr.get(lay)
        if mode == "concat":
            y = b.op("Concat", [a, c], nm, axis=-1)
        elif mode == "sum":
            y = b.op("Add", [a, c], nm)
        elif mode == "mul":
            y = b.op("Mul", [a, c], nm)
        else:  # ave
            y = b.op("Div", [b.op("Add", [a, c]), b.scalar(2.0)], nm)
        outs = [Value(b, y, yf.rank, layout=lay)]
    finals = list(of.finals) + list(ob.finals)
    if layer.return_state:
        outs += [Value(b, f, 2) for f in finals]
    # the mask, as Bidirectional.compute_mask
    main_mask: Any = (m if mode is not None else [m, m]) if layer.return_sequences else \
        (None if mode is not None else [None, None])
    if layer.return_state:
        out_mask = (main_mask if isinstance(main_mask, list) else [main_mask]) + [None] * len(finals)
    else:
        out_mask = main_mask
    return Emitted(outs, out_mask, finals=finals)


# ---- dispatch ---------------------------------------------------------------------------------------

_Emitter = Callable[[Builder, Any, Any, Any, Dict[str, Any]], Emitted]

#: exact layer class -> (emitter, the config keys it handles, the call keyword arguments it takes)
EXPORTABLE: Dict[Type[Layer], Tuple[_Emitter, set, set]] = {
    core.Dense: (_dense, {"units", "activation", "use_bias", "kernel_initializer", "bias_initializer"}, set()),
    core.Activation: (_activation, {"activation"}, set()),
    core.Dropout: (_dropout, {"rate", "noise_shape", "seed"}, set()),
    core.Embedding: (_embedding, {"input_dim", "output_dim", "embeddings_initializer", "mask_zero"}, set()),
    core.Masking: (_masking, {"mask_value"}, set()),
    reshaping.Flatten: (_flatten, set(), set()),
    reshaping.Reshape: (_reshape, {"target_shape"}, set()),
    reshaping.Permute: (_permute, {"dims"}, set()),
    reshaping.RepeatVector: (_repeat_vector, {"n"}, set()),
    merge.Add: (_elementwise, set(), set()),
    merge.Subtract: (_elementwise, set(), set()),
    merge.Multiply: (_elementwise, set(), set()),
    merge.Average: (_elementwise, set(), set()),
    merge.Maximum: (_elementwise, set(), set()),
    merge.Minimum: (_elementwise, set(), set()),
    merge.Concatenate: (_concatenate, {"axis"}, set()),
    merge.Dot: (_dot, {"axes", "normalize"}, set()),
    attention.Attention: (_attention, {"use_scale", "score_mode", "dropout", "seed"},
                          {"return_attention_scores", "use_causal_mask"}),
    attention.AdditiveAttention: (_attention, {"use_scale", "dropout", "seed"},
                                  {"return_attention_scores", "use_causal_mask"}),
    normalization.LayerNormalization: (_layer_norm, {"axis", "epsilon", "center", "scale", "beta_initializer",
                                                     "gamma_initializer"}, set()),
    normalization.BatchNormalization: (_batch_norm, {"axis", "momentum", "epsilon", "center", "scale",
                                                     "beta_initializer", "gamma_initializer",
                                                     "moving_mean_initializer", "moving_variance_initializer"},
                                       set()),
    pooling.GlobalAveragePooling1D: (_global_pool, {"data_format", "keepdims"}, set()),
    pooling.GlobalMaxPooling1D: (_global_pool, {"data_format", "keepdims"}, set()),
    pooling.AveragePooling1D: (_pool, {"data_format", "pool_size", "strides", "padding"}, set()),
    pooling.MaxPooling1D: (_pool, {"data_format", "pool_size", "strides", "padding"}, set()),
    conv.Conv1D: (_conv1d, {"filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
                            "groups", "activation", "use_bias", "kernel_initializer", "bias_initializer"}, set()),
    wrappers.TimeDistributed: (_time_distributed, {"layer"}, set()),
    wrappers.Bidirectional: (_bidirectional, {"layer", "backward_layer", "merge_mode"}, {"initial_state"}),
    recurrent.SimpleRNN: (_recurrent, _RNN_KEYS, {"initial_state"}),
    recurrent.LSTM: (_recurrent, _RNN_KEYS, {"initial_state"}),
    recurrent.GRU: (_recurrent, _RNN_KEYS, {"initial_state"}),
    rnn_cells.RNN: (_recurrent, {"cell", "return_sequences", "return_state", "go_backwards", "stateful", "unroll",
                                 "zero_output_for_mask"}, {"initial_state"}),
}


def emit_layer(b: Builder, layer: Layer, inputs: Any, mask: Any, kwargs: Dict[str, Any]) -> Emitted:
    """Emits one call of ``layer`` on ``inputs`` (Values, in the call's structure) with the
    incoming ``mask`` (dropped for a layer that does not support masking, as rnnkit does) and
    the call's keyword arguments (tensors as Values)."""
    entry = EXPORTABLE.get(type(layer))
    if entry is None:
        known = sorted(c.__name__ for c in EXPORTABLE)
        raise unsupported(layer, "layer", f"{type(layer).__name__} has no ONNX export (exportable: "
                                          f"{', '.join(known)}; subclasses are not, as they may compute "
                                          "something else)")
    fn, keys, call_kwargs = entry
    if not layer.built:
        raise unsupported(layer, "built", "the layer has no weights yet; build or call the model first")
    _check_config(layer, keys)
    for k, v in kwargs.items():
        if k == "training":
            if v:
                raise unsupported(layer, "training", "the graph calls this layer with training=True; the export "
                                                     "is for inference")
            continue
        if k not in call_kwargs:
            raise unsupported(layer, k, "a call argument the ONNX exporter does not handle")
    kwargs = {k: v for k, v in kwargs.items() if k != "training"}
    if not layer.supports_masking:
        # the mask does not change the values; compute_mask decides what comes out
        res = fn(b, layer, inputs, None, kwargs)
        if type(layer) not in (core.Embedding, core.Masking):
            res.mask = None
        return res
    return fn(b, layer, inputs, mask, kwargs)


# ---- graphs ---------------------------------------------------------------------------------------

def emit_graph(b: Builder, graph: Any, inputs: Sequence[Value]) -> Tuple[List[Value], Dict[int, List[str]]]:
    """Emits every node of a model's :class:`~rnnkit.models.graph.Graph` in topological order,
    masks flowing as in :meth:`~rnnkit.models.graph.Graph.forward`.

    Returns
    -------
    the Values of ``graph.outputs``, and the final states of each recurrent node (by ``id(node)``)
    """
    values: Dict[int, Value] = {}
    masks: Dict[int, Optional[Value]] = {}
    finals: Dict[int, List[str]] = {}
    for t, v in zip(graph.inputs, inputs):
        values[t.id] = v
        masks[t.id] = None
    for node in graph.nodes:
        args = [values[t.id] for t in node.inbound]
        margs = [masks[t.id] for t in node.inbound]
        call_inputs, kwargs = node.bind(args)
        in_mask = node.bind(margs)[0]
        if isinstance(in_mask, list) and all(m is None for m in flatten(in_mask)):
            in_mask = None
        res = emit_layer(b, node.layer, call_inputs, in_mask, kwargs)
        if len(res.outputs) != len(node.outputs):
            raise unsupported(node.layer, "outputs", f"the export gives {len(res.outputs)} outputs, the model has "
                                                     f"{len(node.outputs)}")
        om = res.mask
        if node.outputs_structure:
            omasks = list(om) if isinstance(om, list) else [om] * len(res.outputs)
        else:
            omasks = [om[0] if isinstance(om, list) else om]
        for t, v, mk in zip(node.outputs, res.outputs, omasks):
            if v.rank != len(t.shape):
                raise AssertionError(f"{node.layer.name}: rank {v.rank} exported, {len(t.shape)} in the model")
            v.shape = tuple(t.shape)
            values[t.id] = v
            masks[t.id] = mk
        if res.finals is not None:
            finals[id(node)] = res.finals
    return [values[t.id] for t in graph.outputs], finals


# ---- plain containers (FeedForwardNetwork, RecurrentNetwork) ---------------------------------------

_PRESERVING = (core.Dense, core.Activation, core.Dropout, core.Masking, normalization.LayerNormalization,
               normalization.BatchNormalization)
_SEQUENCE = (recurrent.SimpleRNN, recurrent.LSTM, recurrent.GRU, rnn_cells.RNN, wrappers.Bidirectional,
             wrappers.TimeDistributed, conv.Conv1D, pooling.GlobalAveragePooling1D, pooling.GlobalMaxPooling1D,
             pooling.AveragePooling1D, pooling.MaxPooling1D)


def _feature_size(layer: Layer) -> Optional[int]:
    """The size of the last axis of ``layer``'s input, when its weights tell."""
    t = type(layer)
    if t in (core.Dense, recurrent.SimpleRNN, recurrent.LSTM, recurrent.GRU):
        return layer.input_dim
    if t is wrappers.Bidirectional:
        return layer.forward_layer.input_dim
    if t is rnn_cells.RNN:
        return getattr(layer.cell, "input_dim", None)
    if t is wrappers.TimeDistributed:
        return _feature_size(layer.layer)
    if t is conv.Conv1D and layer.data_format == "channels_last":
        return layer.input_dim
    if t in (normalization.LayerNormalization, normalization.BatchNormalization):
        for k in ("gamma", "beta", "moving_mean"):
            if k in layer.params:
                return int(layer.params[k].shape[-1])
    return None


def chain_input(layers: Sequence[Layer], what: str) -> Tuple[Tuple[Optional[int], ...], str]:
    """The input shape (batch axis first) and dtype of a plain container of ``layers``: the
    first layer's ``input_shape`` when given, else the rank that the first sequence layer needs
    and the feature size its weights tell."""
    if not layers:
        raise ExportError(f"{what}: the network has no layers")
    first = layers[0]
    is_emb = type(first) is core.Embedding
    dtype = "int64" if is_emb else "float32"
    if first.input_shape is not None:
        return (None,) + tuple(first.input_shape), dtype
    extra = 0
    rank = None
    for layer in layers:
        if isinstance(layer, _SEQUENCE):
            rank = 3 - extra
            break
        if type(layer) is reshaping.RepeatVector:
            rank = 2 - extra
            break
        if type(layer) is core.Embedding:
            extra += 1
        elif not isinstance(layer, _PRESERVING):
            break
    rank = 2 if rank is None else rank
    if rank < 1:
        raise ExportError(f"{what}: cannot tell the input's shape; give the first layer input_shape=...")
    if is_emb:
        return (None,) * rank, dtype
    size = None
    for layer in layers:
        size = _feature_size(layer)
        if size is not None or not isinstance(layer, (core.Activation, core.Dropout, core.Masking)):
            break
    if size is None:
        raise ExportError(f"{what}: cannot tell the input's feature size from {first.name!r} "
                          f"({type(first).__name__}); give the first layer input_shape=...")
    return (None,) * (rank - 1) + (int(size),), dtype


def state_names(layer: Layer) -> Optional[List[str]]:
    """The names of a recurrent layer's states in a RecurrentNetwork (``h``, ``c``; prefixed by
    ``forward_``/``backward_`` for a Bidirectional), None for other layers."""
    def one(l: Layer) -> Optional[List[str]]:
        if type(l) in (recurrent.SimpleRNN, recurrent.GRU):
            return ["h"]
        if type(l) is recurrent.LSTM:
            return ["h", "c"]
        if type(l) is rnn_cells.RNN and l.fused:
            return one(l.cell.sequence_layer())
        return None
    if type(layer) is wrappers.Bidirectional:
        f, bk = one(layer.forward_layer), one(layer.backward_layer)
        if f is None or bk is None:
            return None
        return [f"forward_{s}" for s in f] + [f"backward_{s}" for s in bk]
    return one(layer)


def _state_units(layer: Layer) -> List[int]:
    if type(layer) is wrappers.Bidirectional:
        return _state_units(layer.forward_layer) + _state_units(layer.backward_layer)
    units = layer.cell.units if type(layer) is rnn_cells.RNN else layer.units
    return [units] * len(state_names(layer) or [])


def chain_tensors(layers: Sequence[Layer], with_states: bool, what: str
                  ) -> Tuple[List[KerasTensor], KerasTensor, List[Tuple[Layer, List[str], List[KerasTensor]]]]:
    """A symbolic graph of a plain container: ``(inputs, output, states)`` where ``inputs`` is
    the data input then (``with_states``) each recurrent layer's initial states, and ``states``
    lists ``(layer, state names, its initial-state inputs)``. Built layers are not changed by
    symbolic calls."""
    for layer in layers:
        if not isinstance(layer, Layer):
            raise ExportError(f"{what}: expected rnnkit layers, got {type(layer).__name__}")
        if not layer.built:
            raise unsupported(layer, "built", "the layer has no weights yet; call the network on data first")
    shape, dtype = chain_input(layers, what)
    x = Input(shape=shape[1:], dtype=dtype)
    inputs = [x]
    states: List[Tuple[Layer, List[str], List[KerasTensor]]] = []
    t: Any = x
    for layer in layers:
        names = state_names(layer) if with_states else None
        if names is not None:
            sts = [Input(shape=(u,), dtype="float32") for u in _state_units(layer)]
            inputs += sts
            states.append((layer, names, sts))
            t = layer(t, initial_state=sts)
        else:
            t = layer(t)
        if isinstance(t, list):
            if not with_states:
                raise unsupported(layer, "outputs", f"returns {len(t)} outputs; FeedForwardNetwork layers must "
                                                    "return one")
            t = t[0]
    return inputs, t, states
