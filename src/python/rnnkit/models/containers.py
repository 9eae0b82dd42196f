"""Plain layer containers without the training API: :class:`FeedForwardNetwork` (layers one
after the other) and :class:`RecurrentNetwork` (the same, with every recurrent layer's state
threaded in and out, for feeding a long sequence piece by piece).

Both run their layers through the layer protocol (``apply`` / ``backward`` with a per-call
context); what a call keeps for ``backward`` is the calling thread's own.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from rnnkit._threads import PerThread
from rnnkit.layers.base import Layer
from rnnkit.models.collection import LayerCollection, check_layers

__all__ = ["FeedForwardNetwork", "RecurrentNetwork"]


def _first(x: Any) -> Any:
    """The main output (or mask) of a layer that may return ``[output, *states]``."""
    return x[0] if isinstance(x, list) else x


def _is_recurrent(layer: Layer) -> bool:
    return hasattr(layer, "return_state")


class _Pass:
    """One forward pass of a container: each layer's context and its output mask."""

    def __init__(self) -> None:
        self.contexts: List[Any] = []
        self.several: List[bool] = []
        self.output_mask: Optional[np.ndarray] = None


class FeedForwardNetwork(LayerCollection):
    """Layers applied one after the other: ``output = layer(output)`` in order; :meth:`backward`
    runs them in reverse. Masks from ``Embedding``/``Masking`` are passed along.

    Parameters
    ----------
    layers
        The layers, in order.

    Shapes
    ------
    ``x``: the first layer's input (``[N, T, C]``, ``[N, C]``, or ``[N, T]`` integer indices for
    an ``Embedding``) -> the last layer's output. ``backward(d_out)`` takes an array shaped like
    the output and returns one shaped like ``x`` (None when the first layer is an
    ``Embedding``, which has no input gradient).
    """

    _pass = PerThread("the calling thread's last forward pass")

    def __init__(self, layers: Optional[Sequence[Layer]] = None) -> None:
        self.layers: List[Layer] = check_layers(layers)

    @property
    def output_mask(self) -> Optional[np.ndarray]:
        """The mask after the last layer, from the calling thread's last forward."""
        p = self._pass
        return None if p is None else p.output_mask

    def _check(self) -> None:
        if not self.layers:
            raise ValueError("layers: the network has no layers")

    def forward(self, x: Any, mask: Optional[np.ndarray] = None, training: bool = False) -> np.ndarray:
        """Runs every layer in order; :attr:`output_mask` is the mask after the last layer."""
        self._check()
        p = _Pass()
        out = x
        for layer in self.layers:
            next_mask = _first(layer.compute_mask(out, mask))
            y, ctx = layer.apply(out, training=training, mask=mask)
            if isinstance(y, list):
                raise ValueError(f"{layer.name}: returns {len(y)} outputs (return_state=True?); "
                                 f"{type(self).__name__} layers must return one array")
            p.contexts.append(ctx)
            p.several.append(False)
            out, mask = y, next_mask
        p.output_mask = mask
        self._pass = p
        return out

    __call__ = forward

    def _last_pass(self) -> _Pass:
        p = self._pass
        if p is None:
            raise RuntimeError(f"{type(self).__name__}: backward called before a forward call in this thread")
        return p

    def backward(self, d_out: Any) -> Optional[np.ndarray]:
        """Gradient w.r.t. the input of the calling thread's last :meth:`forward`; parameter
        gradients accumulate into each ``layer.grads``."""
        p = self._last_pass()
        d = d_out
        for layer, ctx in zip(reversed(self.layers), reversed(p.contexts)):
            d = layer.backward(d, ctx)
            if d is None:  # an Embedding: nothing flows further back
                break
        return d

    def __repr__(self) -> str:
        return f"<{type(self).__name__} layers={[layer.name for layer in self.layers]}>"


class RecurrentNetwork(FeedForwardNetwork):
    """Layers in order with the recurrent layers' states threaded through:
    ``output, state[i] = layer(output, initial_state=state[i])`` for every recurrent layer.

    Feeding the returned state back continues the sequence: ``forward(x[:, :k])`` then
    ``forward(x[:, k:], state)`` gives the outputs of ``forward(x)``. A recurrent layer's states
    are read from its call's context (``ctx.final_states``), so the layers are never switched to
    ``return_state``; their gradients go back through ``ctx.d_final_states``.

    Parameters
    ----------
    layers
        The layers, in order.

    Shapes
    ------
    ``x``: ``[N, T, C]``; ``state``: a list with one entry per layer, ``None`` for non-recurrent
    layers (and for zero initial states), else that layer's list of state arrays (``[h]`` or
    ``[h, c]``, each ``[N, U]``; forward then backward states for ``Bidirectional``).
    ``forward`` returns ``(output, state)``; ``backward(d_out, d_state=None)`` returns ``dx`` and
    sets :attr:`d_initial_state` (same structure as ``state``).
    """

    _d_init = PerThread("initial-state gradients from the calling thread's last backward")

    @property
    def d_initial_state(self) -> Optional[List[Any]]:
        return self._d_init

    def forward(self, x: Any, state: Optional[Sequence[Any]] = None,  # type: ignore[override]
                mask: Optional[np.ndarray] = None, training: bool = False
                ) -> Tuple[np.ndarray, List[Optional[List[np.ndarray]]]]:
        """Runs the layers; returns ``(output, final_state)``."""
        self._check()
        if state is None:
            state = [None] * len(self.layers)
        elif not isinstance(state, (list, tuple)) or len(state) != len(self.layers):
            got = len(state) if isinstance(state, (list, tuple)) else type(state).__name__
            raise ValueError(f"state: expected a list with one entry per layer ({len(self.layers)}), "
                             f"got {got}")
        p = _Pass()
        out = x
        new_state: List[Optional[List[np.ndarray]]] = []
        for i, layer in enumerate(self.layers):
            next_mask = _first(layer.compute_mask(out, mask))
            if _is_recurrent(layer):
                y, ctx = layer.apply(out, training=training, mask=mask, initial_state=state[i])
                several = isinstance(y, list)
                out = y[0] if several else y
                new_state.append([s.copy() for s in ctx.final_states])
            else:
                if state[i] is not None:
                    raise ValueError(f"state[{i}]: layer {layer.name!r} is not recurrent; expected "
                                     f"None, got {type(state[i]).__name__}")
                out, ctx = layer.apply(out, training=training, mask=mask)
                several = False
                new_state.append(None)
            p.contexts.append(ctx)
            p.several.append(several)
            mask = next_mask
        p.output_mask = mask
        self._pass = p
        return out, new_state

    __call__ = forward  # type: ignore[assignment]

    def backward(self, d_out: Any, d_state: Optional[Sequence[Any]] = None) -> Optional[np.ndarray]:
        """Gradient w.r.t. ``x`` from the gradient w.r.t. the output and (optionally) w.r.t. the
        returned final states (``d_state``: one entry per layer, None = zeros)."""
        p = self._last_pass()
        if d_state is None:
            d_state = [None] * len(self.layers)
        elif not isinstance(d_state, (list, tuple)) or len(d_state) != len(self.layers):
            got = len(d_state) if isinstance(d_state, (list, tuple)) else type(d_state).__name__
            raise ValueError(f"d_state: expected a list with one entry per layer ({len(self.layers)}), "
                             f"got {got}")
        d = d_out
        d_init: List[Any] = [None] * len(self.layers)
        for i in range(len(self.layers) - 1, -1, -1):
            layer, ctx = self.layers[i], p.contexts[i]
            if _is_recurrent(layer):
                n = len(ctx.final_states)
                ds = [None] * n if d_state[i] is None else list(d_state[i])
                if len(ds) != n:
                    raise ValueError(f"d_state[{i}]: expected {n} state gradients for {layer.name!r}, "
                                     f"got {len(ds)}")
                ctx.d_final_states = ds
                n_out = len(ctx.final_states) + 1
                d = layer.backward([d] + [None] * (n_out - 1) if p.several[i] else d, ctx)
                d_init[i] = list(ctx.d_initial_state)
            else:
                if d_state[i] is not None:
                    raise ValueError(f"d_state[{i}]: layer {layer.name!r} is not recurrent; expected None")
                d = layer.backward(d, ctx)
            if d is None:
                break
        self._d_init = d_init
        return d
