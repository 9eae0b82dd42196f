"""The start of a functional model: :func:`Input` and :class:`InputLayer` (Keras's ``keras.Input``).

``x = Input(shape=(None, 8))`` is a :class:`~rnnkit.layers.symbolic.KerasTensor` for a batch of
sequences of any length with 8 features; calling layers on it builds the graph that
``rnnkit.models.Model(inputs, outputs)`` then runs.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np

from rnnkit._checks import shape_str
from rnnkit.layers.base import Context, Layer
from rnnkit.layers.symbolic import KerasTensor, Node

__all__ = ["Input", "InputLayer"]

_INT_DTYPES = ("int32", "int64", "uint8", "int16", "uint16", "uint32", "uint64", "int8")


class InputLayer(Layer):
    """The layer behind :func:`Input`: it holds the input's shape and dtype and passes the data
    through (checked) when a model runs.

    Parameters
    ----------
    shape
        One sample's shape, without the batch axis (``None`` for unknown sizes, e.g. time).
    dtype
        ``'float32'`` (default), ``'float64'``, or an integer dtype for indices (``'int32'``,
        ``'int64'``) in front of an ``Embedding``.
    name
        Layer name.

    Shapes
    ------
    x: [batch, *shape] -> the same array.
    """

    def __init__(self, shape: Sequence[Optional[int]], dtype: str = "float32",
                 name: Optional[str] = None, **kwargs: Any) -> None:
        dt = np.dtype(dtype).name
        if dt not in ("float32", "float64") + _INT_DTYPES:
            raise ValueError(f"dtype: expected 'float32', 'float64' or an integer dtype, got {dtype!r}")
        kwargs.pop("input_shape", None)
        super().__init__(name=name, dtype="float32" if dt in _INT_DTYPES else dt, **kwargs)
        try:
            self.shape = tuple(None if s is None else int(s) for s in shape)
        except TypeError:
            raise TypeError(f"shape: expected a tuple of ints or None, got {shape!r}") from None
        if any(s is not None and s < 1 for s in self.shape):
            raise ValueError(f"shape: expected sizes >= 1 or None, got {self.shape}")
        self.input_dtype = dt
        self.built = True

    def check_inputs(self, x: Any, name: Optional[str] = None) -> np.ndarray:
        """``x`` checked against this input's dtype and shape (floats converted to the input's
        float dtype once); errors name ``name`` (default: the layer's name)."""
        name = name or self.name
        a = x if isinstance(x, np.ndarray) else np.asarray(x)
        if self.input_dtype in _INT_DTYPES:
            if a.dtype.kind not in "iu":
                raise TypeError(f"{name}: expected integer indices ({self.input_dtype}), got dtype {a.dtype}")
        elif a.dtype.kind not in "fiub":
            raise TypeError(f"{name}: expected a float or integer array, got dtype {a.dtype}")
        elif a.dtype != self.dtype:
            a = a.astype(self.dtype)
        want = (None,) + self.shape
        if a.ndim < 1 or a.shape[0] == 0:
            raise ValueError(f"{name}: expected at least one sample (shape (N, ...)), got shape {a.shape}")
        if a.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, a.shape)):
            raise ValueError(f"{name}: expected shape {shape_str(want)} (the model's input shape), got "
                             f"{shape_str(a.shape)}")
        return a

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        return x

    def backprop(self, d_out: Any, ctx: Context) -> Any:
        return d_out

    def output_dtype(self) -> str:
        return self.input_dtype

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (None,) + self.shape

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.input_dtype}


def Input(shape: Sequence[Optional[int]], dtype: str = "float32", name: Optional[str] = None,
          batch_size: Optional[int] = None) -> KerasTensor:
    """A symbolic input of a functional model (Keras's ``keras.Input``).

    Parameters
    ----------
    shape
        One sample's shape (no batch axis); ``None`` for sizes known only at run time.
    dtype
        ``'float32'`` (default), ``'float64'`` or an integer dtype (indices for ``Embedding``).
    name
        Name of the input layer.
    batch_size
        Optional fixed batch size (kept in the tensor's shape).

    Shapes
    ------
    -> a KerasTensor of shape ``(batch_size, *shape)``.
    """
    if isinstance(shape, int):
        shape = (shape,)
    layer = InputLayer(shape, dtype=dtype, name=name)
    node = Node(layer, [], {})
    t = KerasTensor((batch_size,) + layer.shape, layer.input_dtype, node, 0, name=layer.name)
    node.outputs = [t]
    node.outputs_structure = False
    return t
