"""What every container of layers offers over its ``layers``: gradients, trainable variables and
weights in Keras's order (shared by :class:`~rnnkit.models.Model` and the plain containers)."""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import numpy as np

from rnnkit.layers.base import Layer

__all__ = ["LayerCollection", "check_layers"]


def check_layers(layers: Any, arg: str = "layers") -> List[Layer]:
    """``layers`` as a list of distinct, uniquely named layers (TypeError/ValueError otherwise)."""
    if layers is None:
        return []
    if isinstance(layers, Layer):
        raise TypeError(f"{arg}: expected a list of layers, got a single {type(layers).__name__}; "
                        f"wrap it in a list")
    out = list(layers)
    for i, layer in enumerate(out):
        if not isinstance(layer, Layer):
            raise TypeError(f"{arg}[{i}]: expected an rnnkit Layer, got {type(layer).__name__}")
    names = [layer.name for layer in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{arg}: layer names must be unique within a model, got duplicates {dup}")
    return out


class LayerCollection:
    """Mixin over a ``layers`` attribute (a list of :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    ``get_weights()``: every layer's ``get_weights()`` in order (Keras's layouts).
    """

    layers: List[Layer]

    def zero_grad(self) -> None:
        """Zeroes every layer's gradients."""
        for layer in self.layers:
            layer.zero_grad()

    def trainable_variables(self) -> Tuple[List[np.ndarray], List[np.ndarray]]:
        """``(params, grads)``: every layer's trainable parameters (see
        :meth:`~rnnkit.layers.base.Layer.trainable_keys`), layer by layer in ``layer.params``
        order: what the optimizer updates."""
        params: List[np.ndarray] = []
        grads: List[np.ndarray] = []
        for layer in self.layers:
            for k in layer.trainable_keys():
                params.append(layer.params[k])
                grads.append(layer.grads[k])
        return params, grads

    def get_weights(self) -> List[np.ndarray]:
        """Every layer's ``get_weights()`` in order (Keras's order and layout)."""
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Inverse of :meth:`get_weights` (the layers must be built)."""
        weights = list(weights)
        counts = [len(layer.get_weights()) for layer in self.layers]
        if sum(counts) != len(weights):
            per = ", ".join(f"{l.name}: {c}" for l, c in zip(self.layers, counts))
            raise ValueError(f"weights: expected {sum(counts)} arrays ({per}), got {len(weights)}")
        i = 0
        for layer, c in zip(self.layers, counts):
            layer.set_weights(weights[i:i + c])
            i += c

    def count_params(self) -> int:
        """The number of parameter entries of all layers."""
        return int(sum(layer.count_params() for layer in self.layers))

    def stream(self, batch_size: int = 1, precision: str = "float32") -> Any:
        """Step-by-step inference of these layers (a chain; a container's layers in order): see
        :class:`rnnkit.models.stream.ModelStream`; ``precision`` ('float32', 'bfloat16' or
        'int8') is the recurrent layers' weights' (see :mod:`rnnkit.streaming`).

        Shapes
        ------
        ``step``: x_t [N, C] -> [N, F];  ``run``: x [N, steps, C] -> [N, steps, F]
        """
        from rnnkit.models.stream import ModelStream

        return ModelStream.from_model(self, batch_size, precision)

    def quantize(self, precision: str = "int8", batch_size: int = 32) -> Any:
        """An inference-only copy with the recurrent weights in ``precision`` ('int8' or
        'bfloat16'), running batches of ``batch_size`` rows: see
        :class:`rnnkit.models.quantized.QuantizedModel` (``predict`` only).

        Shapes
        ------
        ``predict``: x [N, T, C] -> [N, T, F] (sequence outputs) or [N, F]
        """
        from rnnkit.models.quantized import QuantizedModel

        return QuantizedModel(self, precision, batch_size)
