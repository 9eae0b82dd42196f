"""Symbolic tensors and graph nodes: what calling a layer on ``Input(...)`` builds.

Calling a layer on :class:`KerasTensor` objects (instead of arrays) runs nothing: it builds the
layer for the known shapes and records a :class:`Node` (the layer, the tensors it was called on,
its other call arguments) whose outputs are new KerasTensors. ``rnnkit.models.Model(inputs,
outputs)`` walks these nodes back from the outputs to find the graph. A layer called on two
different inputs makes two nodes that share the layer's weights.

This module knows layers only by duck typing (``compute_output_shape``, ``dtype``), so it sits
below :mod:`rnnkit.layers.base` in the import graph.

Shapes
------
``KerasTensor.shape`` includes the batch axis first, ``None`` where unknown (batch, time).
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["KerasTensor", "Node", "flatten", "pack_like", "is_symbolic", "map_structure"]

Shape = Tuple[Optional[int], ...]

_ids = itertools.count()


class KerasTensor:
    """A placeholder for an array in a model being built: a shape (batch axis first, ``None``
    where unknown), a dtype, and the node that produces it.

    Shapes
    ------
    ``shape``: ``(batch, *feature_axes)``.
    """

    def __init__(self, shape: Sequence[Optional[int]], dtype: Any = "float32",
                 node: Optional["Node"] = None, index: int = 0, name: Optional[str] = None) -> None:
        self.shape: Shape = tuple(None if s is None else int(s) for s in shape)
        self.dtype = np.dtype(dtype).name
        self.node = node
        self.index = index
        self.id = next(_ids)
        self.name = name or (f"{node.layer.name}/out{index}" if node is not None else f"tensor_{self.id}")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        shp = "(" + ", ".join("None" if s is None else str(s) for s in self.shape) + \
            ("," if len(self.shape) == 1 else "") + ")"
        return f"<KerasTensor shape={shp}, dtype={self.dtype}, name={self.name}>"

    def __array__(self, *a: Any, **k: Any) -> Any:
        raise TypeError(f"{self.name}: a KerasTensor is a placeholder in a model being built and has no "
                        "values; build a Model(inputs, outputs) and call it on arrays")


def flatten(structure: Any) -> List[Any]:
    """The leaves of nested lists/tuples/dicts (dicts in sorted-key order); None is a leaf."""
    if isinstance(structure, (list, tuple)):
        out: List[Any] = []
        for s in structure:
            out.extend(flatten(s))
        return out
    if isinstance(structure, dict):
        out = []
        for k in sorted(structure):
            out.extend(flatten(structure[k]))
        return out
    return [structure]


def pack_like(structure: Any, leaves: Sequence[Any]) -> Any:
    """Inverse of :func:`flatten`: ``leaves`` put back into the shape of ``structure``."""
    it = iter(leaves)

    def build(s: Any) -> Any:
        if isinstance(s, (list, tuple)):
            return type(s)(build(v) for v in s) if isinstance(s, tuple) else [build(v) for v in s]
        if isinstance(s, dict):
            return {k: build(s[k]) for k in sorted(s)}
        return next(it)

    return build(structure)


def map_structure(fn: Callable[[Any], Any], structure: Any) -> Any:
    """``fn`` applied to every leaf of ``structure``."""
    return pack_like(structure, [fn(v) for v in flatten(structure)])


def is_symbolic(*structures: Any) -> bool:
    """Whether any leaf of the structures is a :class:`KerasTensor`."""
    return any(isinstance(v, KerasTensor) for s in structures for v in flatten(s))


class Node:
    """One call of a layer in a graph: ``outputs = layer(inputs, **kwargs)``.

    ``inbound`` lists every KerasTensor the call reads (those in ``inputs`` first, then those in
    tensor-valued keyword arguments such as ``initial_state``); ``args`` keeps the call's
    structure with each tensor replaced by its position in ``inbound``.
    """

    def __init__(self, layer: Any, inputs: Any, kwargs: Dict[str, Any]) -> None:
        self.layer = layer
        self.inputs_structure = inputs
        self.kwargs = dict(kwargs)
        inbound: List[KerasTensor] = []
        slots: Dict[int, int] = {}

        def slot(v: Any) -> Any:
            if isinstance(v, KerasTensor):
                if v.id not in slots:
                    slots[v.id] = len(inbound)
                    inbound.append(v)
                return _Slot(slots[v.id])
            return v

        self.inputs_template = map_structure(slot, inputs)
        self.kwargs_template = {k: map_structure(slot, v) for k, v in self.kwargs.items()}
        self.inbound = inbound
        # for each leaf of ``inputs``: its position in ``inbound`` (None for a non-tensor leaf)
        self.input_indices = [v.index if isinstance(v, _Slot) else None
                              for v in flatten(self.inputs_template)]
        self.outputs: List[KerasTensor] = []
        self.outputs_structure: Any = None

    def bind(self, values: Sequence[Any]) -> Tuple[Any, Dict[str, Any]]:
        """The call's ``inputs`` and ``kwargs`` with every tensor replaced by its value
        (``values[i]`` for ``inbound[i]``)."""
        def fill(v: Any) -> Any:
            return values[v.index] if isinstance(v, _Slot) else v
        inputs = map_structure(fill, self.inputs_template)
        kwargs = {k: map_structure(fill, v) for k, v in self.kwargs_template.items()}
        return inputs, kwargs

    def kwarg_indices(self) -> Dict[str, List[Optional[int]]]:
        """For each keyword argument that holds tensors: the position in ``inbound`` of each of
        its leaves (None for a non-tensor leaf)."""
        out: Dict[str, List[Optional[int]]] = {}
        for k, v in self.kwargs_template.items():
            leaves = flatten(v)
            if any(isinstance(x, _Slot) for x in leaves):
                out[k] = [x.index if isinstance(x, _Slot) else None for x in leaves]
        return out

    def __repr__(self) -> str:
        return f"<Node {self.layer.name}: {[t.name for t in self.inbound]} -> {[t.name for t in self.outputs]}>"


class _Slot:
    """A placeholder for the i-th inbound tensor inside a node's call structure."""
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index
