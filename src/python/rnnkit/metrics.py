"""Metrics with Keras 3's names, arguments and weighted accumulation: accuracies (categorical /
sparse / binary / top-k), precision, recall, AUC, F-scores and regression errors.

A :class:`Metric` accumulates over batches (``update_state``) and reports its value over
everything seen since the last ``reset_state`` (``result``), as Keras's metrics do during ``fit``.
``update_state(y_true, y_pred, mask=None, sample_weight=None)``:

- ``mask``: None or a boolean ``y_pred.shape[:-1]`` array (per-time-step predictions ``[N, T, K]``
  count each step as one entry; masked steps are left out, i.e. weighted 0).
- ``sample_weight``: None or an array broadcastable to ``y_pred.shape[:-1]``, aligned from the
  left (``[N]`` per sample applies to every step of the sample; ``[N, T]`` per step; a trailing
  axis of 1 is dropped). Combined with the mask by multiplication.

Mean metrics (accuracies, errors) report Keras's weighted mean ``sum(v w) / sum(w)`` over the
per-entry values ``v`` (the plain mean without weights; 0.0 before any weight); as in Keras's
``Mean``, a sample's steps are averaged before batches are combined, so over batches of different
lengths ``T`` every sample (of weight 1) counts the same. A scalar ``sample_weight`` weights every
entry (Keras counts a batch with a scalar weight as a single sample). Confusion metrics
(Precision, Recall, AUC, F-scores) accumulate weighted true/false positive/negative counts with
Keras 3's formulas (``divide_no_nan``: 0 where a denominator is 0).

``result()`` returns a Python float, except for ``F1Score``/``FBetaScore(average=None)`` (one score
per class) and ``Precision``/``Recall`` with several thresholds (one value per threshold): those
return a 1-D float64 NumPy array. ``fit`` records such an array in the logs and ``History`` and
leaves it out of the progress lines, which print floats only; monitor a scalar metric in
callbacks.

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

import copy
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import numpy as np

from rnnkit._checks import shape_str
from rnnkit._registry import deserialize_object, serialize_object
from rnnkit._rows import argmax_last_axis
from rnnkit.losses import EPSILON, _as_sample_weight, _snake_case

__all__ = [
    "Metric", "MeanMetricWrapper", "Accuracy", "CategoricalAccuracy",
    "SparseCategoricalAccuracy", "BinaryAccuracy", "TopKCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy", "MeanAbsoluteError", "MeanSquaredError",
    "RootMeanSquaredError", "MeanAbsolutePercentageError", "Precision", "Recall", "AUC",
    "FBetaScore", "F1Score", "categorical_accuracy", "sparse_categorical_accuracy",
    "binary_accuracy", "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy",
    "mean_absolute_error", "mean_squared_error", "mean_absolute_percentage_error", "get",
    "serialize", "deserialize",
]

NEG_INF = -1e10
"""Keras's stand-in for minus infinity (predictions outside the top k; Precision/Recall's
threshold with ``top_k``)."""


def _vector(a: Any) -> np.ndarray:
    """A vector-valued result (one value per class or threshold): a fresh float64 array."""
    return np.array(a, dtype=np.float64)


def _divide_no_nan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.where(b == 0, 0.0, a / np.where(b == 0, 1.0, b))


# ---- argument checks -----------------------------------------------------------------------------

def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        what = "None or an int" if allow_none else "an int"
        raise TypeError(f"{name}: expected {what} >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def _check_name(name: Any, default: str) -> str:
    if name is None:
        return default
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    return name


def _entry_weights(mask: Any, sample_weight: Any, lead: Tuple[int, ...]
                   ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """The per-entry weights (float64, shape ``lead``; None when neither a mask nor weights are
    given) and the boolean mask (or None)."""
    m = None
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype.kind not in "biu":
            raise TypeError(f"mask: expected a boolean array, got dtype {m.dtype}")
        if m.shape != lead:
            raise ValueError(f"mask: expected shape {shape_str(lead)} (y_pred's shape without the "
                             f"last axis), got {shape_str(m.shape)}")
        m = m.astype(bool, copy=False)
    w = _as_sample_weight(sample_weight, lead)
    if m is not None:
        w = m.astype(np.float64) if w is None else w * m
    return w, m


def _check_same(y_true: np.ndarray, y_pred: np.ndarray) -> None:
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true: expected shape {shape_str(y_pred.shape)} (the shape of y_pred), got "
                         f"{shape_str(y_true.shape)}")


def _labels(y_true: Any, y_pred: np.ndarray) -> np.ndarray:
    t = np.asarray(y_true)
    lead = y_pred.shape[:-1]
    if t.shape == lead + (1,) and y_pred.ndim >= 2:
        t = t.reshape(lead)
    if t.shape != lead:
        raise ValueError(f"y_true: expected labels of shape {shape_str(lead)} (y_pred's shape without "
                         f"the class axis), got {shape_str(t.shape)}")
    if t.dtype.kind not in "fiub":
        raise TypeError(f"y_true: expected integer class labels, got dtype {t.dtype}")
    return t.astype(np.int64)


# ---- per-entry functions -------------------------------------------------------------------------

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
    p = np.asarray(y_pred)
    return (_labels(y_true, p) == argmax_last_axis(p)).astype(np.float64)


def binary_accuracy(y_true: Any, y_pred: Any, threshold: float = 0.5) -> np.ndarray:
    """Mean over the last axis of ``(y_pred > threshold) == (y_true > 0.5)``.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[..., K]``; returns ``[...]``.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    _check_same(t, p)
    return ((p > threshold) == (t > 0.5)).mean(axis=-1)


def _in_top_k(labels: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """1.0 where ``p[label]`` is at least the k-th largest score of its row (ties count as in,
    as Keras's ``in_top_k``)."""
    K = p.shape[-1]
    if k >= K:
        return np.ones(p.shape[:-1], dtype=np.float64)
    kth = np.partition(p, K - k, axis=-1)[..., K - k]
    target = np.take_along_axis(p, labels[..., None], axis=-1)[..., 0]
    return (target >= kth).astype(np.float64)


def top_k_categorical_accuracy(y_true: Any, y_pred: Any, k: int = 5) -> np.ndarray:
    """1.0 where ``argmax(y_true)`` is among the ``k`` highest scores of ``y_pred``.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[..., K]``; returns ``[...]``.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    _check_same(t, p)
    return _in_top_k(argmax_last_axis(t), p, k)


def sparse_top_k_categorical_accuracy(y_true: Any, y_pred: Any, k: int = 5,
                                      from_sorted_ids: bool = False) -> np.ndarray:
    """1.0 where the label is among the ``k`` highest scores of ``y_pred`` (with
    ``from_sorted_ids``: among the first ``k`` ids of ``y_pred``, ids sorted by score).

    Shapes
    ------
    ``y_pred``: ``[..., K]``; ``y_true``: ``[...]`` or ``[..., 1]``; returns ``[...]``.
    """
    p = np.asarray(y_pred)
    labels = _labels(y_true, p)
    if from_sorted_ids:
        return np.any(p[..., :k] == labels[..., None], axis=-1).astype(np.float64)
    K = p.shape[-1]
    if labels.size and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"y_true: labels must be in [0, {K}) for {K} classes, got values in "
                         f"[{labels.min()}, {labels.max()}]")
    return _in_top_k(labels, p, k)


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


def mean_absolute_percentage_error(y_true: Any, y_pred: Any) -> np.ndarray:
    """``100 mean_k |y_true - y_pred| / max(|y_true|, 1e-7)``.

    Shapes
    ------
    ``[..., K]`` in, ``[...]`` out.
    """
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    _check_same(t, p)
    return 100.0 * (np.abs(t - p) / np.maximum(np.abs(t), EPSILON)).mean(axis=-1)


# ---- the base class and mean metrics -------------------------------------------------------------

class Metric:
    """A metric accumulated over batches; the base class is Keras's weighted running mean of the
    per-entry values returned by :meth:`values` (subclasses with other state override
    ``update_state``, ``result`` and ``reset_state``).

    Parameters
    ----------
    name
        The key in ``fit``'s logs and history (default: the class name in snake case).

    Shapes
    ------
    ``update_state(y_true, y_pred, mask=None, sample_weight=None)`` with ``mask`` of shape
    ``y_pred.shape[:-1]`` and ``sample_weight`` broadcastable to it.
    """

    def __init__(self, name: Optional[str] = None) -> None:
        self.name = _check_name(name, _snake_case(type(self).__name__))
        self._total = 0.0
        self._count = 0.0

    def values(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """Per-entry values, shape ``y_pred.shape[:-1]``."""
        raise NotImplementedError(f"{type(self).__name__}: implement values(y_true, y_pred) or "
                                  f"update_state/result/reset_state")

    def update_state(self, y_true: Any, y_pred: Any, mask: Any = None, sample_weight: Any = None) -> None:
        """Adds a batch: ``total += sum(v w) / E``, ``count += sum(w) / E`` (``w`` = 1 without
        weights; ``E`` the entries per sample, e.g. ``T``), which is Keras's ``Mean``: a sample's
        steps are averaged first, so batches of different lengths weigh by samples."""
        v = np.asarray(self.values(y_true, y_pred), dtype=np.float64)
        w, m = _entry_weights(mask, sample_weight, v.shape)
        per_sample = v.size // v.shape[0] if v.ndim > 1 and v.shape[0] else 1
        if w is None:
            self._total += float(v.sum()) / per_sample
            self._count += float(v.size) / per_sample
            return
        vw = v * w
        if m is not None:
            vw[~m] = 0.0  # masked entries (e.g. padding) never reach the sum
        self._total += float(vw.sum()) / per_sample
        self._count += float(w.sum()) / per_sample

    def result(self) -> Any:
        """The weighted mean over every entry seen (0.0 before any weight)."""
        return self._total / self._count if self._count else 0.0

    def reset_state(self) -> None:
        self._total = 0.0
        self._count = 0.0

    #: the attributes holding the running state (float64 arrays) of a metric with its own
    #: ``update_state``; the mean metrics keep ``total`` and ``count``
    _state_attrs: Tuple[str, ...] = ()

    def get_state(self) -> Dict[str, np.ndarray]:
        """The running state as float64 arrays (copies). Every entry is a sum over the batches
        seen since :meth:`reset_state`, so the states of metrics fed disjoint data add up to the
        state over all of it (:mod:`rnnkit.distributed` adds them across processes).

        A subclass with its own ``update_state`` must list its state in ``_state_attrs`` (or
        override this method and :meth:`set_state`).

        Shapes
        ------
        Mean metrics: scalars ``total`` and ``count``; confusion metrics: counts per threshold
        (and per label or class).
        """
        cls = type(self)
        if not cls._state_attrs:
            if cls.update_state is not Metric.update_state:
                raise NotImplementedError(
                    f"{cls.__name__}: a metric with its own update_state lists its state arrays in "
                    "_state_attrs (or implements get_state/set_state) to be summed across processes")
            return {"total": np.asarray(self._total, dtype=np.float64),
                    "count": np.asarray(self._count, dtype=np.float64)}
        return {k: np.array(getattr(self, k), dtype=np.float64, copy=True) for k in cls._state_attrs}

    def set_state(self, state: Dict[str, np.ndarray]) -> None:
        """Replaces the running state by ``state`` (what :meth:`get_state` returns, e.g. summed
        over processes).

        Shapes
        ------
        As :meth:`get_state`.
        """
        mine = self.get_state()
        if set(state) != set(mine):
            raise ValueError(f"state: expected the entries {sorted(mine)} of {type(self).__name__}, "
                             f"got {sorted(state)}")
        for k, v in state.items():
            a = np.asarray(v, dtype=np.float64)
            if a.ndim != mine[k].ndim:
                raise ValueError(f"state[{k!r}]: expected {mine[k].ndim} dimension(s), got shape "
                                 f"{shape_str(a.shape)}")
        if not type(self)._state_attrs:
            self._total = float(np.asarray(state["total"]))
            self._count = float(np.asarray(state["count"]))
            return
        for k in type(self)._state_attrs:
            setattr(self, k, np.array(state[k], dtype=np.float64, copy=True))

    def merge_state(self, state: Dict[str, np.ndarray]) -> None:
        """Adds ``state`` (entries as :meth:`get_state` returns, e.g. the counts of a batch
        computed elsewhere) to the running state: states of disjoint data add up.

        Shapes
        ------
        As :meth:`get_state`.
        """
        mine = self.get_state()
        # an entry missing from `state` adds nothing here, and set_state then names it
        self.set_state({k: mine[k] + np.asarray(v, dtype=np.float64) if k in mine else v
                        for k, v in state.items()})

    def __call__(self, y_true: Any, y_pred: Any, mask: Any = None, sample_weight: Any = None) -> Any:
        """The metric of one batch (does not touch the running state)."""
        fresh = copy.deepcopy(self)
        fresh.reset_state()
        fresh.update_state(y_true, y_pred, mask, sample_weight)
        return fresh.result()

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Metric":
        return cls(**config)

    def __repr__(self) -> str:
        r = self.result()
        shown = format(r, ".4g") if isinstance(r, float) else np.array2string(np.asarray(r), precision=4)
        return f"<{type(self).__name__} name={self.name!r} result={shown}>"


class MeanMetricWrapper(Metric):
    """Wraps a per-entry function ``fn(y_true, y_pred, **kwargs) -> [...]`` into a weighted
    running-mean metric (Keras's ``MeanMetricWrapper``).

    Shapes
    ------
    As the wrapped function.
    """

    def __init__(self, fn: Callable[..., np.ndarray], name: Optional[str] = None, **kwargs: Any) -> None:
        if not callable(fn):
            raise TypeError(f"fn: expected a callable fn(y_true, y_pred), got {type(fn).__name__}")
        super().__init__(name if name is not None else getattr(fn, "__name__", None))
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


class TopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the one-hot target is among the ``k`` highest predictions (Keras's
    ``TopKCategoricalAccuracy``; ties at the k-th score count as in; ``k >= K`` gives 1).

    Parameters
    ----------
    k
        Number of top predictions looked at.
    name
        Key in the logs.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[..., K]``.
    """

    def __init__(self, k: int = 5, name: str = "top_k_categorical_accuracy") -> None:
        self.k = _check_int("k", k, 1)
        super().__init__(top_k_categorical_accuracy, name, k=self.k)

    def get_config(self):
        return {"k": self.k, "name": self.name}


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the integer label is among the ``k`` highest predictions (Keras's
    ``SparseTopKCategoricalAccuracy``).

    Parameters
    ----------
    k
        Number of top predictions looked at.
    name
        Key in the logs.
    from_sorted_ids
        ``y_pred`` holds class ids sorted by decreasing score (``[..., N]`` with ``N >= k``)
        instead of the scores of every class.

    Shapes
    ------
    ``y_pred``: ``[..., K]``; ``y_true``: ``[...]`` or ``[..., 1]``.
    """

    def __init__(self, k: int = 5, name: str = "sparse_top_k_categorical_accuracy",
                 from_sorted_ids: bool = False) -> None:
        self.k = _check_int("k", k, 1)
        if not isinstance(from_sorted_ids, (bool, np.bool_)):
            raise TypeError(f"from_sorted_ids: expected a bool, got {type(from_sorted_ids).__name__}")
        self.from_sorted_ids = bool(from_sorted_ids)
        super().__init__(sparse_top_k_categorical_accuracy, name, k=self.k,
                         from_sorted_ids=self.from_sorted_ids)

    def get_config(self):
        return {"k": self.k, "name": self.name, "from_sorted_ids": self.from_sorted_ids}


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


class MeanAbsolutePercentageError(MeanMetricWrapper):
    """Running mean absolute percentage error, ``100 |y - p| / max(|y|, 1e-7)``.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[..., K]``.
    """

    def __init__(self, name: str = "mean_absolute_percentage_error") -> None:
        super().__init__(mean_absolute_percentage_error, name)


class RootMeanSquaredError(MeanMetricWrapper):
    """``sqrt`` of the running (weighted) mean squared error (Keras's ``RootMeanSquaredError``).

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[..., K]``.
    """

    def __init__(self, name: str = "root_mean_squared_error") -> None:
        super().__init__(mean_squared_error, name)

    def result(self) -> float:
        return math.sqrt(super().result())


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


# ---- confusion-matrix metrics --------------------------------------------------------------------

def _confusion_inputs(y_true: Any, y_pred: Any, mask: Any, sample_weight: Any
                      ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """``y_true`` as booleans and ``y_pred`` as floats, both ``[..., K]`` (a 1-D batch is read as
    ``[N, 1]``), and the per-entry weights ``[...]`` (or None)."""
    p = np.asarray(y_pred)
    t = np.asarray(y_true)
    if p.dtype.kind not in "fiub":
        raise TypeError(f"y_pred: expected a numeric array, got dtype {p.dtype}")
    if t.dtype.kind not in "fiub":
        raise TypeError(f"y_true: expected a numeric array, got dtype {t.dtype}")
    if p.ndim == 0:
        raise ValueError("y_pred: expected an array of predictions, got a scalar")
    if p.dtype.kind != "f":
        p = p.astype(np.float64)
    if p.ndim == 1:
        p = p[:, None]
        if t.ndim == 1:
            t = t[:, None]
    if t.shape == p.shape[:-1] and p.shape[-1] == 1:
        t = t[..., None]
    _check_same(t, p)
    w, _ = _entry_weights(mask, sample_weight, p.shape[:-1])
    return t != 0, p, w


def _filter_top_k(p: np.ndarray, k: int) -> np.ndarray:
    """Keras's ``_filter_top_k``: the ``k`` highest scores of each row kept, the rest NEG_INF."""
    if k >= p.shape[-1]:
        return p
    idx = np.argpartition(-p, k - 1, axis=-1)[..., :k]
    keep = np.zeros(p.shape, dtype=bool)
    np.put_along_axis(keep, idx, True, axis=-1)
    return np.where(keep, p, p.dtype.type(NEG_INF))


def _evenly_distributed(thresholds: Sequence[float]) -> bool:
    """Keras's ``is_evenly_distributed_thresholds``."""
    n = len(thresholds)
    if n < 3:
        return False
    even = np.arange(n, dtype=np.float32) / (n - 1)
    return bool(np.allclose(np.asarray(thresholds, dtype=np.float64), even, atol=EPSILON))


def _positive_counts(t: np.ndarray, p: np.ndarray, w: Optional[np.ndarray],
                     thresholds: np.ndarray, evenly: bool, with_epsilon: bool
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted (tp, fp, total_true, total_false) per threshold, ``p > threshold`` counted
    positive, over flat entries ``t``, ``p`` (``[M]``) or per label (``[M, L]``: results
    ``[n, L]``), exactly as Keras 3's ``update_confusion_matrix_variables``: predictions and
    thresholds in float32 (Keras's metric variables' dtype); evenly distributed thresholds use
    the bucket computation (``p`` clipped to [0, 1], bucket ``ceil(p (n - 1)) - 1``, the first
    bucket also taking the bucket -1 when the end thresholds carry Keras's epsilon), other
    thresholds the comparisons themselves."""
    n = len(thresholds)
    p = p.astype(np.float32)
    thresholds = thresholds.astype(np.float32)
    tw = t.astype(np.float64) if w is None else t * w
    fw = (~t).astype(np.float64) if w is None else (~t) * w
    if evenly:
        b = np.ceil(np.clip(p, 0.0, 1.0) * np.float32(n - 1)) - 1
        if with_epsilon:
            b = np.maximum(b, 0)
        b = b.astype(np.int64)
    elif np.all(np.diff(thresholds) > 0):
        # thresholds[j] < p for j < b + 1: bucket b, counted for thresholds 0..b
        b = np.searchsorted(thresholds, p, side="left") - 1
    else:  # unsorted thresholds (Precision/Recall lists): compare with each one
        flat_t, flat_f = tw.reshape(len(tw), -1), fw.reshape(len(fw), -1)
        pos = p.reshape(len(p), -1)[None] > thresholds[:, None, None]
        tp = np.einsum("jml,ml->jl", pos, flat_t)
        fp = np.einsum("jml,ml->jl", pos, flat_f)
        shape = (n,) + p.shape[1:]
        return (tp.reshape(shape), fp.reshape(shape), tw.sum(axis=0), fw.sum(axis=0))
    if p.ndim == 1:
        keep = b >= 0
        tb = np.bincount(b[keep], weights=tw[keep], minlength=n)
        fb = np.bincount(b[keep], weights=fw[keep], minlength=n)
        tp, fp = np.cumsum(tb[::-1])[::-1], np.cumsum(fb[::-1])[::-1]
        return tp, fp, tw.sum(), fw.sum()
    L = p.shape[1]
    keep = b >= 0
    ids = (b + n * np.arange(L)[None, :])[keep]
    tb = np.bincount(ids, weights=tw[keep], minlength=n * L).reshape(L, n)
    fb = np.bincount(ids, weights=fw[keep], minlength=n * L).reshape(L, n)
    tp = np.cumsum(tb[:, ::-1], axis=1)[:, ::-1].T
    fp = np.cumsum(fb[:, ::-1], axis=1)[:, ::-1].T
    return tp, fp, tw.sum(axis=0), fw.sum(axis=0)


def _parse_thresholds(thresholds: Any, default: float) -> List[float]:
    if thresholds is None:
        return [default]
    vals = list(thresholds) if isinstance(thresholds, (list, tuple, np.ndarray)) else [thresholds]
    bad = [v for v in vals if v is None or isinstance(v, (bool, np.bool_))
           or not isinstance(v, (int, float, np.integer, np.floating)) or not 0.0 <= float(v) <= 1.0]
    if bad or not vals:
        raise ValueError(f"thresholds: expected a float or a non-empty list of floats in [0, 1], got "
                         f"{thresholds!r}")
    return [float(v) for v in vals]


class _PrecisionRecall(Metric):
    """Shared state of Precision and Recall: weighted tp / fp / fn per threshold."""

    _state_attrs = ("true_positives", "false_positives", "false_negatives")

    def __init__(self, thresholds: Any, top_k: Optional[int], class_id: Optional[int],
                 name: Optional[str]) -> None:
        super().__init__(name)
        parsed = _parse_thresholds(thresholds, 0.5)  # validates
        self.init_thresholds: Any = (None if thresholds is None else parsed if isinstance(
            thresholds, (list, tuple, np.ndarray)) else parsed[0])
        self.top_k = _check_int("top_k", top_k, 1, allow_none=True)
        self.class_id = _check_int("class_id", class_id, 0, allow_none=True)
        self.thresholds = _parse_thresholds(thresholds, 0.5 if self.top_k is None else NEG_INF)
        self._thr = np.asarray(self.thresholds, dtype=np.float64)
        self._evenly = _evenly_distributed(self.thresholds)
        self.reset_state()

    def reset_state(self) -> None:
        n = len(self.thresholds)
        self.true_positives = np.zeros(n)
        self.false_positives = np.zeros(n)
        self.false_negatives = np.zeros(n)

    def update_state(self, y_true: Any, y_pred: Any, mask: Any = None, sample_weight: Any = None) -> None:
        t, p, w = _confusion_inputs(y_true, y_pred, mask, sample_weight)
        if self.top_k is not None:
            p = _filter_top_k(p, self.top_k)
        if self.class_id is not None:
            if self.class_id >= p.shape[-1]:
                raise ValueError(f"class_id: expected a class in [0, {p.shape[-1]}) (y_pred's last axis), "
                                 f"got {self.class_id}")
            t, p = t[..., self.class_id], p[..., self.class_id]
            wf = None if w is None else w.ravel()
        else:
            wf = None if w is None else np.broadcast_to(w[..., None], p.shape).ravel()
        tp, fp, total_true, _ = _positive_counts(t.ravel(), p.ravel(), wf, self._thr, self._evenly, False)
        self.true_positives += tp
        self.false_positives += fp
        self.false_negatives += total_true - tp

    def _out(self, values: np.ndarray) -> Any:
        return float(values[0]) if len(self.thresholds) == 1 else _vector(values)

    def get_config(self):
        return {"thresholds": self.init_thresholds, "top_k": self.top_k, "class_id": self.class_id,
                "name": self.name}


class Precision(_PrecisionRecall):
    """``tp / (tp + fp)`` accumulated over batches (Keras's ``Precision``).

    Parameters
    ----------
    thresholds
        A float or a list of floats in ``[0, 1]``: a prediction ``> threshold`` is positive
        (one result per threshold). Default 0.5, or with ``top_k`` every top-k prediction.
    top_k
        Only the ``k`` highest predictions of each entry can be positive (ties broken
        arbitrarily).
    class_id
        Binary precision of this class only.
    name
        Key in the logs (default ``'precision'``).

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[..., K]`` (or 1-D); ``y_true`` is read as ``y_true != 0``.
    """

    def __init__(self, thresholds: Any = None, top_k: Optional[int] = None,
                 class_id: Optional[int] = None, name: Optional[str] = None) -> None:
        super().__init__(thresholds, top_k, class_id, name)

    def result(self) -> Any:
        return self._out(_divide_no_nan(self.true_positives, self.true_positives + self.false_positives))


class Recall(_PrecisionRecall):
    """``tp / (tp + fn)`` accumulated over batches (Keras's ``Recall``).

    Parameters
    ----------
    thresholds, top_k, class_id
        As :class:`Precision`.
    name
        Key in the logs (default ``'recall'``).

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[..., K]`` (or 1-D); ``y_true`` is read as ``y_true != 0``.
    """

    def __init__(self, thresholds: Any = None, top_k: Optional[int] = None,
                 class_id: Optional[int] = None, name: Optional[str] = None) -> None:
        super().__init__(thresholds, top_k, class_id, name)

    def result(self) -> Any:
        return self._out(_divide_no_nan(self.true_positives, self.true_positives + self.false_negatives))


_CURVES = {"roc": "ROC", "ROC": "ROC", "pr": "PR", "PR": "PR", "prgain": "PRGAIN", "PRGAIN": "PRGAIN"}
_SUMMATIONS = {"interpolation": "interpolation", "Interpolation": "interpolation",
               "majoring": "majoring", "Majoring": "majoring", "minoring": "minoring",
               "Minoring": "minoring"}


class AUC(Metric):
    """Area under the ROC or PR curve from weighted confusion counts in threshold buckets
    (Keras 3's ``AUC``, the same bucketed computation and Riemann sums).

    Parameters
    ----------
    num_thresholds
        Number of thresholds (> 1), evenly spaced over [0, 1] (the end ones widened by 1e-7).
    curve
        ``'ROC'`` (default), ``'PR'`` or ``'PRGAIN'``.
    summation_method
        ``'interpolation'`` (default; for PR Davis & Goadrich's interpolation), ``'minoring'`` or
        ``'majoring'``.
    name
        Key in the logs (default ``'auc'``).
    thresholds
        Keyword-only: explicit thresholds in [0, 1] (``num_thresholds`` is then ``len + 2``).
    multi_label
        Keyword-only: one AUC per label (last axis), averaged (weighted by ``label_weights``);
        otherwise every label of every entry is one data point.
    num_labels
        Keyword-only: the number of labels with ``multi_label`` (checked on the first batch).
    label_weights
        Keyword-only: non-negative per-label weights (of the data points without
        ``multi_label``, of the per-label AUCs with it).
    from_logits
        Keyword-only: apply a sigmoid to ``y_pred`` first.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[..., L]`` (or 1-D); ``y_true`` is read as ``y_true != 0``.
    """

    def __init__(self, num_thresholds: int = 200, curve: str = "ROC",
                 summation_method: str = "interpolation", name: Optional[str] = None, *,
                 thresholds: Optional[Sequence[float]] = None, multi_label: bool = False,
                 num_labels: Optional[int] = None, label_weights: Any = None,
                 from_logits: bool = False) -> None:
        super().__init__(name)
        if curve not in _CURVES:
            raise ValueError(f"curve: expected 'ROC', 'PR' or 'PRGAIN', got {curve!r}")
        if summation_method not in _SUMMATIONS:
            raise ValueError(f"summation_method: expected 'interpolation', 'majoring' or 'minoring', "
                             f"got {summation_method!r}")
        self.curve = _CURVES[curve]
        self.summation_method = _SUMMATIONS[summation_method]
        self._init_from_thresholds = thresholds is not None
        if thresholds is not None:
            inner = sorted(float(v) for v in thresholds)
            self.num_thresholds = len(inner) + 2
            self._evenly = _evenly_distributed([0.0] + inner + [1.0])
        else:
            self.num_thresholds = _check_int("num_thresholds", num_thresholds, 2)  # type: ignore[assignment]
            n = self.num_thresholds
            inner = [(i + 1) * 1.0 / (n - 1) for i in range(n - 2)]
            self._evenly = True
        self._thresholds = np.array([0.0 - EPSILON] + inner + [1.0 + EPSILON])
        if not isinstance(multi_label, (bool, np.bool_)):
            raise TypeError(f"multi_label: expected a bool, got {type(multi_label).__name__}")
        if not isinstance(from_logits, (bool, np.bool_)):
            raise TypeError(f"from_logits: expected a bool, got {type(from_logits).__name__}")
        self.multi_label = bool(multi_label)
        self.from_logits = bool(from_logits)
        self.num_labels = _check_int("num_labels", num_labels, 1, allow_none=True)
        if self.num_labels is not None and not self.multi_label:
            raise ValueError("num_labels: only used with multi_label=True, got num_labels="
                             f"{self.num_labels} with multi_label=False")
        self.label_weights = None
        if label_weights is not None:
            lw = np.asarray(label_weights, dtype=np.float64)
            if lw.ndim != 1 or np.any(lw < 0) or not np.all(np.isfinite(lw)):
                raise ValueError(f"label_weights: expected a 1-D list of non-negative floats, got "
                                 f"{label_weights!r}")
            self.label_weights = lw
        self._labels: Optional[int] = self.num_labels
        self.reset_state()

    @property
    def thresholds(self) -> List[float]:
        """The thresholds used (with the end points below 0 and above 1)."""
        return [float(v) for v in self._thresholds]

    _state_attrs = ("true_positives", "false_positives", "true_negatives", "false_negatives")

    def set_state(self, state: Dict[str, np.ndarray]) -> None:
        super().set_state(state)
        if self.multi_label and self.true_positives.size:
            self._labels = int(self.true_positives.shape[1])  # as if it had seen a batch

    def reset_state(self) -> None:
        shape: Tuple[int, ...] = (self.num_thresholds,)
        if self.multi_label:
            shape = shape + (self._labels or 0,)
        self.true_positives = np.zeros(shape)
        self.false_positives = np.zeros(shape)
        self.true_negatives = np.zeros(shape)
        self.false_negatives = np.zeros(shape)

    def update_state(self, y_true: Any, y_pred: Any, mask: Any = None, sample_weight: Any = None) -> None:
        t, p, w = _confusion_inputs(y_true, y_pred, mask, sample_weight)
        L = p.shape[-1]
        if self.from_logits:
            from rnnkit.losses import _sigmoid

            p = _sigmoid(p)
        if self.label_weights is not None and len(self.label_weights) != L:
            raise ValueError(f"label_weights: expected {L} weights (y_pred's last axis), got "
                             f"{len(self.label_weights)}")
        wf = np.ones(p.shape[:-1]) if w is None else w
        wf = np.broadcast_to(wf[..., None], p.shape)
        if self.multi_label:
            if self._labels is None:  # the state's shape is known from the first batch
                self._labels = L
                self.reset_state()
            if L != self._labels:
                raise ValueError(f"y_pred: expected {self._labels} labels in the last axis "
                                 f"(multi_label), got {L}")
            t2, p2, w2 = t.reshape(-1, L), p.reshape(-1, L), wf.reshape(-1, L)
        else:
            if self.label_weights is not None:
                wf = wf * self.label_weights
            t2, p2, w2 = t.ravel(), p.ravel(), wf.ravel()
        if w is None and self.label_weights is None:
            w2 = None
        tp, fp, total_true, total_false = _positive_counts(t2, p2, w2, self._thresholds,
                                                           self._evenly, True)
        self.true_positives += tp
        self.false_positives += fp
        self.true_negatives += total_false - fp
        self.false_negatives += total_true - tp

    def _average(self, by_label: np.ndarray) -> float:
        if self.label_weights is None:
            return float(np.mean(by_label)) if by_label.size else 0.0
        return float(_divide_no_nan(np.sum(by_label * self.label_weights), np.sum(self.label_weights)))

    def _interpolate_pr_auc(self) -> float:
        n = self.num_thresholds
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        dtp = tp[:n - 1] - tp[1:]
        p = tp + fp
        dp = p[:n - 1] - p[1:]
        prec_slope = _divide_no_nan(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - prec_slope * p[1:]
        both = (p[:n - 1] > 0) & (p[1:] > 0)
        # > 0 wherever it is not 1: both counts positive
        safe_p_ratio = np.where(both, _divide_no_nan(p[:n - 1], np.maximum(p[1:], 0)), 1.0)
        terms = _divide_no_nan(prec_slope * (dtp + intercept * np.log(safe_p_ratio)),
                               np.maximum(tp[1:] + fn[1:], 0))
        if self.multi_label:
            return self._average(np.sum(terms, axis=0))
        return float(np.sum(terms))

    def result(self) -> float:
        if self.curve == "PR" and self.summation_method == "interpolation":
            return self._interpolate_pr_auc()
        n = self.num_thresholds
        tp, fp, tn, fn = (self.true_positives, self.false_positives, self.true_negatives,
                          self.false_negatives)
        recall = _divide_no_nan(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _divide_no_nan(fp, fp + tn), recall
        elif self.curve == "PR":
            x, y = recall, _divide_no_nan(tp, tp + fp)
        else:  # PRGAIN
            scale = _divide_no_nan(tp + fn, tn + fp)
            recall_gain = 1.0 - scale * _divide_no_nan(fn, tp)
            precision_gain = 1.0 - scale * _divide_no_nan(fp, tp)
            recall_gain = np.maximum(np.where(tp == 0, 0.0, recall_gain), 0.0)
            precision_gain = np.where(tp == 0, 1.0, precision_gain)
            x, y = recall_gain, precision_gain
        if self.summation_method == "interpolation":
            heights = (y[:n - 1] + y[1:]) / 2.0
        elif self.summation_method == "minoring":
            heights = np.minimum(y[:n - 1], y[1:])
        else:
            heights = np.maximum(y[:n - 1], y[1:])
        terms = (x[:n - 1] - x[1:]) * heights
        if self.multi_label:
            return self._average(np.sum(terms, axis=0))
        return float(np.sum(terms))

    def get_config(self):
        config: Dict[str, Any] = {
            "num_thresholds": self.num_thresholds, "curve": self.curve,
            "summation_method": self.summation_method, "name": self.name,
            "multi_label": self.multi_label, "num_labels": self.num_labels,
            "label_weights": None if self.label_weights is None else [float(v) for v in self.label_weights],
            "from_logits": self.from_logits,
        }
        if self._init_from_thresholds:
            config["thresholds"] = self.thresholds[1:-1]
        return config


class FBetaScore(Metric):
    """Keras 3's ``FBetaScore``: ``(1 + beta^2) P R / (beta^2 P + R)`` from weighted per-class
    counts (an epsilon of 1e-7 in each denominator, as Keras).

    Parameters
    ----------
    average
        ``None`` (one score per class: ``result()`` returns a float64 array ``[K]``),
        ``'micro'`` (counts pooled over classes), ``'macro'`` (mean of the per-class scores) or
        ``'weighted'`` (mean weighted by each class's weighted support).
    beta
        Positive weight of recall.
    threshold
        In (0, 1]: predictions ``> threshold`` are positive; None: the highest prediction of each
        entry (all tied maxima, and not an all-zero row).
    name
        Key in the logs.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` (Keras) or ``[N, T, K]`` (every step one entry).
    """

    def __init__(self, average: Optional[str] = None, beta: float = 1.0,
                 threshold: Optional[float] = None, name: str = "fbeta_score") -> None:
        super().__init__(name)
        if average not in (None, "micro", "macro", "weighted"):
            raise ValueError(f"average: expected one of None, 'micro', 'macro', 'weighted', got {average!r}")
        if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, (int, float, np.integer, np.floating)) \
                or not math.isfinite(beta) or beta <= 0:
            raise ValueError(f"beta: expected a float > 0, got {beta!r}")
        if threshold is not None and (isinstance(threshold, (bool, np.bool_))
                                      or not isinstance(threshold, (int, float, np.integer, np.floating))
                                      or not 0.0 < float(threshold) <= 1.0):
            raise ValueError(f"threshold: expected None or a float in (0, 1], got {threshold!r}")
        self.average = average
        self.beta = float(beta)
        self.threshold = None if threshold is None else float(threshold)
        self._classes: Optional[int] = None
        self.reset_state()

    _state_attrs = ("true_positives", "false_positives", "false_negatives", "intermediate_weights")

    def set_state(self, state: Dict[str, np.ndarray]) -> None:
        super().set_state(state)
        if self.average != "micro" and self.true_positives.size:
            self._classes = int(self.true_positives.shape[0])  # as if it had seen a batch

    def reset_state(self) -> None:
        shape: Tuple[int, ...] = () if self.average == "micro" else (self._classes or 0,)
        self.true_positives = np.zeros(shape)
        self.false_positives = np.zeros(shape)
        self.false_negatives = np.zeros(shape)
        self.intermediate_weights = np.zeros(shape)

    def update_state(self, y_true: Any, y_pred: Any, mask: Any = None, sample_weight: Any = None) -> None:
        p = np.asarray(y_pred)
        t = np.asarray(y_true)
        if p.ndim < 2:
            raise ValueError(f"y_pred: expected [N, K] (or [N, T, K]) scores, got shape {shape_str(p.shape)}")
        if p.dtype.kind not in "fiub" or t.dtype.kind not in "fiub":
            raise TypeError(f"y_true, y_pred: expected numeric arrays, got dtypes {t.dtype}, {p.dtype}")
        _check_same(t, p)
        K = p.shape[-1]
        if self._classes is None:
            self._classes = K
            self.reset_state()
        elif K != self._classes:
            raise ValueError(f"y_pred: expected {self._classes} classes in the last axis (as in the "
                             f"first batch), got {K}")
        w, _ = _entry_weights(mask, sample_weight, p.shape[:-1])
        p2 = p.reshape(-1, K).astype(np.float64)
        t2 = t.reshape(-1, K).astype(np.float64)
        if self.threshold is None:
            yp = (p2 >= p2.max(axis=-1, keepdims=True)) & (np.abs(p2) > 1e-9)
        else:
            yp = p2 > self.threshold
        yp = yp.astype(np.float64)
        w2 = None if w is None else w.reshape(-1, 1)
        axis = None if self.average == "micro" else 0

        def wsum(v: np.ndarray) -> np.ndarray:
            return np.sum(v if w2 is None else v * w2, axis=axis)

        self.true_positives = self.true_positives + wsum(yp * t2)
        self.false_positives = self.false_positives + wsum(yp * (1.0 - t2))
        self.false_negatives = self.false_negatives + wsum((1.0 - yp) * t2)
        self.intermediate_weights = self.intermediate_weights + wsum(t2)

    def result(self) -> Any:
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        precision = tp / (tp + fp + EPSILON)
        recall = tp / (tp + fn + EPSILON)
        b2 = self.beta ** 2
        f = precision * recall / (b2 * precision + recall + EPSILON) * (1.0 + b2)
        if self.average == "weighted":
            weights = self.intermediate_weights / (np.sum(self.intermediate_weights) + EPSILON)
            return float(np.sum(f * weights))
        if self.average is not None:
            return float(np.mean(f)) if np.size(f) else 0.0
        return _vector(f)

    def get_config(self):
        return {"average": self.average, "beta": self.beta, "threshold": self.threshold,
                "name": self.name}


class F1Score(FBetaScore):
    """Keras 3's ``F1Score``: :class:`FBetaScore` with ``beta = 1``.

    Parameters
    ----------
    average, threshold, name
        As :class:`FBetaScore`.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` (Keras) or ``[N, T, K]``.
    """

    def __init__(self, average: Optional[str] = None, threshold: Optional[float] = None,
                 name: str = "f1_score") -> None:
        super().__init__(average=average, beta=1.0, threshold=threshold, name=name)

    def get_config(self):
        return {"average": self.average, "threshold": self.threshold, "name": self.name}


# ---- registry ------------------------------------------------------------------------------------

_BY_NAME: Dict[str, Callable[..., Metric]] = {
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "mae": MeanAbsoluteError, "MAE": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "mse": MeanSquaredError, "MSE": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mape": MeanAbsolutePercentageError, "MAPE": MeanAbsolutePercentageError,
    "mean_absolute_percentage_error": MeanAbsolutePercentageError,
    "root_mean_squared_error": RootMeanSquaredError,
    "precision": Precision, "recall": Recall, "auc": AUC,
    "f1_score": F1Score, "f_beta_score": FBetaScore,
}

_CLASSES: Dict[str, Type[Metric]] = {c.__name__: c for c in (
    Accuracy, CategoricalAccuracy, SparseCategoricalAccuracy, BinaryAccuracy, TopKCategoricalAccuracy,
    SparseTopKCategoricalAccuracy, MeanAbsoluteError, MeanSquaredError, MeanAbsolutePercentageError,
    RootMeanSquaredError, Precision, Recall, AUC, FBetaScore, F1Score)}


def get(identifier: Union[str, Metric, Dict[str, Any]], loss: Any = None) -> Metric:
    """A fresh :class:`Metric` from a Keras name (``'accuracy'``, ``'acc'``, ``'mae'``,
    ``'precision'``, ``'auc'``, ``'f1_score'``, ``'root_mean_squared_error'``, ...) or a class name
    (named after the string, as Keras's ``compile`` names its metrics), a serialized dict, or a
    Metric (returned as is). ``loss`` (a :class:`rnnkit.losses.Loss`) guides the resolution of
    ``'accuracy'``."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, dict):
        metric = deserialize(identifier)
        if isinstance(metric, Accuracy):  # 'accuracy' resolves against the compiled loss
            return Accuracy(name=metric.name, loss=loss)
        return metric
    if isinstance(identifier, str):
        if identifier in ("accuracy", "acc"):
            return Accuracy(name=identifier, loss=loss)
        make = _BY_NAME.get(identifier) or _CLASSES.get(identifier)
        if make is Accuracy:
            return Accuracy(name=identifier, loss=loss)
        if make is None:
            hint = " (Keras's name is 'root_mean_squared_error')" if identifier.lower() == "rmse" else ""
            raise ValueError(f"metrics: unknown metric {identifier!r}{hint}; expected one of "
                             f"{sorted(['accuracy', 'acc', *_BY_NAME])}, a class name "
                             f"{sorted(_CLASSES)} or a Metric instance")
        return make(name=identifier)
    raise TypeError(f"metrics: expected a str, dict or Metric, got {type(identifier).__name__}")


def serialize(metric: Metric) -> Dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` for the built-in metrics."""
    if type(metric) not in _CLASSES.values():
        raise TypeError(f"metric: only the built-in metrics can be serialized, got "
                        f"{type(metric).__name__}")
    return serialize_object(metric, Metric, "metric")


def deserialize(config: Dict[str, Any]) -> Metric:
    """Inverse of :func:`serialize`."""
    return deserialize_object(config, _CLASSES.get, "metric class", _CLASSES)
