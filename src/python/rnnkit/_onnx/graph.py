"""Building an ONNX graph: :class:`Builder` (nodes, initializers, names, opset-aware helpers),
:class:`Value` (a tensor that may exist batch-major, time-major or both) and the activations.

Layouts: a :class:`Value` of rank >= 2 may be stored as the model sees it (``"bm"``, batch axis
first, as in Keras) or with its first two axes swapped (``"tm"``, time first, what the ONNX
recurrent operators read and write). :meth:`Value.get` makes the missing layout with one
``Transpose`` on first use and keeps it, so a stack of recurrent layers, or a recurrent layer
followed by ``Dense``, transposes only at the model's edges.

Shapes
------
Every helper documents its own; ``N`` batch, ``T`` time steps.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["Builder", "Value", "ExportError", "unsupported", "emit_activation", "value_info", "FLOAT",
           "INT64_MIN", "INT64_MAX", "ELEM_TYPES", "ACTIVATIONS"]

FLOAT = TensorProto.FLOAT
INT64_MIN = -(2 ** 63)
INT64_MAX = 2 ** 63 - 1

#: value dtype -> ONNX element type
ELEM_TYPES = {"float": TensorProto.FLOAT, "int64": TensorProto.INT64, "int32": TensorProto.INT32,
              "bool": TensorProto.BOOL}


class ExportError(ValueError):
    """What cannot be exported (a ``ValueError`` naming the layer or module and the option)."""


def unsupported(layer: Any, option: str, why: str) -> ExportError:
    """An :class:`ExportError` ``"<name> (<Class>): <option>: <why>"``."""
    name = getattr(layer, "name", None) or type(layer).__name__
    return ExportError(f"{name} ({type(layer).__name__}): {option}: {why}")


class Value:
    """A tensor of the graph being built: its name in each layout it exists in, its rank, its
    dtype (``"float"``, ``"int64"``, ``"int32"``, ``"bool"``) and what is known of its shape.

    Shapes
    ------
    ``shape``: the model's view (batch axis first), ``None`` where unknown; ``"tm"`` storage has
    axes 0 and 1 swapped.
    """

    def __init__(self, builder: "Builder", name: str, rank: int, *, layout: str = "bm",
                 dtype: str = "float", shape: Optional[Sequence[Optional[int]]] = None) -> None:
        if layout not in ("bm", "tm") or (layout == "tm" and rank < 2):
            raise AssertionError(f"layout {layout!r} for rank {rank}")
        self.b = builder
        self.rank = int(rank)
        self.dtype = dtype
        self.names: Dict[str, str] = {layout: name}
        self.shape: Tuple[Optional[int], ...] = tuple(shape) if shape is not None else (None,) * self.rank
        self.lengths: Optional[str] = None  # for a mask: the int32 valid-step counts [N] (cached)

    @property
    def layout(self) -> str:
        """The layout to compute in when any will do: the one it exists in ("bm" when both)."""
        return "bm" if "bm" in self.names else "tm"

    def get(self, layout: str) -> str:
        """The tensor's name in ``layout`` (transposing once, on first use)."""
        if layout in self.names:
            return self.names[layout]
        if self.rank < 2:
            raise AssertionError("a rank < 2 value has one layout")
        perm = [1, 0] + list(range(2, self.rank))
        src = self.names["tm" if layout == "bm" else "bm"]
        out = self.b.op("Transpose", [src], hint=src.split("/")[0] + "/" + layout, perm=perm)
        self.names[layout] = out
        return out

    @property
    def bm(self) -> str:
        return self.get("bm")

    @property
    def tm(self) -> str:
        return self.get("tm")

    @property
    def last(self) -> Optional[int]:
        """The static size of the last axis, when known."""
        return self.shape[-1] if self.shape else None

    def __repr__(self) -> str:
        return f"<Value {self.names} rank={self.rank} {self.dtype} shape={self.shape}>"


class Builder:
    """Collects the nodes and initializers of one graph and hands out unique names.

    Parameters
    ----------
    opset
        The default-domain opset the graph targets (the helpers pick operators and input forms
        accordingly).
    """

    def __init__(self, opset: int) -> None:
        self.opset = int(opset)
        self.nodes: List[onnx.NodeProto] = []
        self.initializers: List[onnx.TensorProto] = []
        self._used: set = set()
        self._consts: Dict[Tuple[Any, ...], str] = {}

    # ---- names ----------------------------------------------------------------------------------
    def reserve(self, name: str) -> None:
        """Marks ``name`` as taken (graph inputs and outputs are named first)."""
        if name in self._used:
            raise ValueError(f"name {name!r} is used twice")
        self._used.add(name)

    def fresh(self, hint: str) -> str:
        """A new unique tensor/node name starting with ``hint``."""
        hint = hint or "t"
        if hint not in self._used:
            self._used.add(hint)
            return hint
        k = 1
        while f"{hint}_{k}" in self._used:
            k += 1
        name = f"{hint}_{k}"
        self._used.add(name)
        return name

    # ---- nodes and constants --------------------------------------------------------------------
    def const(self, value: Any, hint: str = "const", dtype: Any = None, key: Any = None) -> str:
        """An initializer holding ``value`` (float data as float32 unless ``dtype``; integers
        keep their dtype). Small constants are shared, and so are those made with the same
        ``key`` (e.g. the weights of a layer called twice)."""
        if key is not None and ("key", key) in self._consts:
            return self._consts[("key", key)]
        name = self._const(value, hint, dtype)
        if key is not None:
            self._consts[("key", key)] = name
        return name

    def _const(self, value: Any, hint: str, dtype: Any) -> str:
        arr = np.asarray(value)
        if dtype is not None:
            arr = arr.astype(dtype)
        elif arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        arr = np.ascontiguousarray(arr)
        key = None
        if arr.size <= 16:
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            if key in self._consts:
                return self._consts[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(arr, name))
        if key is not None:
            self._consts[key] = name
        return name

    def op(self, op_type: str, inputs: Sequence[Optional[str]], hint: Optional[str] = None,
           outputs: int = 1, out_names: Optional[Sequence[str]] = None, **attrs: Any) -> Any:
        """Appends a node; returns its output name (a list when ``outputs > 1``). ``None`` inputs
        are omitted optional inputs (trailing ones are dropped)."""
        ins = ["" if i is None else i for i in inputs]
        while ins and ins[-1] == "":
            ins.pop()
        base = hint or op_type.lower()
        if out_names is None:
            outs = [self.fresh(base if outputs == 1 else f"{base}_{k}") for k in range(outputs)]
        else:
            outs = list(out_names)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, ins, outs, name=self.fresh(f"{base}/{op_type}"), **attrs))
        return outs[0] if outputs == 1 else outs

    # ---- opset-aware helpers --------------------------------------------------------------------
    def ints(self, values: Sequence[int], hint: str = "axes") -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), hint)

    def unsqueeze(self, x: str, axes: Sequence[int], hint: Optional[str] = None) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.ints(axes)], hint)
        return self.op("Unsqueeze", [x], hint, axes=list(axes))

    def squeeze(self, x: str, axes: Sequence[int], hint: Optional[str] = None) -> str:
        if self.opset >= 13:
            return self.op("Squeeze", [x, self.ints(axes)], hint)
        return self.op("Squeeze", [x], hint, axes=list(axes))

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool, hint: Optional[str] = None) -> str:
        """``ReduceSum``/``ReduceMean``/``ReduceMax``/... over ``axes`` (axes as an input where
        the opset takes it)."""
        axes_as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if axes_as_input:
            return self.op(op_type, [x, self.ints(axes)], hint, keepdims=int(keepdims))
        return self.op(op_type, [x], hint, axes=list(axes), keepdims=int(keepdims))

    def slice(self, x: str, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
              steps: Optional[Sequence[int]] = None, hint: Optional[str] = None) -> str:
        ins = [x, self.ints(starts, "starts"), self.ints(ends, "ends"), self.ints(axes)]
        if steps is not None:
            ins.append(self.ints(steps, "steps"))
        return self.op("Slice", ins, hint)

    def flip0(self, x: str, hint: Optional[str] = None) -> str:
        """``x[::-1]`` along axis 0 (time, for a time-major tensor)."""
        return self.slice(x, [-1], [INT64_MIN], [0], [-1], hint)

    def dims(self, x: str, start: int, end: Optional[int] = None, hint: Optional[str] = None) -> str:
        """``Shape(x)[start:end]`` as int64 ``[k]``."""
        if self.opset >= 15:
            return self.op("Shape", [x], hint, start=start, end=end)
        shp = self.op("Shape", [x], hint)
        return self.slice(shp, [start], [INT64_MAX if end is None else end], [0], hint=hint)

    def zero(self) -> str:
        return self.const(np.zeros((), np.float32), "zero")

    def scalar(self, v: float) -> str:
        return self.const(np.asarray(v, np.float32), "scalar")


# ---- activations --------------------------------------------------------------------------------

_SIMPLE = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus",
           "softsign": "Softsign", "exponential": "Exp"}
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
_PARAM = re.compile(r"^(leaky_relu|elu)\((.+)\)$")

#: the activations :func:`emit_activation` knows (Keras 3's names; parameterised forms as
#: ``leaky_relu(a)``, ``elu(a)``, ``gelu(approximate=True)``)
ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "tanh", "softmax", "log_softmax", "gelu",
               "gelu(approximate=True)", "elu", "selu", "softplus", "softsign", "leaky_relu",
               "hard_sigmoid", "hard_silu", "hard_tanh", "exponential", "swish", "mish")


def emit_activation(b: Builder, name: str, x: str, where: Any, option: str = "activation") -> str:
    """``name`` applied to ``x`` (elementwise, or along the last axis for softmax and
    log_softmax); raises :class:`ExportError` naming ``where`` (a layer) for an activation with
    no ONNX form.

    Shapes
    ------
    x: any -> the same shape
    """
    if name == "linear":
        return x
    if name in _SIMPLE:
        return b.op(_SIMPLE[name], [x])
    if name == "softmax":
        return b.op("Softmax", [x], axis=-1)
    if name == "log_softmax":
        return b.op("LogSoftmax", [x], axis=-1)
    if name == "relu6":
        return b.op("Clip", [x, b.scalar(0.0), b.scalar(6.0)])
    if name == "hard_tanh":
        return b.op("Clip", [x, b.scalar(-1.0), b.scalar(1.0)])
    if name == "hard_sigmoid":
        return b.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
    if name == "hard_silu":
        if b.opset >= 14:
            return b.op("HardSwish", [x])
        return b.op("Mul", [x, b.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)])
    if name == "swish":
        return b.op("Mul", [x, b.op("Sigmoid", [x])])
    if name == "selu":
        return b.op("Selu", [x], alpha=_SELU_ALPHA, gamma=_SELU_SCALE)
    if name == "mish":
        if b.opset >= 18:
            return b.op("Mish", [x])
        return b.op("Mul", [x, b.op("Tanh", [b.op("Softplus", [x])])])
    if name == "gelu":
        if b.opset >= 20:
            return b.op("Gelu", [x])
        # 0.5 x (1 + erf(x / sqrt(2)))
        e = b.op("Erf", [b.op("Mul", [x, b.scalar(1.0 / math.sqrt(2.0))])])
        return b.op("Mul", [b.op("Mul", [x, b.scalar(0.5)]), b.op("Add", [e, b.scalar(1.0)])])
    if name == "gelu(approximate=True)":
        if b.opset >= 20:
            return b.op("Gelu", [x], approximate="tanh")
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        x3 = b.op("Mul", [b.op("Mul", [x, x]), x])
        inner = b.op("Add", [x, b.op("Mul", [x3, b.scalar(0.044715)])])
        t = b.op("Tanh", [b.op("Mul", [inner, b.scalar(math.sqrt(2.0 / math.pi))])])
        return b.op("Mul", [b.op("Mul", [x, b.scalar(0.5)]), b.op("Add", [t, b.scalar(1.0)])])
    if name in ("leaky_relu", "elu"):
        name = f"{name}({0.2 if name == 'leaky_relu' else 1.0})"
    m = _PARAM.match(name)
    if m:
        try:
            a = float(m.group(2))
        except ValueError:
            a = None
        if a is not None:
            return b.op("LeakyRelu" if m.group(1) == "leaky_relu" else "Elu", [x], alpha=a)
    raise unsupported(where, option, f"the activation {name!r} has no ONNX form here; exportable: "
                                     f"{', '.join(ACTIVATIONS)}")


def value_info(name: str, elem_type: int, dims: Sequence[Union[int, str, None]]) -> onnx.ValueInfoProto:
    """A tensor ValueInfo; ``dims`` entries are sizes, symbolic names or None (unknown)."""
    return helper.make_tensor_value_info(name, elem_type, list(dims))
