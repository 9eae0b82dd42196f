"""The graph of a functional model: its nodes in topological order, a forward pass that records
one :class:`Trace` per call, and the backward pass in reverse order.

Every model (``Model(inputs, outputs)``, ``Sequential``) runs through :class:`Graph`. A pass keeps
nothing on the layers or the model: each node's :class:`~rnnkit.layers.base.Context` and every
tensor's value and mask live in the pass's :class:`Trace`, which the caller owns and hands back to
:meth:`Graph.backward`. Gradients reaching a tensor from several consumers add up; a layer used by
several nodes accumulates its parameter gradients once per node; gradients flow through a
recurrent layer's ``initial_state`` as well as its inputs.

Shapes
------
``inputs``/``outputs``: lists of arrays in the order of the model's inputs/outputs, batch axis
first.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from rnnkit.layers.base import Context, Layer
from rnnkit.layers.input_layer import InputLayer
from rnnkit.layers.symbolic import KerasTensor, Node, flatten, pack_like

__all__ = ["Graph", "Trace"]


class Trace:
    """One forward pass: the value and mask of every tensor and the context of every node."""

    def __init__(self) -> None:
        self.values: Dict[int, Any] = {}
        self.masks: Dict[int, Any] = {}
        self.contexts: Dict[int, Context] = {}
        self.outputs: List[Any] = []
        self.output_masks: List[Any] = []


class Graph:
    """The nodes between ``inputs`` and ``outputs`` (KerasTensors), in topological order."""

    def __init__(self, inputs: Sequence[KerasTensor], outputs: Sequence[KerasTensor]) -> None:
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        for i, t in enumerate(self.inputs):
            if not isinstance(t, KerasTensor) or not isinstance(t.node.layer, InputLayer):
                raise ValueError(f"inputs[{i}]: expected a tensor made by rnnkit.layers.Input, got {t!r}")
        for i, t in enumerate(self.outputs):
            if not isinstance(t, KerasTensor):
                raise TypeError(f"outputs[{i}]: expected a KerasTensor (the result of calling a layer), "
                                f"got {type(t).__name__}")
        input_ids = {t.id for t in self.inputs}
        order: List[Node] = []
        seen: Set[int] = set()
        # iterative depth-first search from the outputs: a node comes after every node it reads from
        for out in self.outputs:
            stack: List[Tuple[Node, bool]] = [(out.node, False)]
            while stack:
                node, done = stack.pop()
                if id(node) in seen:
                    continue
                if done:
                    seen.add(id(node))
                    order.append(node)
                    continue
                stack.append((node, True))
                for t in node.inbound:
                    if isinstance(t.node.layer, InputLayer) and t.id not in input_ids:
                        raise ValueError(f"outputs: they depend on the input {t.name!r}, which is not in the "
                                         "model's inputs")
                    if id(t.node) not in seen:
                        stack.append((t.node, False))
        self.nodes = [n for n in order if not isinstance(n.layer, InputLayer)]
        layers: List[Layer] = []
        for n in self.nodes:
            if all(n.layer is not seen_layer for seen_layer in layers):
                layers.append(n.layer)
        self.layers = layers
        names = [layer.name for layer in layers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"layers: layer names must be unique within a model, got duplicates {dup}")
        # a tensor needs a gradient when a trainable computation lies upstream of it
        self._needs_grad: Dict[int, bool] = {t.id: False for t in self.inputs}
        for n in self.nodes:
            upstream = any(self._needs_grad.get(t.id, False) for t in n.inbound)
            has_params = bool(n.layer.params) or any(s.params for s in n.layer.sublayers())
            for t in n.outputs:
                self._needs_grad[t.id] = upstream or has_params
        self._needs_grad_from_inputs = {k: True for k in self._needs_grad}
        # per node, decided once: whether its inputs need a gradient (by default, and when the
        # model's inputs do), its tensor keyword arguments, and whether it is a plain one-in /
        # one-out call (the common case, run without rebuilding the call's structure)
        self._need = {}
        self._need_all = {}
        self._kwarg_idx = {}
        self._simple = {}
        for n in self.nodes:
            idx = [i for i in n.input_indices if i is not None]
            self._need[id(n)] = any(self._needs_grad.get(n.inbound[i].id, False) for i in idx)
            self._need_all[id(n)] = bool(idx)
            self._kwarg_idx[id(n)] = n.kwarg_indices()
            self._simple[id(n)] = (not isinstance(n.inputs_structure, (list, tuple)) and len(n.inbound) == 1
                                   and not n.kwargs and not n.outputs_structure)
        # every consumer of a tensor (for the loss fusion check)
        self.consumers: Dict[int, int] = {}
        for n in self.nodes:
            for t in n.inbound:
                self.consumers[t.id] = self.consumers.get(t.id, 0) + 1

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, inputs: Sequence[Any], training: bool = False, input_grads: bool = False) -> Trace:
        """Runs every node once. ``inputs``: arrays in the order of :attr:`inputs` (already
        checked by the caller). With ``input_grads`` the backward of this pass also computes the
        gradients w.r.t. the inputs (by default the layers that read only data skip them)."""
        tr = Trace()
        need_of = self._need_all if input_grads else self._need
        values, masks_of, contexts = tr.values, tr.masks, tr.contexts
        for t, v in zip(self.inputs, inputs):
            values[t.id] = t.node.layer.check_inputs(v)
            masks_of[t.id] = None
        for node in self.nodes:
            key = id(node)
            if self._simple[key]:
                src = node.inbound[0].id
                v, m = values[src], masks_of[src]
                out, ctx = node.layer.apply(v, training=training, mask=m, need_input_grad=need_of[key])
                om = node.layer.compute_mask(v, m)
                dst = node.outputs[0].id
                values[dst] = out
                masks_of[dst] = om[0] if isinstance(om, list) else om
                contexts[key] = ctx
                continue
            args = [tr.values[t.id] for t in node.inbound]
            masks = [tr.masks[t.id] for t in node.inbound]
            inputs_v, kwargs = node.bind(args)
            in_mask = node.bind(masks)[0]
            if isinstance(in_mask, list) and all(m is None for m in flatten(in_mask)):
                in_mask = None
            out, ctx = node.layer.apply(inputs_v, training=training, mask=in_mask, need_input_grad=need_of[key],
                                        **kwargs)
            out_mask = node.layer.compute_mask(inputs_v, in_mask)
            outs = list(out) if node.outputs_structure else [out]
            if node.outputs_structure:
                omasks = list(out_mask) if isinstance(out_mask, list) else [out_mask] * len(outs)
            else:
                omasks = [out_mask[0] if isinstance(out_mask, list) else out_mask]
            if len(outs) != len(node.outputs):
                raise ValueError(f"{node.layer.name}: returned {len(outs)} outputs, the model was built with "
                                 f"{len(node.outputs)}")
            for t, v, m in zip(node.outputs, outs, omasks):
                tr.values[t.id] = v
                tr.masks[t.id] = m
            tr.contexts[id(node)] = ctx
        tr.outputs = [tr.values[t.id] for t in self.outputs]
        tr.output_masks = [tr.masks[t.id] for t in self.outputs]
        return tr

    # ---- backward -----------------------------------------------------------------------------
    def fusable(self, index: int) -> Optional[str]:
        """The activation output ``index``'s layer ends with, when a loss may fold it in (the
        output tensor is read by nothing else), else None."""
        t = self.outputs[index]
        if self.consumers.get(t.id, 0) or t.node.outputs_structure or isinstance(t.node.layer, InputLayer):
            return None
        return t.node.layer.output_activation

    def backward(self, trace: Trace, d_outputs: Sequence[Any],
                 logits: Optional[Sequence[bool]] = None) -> List[Any]:
        """Backpropagates ``d_outputs`` (one per model output, None = zeros) through the pass of
        ``trace``; parameter gradients accumulate in the layers. ``logits[i]`` True means
        ``d_outputs[i]`` is w.r.t. the pre-activation of output ``i``'s layer (see
        :meth:`fusable`). Returns the gradients w.r.t. the model's inputs (None where none
        flows)."""
        grads: Dict[int, Any] = {}
        via_logits: Set[int] = set()
        for i, (t, d) in enumerate(zip(self.outputs, d_outputs)):
            if d is None:
                continue
            if logits is not None and logits[i]:
                via_logits.add(id(t.node))
            grads[t.id] = d if t.id not in grads else grads[t.id] + d
        for node in reversed(self.nodes):
            key = id(node)
            if self._simple[key]:
                d = grads.get(node.outputs[0].id)
                if d is None:
                    continue
                ctx = trace.contexts[key]
                d_in = node.layer.backprop_logits(d, ctx) if key in via_logits else node.layer.backward(d, ctx)
                if d_in is not None:
                    src = node.inbound[0].id
                    grads[src] = d_in if src not in grads else grads[src] + d_in
                continue
            ds = [grads.get(t.id) for t in node.outputs]
            if all(d is None for d in ds):
                continue
            ctx = trace.contexts[key]
            if id(node) in via_logits:
                d_in = node.layer.backprop_logits(ds[0], ctx)
            else:
                d_in = node.layer.backward(ds if node.outputs_structure else ds[0], ctx)
            d_leaves = flatten(d_in) if isinstance(node.inputs_structure, (list, tuple)) else [d_in]
            self._add(grads, node, node.input_indices, d_leaves)
            # gradients of tensor-valued keyword arguments (a recurrent layer's initial_state)
            for name, indices in self._kwarg_idx[key].items():
                kg = ctx.kwarg_grads.get(name)
                if kg is not None:
                    self._add(grads, node, indices, flatten(kg) if isinstance(kg, (list, tuple)) else [kg])
        return [grads.get(t.id) for t in self.inputs]

    @staticmethod
    def _add(grads: Dict[int, Any], node: Node, indices: Sequence[Optional[int]], values: Sequence[Any]) -> None:
        """grads[tensor] += value for each tensor leaf (by its position in ``node.inbound``)."""
        for i, g in zip(indices, values):
            if i is not None and g is not None:
                t = node.inbound[i]
                grads[t.id] = g if t.id not in grads else grads[t.id] + g


def repack(structure: Any, values: List[Any]) -> Any:
    """``values`` in the nesting of ``structure`` (re-export for models)."""
    return pack_like(structure, values)
