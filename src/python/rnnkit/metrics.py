"""Metrics with Keras's names: accuracy (categorical / sparse / binary), mae, mse.

A :class:`Metric` accumulates over batches (``update_state``) and reports the running mean over
every valid entry seen since the last ``reset_state`` (``result``), as Keras's metrics do during
``fit``. Per-time-step predictions ``[N, T, K]`` count each step as one entry; masked steps are
left out.

``'accuracy'`` / ``'acc'`` resolve like Keras: binary accuracy when the loss is binary
cross-entropy or the predictions have one channel; sparse categorical accuracy when the targets
are labels (one axis fewer than the predictions, or a trailing axis of 1 against K > 1 classes);
categorical accuracy otherwise.

Shapes
------
- ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``y_true``: same shape, or labels ``[N]`` / ``[N, T]``
  for the sparse metrics; ``mask``: ``y_pred.shape[:-1]``.
- The per-entry functions return ``y_pred.shape[:-1]`` arrays.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Type, Union

import numpy as np

from rnnkit._checks import shape_str
from rnnkit._registry import deserialize_object, serialize_object

from rnnkit._rows import argmax_last_axis

__all__ = [
    "Metric", "MeanMetricWrapper", "Accuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy",
    "BinaryAccuracy", "MeanAbsoluteError", "MeanSquaredError", "categorical_accuracy",
    "sparse_categorical_accuracy", "binary_accuracy", "mean_absolute_error", "mean_squared_error",
    "get", "serialize",
]




def _check_same(y_true: np.ndarray, y_pred: np.ndarray) -> None:
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true: expected shape {shape_str(y_pred.shape)} (the shape of y_pred), got "
                         f"{shape_str(y_true.shape)}")


def categorical_accuracy(y_true: Any, y_pred: Any) -> np.ndarray:
    """1.0 where ``argmax(y_true) == argmax(y_pred)`` over the last axis, else 0.0.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[..., K]``; returns ``[...]``.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    _check_same(t, p)
    return (argmax_last_axis(t) == argmax_last_axis(p)).astype(np.float64)


def sparse_categorical_accuracy(y_true: Any, y_pred: Any) -> np.ndarray:
    """1.0 where the label equals ``argmax(y_pred)``.

    Shapes
    ------
    ``y_pred``: ``[..., K]``; ``y_true``: ``[...]`` or ``[..., 1]``; returns ``[...]``.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    lead = p.shape[:-1]
    if t.shape == lead + (1,) and p.ndim >= 2:
        t = t.reshape(lead)
    if t.shape != lead:
        raise ValueError(f"y_true: expected labels of shape {shape_str(lead)} (y_pred's shape without "
                         f"the class axis), got {shape_str(t.shape)}")
    return (t.astype(np.int64) == argmax_last_axis(p)).astype(np.float64)


def binary_accuracy(y_true: Any, y_pred: Any, threshold: float = 0.5) -> np.ndarray:
    """Mean over the last axis of ``(y_pred > threshold) == (y_true > 0.5)``.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[..., K]``; returns ``[...]``.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    _check_same(t, p)
    return ((p > threshold) == (t > 0.5)).mean(axis=-1)


def mean_absolute_error(y_true: Any, y_pred: Any) -> np.ndarray:
    """``mean_k |y_true - y_pred|``.

    Shapes
    ------
    ``[..., K]`` in, ``[...]`` out.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    _check_same(t, p)
    return np.abs(p.astype(np.float64) - t).mean(axis=-1)


def mean_squared_error(y_true: Any, y_pred: Any) -> np.ndarray:
    """``mean_k (y_true - y_pred)^2``.

    Shapes
    ------
    ``[..., K]`` in, ``[...]`` out.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    _check_same(t, p)
    d = p.astype(np.float64) - t
    return (d * d).mean(axis=-1)


class Metric:
    """A running mean of per-entry values over batches.

    Parameters
    ----------
    name
        The key in ``fit``'s logs and history.

    Shapes
    ------
    ``update_state(y_true, y_pred, mask=None)`` with ``mask`` of shape ``y_pred.shape[:-1]``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._total = 0.0
        self._count = 0

    def values(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """Per-entry values, shape ``y_pred.shape[:-1]``."""
        raise NotImplementedError

    def update_state(self, y_true: Any, y_pred: Any, mask: Any = None) -> None:
        v = self.values(y_true, y_pred)
        if mask is None:
            self._total += float(v.sum())
            self._count += int(v.size)
            return
        m = np.asarray(mask, dtype=bool)
        if m.shape != v.shape:
            raise ValueError(f"mask: expected shape {shape_str(v.shape)} (y_pred's shape without the "
                             f"last axis), got {shape_str(m.shape)}")
        self._total += float(v[m].sum())
        self._count += int(np.count_nonzero(m))

    def result(self) -> float:
        """The mean over every valid entry seen (0.0 before any)."""
        return self._total / self._count if self._count else 0.0

    def reset_state(self) -> None:
        self._total = 0.0
        self._count = 0

    def __call__(self, y_true: Any, y_pred: Any, mask: Any = None) -> float:
        """The metric of one batch (does not touch the running state)."""
        v = self.values(y_true, y_pred)
        if mask is not None:
            v = v[np.asarray(mask, dtype=bool)]
        return float(v.mean()) if v.size else 0.0

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Metric":
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} result={self.result():.4g}>"


class MeanMetricWrapper(Metric):
    """Wraps a per-entry function ``fn(y_true, y_pred) -> [...]`` into a running-mean metric.

    Shapes
    ------
    As the wrapped function.
    """

    def __init__(self, fn: Callable[[Any, Any], np.ndarray], name: str, **kwargs: Any) -> None:
        super().__init__(name)
        self._fn = fn
        self._kwargs = kwargs

    def values(self, y_true, y_pred):
        return self._fn(y_true, y_pred, **self._kwargs)


class CategoricalAccuracy(MeanMetricWrapper):
    """Accuracy against one-hot targets.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[..., K]``.
    """

    def __init__(self, name: str = "categorical_accuracy") -> None:
        super().__init__(categorical_accuracy, name)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    """Accuracy against integer labels.

    Shapes
    ------
    ``y_pred``: ``[..., K]``; ``y_true``: ``[...]``.
    """

    def __init__(self, name: str = "sparse_categorical_accuracy") -> None:
        super().__init__(sparse_categorical_accuracy, name)


class BinaryAccuracy(MeanMetricWrapper):
    """Accuracy of thresholded predictions against binary targets.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[..., K]``.
    """

    def __init__(self, name: str = "binary_accuracy", threshold: float = 0.5) -> None:
        super().__init__(binary_accuracy, name, threshold=float(threshold))
        self.threshold = float(threshold)

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}


class MeanAbsoluteError(MeanMetricWrapper):
    """Running mean absolute error.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[..., K]``.
    """

    def __init__(self, name: str = "mean_absolute_error") -> None:
        super().__init__(mean_absolute_error, name)


class MeanSquaredError(MeanMetricWrapper):
    """Running mean squared error.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[..., K]``.
    """

    def __init__(self, name: str = "mean_squared_error") -> None:
        super().__init__(mean_squared_error, name)


class Accuracy(Metric):
    """Keras's ``'accuracy'``: picks binary, sparse or categorical accuracy (see the module
    docstring) from the loss, if given, or from the shapes of the first batch.

    Parameters
    ----------
    name
        ``'accuracy'`` (default) or ``'acc'``.
    loss
        The compiled loss, if any (binary cross-entropy selects binary accuracy).

    Shapes
    ------
    ``y_pred``: ``[..., K]``; ``y_true``: ``[..., K]`` or labels ``[...]``.
    """

    def __init__(self, name: str = "accuracy", loss: Any = None) -> None:
        super().__init__(name)
        from rnnkit import losses as _losses

        self._binary_loss = isinstance(loss, _losses.BinaryCrossentropy)
        self._sparse_loss = isinstance(loss, _losses.SparseCategoricalCrossentropy)
        self._fn: Optional[Callable[[Any, Any], np.ndarray]] = None

    def resolve(self, y_true: Any, y_pred: Any) -> Callable[[Any, Any], np.ndarray]:
        """The accuracy function used for these shapes (fixed after the first call)."""
        if self._fn is None:
            t_shape, p_shape = np.shape(y_true), np.shape(y_pred)
            p_last = p_shape[-1] if p_shape else 1
            t_last = t_shape[-1] if t_shape else 1
            if self._binary_loss or p_last == 1:
                self._fn = binary_accuracy
            elif self._sparse_loss or len(t_shape) < len(p_shape) or (t_last == 1 and p_last > 1):
                self._fn = sparse_categorical_accuracy
            else:
                self._fn = categorical_accuracy
        return self._fn

    def values(self, y_true, y_pred):
        return self.resolve(y_true, y_pred)(y_true, y_pred)


_BY_NAME: Dict[str, Callable[[], Metric]] = {
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "mae": lambda: MeanAbsoluteError(name="mae"),
    "mean_absolute_error": MeanAbsoluteError,
    "mse": lambda: MeanSquaredError(name="mse"),
    "mean_squared_error": MeanSquaredError,
}

_CLASSES: Dict[str, Type[Metric]] = {c.__name__: c for c in (
    Accuracy, CategoricalAccuracy, SparseCategoricalAccuracy, BinaryAccuracy, MeanAbsoluteError,
    MeanSquaredError)}


def get(identifier: Union[str, Metric, Dict[str, Any]], loss: Any = None) -> Metric:
    """A fresh :class:`Metric` from a Keras name (``'accuracy'``, ``'acc'``, ``'mae'``, ``'mse'``,
    ``'categorical_accuracy'``, ...), a class name, a serialized dict, or a Metric (returned as
    is). ``loss`` (a :class:`rnnkit.losses.Loss`) guides the resolution of ``'accuracy'``."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, dict):
        metric = deserialize_object(identifier, _CLASSES.get, "metric class", _CLASSES)
        if isinstance(metric, Accuracy):  # 'accuracy' resolves against the compiled loss
            return Accuracy(name=metric.name, loss=loss)
        return metric
    if isinstance(identifier, str):
        if identifier in ("accuracy", "acc"):
            return Accuracy(name=identifier, loss=loss)
        make = _BY_NAME.get(identifier)
        if make is None and identifier in _CLASSES:
            make = _CLASSES[identifier]
        if make is None:
            raise ValueError(f"metrics: unknown metric {identifier!r}; expected one of "
                             f"{sorted(['accuracy', 'acc', *_BY_NAME])} or a Metric instance")
        return make()
    raise TypeError(f"metrics: expected a str, dict or Metric, got {type(identifier).__name__}")


def serialize(metric: Metric) -> Dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` for the built-in metrics."""
    if type(metric) not in _CLASSES.values():
        raise TypeError(f"metric: only the built-in metrics can be serialized, got "
                        f"{type(metric).__name__}")
    return serialize_object(metric, Metric, "metric")
