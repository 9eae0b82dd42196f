"""Activation functions with their derivatives (Keras names: linear, relu, tanh, sigmoid, softmax).

Each activation is an :class:`Activation` object: call it on an array for the forward value;
``act.backward(dy, y)`` is the vector-Jacobian product given the *output* ``y`` (what a layer
keeps after its forward), and ``act.derivative(x)`` is the derivative at the input ``x``
(elementwise for all but softmax, whose derivative is the Jacobian ``[..., K, K]``).
The module-level functions ``relu(x)`` etc. are those objects.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import numpy as np

from rnnkit._rows import softmax_last_axis, sum_last_axis

__all__ = ["Activation", "linear", "relu", "tanh", "sigmoid", "softmax", "get", "serialize"]


class Activation:
    """A named activation with its derivative.

    Parameters
    ----------
    name
        Keras name.
    fn
        Forward ``x -> y``.
    vjp
        ``(dy, y) -> dx``: the gradient w.r.t. the input from the gradient ``dy`` w.r.t. the
        output and the output ``y``.
    derivative
        ``x -> dy/dx`` (elementwise; for softmax the Jacobian along the last axis).

    Shapes
    ------
    ``x``, ``y``, ``dy``, ``dx``: any shape, all the same; softmax works along the last axis.
    """

    def __init__(self, name: str, fn: Callable[[np.ndarray], np.ndarray],
                 vjp: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 derivative: Callable[[np.ndarray], np.ndarray]) -> None:
        self.name = name
        self.__name__ = name
        self._fn = fn
        self._vjp = vjp
        self._derivative = derivative

    def __call__(self, x: Any) -> np.ndarray:
        return self._fn(np.asarray(x))

    def backward(self, dy: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient w.r.t. the input, from ``dy`` (w.r.t. the output) and the output ``y``."""
        dy = np.asarray(dy)
        y = np.asarray(y)
        if dy.shape != y.shape:
            raise ValueError(f"dy: expected the shape of y {y.shape}, got {dy.shape}")
        return self._vjp(dy, y)

    def derivative(self, x: Any) -> np.ndarray:
        """dy/dx at ``x``: elementwise, or for softmax the Jacobian of shape ``x.shape + (K,)``."""
        return self._derivative(np.asarray(x))

    def __repr__(self) -> str:
        return f"<activation {self.name}>"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.result_type(x, np.float32), copy=False)


def max_last_axis(x: np.ndarray) -> np.ndarray:
    """``x.max(axis=-1, keepdims=True)``, fast for a short last axis (class scores): NumPy's
    reduction over a handful of contiguous elements per row costs ~6x an elementwise pass per
    element of that axis, so up to 64 classes it is done as running element-wise maxima."""
    K = x.shape[-1]
    if K > 64 or K == 0 or x.ndim == 1:
        return np.max(x, axis=-1, keepdims=True)
    m = x[..., 0].copy()
    for k in range(1, K):
        np.maximum(m, x[..., k], out=m)
    return m[..., None]


def _softmax(x: np.ndarray) -> np.ndarray:
    if x.ndim == 0:
        raise ValueError("x: softmax needs at least one dimension, got a scalar")
    return softmax_last_axis(x)


def _softmax_jacobian(x: np.ndarray) -> np.ndarray:
    s = _softmax(x)
    return s[..., :, None] * (np.eye(s.shape[-1], dtype=s.dtype) - s[..., None, :])


linear = Activation("linear", lambda x: x.copy(), lambda dy, y: dy.copy(), lambda x: np.ones_like(x))
relu = Activation("relu", lambda x: np.maximum(x, 0).astype(x.dtype, copy=False),
                  lambda dy, y: dy * (y > 0), lambda x: (x > 0).astype(np.result_type(x, np.float32)))
tanh = Activation("tanh", np.tanh, lambda dy, y: dy * (1 - y * y), lambda x: 1 - np.tanh(x) ** 2)
sigmoid = Activation("sigmoid", _sigmoid, lambda dy, y: dy * y * (1 - y),
                     lambda x: _sigmoid(x) * (1 - _sigmoid(x)))
softmax = Activation("softmax", _softmax,
                     lambda dy, y: y * (dy - sum_last_axis(dy * y, keepdims=True)), _softmax_jacobian)

_ALL: Dict[str, Activation] = {a.name: a for a in (linear, relu, tanh, sigmoid, softmax)}


def get(identifier: Optional[Any]) -> Activation:
    """The :class:`Activation` for a name (``None`` -> linear) or an :class:`Activation`.

    Plain callables are rejected with TypeError: rnnkit needs the derivative for backward.
    """
    if identifier is None:
        return linear
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _ALL:
            raise ValueError(f"activation: unknown name {identifier!r}; expected one of {sorted(_ALL)}")
        return _ALL[identifier]
    raise TypeError(
        f"activation: expected a name in {sorted(_ALL)} or an rnnkit Activation, got "
        f"{type(identifier).__name__} (a plain callable has no derivative for backward)")


def serialize(activation: Activation) -> str:
    """The activation's name (what ``get`` takes back)."""
    return get(activation).name
