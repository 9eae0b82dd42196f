"""Activation functions with their derivatives, under Keras 3's names: linear, relu, relu6,
leaky_relu, elu, selu, gelu, swish (silu), hard_sigmoid, hard_silu (hard_swish), mish, tanh,
sigmoid, softplus, softsign, exponential, softmax, log_softmax.

Each activation is an :class:`Activation` object: call it on an array for the forward value;
``act.backward(dy, y, x)`` is the vector-Jacobian product given the *output* ``y`` (what a layer
keeps after its forward) and, for the activations whose derivative is not a function of the
output (:attr:`Activation.needs_input`: gelu, swish, mish, hard_silu, leaky_relu at 0...), the
input ``x``; ``act.derivative(x)`` is the derivative at the input ``x`` (elementwise for all but
softmax and log_softmax, whose derivative is the Jacobian ``[..., K, K]``). The module-level
names ``relu`` etc. are those objects. Keras's parameterised forms exist as factories
(:func:`make_leaky_relu`, :func:`make_elu`, :func:`make_gelu`) and serialise by name.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional

import numpy as np

from rnnkit._rows import softmax_last_axis, sum_last_axis

__all__ = ["Activation", "linear", "relu", "relu6", "tanh", "sigmoid", "hard_sigmoid", "hard_silu", "swish",
           "softplus", "softsign", "exponential", "selu", "mish", "hard_tanh", "leaky_relu", "elu", "gelu", "softmax",
           "log_softmax", "make_leaky_relu", "make_elu", "make_gelu", "get", "serialize"]


class Activation:
    """A named activation with its derivative.

    Parameters
    ----------
    name
        Keras name.
    fn
        Forward ``x -> y``.
    vjp
        ``(dy, y, x) -> dx``: the gradient w.r.t. the input from the gradient ``dy`` w.r.t. the
        output, the output ``y`` and (``needs_input``) the input ``x``.
    derivative
        ``x -> dy/dx`` (elementwise; for softmax the Jacobian along the last axis).
    needs_input
        Whether ``vjp`` reads ``x`` (then layers keep their pre-activation for backward).

    Shapes
    ------
    ``x``, ``y``, ``dy``, ``dx``: any shape, all the same; softmax works along the last axis.
    """

    def __init__(self, name: str, fn: Callable[[np.ndarray], np.ndarray],
                 vjp: Callable[[np.ndarray, np.ndarray, Optional[np.ndarray]], np.ndarray],
                 derivative: Callable[[np.ndarray], np.ndarray], needs_input: bool = False) -> None:
        self.name = name
        self.__name__ = name
        self._fn = fn
        self._vjp = vjp
        self._derivative = derivative
        self.needs_input = needs_input

    def __call__(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        return self._fn(x).astype(x.dtype, copy=False) if x.dtype.kind == "f" else self._fn(x)

    def backward(self, dy: np.ndarray, y: np.ndarray, x: Optional[np.ndarray] = None) -> np.ndarray:
        """Gradient w.r.t. the input, from ``dy`` (w.r.t. the output), the output ``y`` and, for
        :attr:`needs_input` activations, the input ``x``."""
        dy = np.asarray(dy)
        y = np.asarray(y)
        if dy.shape != y.shape:
            raise ValueError(f"dy: expected the shape of y {y.shape}, got {dy.shape}")
        if self.needs_input and x is None:
            raise ValueError(f"x: the {self.name} activation needs its input for backward")
        return self._vjp(dy, y, None if x is None else np.asarray(x)).astype(dy.dtype, copy=False)

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


def _elementwise(name: str, fn: Callable[[np.ndarray], np.ndarray],
                 grad_from_y: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                 grad_from_x: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> Activation:
    """An elementwise activation whose derivative is a function of its output or of its input."""
    if grad_from_y is not None:
        return Activation(name, fn, lambda dy, y, x: dy * grad_from_y(y),
                          lambda x: grad_from_y(fn(x)))
    assert grad_from_x is not None
    return Activation(name, fn, lambda dy, y, x: dy * grad_from_x(x), grad_from_x, needs_input=True)


def _one(a: np.ndarray) -> np.ndarray:
    return np.ones_like(a)


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
_SQRT_2_PI = math.sqrt(2.0 / math.pi)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf of every entry (compiled: NumPy has no erf)."""
    from rnnkit import _core

    a = np.ascontiguousarray(x, dtype=x.dtype if x.dtype in (np.float32, np.float64) else np.float64)
    return _core.erf(a)


def make_leaky_relu(negative_slope: float = 0.2) -> Activation:
    """Keras 3's ``leaky_relu(x, negative_slope=0.2)``: ``x`` if ``x >= 0`` else ``slope * x``."""
    a = float(negative_slope)
    name = "leaky_relu" if a == 0.2 else f"leaky_relu({a!r})"
    return _elementwise(name, lambda x: np.where(x >= 0, x, a * x), grad_from_x=lambda x: np.where(x >= 0, 1.0, a))


def make_elu(alpha: float = 1.0) -> Activation:
    """Keras 3's ``elu(x, alpha=1.0)``: ``x`` if ``x > 0`` else ``alpha (e^x - 1)``."""
    a = float(alpha)
    name = "elu" if a == 1.0 else f"elu({a!r})"
    return _elementwise(name, lambda x: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0))),
                        grad_from_x=lambda x: np.where(x > 0, 1.0, a * np.exp(np.minimum(x, 0))))


def make_gelu(approximate: bool = False) -> Activation:
    """Keras 3's ``gelu(x, approximate=False)``: the exact ``0.5 x (1 + erf(x / sqrt(2)))``, or
    with ``approximate=True`` the tanh approximation
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    if approximate:
        def fn(x: np.ndarray) -> np.ndarray:
            return 0.5 * x * (1.0 + np.tanh(_SQRT_2_PI * (x + 0.044715 * x ** 3)))

        def grad(x: np.ndarray) -> np.ndarray:
            t = np.tanh(_SQRT_2_PI * (x + 0.044715 * x ** 3))
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_PI * (1.0 + 3 * 0.044715 * x * x)
        return _elementwise("gelu(approximate=True)", fn, grad_from_x=grad)

    def fn_exact(x: np.ndarray) -> np.ndarray:
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))

    def grad_exact(x: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + _erf(x / math.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return _elementwise("gelu", fn_exact, grad_from_x=grad_exact)


def _swish(x: np.ndarray) -> np.ndarray:
    return x * _sigmoid(x)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _mish(x: np.ndarray) -> np.ndarray:
    return x * np.tanh(_softplus(x))


def _mish_grad(x: np.ndarray) -> np.ndarray:
    t = np.tanh(_softplus(x))
    return t + x * (1.0 - t * t) * _sigmoid(x)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    return x - max_last_axis(x) - np.log(sum_last_axis(np.exp(x - max_last_axis(x)), keepdims=True))


linear = Activation("linear", lambda x: x.copy(), lambda dy, y, x: dy.copy(), lambda x: np.ones_like(x))
relu = _elementwise("relu", lambda x: np.maximum(x, 0).astype(x.dtype, copy=False),
                    grad_from_y=lambda y: (y > 0).astype(y.dtype))
relu6 = _elementwise("relu6", lambda x: np.clip(x, 0, 6), grad_from_y=lambda y: ((y > 0) & (y < 6)).astype(y.dtype))
tanh = _elementwise("tanh", np.tanh, grad_from_y=lambda y: 1 - y * y)
sigmoid = _elementwise("sigmoid", _sigmoid, grad_from_y=lambda y: y * (1 - y))
hard_sigmoid = _elementwise("hard_sigmoid", lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
                            grad_from_y=lambda y: np.where((y > 0) & (y < 1), 1.0 / 6.0, 0.0))
hard_silu = _elementwise("hard_silu", lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
                         grad_from_x=lambda x: np.where(x <= -3, 0.0, np.where(x >= 3, 1.0, x / 3.0 + 0.5)))
swish = _elementwise("swish", _swish, grad_from_x=lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x))))
softplus = _elementwise("softplus", _softplus, grad_from_y=lambda y: -np.expm1(-y))
softsign = _elementwise("softsign", lambda x: x / (1 + np.abs(x)), grad_from_y=lambda y: (1 - np.abs(y)) ** 2)
exponential = _elementwise("exponential", np.exp, grad_from_y=lambda y: y)
selu = _elementwise("selu", lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0))),
                    grad_from_x=lambda x: _SELU_SCALE * np.where(x > 0, 1.0, _SELU_ALPHA * np.exp(np.minimum(x, 0))))
mish = _elementwise("mish", _mish, grad_from_x=_mish_grad)
hard_tanh = _elementwise("hard_tanh", lambda x: np.clip(x, -1.0, 1.0),
                         grad_from_y=lambda y: (np.abs(y) < 1).astype(y.dtype))
leaky_relu = make_leaky_relu()
elu = make_elu()
gelu = make_gelu()
softmax = Activation("softmax", _softmax,
                     lambda dy, y, x: y * (dy - sum_last_axis(dy * y, keepdims=True)), _softmax_jacobian)
log_softmax = Activation("log_softmax", _log_softmax,
                         lambda dy, y, x: dy - np.exp(y) * sum_last_axis(dy, keepdims=True),
                         lambda x: np.eye(x.shape[-1], dtype=x.dtype) - _softmax(x)[..., None, :])

_ALL: Dict[str, Activation] = {a.name: a for a in (
    linear, relu, relu6, tanh, sigmoid, hard_sigmoid, hard_silu, swish, softplus, softsign,
    exponential, selu, mish, hard_tanh, leaky_relu, elu, gelu, softmax, log_softmax)}
_ALIASES: Dict[str, str] = {"silu": "swish", "hard_swish": "hard_silu", "None": "linear"}


def get(identifier: Optional[Any]) -> Activation:
    """The :class:`Activation` for a name (``None`` -> linear; Keras's aliases ``silu``,
    ``hard_swish``) or an :class:`Activation`.

    Plain callables are rejected with TypeError: rnnkit needs the derivative for backward (wrap
    one in :class:`Activation` with its vector-Jacobian product).
    """
    if identifier is None:
        return linear
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, str):
        name = _ALIASES.get(identifier, identifier)
        if name in _ALL:
            return _ALL[name]
        factories = {"leaky_relu(": make_leaky_relu, "elu(": make_elu}
        for prefix, make in factories.items():
            if name.startswith(prefix) and name.endswith(")"):
                try:
                    return make(float(name[len(prefix):-1]))
                except ValueError:
                    break
        if name == "gelu(approximate=True)":
            return make_gelu(True)
        raise ValueError(f"activation: unknown name {identifier!r}; expected one of "
                         f"{sorted(set(_ALL) | set(_ALIASES))}")
    raise TypeError(
        f"activation: expected a name in {sorted(_ALL)} or an rnnkit Activation, got "
        f"{type(identifier).__name__} (a plain callable has no derivative for backward)")


def serialize(activation: Activation) -> str:
    """The activation's name (what ``get`` takes back)."""
    return get(activation).name
