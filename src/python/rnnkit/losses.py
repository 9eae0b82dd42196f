"""Losses with Keras 3's names, arguments, reduction and sample weights, returning the value and
its gradient.

Every loss is computed per *entry* (per sample, or per sample and time step for ``[N, T, K]``
predictions): the last axis (the class/feature axis; ``axis=`` where Keras has it) is reduced the
way Keras does (cross-entropy and KL divergence sum over it, cosine similarity takes a dot
product, the others average over it). The per-entry losses are then weighted and reduced.

Weights, masks and reduction (Keras 3's ``reduce_weighted_values``)
-------------------------------------------------------------------
- ``sample_weight``: None or a numeric array broadcastable to the per-entry shape
  ``y_pred.shape[:-1]``, aligned from the left: ``[N]`` per sample (on ``[N, T]`` entries it applies
  to every step of its sample), ``[N, T]`` per step, a scalar, or the same with a trailing axis of
  1 (Keras squeezes it).
- ``mask``: None or a boolean ``y_pred.shape[:-1]`` array (what ``Embedding(mask_zero=True)`` or
  ``Masking`` produce): a masked entry counts as weight 0.
- ``reduction="sum_over_batch_size"`` (the default; ``"mean"`` is the same):
  ``sum(per_entry * w) / n`` with ``n`` the number of entries, or with a mask the number of valid
  entries (Keras 3's ``apply_mask`` rescales the weights by ``total / valid``); 0 when ``n == 0``.
  ``"sum"``: ``sum(per_entry * w)``. ``"mean_with_sample_weight"``: ``sum(per_entry * w) / sum(w)``
  (``w`` including the mask; ``n`` when neither is given). ``None`` / ``"none"``: :meth:`Loss.__call__`
  returns the weighted per-entry array (nothing to differentiate: the gradient methods refuse it).
- The gradient returned with the value is the exact gradient of that value.

Probabilities are clipped to ``[1e-7, 1 - 1e-7]`` like Keras (the gradient is zero where the
clip is active) and categorical predictions are renormalised to sum to one.
``from_logits=True`` uses a numerically stable log-softmax / log-sigmoid instead.
``label_smoothing`` (Keras's formulas): categorical targets become ``y (1 - ls) + ls / K``, binary
targets ``y (1 - ls) + ls / 2`` (``K`` is the size of the class axis; Keras 3 uses the size of the
last axis even with another ``axis``, which rnnkit does not copy). Keras 3 has no
``label_smoothing`` on the sparse loss; rnnkit's sparse loss takes it (keyword-only) with the
categorical formula on the one-hot labels, i.e. the same value as
``CategoricalCrossentropy(label_smoothing=ls)`` on one-hot targets.

Fused softmax/sigmoid
---------------------
When the predictions come out of a softmax (sigmoid), :meth:`Loss.logits_value_and_grad` gives
the gradient with respect to the *logits* directly, ``(p * sum(y) - y) * w / n``, without the
activation's Jacobian; the training loop uses it when the last layer is
``Dense(activation='softmax')`` with a (sparse) categorical cross-entropy, or
``activation='sigmoid'`` with binary cross-entropy (with or without label smoothing, weights and
masks; not with ``from_logits=True`` or a class axis other than the last).

User-defined losses
-------------------
rnnkit has no automatic differentiation, so a loss needs its gradient. The rule:

(a) subclass :class:`Loss` and implement ``call(y_true, y_pred)`` returning the per-entry losses
    (shape ``y_pred.shape[:-1]``) and ``gradient(y_true, y_pred)`` returning the derivative of
    each entry's loss w.r.t. its own row of ``y_pred`` (shape ``y_pred.shape``); the base class
    applies sample weights, the mask and the reduction (and its gradient)::

        class MeanFourthPower(rnnkit.losses.Loss):
            def call(self, y_true, y_pred):
                return np.mean((y_pred - y_true) ** 4, axis=-1)

            def gradient(self, y_true, y_pred):
                return 4 * (y_pred - y_true) ** 3 / y_pred.shape[-1]

        model.compile(loss=MeanFourthPower(), optimizer="adam")

(b) or wrap two plain functions with :func:`loss_function` (``loss_function(call, gradient)``);
    ``compile(loss=fn)`` / :func:`get` accept a plain callable ``fn(y_true, y_pred)`` only when it
    carries its gradient as an attribute ``fn.gradient``, and raise a TypeError explaining this rule
    otherwise.

``y_true`` reaches ``call``/``gradient`` as a NumPy array in ``y_pred``'s dtype. To save and load
a model compiled with such a loss, register the class (or the two functions) with
:func:`register`.

Shapes
------
- ``y_pred``: ``[N, K]`` or ``[N, T, K]`` (any rank >= 1; the last axis is the class/feature axis,
  or ``axis`` for the losses that take one).
- ``y_true``: the shape of ``y_pred`` (or ``y_pred.shape[:-1]`` when ``K == 1``); for the sparse
  loss the shape without the class axis (or with a trailing axis of size 1), integer labels in
  ``[0, K)`` (or ``ignore_class``).
- ``mask``: ``y_pred.shape[:-1]``; ``sample_weight``: broadcastable to it (see above).
- value: Python float; gradient: the shape and dtype of ``y_pred``.
"""
from __future__ import annotations

import inspect
import math
import re
from typing import Any, Callable, Dict, Optional, Tuple, Type, Union

import numpy as np

from rnnkit._checks import shape_str
from rnnkit._registry import deserialize_object, serialize_object
from rnnkit._rows import sum_last_axis
from rnnkit.activations import max_last_axis

__all__ = [
    "Loss", "FunctionLoss", "CategoricalCrossentropy", "SparseCategoricalCrossentropy",
    "BinaryCrossentropy", "MeanSquaredError", "MeanAbsoluteError", "MeanAbsolutePercentageError",
    "MeanSquaredLogarithmicError", "Huber", "LogCosh", "KLDivergence", "Poisson", "CosineSimilarity",
    "categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy",
    "mean_squared_error", "mean_absolute_error", "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error", "huber", "log_cosh", "logcosh", "kl_divergence", "kld",
    "poisson", "cosine_similarity", "mse", "mae", "mape", "msle", "loss_function", "register", "get",
    "serialize", "deserialize", "EPSILON", "REDUCTIONS",
]

EPSILON = 1e-7
"""Keras's fuzz factor for clipping probabilities."""

REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)
"""The ``reduction`` values Keras 3 accepts."""

ValueGrad = Tuple[float, np.ndarray]

_GRADIENT_RULE = (
    "rnnkit has no automatic differentiation, so a loss must come with its gradient: subclass "
    "rnnkit.losses.Loss and implement call(y_true, y_pred) -> per-entry losses (shape "
    "y_pred.shape[:-1]) and gradient(y_true, y_pred) -> d per-entry loss / d y_pred (shape "
    "y_pred.shape); or wrap two functions with rnnkit.losses.loss_function(call, gradient); or give "
    "the function a 'gradient' attribute (fn.gradient = grad_fn)")


def _snake_case(name: str) -> str:
    """Keras's ``to_snake_case``: ``'KLDivergence'`` -> ``'kl_divergence'``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# ---- argument checks -----------------------------------------------------------------------------

def _check_reduction(reduction: Any) -> Optional[str]:
    if reduction is not None and (not isinstance(reduction, str) or reduction not in REDUCTIONS):
        raise ValueError(f"reduction: expected one of {list(REDUCTIONS)}, got {reduction!r}")
    return reduction


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def _check_axis(axis: Any) -> int:
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis: expected an int, got {type(axis).__name__} {axis!r}")
    return int(axis)


def _check_float(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__} {value!r}")
    v = float(value)
    if not (math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi):
        interval = f"{'(' if lo_open else '['}{lo}, {hi}]"
        raise ValueError(f"{name}: expected a float in {interval}, got {value!r}")
    return v


# ---- input conversion ----------------------------------------------------------------------------

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
    if t.shape != y_pred.shape and y_pred.shape[-1] == 1 and t.shape == y_pred.shape[:-1]:
        t = t[..., None]  # Keras's squeeze_or_expand_to_same_rank: [N] targets for [N, 1] outputs
    if t.shape != y_pred.shape:
        raise ValueError(f"y_true: expected shape {shape_str(y_pred.shape)} (the shape of y_pred), "
                         f"got {shape_str(t.shape)}")
    if t.dtype != y_pred.dtype:
        t = t.astype(y_pred.dtype)
    return t


def _as_labels(y_true: Any, y_pred: np.ndarray, ignore_class: Optional[int] = None
               ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Integer labels of shape ``y_pred.shape[:-1]`` in ``[0, K)``, and (with ``ignore_class``) the
    boolean array of the entries whose label is not ``ignore_class`` (their labels become 0)."""
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
    elif t.dtype.kind == "b":
        t = t.astype(np.int64)
    elif t.dtype.kind not in "iu":
        raise TypeError(f"y_true: expected integer class labels, got dtype {t.dtype}")
    valid = None
    if ignore_class is not None:
        valid = t != ignore_class
        t = np.where(valid, t, 0)
    K = y_pred.shape[-1]
    if t.size:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= K:
            extra = f" (or ignore_class={ignore_class})" if ignore_class is not None else ""
            raise ValueError(f"y_true: labels must be in [0, {K}) for {K} classes{extra}, "
                             f"got values in [{lo}, {hi}]")
    return t.astype(np.intp, copy=False), valid


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


def _as_sample_weight(sample_weight: Any, lead: Tuple[int, ...]) -> Optional[np.ndarray]:
    """``sample_weight`` as a float64 array of shape ``lead`` (a read-only broadcast view), aligned
    from the left: ``[N]`` weights every entry of sample ``n``; a trailing axis of 1 is dropped."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "fiub":
        raise TypeError(f"sample_weight: expected a numeric array, got dtype {w.dtype}")
    given = w.shape
    if w.ndim == len(lead) + 1 and w.shape[-1] == 1:
        w = w[..., 0]
    ok = w.ndim <= len(lead)
    if ok:
        w = w.reshape(w.shape + (1,) * (len(lead) - w.ndim))
        ok = all(a == b or a == 1 for a, b in zip(w.shape, lead))
    if not ok:
        raise ValueError(f"sample_weight: expected a shape broadcastable to {shape_str(lead)} (y_pred's "
                         f"shape without the last axis, aligned from the left: [N] per sample, "
                         f"[N, T] per step), got {shape_str(given)}")
    return np.broadcast_to(w.astype(np.float64, copy=False), lead)


def _normalize_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis: expected an axis of y_pred's {ndim} axes (in [{-ndim}, {ndim})), got {axis}")
    return axis % ndim


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


# ---- the weighted reduction ----------------------------------------------------------------------

def _combine_masks(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def _reduce(per: np.ndarray, dper: Optional[np.ndarray], mask: Optional[np.ndarray],
            weight: Optional[np.ndarray], reduction: Optional[str]) -> Tuple[Any, Optional[np.ndarray]]:
    """Keras 3's weighted reduction of the per-entry losses ``per`` (shape ``lead``); scales the
    per-entry gradients ``dper`` (shape ``lead + (K,)``) in place by ``d value / d per``.

    Returns the value (a float; the weighted per-entry array for ``reduction=None``) and ``dper``.
    Whatever a masked entry's loss is (even NaN) never reaches the value; its gradient row is
    multiplied by 0."""
    n = per.size
    if reduction is None or reduction == "none":
        if mask is not None:
            per = np.where(mask, per, 0)
            weight = mask if weight is None else weight * mask
        return (per.copy() if weight is None else (per * weight).astype(per.dtype, copy=False)), None
    if mask is None and weight is None:  # the common case: one pass over the gradient
        divisor = 1.0 if reduction == "sum" else float(n)
        if divisor == 0.0:
            return 0.0, dper
        if dper is not None:
            dper *= dper.dtype.type(1.0 / divisor)
        return float(np.sum(per, dtype=np.float64)) / divisor, dper
    if mask is None:
        w = weight
    else:
        w = mask.astype(np.float64) if weight is None else weight * mask
    assert w is not None
    if reduction == "sum":
        divisor = 1.0
    elif reduction == "mean_with_sample_weight":
        divisor = float(np.sum(w))
    elif mask is not None:  # "sum_over_batch_size" / "mean": Keras rescales by total / valid
        divisor = float(np.count_nonzero(mask))
    else:
        divisor = float(n)
    if divisor == 0.0:  # Keras's divide_no_nan
        if dper is not None:
            dper.fill(0)
        return 0.0, dper
    if mask is None:
        total = float(np.sum(per * w, dtype=np.float64))
    elif weight is None:
        total = float(np.sum(per[mask], dtype=np.float64))
    else:
        total = float(np.sum(per[mask] * w[mask], dtype=np.float64))
    if dper is not None:
        dper *= (w * (1.0 / divisor)).astype(dper.dtype)[..., None]
    return total / divisor, dper


# ---- the base class ------------------------------------------------------------------------------

class Loss:
    """Base class: per-entry losses, weighted and reduced to a scalar, with the gradient w.r.t. the
    predictions.

    Subclass it for a custom loss by implementing :meth:`call` and :meth:`gradient` (see the
    module docstring); the base class does the weighting, masking and reduction.

    Parameters
    ----------
    name
        The loss's name (default: the class name in snake case, as Keras).
    reduction
        ``"sum_over_batch_size"`` (default), ``"mean"``, ``"sum"``, ``"mean_with_sample_weight"``,
        or ``None`` / ``"none"`` (``__call__`` returns the weighted per-entry losses).

    Shapes
    ------
    See the module docstring: ``y_pred`` ``[..., K]``, ``mask`` ``y_pred.shape[:-1]``,
    ``sample_weight`` broadcastable to it, gradient shaped like ``y_pred``.
    """

    fusable_activation: Optional[str] = None
    """The output activation whose Jacobian :meth:`logits_value_and_grad` folds in, if any."""

    _axis: int = -1  # the class/feature axis reduced per entry

    def __init__(self, name: Optional[str] = None, reduction: Optional[str] = "sum_over_batch_size") -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name: expected a str, got {type(name).__name__}")
        self.name = _snake_case(type(self).__name__) if name is None else name
        self.reduction = _check_reduction(reduction)

    # ---- what a custom loss implements -----------------------------------------------------------
    def call(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """Per-entry losses, shape ``y_pred.shape[:-1]`` (what Keras's ``Loss.call`` returns);
        built-in losses implement it, a custom loss overrides it."""
        if type(self)._entries is Loss._entries:
            raise NotImplementedError(f"{type(self).__name__}.call is not implemented. {_GRADIENT_RULE}")
        p = _as_pred(y_pred)
        pm, yt, _ = self._moved(p, y_true)
        per, _, valid = self._entries(yt, pm, need_grad=False)
        return per if valid is None else np.where(valid, per, 0)

    def gradient(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """``d call(y_true, y_pred)[...] / d y_pred[..., k]``: each entry's loss differentiated
        w.r.t. its own row of ``y_pred`` (shape ``y_pred.shape``); a custom loss overrides it."""
        if type(self)._entries is Loss._entries:
            raise NotImplementedError(f"{type(self).__name__}.gradient is not implemented. {_GRADIENT_RULE}")
        p = _as_pred(y_pred)
        pm, yt, ax = self._moved(p, y_true)
        _, d, valid = self._entries(yt, pm, need_grad=True)
        assert d is not None
        if valid is not None:
            d[~valid] = 0
        return self._move_back(d, ax)

    # ---- the public protocol (used by the training loop) -----------------------------------------
    def __call__(self, y_true: Any, y_pred: Any, mask: Any = None, sample_weight: Any = None) -> Any:
        """The reduced loss value (a float; the weighted per-entry losses for ``reduction=None``)."""
        p = _as_pred(y_pred)
        pm, yt, _ = self._moved(p, y_true)
        lead = pm.shape[:-1]
        m = _as_mask(mask, lead)
        w = _as_sample_weight(sample_weight, lead)
        per, _, valid = self._entries(yt, pm, need_grad=False)
        return _reduce(per, None, _combine_masks(m, valid), w, self.reduction)[0]

    def value_and_grad(self, y_true: Any, y_pred: Any, mask: Any = None,
                       sample_weight: Any = None) -> ValueGrad:
        """The reduced loss and its gradient w.r.t. ``y_pred`` (same shape and dtype)."""
        self._require_scalar("value_and_grad")
        p = _as_pred(y_pred)
        pm, yt, ax = self._moved(p, y_true)
        lead = pm.shape[:-1]
        m = _as_mask(mask, lead)
        w = _as_sample_weight(sample_weight, lead)
        per, dper, valid = self._entries(yt, pm, need_grad=True)
        value, grad = _reduce(per, dper, _combine_masks(m, valid), w, self.reduction)
        assert grad is not None
        return value, self._move_back(grad, ax)

    def logits_value_and_grad(self, y_true: Any, probs: Any, logits: Any = None, mask: Any = None,
                              sample_weight: Any = None) -> ValueGrad:
        """For predictions ``probs = activation(logits)`` with ``activation`` the loss's
        :attr:`fusable_activation`: the loss and its gradient w.r.t. the **logits**, computed
        without the activation's Jacobian. ``logits`` (optional) give an exact value where the
        probabilities underflow; without them the value uses the clipped probabilities."""
        if self.fusable_activation is None:
            raise TypeError(self._no_fusion_reason())
        self._require_scalar("logits_value_and_grad")
        p = _as_pred(probs)
        lead = p.shape[:-1]
        m = _as_mask(mask, lead)
        w = _as_sample_weight(sample_weight, lead)
        z = None
        if logits is not None:
            z = np.asarray(logits)
            if z.shape != p.shape:
                raise ValueError(f"logits: expected shape {shape_str(p.shape)} (the shape of probs), "
                                 f"got {shape_str(z.shape)}")
            if z.dtype != p.dtype:
                z = z.astype(p.dtype)
        per, d, valid = self._fused_entries(y_true, p, z)
        return _reduce(per, d, _combine_masks(m, valid), w, self.reduction)  # type: ignore[return-value]

    def per_sample(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """Unweighted, unreduced losses, shape ``y_pred.shape[:-1]`` (what Keras's loss functions
        return); the same as :meth:`call`."""
        return self.call(y_true, y_pred)

    # ---- internals -------------------------------------------------------------------------------
    def _require_scalar(self, what: str) -> None:
        if self.reduction is None or self.reduction == "none":
            raise ValueError(f"reduction: {type(self).__name__}.{what} needs a scalar loss to "
                             f"differentiate, got reduction={self.reduction!r}; use "
                             f"'sum_over_batch_size' (Keras's default), 'mean', 'sum' or "
                             f"'mean_with_sample_weight'")

    def _no_fusion_reason(self) -> str:
        return f"{type(self).__name__} cannot be fused with an output activation"

    def _moved(self, p: np.ndarray, y_true: Any) -> Tuple[np.ndarray, Any, Optional[int]]:
        """``y_pred`` (and a ``y_true`` of the same rank) with the class axis moved last."""
        if self._axis == -1:
            return p, y_true, None
        ax = _normalize_axis(self._axis, p.ndim)
        if ax == p.ndim - 1:
            return p, y_true, None
        t = np.asarray(y_true)
        if t.ndim == p.ndim:
            t = np.moveaxis(t, ax, -1)
        return np.moveaxis(p, ax, -1), t, ax

    @staticmethod
    def _move_back(d: np.ndarray, ax: Optional[int]) -> np.ndarray:
        return d if ax is None else np.moveaxis(d, -1, ax)

    def _entries(self, y_true: Any, p: np.ndarray, need_grad: bool
                 ) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        """Per-entry losses (``lead``), their gradients (``lead + (K,)``, a fresh array the caller
        may scale in place) and the entries that count (None: all). A custom loss gets here
        through :meth:`call` and :meth:`gradient`."""
        t = np.asarray(y_true)
        if t.dtype.kind not in "fiub":
            raise TypeError(f"y_true: expected a numeric array, got dtype {t.dtype}")
        if t.dtype != p.dtype:
            t = t.astype(p.dtype)
        cls = type(self).__name__
        lead = p.shape[:-1]
        per = np.asarray(self.call(t, p))
        if per.shape != lead:
            raise ValueError(f"{cls}.call: expected per-entry losses of shape {shape_str(lead)} "
                             f"(y_pred's shape without the last axis), got {shape_str(per.shape)}")
        if per.dtype.kind != "f":
            per = per.astype(p.dtype)
        if not need_grad:
            return per, None, None
        g = self.gradient(t, p)
        if g is None:
            raise TypeError(f"{cls}.gradient returned None. {_GRADIENT_RULE}")
        g = np.array(g, dtype=p.dtype, copy=True)  # scaled in place below; never alias y_pred
        if g.shape != p.shape:
            raise ValueError(f"{cls}.gradient: expected the gradient of shape {shape_str(p.shape)} "
                             f"(the shape of y_pred), got {shape_str(g.shape)}")
        return per, g, None

    def _fused_entries(self, y_true: Any, p: np.ndarray, z: Optional[np.ndarray]
                       ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        raise TypeError(self._no_fusion_reason())

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Loss":
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class FunctionLoss(Loss):
    """A loss from two plain functions (built by :func:`loss_function`).

    Parameters
    ----------
    fn
        ``fn(y_true, y_pred) -> per-entry losses`` (shape ``y_pred.shape[:-1]``).
    gradient
        ``gradient(y_true, y_pred) -> d per-entry loss / d y_pred`` (shape ``y_pred.shape``).
    name
        Default: ``fn.__name__``.
    reduction
        As :class:`Loss`.

    Shapes
    ------
    As :class:`Loss`.
    """

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], Any],
                 gradient: Callable[[np.ndarray, np.ndarray], Any], name: Optional[str] = None,
                 reduction: Optional[str] = "sum_over_batch_size") -> None:
        if not callable(fn):
            raise TypeError(f"fn: expected a callable fn(y_true, y_pred), got {type(fn).__name__}")
        if not callable(gradient):
            raise TypeError(f"gradient: expected a callable gradient(y_true, y_pred), got "
                            f"{type(gradient).__name__}")
        super().__init__(name=name if name is not None else getattr(fn, "__name__", "function_loss"),
                         reduction=reduction)
        self.fn = fn
        self.gradient_fn = gradient

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)

    def gradient(self, y_true, y_pred):
        return self.gradient_fn(y_true, y_pred)

    def get_config(self):
        return {"fn": _function_key(self.fn), "gradient": _function_key(self.gradient_fn),
                "name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("fn", "gradient"):
            ref = config.get(key)
            if not isinstance(ref, str) or ref not in _CUSTOM_FUNCTIONS:
                raise ValueError(f"config: unknown loss function {ref!r} for {key!r}; register it "
                                 f"with rnnkit.losses.register before loading")
            config[key] = _CUSTOM_FUNCTIONS[ref]
        return cls(**config)


def loss_function(fn: Callable[[np.ndarray, np.ndarray], Any],
                  gradient: Callable[[np.ndarray, np.ndarray], Any], name: Optional[str] = None,
                  reduction: Optional[str] = "sum_over_batch_size") -> FunctionLoss:
    """A :class:`Loss` from ``fn(y_true, y_pred) -> per-entry losses`` and
    ``gradient(y_true, y_pred) -> d per-entry loss / d y_pred`` (see the module docstring).

    Shapes
    ------
    ``fn`` returns ``y_pred.shape[:-1]``; ``gradient`` returns ``y_pred.shape``.
    """
    return FunctionLoss(fn, gradient, name=name, reduction=reduction)


# ---- cross-entropies -----------------------------------------------------------------------------

def _cce_entries(y: np.ndarray, p: np.ndarray, from_logits: bool, need_grad: bool
                 ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``-sum_k y_k log q_k`` with ``q`` the softmax of ``p`` (``from_logits``) or ``p``
    renormalised and clipped, and its gradient w.r.t. ``p``."""
    if from_logits:
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


def _cce_fused(y: np.ndarray, p: np.ndarray, z: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    if z is not None:
        per = -sum_last_axis(y * _log_softmax(z))
    else:
        per = -sum_last_axis(y * np.log(np.clip(p, EPSILON, 1.0 - EPSILON)))
    d = p * sum_last_axis(y, keepdims=True)
    d -= y
    return per, d


class _CrossentropyBase(Loss):
    def _init_ce(self, from_logits: Any, axis: Any, activation: str) -> None:
        self.from_logits = _check_bool("from_logits", from_logits)
        self.axis = _check_axis(axis)
        self._axis = self.axis
        self.fusable_activation = None if (self.from_logits or self.axis != -1) else activation

    def _no_fusion_reason(self) -> str:
        if self.from_logits:
            return (f"{type(self).__name__}(from_logits=True) already takes logits; call "
                    f"value_and_grad")
        return (f"{type(self).__name__}(axis={self.axis}) cannot be fused with an output activation "
                f"over the last axis")


class CategoricalCrossentropy(_CrossentropyBase):
    """``-sum_k y_k log p_k`` per entry (Keras's ``CategoricalCrossentropy``).

    Parameters
    ----------
    from_logits
        ``y_pred`` are unnormalised logits (stable log-softmax) instead of probabilities.
    label_smoothing
        In ``[0, 1]``: targets become ``y (1 - ls) + ls / K``.
    axis
        The class axis (default the last; another axis is not fused with a softmax).
    reduction, name
        As :class:`Loss`.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``mask``: ``[N]`` or ``[N, T]``.
    """

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 reduction: Optional[str] = "sum_over_batch_size",
                 name: str = "categorical_crossentropy") -> None:
        super().__init__(name=name, reduction=reduction)
        self.label_smoothing = _check_float("label_smoothing", label_smoothing, 0.0, 1.0)
        self._init_ce(from_logits, axis, "softmax")

    def _targets(self, y_true: Any, p: np.ndarray) -> np.ndarray:
        y = _as_dense_true(y_true, p)
        if self.label_smoothing:
            y = y * (1.0 - self.label_smoothing) + self.label_smoothing / p.shape[-1]
        return y

    def _entries(self, y_true, p, need_grad):
        per, d = _cce_entries(self._targets(y_true, p), p, self.from_logits, need_grad)
        return per, d, None

    def _fused_entries(self, y_true, p, z):
        per, d = _cce_fused(self._targets(y_true, p), p, z)
        return per, d, None

    def get_config(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing,
                "axis": self.axis, "reduction": self.reduction, "name": self.name}


class SparseCategoricalCrossentropy(_CrossentropyBase):
    """``-log p[label]`` per entry with integer labels (Keras's ``SparseCategoricalCrossentropy``).

    Parameters
    ----------
    from_logits
        ``y_pred`` are logits (stable log-softmax).
    ignore_class
        A label value (e.g. -1 or 255, possibly outside ``[0, K)``) whose entries are left out like
        masked ones (Keras: the mean is over the other entries).
    reduction, axis, name
        As :class:`CategoricalCrossentropy`.
    label_smoothing
        Keyword-only (not in Keras 3's sparse loss): the categorical formula on the one-hot labels,
        ``onehot (1 - ls) + ls / K``.

    Shapes
    ------
    ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``y_true``: ``[N]`` / ``[N, T]`` (or with a trailing
    axis of 1) integer labels in ``[0, K)``; ``mask``: ``y_pred.shape[:-1]``.
    """

    def __init__(self, from_logits: bool = False, ignore_class: Optional[int] = None,
                 reduction: Optional[str] = "sum_over_batch_size", axis: int = -1,
                 name: str = "sparse_categorical_crossentropy", *, label_smoothing: float = 0.0) -> None:
        super().__init__(name=name, reduction=reduction)
        if ignore_class is not None and (isinstance(ignore_class, (bool, np.bool_))
                                         or not isinstance(ignore_class, (int, np.integer))):
            raise TypeError(f"ignore_class: expected None or an int, got {type(ignore_class).__name__} "
                            f"{ignore_class!r}")
        self.ignore_class = None if ignore_class is None else int(ignore_class)
        self.label_smoothing = _check_float("label_smoothing", label_smoothing, 0.0, 1.0)
        self._init_ce(from_logits, axis, "softmax")

    @staticmethod
    def _pick(a: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, labels[..., None], axis=-1)[..., 0]

    def _smoothed(self, labels: np.ndarray, p: np.ndarray) -> np.ndarray:
        K = p.shape[-1]
        ls = self.label_smoothing
        y = np.full(p.shape, ls / K, dtype=p.dtype)
        np.put_along_axis(y, labels[..., None], p.dtype.type(1.0 - ls + ls / K), axis=-1)
        return y

    def _entries(self, y_true, p, need_grad):
        labels, valid = _as_labels(y_true, p, self.ignore_class)
        if self.label_smoothing:
            per, d = _cce_entries(self._smoothed(labels, p), p, self.from_logits, need_grad)
            return per, d, valid
        if self.from_logits:
            logp = _log_softmax(p)
            per = -self._pick(logp, labels)
            if not need_grad:
                return per, None, valid
            d = np.exp(logp)
            np.put_along_axis(d, labels[..., None], self._pick(d, labels)[..., None] - 1.0, axis=-1)
            return per, d, valid
        s = sum_last_axis(p, keepdims=True)
        q = p / s
        q_l = self._pick(q, labels)
        c_l = np.clip(q_l, EPSILON, 1.0 - EPSILON)
        per = -np.log(c_l)
        if not need_grad:
            return per, None, valid
        # gq = -1/q_l at the label (0 where clipped); d_p = (gq - sum(gq * q)) / s.
        active = (q_l >= EPSILON) & (q_l <= 1.0 - EPSILON)
        g_l = np.where(active, -1.0 / c_l, 0.0).astype(p.dtype)
        d = np.broadcast_to(-(g_l * q_l)[..., None], p.shape).copy()
        np.put_along_axis(d, labels[..., None], (g_l - g_l * q_l)[..., None], axis=-1)
        d /= s
        return per, d, valid

    def _fused_entries(self, y_true, p, z):
        labels, valid = _as_labels(y_true, p, self.ignore_class)
        if self.label_smoothing:
            per, d = _cce_fused(self._smoothed(labels, p), p, z)
            return per, d, valid
        if z is not None:
            per = -self._pick(_log_softmax(z), labels)
        else:
            per = -np.log(np.clip(self._pick(p, labels), EPSILON, 1.0 - EPSILON))
        d = p.copy()
        np.put_along_axis(d, labels[..., None], self._pick(d, labels)[..., None] - 1.0, axis=-1)
        return per, d, valid

    def get_config(self):
        return {"from_logits": self.from_logits, "ignore_class": self.ignore_class,
                "reduction": self.reduction, "axis": self.axis, "name": self.name,
                "label_smoothing": self.label_smoothing}


class BinaryCrossentropy(_CrossentropyBase):
    """``-(y log p + (1 - y) log(1 - p))`` averaged over the last axis (Keras's
    ``BinaryCrossentropy``).

    Parameters
    ----------
    from_logits
        ``y_pred`` are logits (stable log-sigmoid).
    label_smoothing
        In ``[0, 1]``: targets become ``y (1 - ls) + ls / 2``.
    axis
        The axis averaged over (default the last).
    reduction, name
        As :class:`Loss`.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]`` (``K`` independent binary targets, often
    1); ``mask``: ``y_pred.shape[:-1]``.
    """

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 reduction: Optional[str] = "sum_over_batch_size", name: str = "binary_crossentropy") -> None:
        super().__init__(name=name, reduction=reduction)
        self.label_smoothing = _check_float("label_smoothing", label_smoothing, 0.0, 1.0)
        self._init_ce(from_logits, axis, "sigmoid")

    @staticmethod
    def _from_logits(y: np.ndarray, z: np.ndarray) -> np.ndarray:
        # max(z, 0) - z y + log(1 + exp(-|z|)): stable for any z.
        return np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))

    def _targets(self, y_true: Any, p: np.ndarray) -> np.ndarray:
        y = _as_dense_true(y_true, p)
        if self.label_smoothing:
            y = y * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return y

    def _entries(self, y_true, p, need_grad):
        y = self._targets(y_true, p)
        K = p.shape[-1]
        if self.from_logits:
            per = self._from_logits(y, p).mean(axis=-1)
            if not need_grad:
                return per, None, None
            d = _sigmoid(p)
            d -= y
            d *= 1.0 / K
            return per, d, None
        c = np.clip(p, EPSILON, 1.0 - EPSILON)
        per = -(y * np.log(c) + (1.0 - y) * np.log1p(-c)).mean(axis=-1)
        if not need_grad:
            return per, None, None
        active = (p >= EPSILON) & (p <= 1.0 - EPSILON)
        d = np.where(active, (c - y) / (c * (1.0 - c)), 0.0).astype(p.dtype)
        d *= 1.0 / K
        return per, d, None

    def _fused_entries(self, y_true, p, z):
        y = self._targets(y_true, p)
        if z is not None:
            per = self._from_logits(y, z).mean(axis=-1)
        else:
            c = np.clip(p, EPSILON, 1.0 - EPSILON)
            per = -(y * np.log(c) + (1.0 - y) * np.log1p(-c)).mean(axis=-1)
        d = p - y
        d *= 1.0 / p.shape[-1]
        return per, d, None

    def get_config(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing,
                "axis": self.axis, "reduction": self.reduction, "name": self.name}


# ---- regression and distribution losses ----------------------------------------------------------

class _Elementwise(Loss):
    """``mean_k f(y_k, p_k)`` per entry with ``f`` and ``scale * df/dp`` (a fresh array; ``scale``
    is ``1 / K``, the mean's factor) given by :meth:`_f`."""

    def _f(self, y: np.ndarray, p: np.ndarray, need_grad: bool, scale: float
           ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        raise NotImplementedError

    def _entries(self, y_true, p, need_grad):
        y = _as_dense_true(y_true, p)
        f, df = self._f(y, p, need_grad, 1.0 / p.shape[-1])
        return f.mean(axis=-1), df, None

    def get_config(self):
        return {"reduction": self.reduction, "name": self.name}


class MeanSquaredError(_Elementwise):
    """``mean_k (y_k - p_k)^2`` per entry.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``mask``: ``y_pred.shape[:-1]``.
    """

    def __init__(self, reduction: Optional[str] = "sum_over_batch_size", name: str = "mean_squared_error") -> None:
        super().__init__(name=name, reduction=reduction)

    def _f(self, y, p, need_grad, scale):
        diff = p - y
        f = diff * diff
        if not need_grad:
            return f, None
        diff *= 2.0 * scale
        return f, diff


class MeanAbsoluteError(_Elementwise):
    """``mean_k |y_k - p_k|`` per entry; the gradient at ``p == y`` is 0.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``mask``: ``y_pred.shape[:-1]``.
    """

    def __init__(self, reduction: Optional[str] = "sum_over_batch_size", name: str = "mean_absolute_error") -> None:
        super().__init__(name=name, reduction=reduction)

    def _f(self, y, p, need_grad, scale):
        diff = p - y
        if not need_grad:
            return np.abs(diff), None
        d = np.sign(diff)
        d *= scale
        return np.abs(diff), d


class MeanAbsolutePercentageError(_Elementwise):
    """``100 mean_k |y_k - p_k| / max(|y_k|, 1e-7)`` per entry.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``mask``: ``y_pred.shape[:-1]``.
    """

    def __init__(self, reduction: Optional[str] = "sum_over_batch_size",
                 name: str = "mean_absolute_percentage_error") -> None:
        super().__init__(name=name, reduction=reduction)

    def _f(self, y, p, need_grad, scale):
        inv = 100.0 / np.maximum(np.abs(y), EPSILON)
        diff = p - y
        f = np.abs(diff) * inv
        if not need_grad:
            return f, None
        return f, (np.sign(diff) * (inv * scale)).astype(p.dtype, copy=False)


class MeanSquaredLogarithmicError(_Elementwise):
    """``mean_k (log(max(p_k, 1e-7) + 1) - log(max(y_k, 1e-7) + 1))^2`` per entry.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``mask``: ``y_pred.shape[:-1]``.
    """

    def __init__(self, reduction: Optional[str] = "sum_over_batch_size",
                 name: str = "mean_squared_logarithmic_error") -> None:
        super().__init__(name=name, reduction=reduction)

    def _f(self, y, p, need_grad, scale):
        pc = np.maximum(p, EPSILON)
        diff = np.log1p(pc) - np.log1p(np.maximum(y, EPSILON))
        f = diff * diff
        if not need_grad:
            return f, None
        return f, np.where(p > EPSILON, (2.0 * scale) * diff / (pc + 1.0), 0.0).astype(p.dtype)


class Huber(_Elementwise):
    """Keras's ``Huber``: ``0.5 e^2`` where ``|e| <= delta``, else ``delta |e| - 0.5 delta^2``, with
    ``e = p - y``, averaged over the last axis.

    Parameters
    ----------
    delta
        The (positive) point where the loss changes from quadratic to linear.
    reduction, name
        As :class:`Loss`.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``mask``: ``y_pred.shape[:-1]``.
    """

    def __init__(self, delta: float = 1.0, reduction: Optional[str] = "sum_over_batch_size",
                 name: str = "huber_loss") -> None:
        super().__init__(name=name, reduction=reduction)
        self.delta = _check_float("delta", delta, 0.0, math.inf, lo_open=True)

    def _f(self, y, p, need_grad, scale):
        e = p - y
        a = np.abs(e)
        quad = a <= self.delta
        f = np.where(quad, 0.5 * e * e, self.delta * a - 0.5 * self.delta ** 2)
        if not need_grad:
            return f, None
        d = np.where(quad, e, self.delta * np.sign(e)).astype(p.dtype, copy=False)
        d *= scale
        return f, d

    def get_config(self):
        return {"delta": self.delta, "reduction": self.reduction, "name": self.name}


class LogCosh(_Elementwise):
    """``mean_k log(cosh(p_k - y_k))`` per entry, computed stably as ``x + softplus(-2x) - log 2``.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``mask``: ``y_pred.shape[:-1]``.
    """

    def __init__(self, reduction: Optional[str] = "sum_over_batch_size", name: str = "log_cosh") -> None:
        super().__init__(name=name, reduction=reduction)

    def _f(self, y, p, need_grad, scale):
        x = p - y
        f = (x + np.logaddexp(0.0, -2.0 * x) - np.log(2.0)).astype(p.dtype, copy=False)
        if not need_grad:
            return f, None
        d = np.tanh(x)
        d *= scale
        return f, d


class Poisson(_Elementwise):
    """``mean_k (p_k - y_k log(p_k + 1e-7))`` per entry.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``mask``: ``y_pred.shape[:-1]``.
    """

    def __init__(self, reduction: Optional[str] = "sum_over_batch_size", name: str = "poisson") -> None:
        super().__init__(name=name, reduction=reduction)

    def _f(self, y, p, need_grad, scale):
        pe = p + EPSILON
        f = p - y * np.log(pe)
        if not need_grad:
            return f, None
        d = (1.0 - y / pe).astype(p.dtype, copy=False)
        d *= scale
        return f, d


class KLDivergence(Loss):
    """``sum_k y_k log(y_k / p_k)`` per entry with ``y`` and ``p`` clipped to ``[1e-7, 1]``
    (Keras's ``KLDivergence``; the gradient is zero where ``p`` is clipped).

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``mask``: ``y_pred.shape[:-1]``.
    """

    def __init__(self, reduction: Optional[str] = "sum_over_batch_size", name: str = "kl_divergence") -> None:
        super().__init__(name=name, reduction=reduction)

    def _entries(self, y_true, p, need_grad):
        y = np.clip(_as_dense_true(y_true, p), EPSILON, 1.0)
        c = np.clip(p, EPSILON, 1.0)
        per = sum_last_axis(y * np.log(y / c))
        if not need_grad:
            return per, None, None
        d = np.where((p >= EPSILON) & (p <= 1.0), -y / c, 0.0).astype(p.dtype)
        return per, d, None

    def get_config(self):
        return {"reduction": self.reduction, "name": self.name}


class CosineSimilarity(Loss):
    """``-sum_k l2_normalize(y)_k l2_normalize(p)_k`` per entry (Keras's ``CosineSimilarity``;
    a vector's norm is floored at 1e-7, so a zero vector gives 0).

    Parameters
    ----------
    axis
        The feature axis (default the last).
    reduction, name
        As :class:`Loss`.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; ``mask``: ``y_pred.shape[:-1]`` (the shape
    without ``axis``).
    """

    def __init__(self, axis: int = -1, reduction: Optional[str] = "sum_over_batch_size",
                 name: str = "cosine_similarity") -> None:
        super().__init__(name=name, reduction=reduction)
        self.axis = _check_axis(axis)
        self._axis = self.axis

    def _entries(self, y_true, p, need_grad):
        y = _as_dense_true(y_true, p)
        with np.errstate(divide="ignore"):  # a zero vector: 1/0 = inf, floored to 1/eps below
            yn = y * np.minimum(1.0 / np.sqrt(sum_last_axis(y * y, keepdims=True)), 1.0 / EPSILON)
            raw = 1.0 / np.sqrt(sum_last_axis(p * p, keepdims=True))
        inv = np.minimum(raw, 1.0 / EPSILON)
        pn = p * inv
        per = -sum_last_axis(yn * pn)
        if not need_grad:
            return per, None, None
        # d/dp of -(yn . p) inv: -inv (yn - (yn . pn) pn) where the norm is above the floor,
        # -yn / eps where it is floored (inv constant).
        d = np.where(raw < 1.0 / EPSILON, -inv * (yn + per[..., None] * pn), -yn * inv)
        return per, d.astype(p.dtype, copy=False), None

    def get_config(self):
        return {"axis": self.axis, "reduction": self.reduction, "name": self.name}


# ---- functional forms: (value, gradient) ---------------------------------------------------------

def categorical_crossentropy(y_true: Any, y_pred: Any, from_logits: bool = False,
                             label_smoothing: float = 0.0, mask: Any = None,
                             sample_weight: Any = None) -> ValueGrad:
    """Mean categorical cross-entropy and its gradient w.r.t. ``y_pred`` (unlike Keras's function,
    which returns the per-entry losses: see :meth:`Loss.call` for those).

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; returns ``(float, y_pred-shaped array)``.
    """
    return CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing
                                   ).value_and_grad(y_true, y_pred, mask, sample_weight)


def sparse_categorical_crossentropy(y_true: Any, y_pred: Any, from_logits: bool = False,
                                    mask: Any = None, sample_weight: Any = None,
                                    ignore_class: Optional[int] = None,
                                    label_smoothing: float = 0.0) -> ValueGrad:
    """Mean sparse categorical cross-entropy and its gradient w.r.t. ``y_pred``.

    Shapes
    ------
    ``y_pred``: ``[N, K]`` / ``[N, T, K]``; ``y_true``: ``[N]`` / ``[N, T]`` integer labels;
    returns ``(float, y_pred-shaped array)``.
    """
    return SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=ignore_class,
                                         label_smoothing=label_smoothing
                                         ).value_and_grad(y_true, y_pred, mask, sample_weight)


def binary_crossentropy(y_true: Any, y_pred: Any, from_logits: bool = False,
                        label_smoothing: float = 0.0, mask: Any = None,
                        sample_weight: Any = None) -> ValueGrad:
    """Mean binary cross-entropy and its gradient w.r.t. ``y_pred``.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; returns ``(float, y_pred-shaped array)``.
    """
    return BinaryCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing
                              ).value_and_grad(y_true, y_pred, mask, sample_weight)


def _functional(cls: Type[Loss], doc: str) -> Callable[..., ValueGrad]:
    def fn(y_true: Any, y_pred: Any, mask: Any = None, sample_weight: Any = None) -> ValueGrad:
        return cls().value_and_grad(y_true, y_pred, mask, sample_weight)
    fn.__doc__ = (f"{doc} and its gradient w.r.t. ``y_pred``.\n\n    Shapes\n    ------\n    ``y_true``, "
                  f"``y_pred``: ``[N, K]`` or ``[N, T, K]``; returns ``(float, y_pred-shaped array)``.\n")
    return fn


mean_squared_error = _functional(MeanSquaredError, "Mean squared error")
mean_squared_error.__name__ = "mean_squared_error"
mean_absolute_error = _functional(MeanAbsoluteError, "Mean absolute error")
mean_absolute_error.__name__ = "mean_absolute_error"
mean_absolute_percentage_error = _functional(MeanAbsolutePercentageError, "Mean absolute percentage error")
mean_absolute_percentage_error.__name__ = "mean_absolute_percentage_error"
mean_squared_logarithmic_error = _functional(MeanSquaredLogarithmicError, "Mean squared logarithmic error")
mean_squared_logarithmic_error.__name__ = "mean_squared_logarithmic_error"
log_cosh = _functional(LogCosh, "Mean log-cosh error")
log_cosh.__name__ = "log_cosh"
kl_divergence = _functional(KLDivergence, "Mean KL divergence")
kl_divergence.__name__ = "kl_divergence"
poisson = _functional(Poisson, "Mean Poisson loss")
poisson.__name__ = "poisson"


def huber(y_true: Any, y_pred: Any, delta: float = 1.0, mask: Any = None,
          sample_weight: Any = None) -> ValueGrad:
    """Mean Huber loss and its gradient w.r.t. ``y_pred``.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; returns ``(float, y_pred-shaped array)``.
    """
    return Huber(delta=delta).value_and_grad(y_true, y_pred, mask, sample_weight)


def cosine_similarity(y_true: Any, y_pred: Any, axis: int = -1, mask: Any = None,
                      sample_weight: Any = None) -> ValueGrad:
    """Mean negative cosine similarity and its gradient w.r.t. ``y_pred``.

    Shapes
    ------
    ``y_true``, ``y_pred``: ``[N, K]`` or ``[N, T, K]``; returns ``(float, y_pred-shaped array)``.
    """
    return CosineSimilarity(axis=axis).value_and_grad(y_true, y_pred, mask, sample_weight)


mse = mean_squared_error
mae = mean_absolute_error
mape = mean_absolute_percentage_error
msle = mean_squared_logarithmic_error
logcosh = log_cosh
kld = kl_divergence

# ---- registry ------------------------------------------------------------------------------------

_BUILTIN: Dict[str, Type[Loss]] = {c.__name__: c for c in (
    CategoricalCrossentropy, SparseCategoricalCrossentropy, BinaryCrossentropy, MeanSquaredError,
    MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredLogarithmicError, Huber, LogCosh,
    KLDivergence, Poisson, CosineSimilarity, FunctionLoss)}

_ALIASES: Dict[str, Type[Loss]] = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy, "bce": BinaryCrossentropy, "BCE": BinaryCrossentropy,
    "mse": MeanSquaredError, "MSE": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "MAE": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "mape": MeanAbsolutePercentageError, "MAPE": MeanAbsolutePercentageError,
    "mean_absolute_percentage_error": MeanAbsolutePercentageError,
    "msle": MeanSquaredLogarithmicError, "MSLE": MeanSquaredLogarithmicError,
    "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
    "huber": Huber,
    "log_cosh": LogCosh, "logcosh": LogCosh,
    "kl_divergence": KLDivergence, "kld": KLDivergence, "KLD": KLDivergence,
    "kullback_leibler_divergence": KLDivergence,
    "poisson": Poisson,
    "cosine_similarity": CosineSimilarity,
}

_CUSTOM_CLASSES: Dict[str, Type[Loss]] = {}
_CUSTOM_FUNCTIONS: Dict[str, Callable[..., Any]] = {}


def _lookup(class_name: str) -> Optional[Type[Loss]]:
    return _BUILTIN.get(class_name) or _CUSTOM_CLASSES.get(class_name)


def _function_key(fn: Callable[..., Any]) -> str:
    for key, f in _CUSTOM_FUNCTIONS.items():
        if f is fn:
            return key
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def register(obj: Any = None, *, name: Optional[str] = None) -> Any:
    """Registers a custom :class:`Loss` subclass (under its class name, or ``name``) so that
    :func:`deserialize`, :func:`get` and ``load_model`` find it, or a plain function used by a
    :func:`loss_function` loss (under ``fn.__name__``, or ``name``). Usable as a decorator
    (``@register`` or ``@register(name=...)``); returns ``obj``."""
    def do(o: Any) -> Any:
        if inspect.isclass(o):
            if not issubclass(o, Loss):
                raise TypeError(f"obj: expected a Loss subclass or a function, got the class {o.__name__}")
            key = name or o.__name__
            if key in _BUILTIN or key in _ALIASES:
                raise ValueError(f"name: {key!r} is a built-in loss; register under another name")
            _CUSTOM_CLASSES[key] = o
        elif callable(o):
            key = name or getattr(o, "__name__", None)
            if not key:
                raise ValueError("name: a callable without __name__ needs name=")
            _CUSTOM_FUNCTIONS[key] = o
        else:
            raise TypeError(f"obj: expected a Loss subclass or a function, got {type(o).__name__}")
        return o

    return do if obj is None else do(obj)


def get(identifier: Union[str, Loss, Dict[str, Any], Callable[..., Any], type]) -> Loss:
    """A :class:`Loss` from a Keras name (``'categorical_crossentropy'``, ``'mse'``, ``'huber'``,
    ``'kld'``, ...), a class name (``'CategoricalCrossentropy'``, or a registered custom class), a
    serialized dict, a Loss subclass (instantiated with its defaults), a Loss (returned as is), or
    a plain callable ``fn(y_true, y_pred)`` that carries its gradient as ``fn.gradient`` (see the
    module docstring; any other callable raises a TypeError explaining the rule)."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = _ALIASES.get(identifier) or _lookup(identifier)
        if cls is None or cls is FunctionLoss:
            raise ValueError(f"loss: unknown loss {identifier!r}; expected one of "
                             f"{sorted(_ALIASES)} or a class name {sorted(set(_BUILTIN) - {'FunctionLoss'})}")
        return cls()
    if inspect.isclass(identifier) and issubclass(identifier, Loss):
        return identifier()
    if callable(identifier):
        grad = getattr(identifier, "gradient", None)
        fname = getattr(identifier, "__name__", type(identifier).__name__)
        if not callable(grad):
            raise TypeError(f"loss: the callable {fname!r} has no gradient. {_GRADIENT_RULE}")
        return loss_function(identifier, grad, name=fname)
    raise TypeError(f"loss: expected a str, dict, Loss or a callable with a gradient, got "
                    f"{type(identifier).__name__}")


def serialize(loss: Loss) -> Dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` (JSON-compatible)."""
    return serialize_object(loss, Loss, "loss")


def deserialize(config: Dict[str, Any], custom_objects: Optional[Dict[str, Any]] = None) -> Loss:
    """Inverse of :func:`serialize`; ``custom_objects`` maps extra class names to Loss classes
    (registered classes are found without it)."""
    extra = dict(custom_objects or {})

    def lookup(class_name: str) -> Optional[Type[Loss]]:
        return extra.get(class_name) or _lookup(class_name)

    return deserialize_object(config, lookup, "loss class", {**_BUILTIN, **_CUSTOM_CLASSES, **extra})
