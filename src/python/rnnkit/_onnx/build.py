"""From an rnnkit model to an ``onnx.ModelProto``: the graph's inputs (with symbolic batch and
time axes), the emitted nodes, the named outputs, and the output shapes from ONNX shape
inference.

Shapes
------
Graph inputs as the model takes them (batch axis first for Keras-style models and
``batch_first`` modules); outputs likewise.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import helper

from rnnkit import nn
from rnnkit._onnx import layers as L
from rnnkit._onnx import modules as M
from rnnkit._onnx.graph import ELEM_TYPES, Builder, ExportError, Value, value_info
from rnnkit.models.containers import FeedForwardNetwork, RecurrentNetwork
from rnnkit.models.functional import Model
from rnnkit.models.graph import Graph

__all__ = ["build"]


class _In:
    """One graph input: default name, dtype, shape (model's view), batch axis, time axis."""

    def __init__(self, name: str, dtype: str, shape: Sequence[Optional[int]], batch_axis: int = 0,
                 time_axis: Optional[int] = None) -> None:
        self.name, self.dtype, self.shape = name, dtype, tuple(shape)
        self.batch_axis, self.time_axis = batch_axis, time_axis


def _elem(dtype: str) -> Tuple[int, str]:
    """(ONNX element type, Value dtype) of a model input dtype; float inputs are float32."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return ELEM_TYPES["float"], "float"
    if dt.kind in "iu":
        return helper.np_dtype_to_tensor_dtype(dt), dt.name
    raise ExportError(f"inputs: an input of dtype {dt} cannot be exported")


def _names(user: Any, defaults: List[str], arg: str) -> List[str]:
    if user is None:
        return defaults
    if isinstance(user, (str, bytes)) or not isinstance(user, (list, tuple)):
        raise TypeError(f"{arg}: expected a list of {len(defaults)} strings, got {type(user).__name__}")
    names = list(user)
    if len(names) != len(defaults):
        raise ValueError(f"{arg}: expected {len(defaults)} names (the model's {arg.split('_')[0]}s: {defaults}), "
                         f"got {len(names)}")
    for n in names:
        if not isinstance(n, str) or not n:
            raise ValueError(f"{arg}: expected non-empty strings, got {n!r}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{arg}: the names must be unique, got duplicates {dup}")
    return names


def _unique(names: List[str], taken: set) -> List[str]:
    out = []
    for n in names:
        base, k, cand = n, 1, n
        while cand in taken:
            cand = f"{base}_{k}"
            k += 1
        taken.add(cand)
        out.append(cand)
    return out


def _declare(b: Builder, ins: List[_In], names: List[str], dynamic_batch: bool, dynamic_time: bool
             ) -> Tuple[List[onnx.ValueInfoProto], List[Value]]:
    timed = [i for i in ins if i.time_axis is not None]
    infos, values = [], []
    for spec, name in zip(ins, names):
        elem, vdt = _elem(spec.dtype)
        dims: List[Any] = []
        for k, s in enumerate(spec.shape):
            if k == spec.batch_axis:
                if dynamic_batch:
                    dims.append("batch")
                elif s is None:
                    raise ValueError(f"dynamic_batch: False needs a fixed batch size, but the model does not fix "
                                     f"the one of input {name!r} (a Keras-style model does with "
                                     "Input(batch_size=...))")
                else:
                    dims.append(int(s))
            elif k == spec.time_axis:
                if dynamic_time:
                    dims.append("time" if len(timed) == 1 else f"{name}_time")
                elif s is None:
                    raise ValueError(f"dynamic_time: False needs a fixed number of time steps, but the model does "
                                     f"not fix the one of input {name!r} (a Keras-style model does with "
                                     "Input(shape=(steps, ...)))")
                else:
                    dims.append(int(s))
            else:
                dims.append(f"{name}_dim{k}" if s is None else int(s))
        infos.append(value_info(name, elem, dims))
        v = Value(b, name, len(spec.shape), dtype=vdt, shape=spec.shape)
        values.append(v)
    return infos, values


def _time_axis(shape: Sequence[Optional[int]], dtype: str) -> Optional[int]:
    """Axis 1 of a sequence (``[N, T, ...]``, or ``[N, T]`` indices), else None."""
    r = len(shape)
    return 1 if r >= 3 or (r == 2 and np.dtype(dtype).kind in "iu") else None


def _keras_inputs(graph: Graph) -> List[_In]:
    return [_In(t.node.layer.name, t.node.layer.input_dtype, t.shape, 0,
                _time_axis(t.shape, t.node.layer.input_dtype)) for t in graph.inputs]


def _keras_output_names(graph: Graph) -> List[str]:
    """The output layer's name, or ``"<layer>/out<k>"`` for a layer with several outputs
    (repeats get a suffix later)."""
    return [t.node.layer.name if len(t.node.outputs) == 1 else t.name for t in graph.outputs]


def build(model: Any, *, opset: int, input_names: Any = None, output_names: Any = None,
          dynamic_batch: bool = True, dynamic_time: bool = True, producer_version: str = "") -> onnx.ModelProto:
    """The ONNX model of ``model`` (see :func:`rnnkit.onnx.export`)."""
    b = Builder(opset)
    chain_states: List[Tuple[Any, List[str], List[Any]]] = []
    if isinstance(model, Model):
        graph = model.graph
        if graph is None:
            raise ValueError(f"model: {model.name!r} is not built; build it (input_shape, build(), or a first "
                             "call on data) before exporting")
        ins = _keras_inputs(graph)
        out_defaults = _keras_output_names(graph)
        graph_name = model.name
        kind = "keras"
    elif isinstance(model, FeedForwardNetwork):
        with_states = isinstance(model, RecurrentNetwork)
        inputs, out, chain_states = L.chain_tensors(model.layers, with_states, "model")
        graph = Graph(inputs, [out])
        x = inputs[0]
        ins = [_In("input", x.dtype, x.shape, 0, _time_axis(x.shape, x.dtype))]
        out_defaults = ["output"]
        for layer, snames, sts in chain_states:
            ins += [_In(f"{layer.name}_{s}0", "float32", t.shape) for s, t in zip(snames, sts)]
            out_defaults += [f"{layer.name}_{s}_n" for s in snames]
        graph_name = type(model).__name__
        kind = "keras"
    elif isinstance(model, nn.Module):
        sig = M.module_signature(model)
        shape: List[Optional[int]] = [None] * sig.rank
        if sig.features is not None:
            shape[-1] = sig.features
        if sig.time_major:
            batch_axis, time_axis = 1, 0
        else:
            batch_axis = 0
            time_axis = 1 if sig.rank >= 3 or (sig.rank == 2 and sig.dtype == "int64") else None
        if sig.rank == 1:
            time_axis = None
        ins = [_In("input", sig.dtype, shape, batch_axis, time_axis)]
        out_defaults = list(sig.names)
        graph_name = type(model).__name__
        kind = "nn"
    else:
        raise TypeError("model: expected an rnnkit Model/Sequential, FeedForwardNetwork, RecurrentNetwork or "
                        f"rnnkit.nn module, got {type(model).__name__}")

    taken: set = set()
    in_names = _unique(_names(input_names, [i.name for i in ins], "input_names"), taken)
    out_names = _unique(_names(output_names, out_defaults, "output_names"), taken) if output_names is None else \
        _names(output_names, out_defaults, "output_names")
    clash = sorted(set(in_names) & set(out_names))
    if clash:
        raise ValueError(f"output_names: {clash} also name inputs; input and output names must differ")
    for n in in_names + out_names:
        b.reserve(n)
    infos, in_values = _declare(b, ins, in_names, dynamic_batch, dynamic_time)

    if kind == "nn":
        outs = M.emit_module(b, model, in_values[0])
    else:
        outs, finals = L.emit_graph(b, graph, in_values)
        for layer, _, _ in chain_states:
            node = next(n for n in graph.nodes if n.layer is layer)
            outs += [Value(b, f, 2) for f in finals[id(node)]]
    if len(outs) != len(out_names):
        raise AssertionError(f"{len(outs)} outputs for {len(out_names)} names")

    out_infos = []
    for name, v in zip(out_names, outs):
        b.op("Identity", [v.bm], name, out_names=[name])
        elem = ELEM_TYPES[v.dtype] if v.dtype in ELEM_TYPES else helper.np_dtype_to_tensor_dtype(np.dtype(v.dtype))
        out_infos.append(value_info(name, elem, [None] * v.rank))
    g = helper.make_graph(b.nodes, graph_name, infos, out_infos, b.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(g, opset_imports=opsets, producer_name="rnnkit", producer_version=producer_version)
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    # the output shapes, symbolic where they follow the inputs' batch and time axes
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # pragma: no cover - inference is a nicety; the model stands without it
        inferred = None
    if inferred is not None:
        by_name = {o.name: o for o in inferred.graph.output}
        for o in proto.graph.output:
            io = by_name.get(o.name)
            if io is not None and io.type.tensor_type.HasField("shape") and \
                    len(io.type.tensor_type.shape.dim) == len(o.type.tensor_type.shape.dim):
                o.type.CopyFrom(io.type)
    return proto
