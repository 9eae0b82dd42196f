"""Losses with Keras's names and reduction, returning the value and its gradient.

Every loss is computed per sample (or per sample and time step for ``[N, T, K]`` predictions),
reduced over the last axis the way Keras does (cross-entropy sums over classes; ``mse``, ``mae``
and ``binary_crossentropy`` average over it), then averaged over all samples and steps
("sum over batch size"). With a ``mask`` (``[N]`` or ``[N, T]`` bool, e.g. the mask an
``Embedding(mask_zero=True)`` or ``Masking`` layer produced), masked entries are left out and
the mean is over the valid ones only (Keras 3's masked mean); with no valid entry the value is 0.

Probabilities are clipped to ``[1e-7, 1 - 1e-7]`` like Keras (the gradient is zero where the
clip is active) and categorical predictions are renormalised to sum to one.
``from_logits=True`` uses a numerically stable log-softmax / log-sigmoid instead.

Fused softmax/sigmoid
---------------------
When the predictions come out of a softmax (sigmoid), :meth:`Loss.logits_value_and_grad` gives
the gradient with respect to the *logits* directly, ``(p - y) / count``, without the softmax's
Jacobian; the training loop uses it when the last layer is ``Dense(activation='softmax')`` with a
(sparse) categorical cross-entropy, or ``activation='sigmoid'`` with binary cross-entropy.

Shapes
------
- ``y_pred``: ``[N, K]`` or ``[N, T, K]`` (any rank >= 1; the last axis is the class/feature axis).
- ``y_true``: the shape of ``y_pred``; for the sparse loss the shape without the last axis (or
  with a last axis of size 1), integer labels in ``[0, K)``.
- ``mask``: ``y_pred.shape[:-1]``.
- value: Python float; gradient: the shape and dtype of ``y_pred``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Type, Union

import numpy as np

from rnnkit._checks import shape_str
from rnnkit._registry import deserialize_object, serialize_object
from rnnkit._rows import sum_last_axis
from rnnkit.activations import max_last_axis

__all__ = [
    "Loss", "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "BinaryCrossentropy",
    "MeanSquaredError", "MeanAbsoluteError", "categorical_crossentropy",
    "sparse_categorical_crossentropy", "binary_crossentropy", "mean_squared_error",
    "mean_absolute_error", "mse", "mae", "get", "serialize", "deserialize", "EPSILON",
]

EPSILON = 1e-7
"""Keras's fuzz factor for clipping probabilities."""

ValueGrad = Tuple[float, np.ndarray]




def _as_pred(y_pred: Any) -> np.ndarray:
    p = np.asarray(y_pred)
    if p.dtype.kind != "f":
        raise TypeError(f"y_pred: expected a float array, got dtype {p.dtype}")
    if p.ndim < 1:
        raise ValueError(f"y_pred: expected an array with a class/feature axis, got shape {shape_str(p.shape)}")
    return p


def _as_dense_true(y_true: Any, y_pred: np.ndarray) -> np.ndarray:
    t = np.asarray(y_true)
    if t.dtype.kind not in "fiub":
        raise TypeError(f"y_true: expected a numeric array, got dtype {t.dtype}")
    if t.shape != y_pred.shape:
        raise ValueError(f"y_true: expected shape {shape_str(y_pred.shape)} (the shape of y_pred), "
                         f"got {shape_str(t.shape)}")
    if t.dtype != y_pred.dtype:
        t = t.astype(y_pred.dtype)
    return t


def _as_labels(y_true: Any, y_pred: np.ndarray) -> np.ndarray:
    """Integer labels of shape ``y_pred.shape[:-1]`` in ``[0, K)``."""
    t = np.asarray(y_true)
    lead = y_pred.shape[:-1]
    if t.shape == lead + (1,) and y_pred.ndim >= 2:
        t = t.reshape(lead)
    if t.shape != lead:
        raise ValueError(f"y_true: expected integer labels of shape {shape_str(lead)} (y_pred's shape "
                         f"without the class axis, or with a trailing 1), got {shape_str(t.shape)}")
    if t.dtype.kind == "f":
        if not np.all(np.isfinite(t)) or np.any(t != np.round(t)):
            raise ValueError("y_true: expected integer class labels, got non-integral floats")
        t = t.astype(np.int64)
    elif t.dtype.kind not in "iu":
        raise TypeError(f"y_true: expected integer class labels, got dtype {t.dtype}")
    K = y_pred.shape[-1]
    if t.size:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= K:
            raise ValueError(f"y_true: labels must be in [0, {K}) for {K} classes, "
                             f"got values in [{lo}, {hi}]")
    return t.astype(np.intp, copy=False)


def _as_mask(mask: Any, lead: Tuple[int, ...]) -> Optional[np.ndarray]:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype.kind not in "biu":
        raise TypeError(f"mask: expected a boolean array, got dtype {m.dtype}")
    if m.shape != lead:
        raise ValueError(f"mask: expected shape {shape_str(lead)} (y_pred's shape without the last "
                         f"axis), got {shape_str(m.shape)}")
    return m.astype(bool, copy=False)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    s = z - max_last_axis(z)
    return s - np.log(sum_last_axis(np.exp(s), keepdims=True))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _reduce(per: np.ndarray, dper: Optional[np.ndarray], mask: Optional[np.ndarray]
            ) -> Tuple[float, Optional[np.ndarray]]:
    """Mean of the per-entry losses ``per`` (shape ``lead``) over the valid entries; scales the
    per-entry gradients ``dper`` (shape ``lead + (K,)``) in place accordingly."""
    if mask is None:
        count = per.size
        value = float(per.sum(dtype=np.float64)) / count if count else 0.0
        if dper is not None and count:
            dper *= 1.0 / count
        return value, dper
    count = int(np.count_nonzero(mask))
    if count == 0:
        if dper is not None:
            dper.fill(0)
        return 0.0, dper
    value = float(np.sum(per[mask], dtype=np.float64)) / count
    if dper is not None:
        w = mask.astype(dper.dtype)
        w *= 1.0 / count
        dper *= w[..., None]
    return value, dper


class Loss:
    """Base class: a loss reduced to a scalar, with its gradient w.r.t. the predictions.

    Parameters
    ----------
    name
        The loss's name (as reported in logs).

    Shapes
    ------
    See the module docstring: ``y_pred`` ``[..., K]``, ``mask`` ``y_pred.shape[:-1]``, gradient
    shaped like ``y_pred``.
    """

    fusable_activation: Optional[str] = None
    """The output activation whose Jacobian :meth:`logits_value_and_grad` folds in, if any."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, y_true: Any, y_pred: Any, mask: Any = None) -> float:
        """The reduced loss value."""
        p = _as_pred(y_pred)
        per, _ = self._per_entry(y_true, p, need_grad=False)
        return _reduce(per, None, _as_mask(mask, p.shape[:-1]))[0]

    def value_and_grad(self, y_true: Any, y_pred: Any, mask: Any = None) -> ValueGrad:
        """The reduced loss and its gradient w.r.t. ``y_pred`` (same shape and dtype)."""
        p = _as_pred(y_pred)
        m = _as_mask(mask, p.shape[:-1])
        per, dper = self._per_entry(y_true, p, need_grad=True)
        value, grad = _reduce(per, dper, m)
        assert grad is not None
        return value, grad

    def per_sample(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """Unreduced losses, shape ``y_pred.shape[:-1]`` (what Keras's loss functions return)."""
        per, _ = self._per_entry(y_true, _as_pred(y_pred), need_grad=False)
        return per

    def logits_value_and_grad(self, y_true: Any, probs: Any, logits: Any = None,
                              mask: Any = None) -> ValueGrad:
        """For predictions ``probs = activation(logits)`` with ``activation`` the loss's
        :attr:`fusable_activation`: the loss and its gradient w.r.t. the **logits**, computed
        without the activation's Jacobian. ``logits`` (optional) give an exact value where the
        probabilities underflow; without them the value uses the clipped probabilities."""
        raise TypeError(f"{type(self).__name__} cannot be fused with an output activation")

    def _per_entry(self, y_true: Any, p: np.ndarray, need_grad: bool
                   ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        raise NotImplementedError

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Loss":
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class CategoricalCrossentropy(Loss):
    """``-sum_k y_k log p_k`` per entry, averaged over samples (and steps).

    Parameters
    ----------
    from_logits
        ``y_pred`` are unnormalised logits (stable log-softmax) instead of probabilities.
    name
        Name in logs.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``mask``: ``[N]`` or ``[N, T]``.
    """

    def __init__(self, from_logits: bool = False, name: str = "categorical_crossentropy") -> None:
        super().__init__(name)
        self.from_logits = bool(from_logits)
        self.fusable_activation = None if self.from_logits else "softmax"

    def _per_entry(self, y_true, p, need_grad):
        y = _as_dense_true(y_true, p)
        if self.from_logits:
            logp = _log_softmax(p)
            per = -sum_last_axis(y * logp)
            if not need_grad:
                return per, None
            d = np.exp(logp)
            d *= sum_last_axis(y, keepdims=True)
            d -= y
            return per, d
        s = sum_last_axis(p, keepdims=True)
        q = p / s
        c = np.clip(q, EPSILON, 1.0 - EPSILON)
        per = -sum_last_axis(y * np.log(c))
        if not need_grad:
            return per, None
        # d/dq of -sum y log clip(q) is -y / q where unclipped, else 0; then through q = p / sum(p).
        gq = np.where((q >= EPSILON) & (q <= 1.0 - EPSILON), -y / c, 0.0).astype(p.dtype)
        d = (gq - sum_last_axis(gq * q, keepdims=True)) / s
        return per, d

    def logits_value_and_grad(self, y_true, probs, logits=None, mask=None):
        if self.from_logits:
            raise TypeError("CategoricalCrossentropy(from_logits=True) already takes logits; "
                            "call value_and_grad")
        p = _as_pred(probs)
        y = _as_dense_true(y_true, p)
        m = _as_mask(mask, p.shape[:-1])
        if logits is not None:
            per = -sum_last_axis(y * _log_softmax(np.asarray(logits, dtype=p.dtype)))
        else:
            per = -sum_last_axis(y * np.log(np.clip(p, EPSILON, 1.0 - EPSILON)))
        d = p * sum_last_axis(y, keepdims=True)
        d -= y
        value, d = _reduce(per, d, m)
        return value, d

    def get_config(self):
        return {"from_logits": self.from_logits, "name": self.name}


class SparseCategoricalCrossentropy(Loss):
    """``-log p[label]`` per entry with integer labels, averaged over samples (and steps).

    Parameters
    ----------
    from_logits
        ``y_pred`` are logits (stable log-softmax).
    name
        Name in logs.

    Shapes
    ------
    ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``y_true``: ``[N]`` / ``[N, T]`` (or with a trailing
    axis of 1) integer labels in ``[0, K)``; ``mask``: ``y_pred.shape[:-1]``.
    """

    def __init__(self, from_logits: bool = False,
                 name: str = "sparse_categorical_crossentropy") -> None:
        super().__init__(name)
        self.from_logits = bool(from_logits)
        self.fusable_activation = None if self.from_logits else "softmax"

    @staticmethod
    def _pick(a: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, labels[..., None], axis=-1)[..., 0]

    def _per_entry(self, y_true, p, need_grad):
        labels = _as_labels(y_true, p)
        if self.from_logits:
            logp = _log_softmax(p)
            per = -self._pick(logp, labels)
            if not need_grad:
                return per, None
            d = np.exp(logp)
            np.put_along_axis(d, labels[..., None], self._pick(d, labels)[..., None] - 1.0, axis=-1)
            return per, d
        s = sum_last_axis(p, keepdims=True)
        q = p / s
        q_l = self._pick(q, labels)
        c_l = np.clip(q_l, EPSILON, 1.0 - EPSILON)
        per = -np.log(c_l)
        if not need_grad:
            return per, None
        # gq = -1/q_l at the label (0 where clipped); d_p = (gq - sum(gq * q)) / s.
        active = (q_l >= EPSILON) & (q_l <= 1.0 - EPSILON)
        g_l = np.where(active, -1.0 / c_l, 0.0).astype(p.dtype)
        d = np.broadcast_to(-(g_l * q_l)[..., None], p.shape).copy()
        np.put_along_axis(d, labels[..., None], (g_l - g_l * q_l)[..., None], axis=-1)
        d /= s
        return per, d

    def logits_value_and_grad(self, y_true, probs, logits=None, mask=None):
        if self.from_logits:
            raise TypeError("SparseCategoricalCrossentropy(from_logits=True) already takes logits; "
                            "call value_and_grad")
        p = _as_pred(probs)
        labels = _as_labels(y_true, p)
        m = _as_mask(mask, p.shape[:-1])
        if logits is not None:
            per = -self._pick(_log_softmax(np.asarray(logits, dtype=p.dtype)), labels)
        else:
            per = -np.log(np.clip(self._pick(p, labels), EPSILON, 1.0 - EPSILON))
        d = p.copy()
        np.put_along_axis(d, labels[..., None], self._pick(d, labels)[..., None] - 1.0, axis=-1)
        return _reduce(per, d, m)

    def get_config(self):
        return {"from_logits": self.from_logits, "name": self.name}


class BinaryCrossentropy(Loss):
    """``-(y log p + (1 - y) log(1 - p))`` averaged over the last axis, then over samples/steps.

    Parameters
    ----------
    from_logits
        ``y_pred`` are logits (stable log-sigmoid).
    name
        Name in logs.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]`` (``K`` independent binary targets, often
    1); ``mask``: ``y_pred.shape[:-1]``.
    """

    def __init__(self, from_logits: bool = False, name: str = "binary_crossentropy") -> None:
        super().__init__(name)
        self.from_logits = bool(from_logits)
        self.fusable_activation = None if self.from_logits else "sigmoid"

    @staticmethod
    def _from_logits(y: np.ndarray, z: np.ndarray) -> np.ndarray:
        # max(z, 0) - z y + log(1 + exp(-|z|)): stable for any z.
        return np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))

    def _per_entry(self, y_true, p, need_grad):
        y = _as_dense_true(y_true, p)
        K = p.shape[-1]
        if self.from_logits:
            per = self._from_logits(y, p).mean(axis=-1)
            if not need_grad:
                return per, None
            d = _sigmoid(p)
            d -= y
            d *= 1.0 / K
            return per, d
        c = np.clip(p, EPSILON, 1.0 - EPSILON)
        per = -(y * np.log(c) + (1.0 - y) * np.log1p(-c)).mean(axis=-1)
        if not need_grad:
            return per, None
        active = (p >= EPSILON) & (p <= 1.0 - EPSILON)
        d = np.where(active, (c - y) / (c * (1.0 - c)), 0.0).astype(p.dtype)
        d *= 1.0 / K
        return per, d

    def logits_value_and_grad(self, y_true, probs, logits=None, mask=None):
        if self.from_logits:
            raise TypeError("BinaryCrossentropy(from_logits=True) already takes logits; "
                            "call value_and_grad")
        p = _as_pred(probs)
        y = _as_dense_true(y_true, p)
        m = _as_mask(mask, p.shape[:-1])
        if logits is not None:
            per = self._from_logits(y, np.asarray(logits, dtype=p.dtype)).mean(axis=-1)
        else:
            c = np.clip(p, EPSILON, 1.0 - EPSILON)
            per = -(y * np.log(c) + (1.0 - y) * np.log1p(-c)).mean(axis=-1)
        d = p - y
        d *= 1.0 / p.shape[-1]
        return _reduce(per, d, m)

    def get_config(self):
        return {"from_logits": self.from_logits, "name": self.name}


class MeanSquaredError(Loss):
    """``mean_k (y_k - p_k)^2`` per entry, averaged over samples (and steps).

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``mask``: ``y_pred.shape[:-1]``.
    """

    def __init__(self, name: str = "mean_squared_error") -> None:
        super().__init__(name)

    def _per_entry(self, y_true, p, need_grad):
        y = _as_dense_true(y_true, p)
        diff = p - y
        per = (diff * diff).mean(axis=-1)
        if not need_grad:
            return per, None
        diff *= 2.0 / p.shape[-1]
        return per, diff


class MeanAbsoluteError(Loss):
    """``mean_k |y_k - p_k|`` per entry, averaged over samples (and steps); the gradient at
    ``p == y`` is 0.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``mask``: ``y_pred.shape[:-1]``.
    """

    def __init__(self, name: str = "mean_absolute_error") -> None:
        super().__init__(name)

    def _per_entry(self, y_true, p, need_grad):
        y = _as_dense_true(y_true, p)
        diff = p - y
        per = np.abs(diff).mean(axis=-1)
        if not need_grad:
            return per, None
        d = np.sign(diff)
        d *= 1.0 / p.shape[-1]
        return per, d


# ---- functional forms: (value, gradient) ---------------------------------------------------------

def categorical_crossentropy(y_true: Any, y_pred: Any, from_logits: bool = False,
                             mask: Any = None) -> ValueGrad:
    """Mean categorical cross-entropy and its gradient w.r.t. ``y_pred``.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; returns ``(float, y_pred-shaped array)``.
    """
    return CategoricalCrossentropy(from_logits=from_logits).value_and_grad(y_true, y_pred, mask)


def sparse_categorical_crossentropy(y_true: Any, y_pred: Any, from_logits: bool = False,
                                    mask: Any = None) -> ValueGrad:
    """Mean sparse categorical cross-entropy and its gradient w.r.t. ``y_pred``.

    Shapes
    ------
    ``y_pred``: ``[N, K]`` / ``[N, T, K]``; ``y_true``: ``[N]`` / ``[N, T]`` integer labels;
    returns ``(float, y_pred-shaped array)``.
    """
    return SparseCategoricalCrossentropy(from_logits=from_logits).value_and_grad(y_true, y_pred, mask)


def binary_crossentropy(y_true: Any, y_pred: Any, from_logits: bool = False,
                        mask: Any = None) -> ValueGrad:
    """Mean binary cross-entropy and its gradient w.r.t. ``y_pred``.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; returns ``(float, y_pred-shaped array)``.
    """
    return BinaryCrossentropy(from_logits=from_logits).value_and_grad(y_true, y_pred, mask)


def mean_squared_error(y_true: Any, y_pred: Any, mask: Any = None) -> ValueGrad:
    """Mean squared error and its gradient w.r.t. ``y_pred``.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; returns ``(float, y_pred-shaped array)``.
    """
    return MeanSquaredError().value_and_grad(y_true, y_pred, mask)


def mean_absolute_error(y_true: Any, y_pred: Any, mask: Any = None) -> ValueGrad:
    """Mean absolute error and its gradient w.r.t. ``y_pred``.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; returns ``(float, y_pred-shaped array)``.
    """
    return MeanAbsoluteError().value_and_grad(y_true, y_pred, mask)


mse = mean_squared_error
mae = mean_absolute_error

_CLASSES: Dict[str, Type[Loss]] = {c.__name__: c for c in (
    CategoricalCrossentropy, SparseCategoricalCrossentropy, BinaryCrossentropy, MeanSquaredError,
    MeanAbsoluteError)}

_ALIASES: Dict[str, Type[Loss]] = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
}


def get(identifier: Union[str, Loss, Dict[str, Any]]) -> Loss:
    """A :class:`Loss` from a Keras name (``'categorical_crossentropy'``, ``'mse'``, ...), a class
    name (``'CategoricalCrossentropy'``), a serialized dict, or a Loss (returned as is)."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = _ALIASES.get(identifier) or _CLASSES.get(identifier)
        if cls is None:
            raise ValueError(f"loss: unknown loss {identifier!r}; expected one of "
                             f"{sorted(_ALIASES)} or a class name {sorted(_CLASSES)}")
        return cls()
    raise TypeError(f"loss: expected a str, dict or Loss, got {type(identifier).__name__}")


def serialize(loss: Loss) -> Dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` (JSON-compatible)."""
    return serialize_object(loss, Loss, "loss")


def deserialize(config: Dict[str, Any]) -> Loss:
    """Inverse of :func:`serialize`."""
    return deserialize_object(config, _CLASSES.get, "loss class", _CLASSES)
