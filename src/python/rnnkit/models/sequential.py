"""Keras's ``Sequential``: a linear stack of layers, built as a chain graph of
:class:`~rnnkit.models.functional.Model` (the same machinery as any functional model)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from rnnkit.layers.base import Layer, deserialize, serialize
from rnnkit.layers.input_layer import Input
from rnnkit.models.collection import check_layers
from rnnkit.models.functional import Model

__all__ = ["Sequential", "check_layers"]


class Sequential(Model):
    """A linear stack of layers with Keras's training API.

    Parameters
    ----------
    layers
        Initial layers (more with :meth:`add`).
    name
        Model name (default ``'sequential'``, ``'sequential_1'``, ...).

    Shapes
    ------
    ``x``: ``[N, ...]`` matching the first layer (``[N, T, C]`` floats for recurrent layers,
    ``[N, T]`` ints for ``Embedding``); ``y``: the output's shape (``[N, K]`` or ``[N, T, K]``),
    or integer labels without the class axis for ``sparse_categorical_crossentropy``.
    ``predict`` returns ``[N, *output_shape]``. The model is built (its input shape fixed) from
    the first layer's ``input_shape``, :meth:`build`, or the first data it sees.

    Examples
    --------
    >>> model = Sequential()
    >>> model.add(LSTM(units=64, return_sequences=True, input_shape=(timesteps, input_dim)))
    >>> model.add(Dense(units=output_dim, activation='softmax'))
    >>> model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['accuracy'])
    >>> history = model.fit(X_train, y_train, epochs=10, batch_size=32)
    """

    def __init__(self, layers: Optional[Sequence[Layer]] = None, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self._stack: List[Layer] = []
        self.build_input_shape: Optional[tuple] = None
        for layer in check_layers(layers):
            self.add(layer)

    @property
    def layers(self) -> List[Layer]:
        return list(self._stack)

    @property
    def stack_layers(self) -> Optional[List[Layer]]:
        """The layers in order: a Sequential is a plain stack."""
        return list(self._stack)

    def add(self, layer: Layer) -> None:
        """Appends a layer (built at once when the input shape is known)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"layer: expected an rnnkit Layer, got {type(layer).__name__}")
        if any(layer is other or layer.name == other.name for other in self._stack):
            raise ValueError(f"layer: a layer named {layer.name!r} is already in {self.name!r}; "
                             "layer names must be unique within a model")
        if getattr(layer, "return_state", False):
            raise ValueError(f"layer: {layer.name!r} has return_state=True; Sequential layers must "
                             "return one output (use Model(inputs, outputs) or RecurrentNetwork)")
        self._stack.append(layer)
        try:
            if len(self._stack) == 1 and layer.input_shape is not None:
                self.build((None,) + tuple(layer.input_shape))
            elif self.build_input_shape is not None:
                self.build(self.build_input_shape)
        except Exception:
            self._stack.pop()  # leave the model as it was
            if not self._stack:
                self.build_input_shape = None
                self.graph = None
            raise

    def pop(self) -> Layer:
        """Removes and returns the last layer."""
        if not self._stack:
            raise ValueError("pop: the model has no layers")
        layer = self._stack.pop()
        if self.build_input_shape is not None and self._stack:
            self.build(self.build_input_shape)
        elif not self._stack:
            self.graph = None
            self.build_input_shape = None
        return layer

    def build(self, input_shape: Sequence[Optional[int]]) -> None:
        """Builds every layer for inputs of ``input_shape`` (batch axis first, may be None)."""
        shape = tuple(input_shape)
        if len(shape) < 2:
            raise ValueError(f"input_shape: expected (batch, ...) with at least 2 dimensions, got {shape}")
        if not self._stack:
            raise ValueError("build: the model has no layers")
        from rnnkit.layers.core import Embedding

        first = self._stack[0]
        dtype = "int64" if isinstance(first, Embedding) else first.dtype.name
        x = Input(shape=shape[1:], dtype=dtype, batch_size=shape[0], name=f"{self.name}_input")
        t: Any = x
        for layer in self._stack:
            t = layer(t)
            if isinstance(t, list):
                raise ValueError(f"{layer.name}: returns {len(t)} outputs; Sequential layers must return one")
        self._set_graph(x, t)
        self.build_input_shape = shape

    def _graph_for_compile(self) -> Any:
        return self.graph  # a Sequential may be compiled before it is built (one output)

    def prepare_inputs(self, x: Any, name: str = "x") -> List[np.ndarray]:
        if self.graph is None:
            if not self._stack:
                raise ValueError(f"{name}: the model has no layers")
            a = np.asarray(x) if not isinstance(x, np.ndarray) else x
            if a.ndim < 1 or a.shape[0] == 0:
                raise ValueError(f"{name}: expected at least one sample (shape (N, ...)), got shape {a.shape}")
            self.build((None,) + a.shape[1:])
        return super().prepare_inputs(x, name)

    # ---- config --------------------------------------------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        """``{"name", "layers": [serialized layers], "build_input_shape"}``."""
        return {"name": self.name, "layers": [serialize(layer) for layer in self._stack],
                "build_input_shape": None if self.build_input_shape is None else list(self.build_input_shape)}

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects: Optional[Dict[str, Any]] = None) -> "Sequential":
        """Inverse of :meth:`get_config` (fresh weights)."""
        model = cls([deserialize(c, custom_objects) for c in config.get("layers", [])], name=config.get("name"))
        shape = config.get("build_input_shape")
        if shape is not None and not model.built:
            model.build(tuple(shape))
        return model
