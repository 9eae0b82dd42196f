"""Keras-style normalization layers: :class:`LayerNormalization` and :class:`BatchNormalization`.

Both follow Keras 3's arguments, defaults, weight names and order, and numerics (statistics are
the biased ones, ``epsilon`` is added to the variance). Both compute on the rows of their input as
it lies in memory (see :func:`rnnkit._checks.memory_perm`) when they normalize the last axis: a
batch-major view of time-major memory handed on by a recurrent layer goes through them without a
copy and comes out in the same memory order.

Masks pass through both layers unchanged. LayerNormalization ignores the mask (each position is
normalized on its own, as in Keras); BatchNormalization computes its training statistics over the
unmasked positions only, as Keras does, and still normalizes every position.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from rnnkit import initializers
from rnnkit._checks import as_mask, from_rows, memory_perm, shape_str, to_rows
from rnnkit._rows import sum_rows_of_matrix
from rnnkit._threads import GRAD_LOCK
from rnnkit.layers.base import Context, Layer, Shape, check_grad

__all__ = ["LayerNormalization", "BatchNormalization"]

#: Keras's ``backend.epsilon()``: what masked batch statistics add to the count of valid positions
KERAS_EPSILON = 1e-7


def _check_float(name: str, v: Any, lo: float, hi: float = math.inf) -> float:
    """``v`` as a finite float in ``[lo, hi]``: TypeError for non-numbers and bools, ValueError
    outside the range."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__}")
    f = float(v)
    if not (math.isfinite(f) and lo <= f <= hi):
        rng = f">= {lo}" if hi == math.inf else f"in [{lo}, {hi}]"
        raise ValueError(f"{name}: expected a finite number {rng}, got {v!r}")
    return f


def _check_int(name: str, v: Any) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    return int(v)


def _col_sums(a: np.ndarray) -> np.ndarray:
    """Column sums of a 2-D ``[R, K]`` array (``[K]``)."""
    return sum_rows_of_matrix(a)


class LayerNormalization(Layer):
    r"""Layer normalization (Ba et al., 2016), Keras 3's ``LayerNormalization``.

    Each sample (each time step of a sequence) is normalized over the feature axes ``axis``:

    .. math::

        \mu = \frac{1}{K}\sum_k x_k, \qquad
        \sigma^2 = \frac{1}{K}\sum_k (x_k - \mu)^2, \qquad
        y_k = \gamma_k \frac{x_k - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta_k

    where ``k`` runs over the ``K`` entries of the normalized axes.

    Parameters
    ----------
    axis
        The axis to normalize (default the last) or a list of *trailing* axes (e.g. ``[-2, -1]``
        normalizes every sample of ``[N, T, C]`` over its ``T * C`` entries); never the batch axis.
    epsilon
        Added to the variance (Keras default ``1e-3``).
    center, scale
        Whether to add ``beta`` / multiply by ``gamma``.
    beta_initializer, gamma_initializer
        Keras defaults ``'zeros'`` and ``'ones'``.
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    x: [N, ..., *S] (at least 2-D) -> same shape, ``S`` the sizes of the normalized axes.
    Parameters (Keras's order): ``gamma [*S]`` (with ``scale``), ``beta [*S]`` (with
    ``center``). The incoming mask passes through and does not change the computation.
    """

    supports_masking = True

    def __init__(self, axis: Union[int, Sequence[int]] = -1, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, beta_initializer: Any = "zeros", gamma_initializer: Any = "ones",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            if not axis:
                raise ValueError("axis: expected an int or a non-empty list of ints, got []")
            self.axis: Union[int, List[int]] = [_check_int("axis", a) for a in axis]
            if len(set(self.axis)) != len(self.axis):
                raise ValueError(f"axis: repeated entries in {self.axis}")
        else:
            self.axis = _check_int("axis", axis)
        self.epsilon = _check_float("epsilon", epsilon, 0.0)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self._axes: Tuple[int, ...] = ()
        self._ndim: Optional[int] = None

    def _resolve_axes(self, ndim: int) -> Tuple[int, ...]:
        """The normalized axes as sorted non-negative ints; ValueError unless they are the
        trailing axes of a rank-``ndim`` input, batch axis excluded."""
        raw = self.axis if isinstance(self.axis, list) else [self.axis]
        axes = []
        for a in raw:
            if not -ndim <= a < ndim:
                raise ValueError(f"{self.name}: axis: {a} is out of bounds for inputs of rank {ndim} "
                                 f"(axis={self.axis})")
            axes.append(a % ndim)
        for a in axes:
            if axes.count(a) > 1:
                raise ValueError(f"{self.name}: axis: {self.axis} names axis {a} twice for inputs of rank {ndim}")
        axes.sort()
        if axes[0] == 0 or axes != list(range(ndim - len(axes), ndim)):
            raise ValueError(f"{self.name}: axis: expected the last axis or a list of trailing axes "
                             f"(not the batch axis) of inputs of rank {ndim}, got axis={self.axis}")
        return tuple(axes)

    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ValueError(f"{self.name}: input_shape: expected at least 2 dimensions (batch first), "
                             f"got {shape_str(input_shape)}")
        self._ndim = len(input_shape)
        self._axes = self._resolve_axes(self._ndim)
        shape = tuple(input_shape[a] for a in self._axes)
        if any(s is None for s in shape):
            raise ValueError(f"{self.name}: input_shape: the normalized axes {list(self._axes)} must have "
                             f"known sizes, got {shape_str(input_shape)}")
        if self.scale:
            self.add_weight("gamma", shape, self.gamma_initializer)
        if self.center:
            self.add_weight("beta", shape, self.beta_initializer)
        self._norm_shape = shape
        self.built = True

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        if x.ndim != self._ndim or tuple(x.shape[a] for a in self._axes) != self._norm_shape:
            expected = (None,) * (self._ndim - len(self._axes)) + self._norm_shape
            raise ValueError(f"{self.name}: x: expected shape {shape_str(expected)}, got {shape_str(x.shape)}")
        k = int(np.prod(self._norm_shape))
        lead = x.shape[: x.ndim - len(self._axes)]
        if len(self._axes) == 1:
            perm = memory_perm(x)
            rows = to_rows(x, perm)
        else:  # several trailing axes: one row per sample position, C-contiguous
            perm = tuple(range(len(lead) + 1))
            rows = np.ascontiguousarray(x).reshape(-1, k)
        # mu, sigma^2 and x_hat per row
        mu = rows.mean(axis=1, keepdims=True)
        d = rows - mu
        var = np.mean(d * d, axis=1, keepdims=True)
        rstd = 1.0 / np.sqrt(var + self.epsilon)
        xhat = d * rstd
        y = xhat * self.params["gamma"].reshape(-1) if self.scale else xhat.copy()
        if self.center:
            y += self.params["beta"].reshape(-1)
        ctx.xhat, ctx.rstd, ctx.perm, ctx.lead, ctx.shape = xhat, rstd, perm, lead, x.shape
        return self._unrows(y, ctx)

    def _unrows(self, rows: np.ndarray, ctx: Context) -> np.ndarray:
        if len(self._axes) == 1:
            return from_rows(rows, ctx.lead, ctx.perm)
        return rows.reshape(ctx.shape)

    def backprop(self, d_out: Any, ctx: Context) -> Optional[np.ndarray]:
        r"""``dx``; accumulates the ``gamma`` / ``beta`` gradients.

        With :math:`g = \partial L / \partial \hat x = \gamma \, \partial L / \partial y`:
        :math:`\partial L / \partial x = \frac{1}{\sqrt{\sigma^2+\epsilon}}
        (g - \overline{g} - \hat x \, \overline{g \hat x})` (means over the normalized entries).
        """
        d = check_grad(self, "d_out", d_out, ctx.shape)
        if len(self._axes) == 1:
            dy = to_rows(d, ctx.perm)
        else:
            dy = np.ascontiguousarray(d).reshape(ctx.xhat.shape)
        pg: Dict[str, np.ndarray] = {}
        if self.scale:
            pg["gamma"] = _col_sums(dy * ctx.xhat).reshape(self._norm_shape)
        if self.center:
            pg["beta"] = _col_sums(dy).reshape(self._norm_shape)
        self.accumulate_grads(pg)
        if not ctx.need_input_grad:
            return None
        g = dy * self.params["gamma"].reshape(-1) if self.scale else dy
        dx = ctx.rstd * (g - g.mean(axis=1, keepdims=True)
                         - ctx.xhat * np.mean(g * ctx.xhat, axis=1, keepdims=True))
        return self._unrows(dx, ctx)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg.update({"axis": list(self.axis) if isinstance(self.axis, list) else self.axis,
                    "epsilon": self.epsilon, "center": self.center, "scale": self.scale,
                    "beta_initializer": initializers.serialize(self.beta_initializer),
                    "gamma_initializer": initializers.serialize(self.gamma_initializer)})
        return cfg


class BatchNormalization(Layer):
    r"""Batch normalization (Ioffe and Szegedy, 2015), Keras 3's ``BatchNormalization``.

    Each feature ``c`` of ``axis`` is normalized with statistics over all the other axes (the
    batch, and the time axis of a sequence):

    .. math::

        y = \gamma_c \frac{x - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c

    - training (``training=True`` and ``layer.trainable``): :math:`\mu, \sigma^2` are the batch's
      mean and biased variance, and the moving statistics are updated in place,
      ``moving_mean = momentum * moving_mean + (1 - momentum) * mu`` (the same for
      ``moving_variance`` with :math:`\sigma^2`). With a mask ``m`` (Keras's rule, ``m``
      broadcast over the feature axis):
      :math:`\mu = \sum m x / (\sum m + 10^{-7})`,
      :math:`\sigma^2 = \sum m (x - \mu)^2 / (\sum m + 10^{-7})`: padded steps do not enter
      the statistics (they are still normalized, as in Keras);
    - inference (otherwise, also ``training=True`` on a layer with ``trainable=False``, as in
      Keras): :math:`\mu, \sigma^2` are ``moving_mean`` and ``moving_variance``.

    ``moving_mean`` and ``moving_variance`` are non-trainable weights. They live in
    ``layer.params`` (so ``get_weights`` / ``set_weights`` and model files include them, in
    Keras's order ``[gamma, beta, moving_mean, moving_variance]``) but their gradients in
    ``layer.grads`` are always zero, so an optimizer step (SGD, momentum, Adam, RMSprop, Adagrad,
    any clipping) leaves them unchanged; only a training-mode call updates them.
    :attr:`trainable_weights` / :attr:`non_trainable_weights` list the two groups.

    Parameters
    ----------
    axis
        The feature axis (default the last).
    momentum
        Of the moving averages, in ``[0, 1]`` (Keras default ``0.99``).
    epsilon
        Added to the variance (Keras default ``1e-3``).
    center, scale
        Whether to add ``beta`` / multiply by ``gamma``.
    beta_initializer, gamma_initializer, moving_mean_initializer, moving_variance_initializer
        Keras defaults ``'zeros'``, ``'ones'``, ``'zeros'``, ``'ones'``.
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    x: [N, C] or [N, T, C] (any rank >= 2; ``C`` the size of ``axis``) -> same shape.
    mask: ``x.shape[:-1]`` bool (``[N]`` or ``[N, T]``), passes through.
    Parameters: ``gamma [C]``, ``beta [C]``, ``moving_mean [C]``, ``moving_variance [C]``.
    """

    supports_masking = True

    def __init__(self, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, beta_initializer: Any = "zeros", gamma_initializer: Any = "ones",
                 moving_mean_initializer: Any = "zeros", moving_variance_initializer: Any = "ones",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = _check_int("axis", axis)
        self.momentum = _check_float("momentum", momentum, 0.0, 1.0)
        self.epsilon = _check_float("epsilon", epsilon, 0.0)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self._ndim: Optional[int] = None
        self._ax = -1
        self.channels: Optional[int] = None

    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(input_shape)
        ndim = len(input_shape)
        if ndim < 2:
            raise ValueError(f"{self.name}: input_shape: expected at least 2 dimensions (batch first), "
                             f"got {shape_str(input_shape)}")
        if not -ndim <= self.axis < ndim or self.axis % ndim == 0:
            raise ValueError(f"{self.name}: axis: {self.axis} is not a feature axis of inputs of rank {ndim} "
                             f"(expected one of {list(range(1, ndim))} or {list(range(-ndim + 1, 0))})")
        self._ndim, self._ax = ndim, self.axis % ndim
        c = input_shape[self._ax]
        if c is None:
            raise ValueError(f"{self.name}: input_shape: the size of axis {self.axis} must be known, "
                             f"got {shape_str(input_shape)}")
        self.channels = int(c)
        if self.scale:
            self.add_weight("gamma", (c,), self.gamma_initializer)
        if self.center:
            self.add_weight("beta", (c,), self.beta_initializer)
        self.add_weight("moving_mean", (c,), self.moving_mean_initializer, trainable=False)
        self.add_weight("moving_variance", (c,), self.moving_variance_initializer, trainable=False)
        self.built = True

    # ---- layout: features last, rows in memory order --------------------------------------------
    def _rows(self, a: np.ndarray, ctx: Context) -> np.ndarray:
        """``a`` (shaped like x) as ``[R, C]`` rows: the feature axis moved last, in memory order."""
        if self._ax != a.ndim - 1:
            a = np.moveaxis(a, self._ax, -1)
        return to_rows(a, ctx.perm)

    def _unrows(self, rows: np.ndarray, ctx: Context) -> np.ndarray:
        y = from_rows(rows, ctx.moved_lead, ctx.perm)
        return np.moveaxis(y, -1, self._ax) if self._ax != self._ndim - 1 else y

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        if x.ndim != self._ndim or x.shape[self._ax] != self.channels:
            expected: List[Optional[int]] = [None] * self._ndim
            expected[self._ax] = self.channels
            raise ValueError(f"{self.name}: x: expected shape {shape_str(expected)}, got {shape_str(x.shape)}")
        moved = np.moveaxis(x, self._ax, -1) if self._ax != x.ndim - 1 else x
        ctx.perm, ctx.moved_lead, ctx.shape = memory_perm(moved), moved.shape[:-1], x.shape
        rows = to_rows(moved, ctx.perm)
        m = None if mask is None else as_mask(f"{self.name}: mask", mask, x.shape[:-1])
        p = self.params
        ctx.batch_stats = bool(training) and self.trainable
        if ctx.batch_stats:
            if m is None:
                w = None
                count = float(rows.shape[0])
                mean = rows.mean(axis=0)
                d = rows - mean
                var = _col_sums(d * d) / count
            else:
                # weights of the positions: the mask broadcast over the feature axis
                wfull = m[..., None].astype(self.dtype)
                if self._ax != x.ndim - 1:
                    wfull = np.broadcast_to(wfull, x.shape)
                w = self._rows(wfull, ctx)  # [R, 1] (features last) or [R, C]
                count = (_col_sums(w) if w.shape[1] == rows.shape[1] else float(np.sum(w))) + KERAS_EPSILON
                mean = _col_sums(w * rows) / count
                d = rows - mean
                var = _col_sums(w * d * d) / count
            with GRAD_LOCK:
                mm, mv = p["moving_mean"], p["moving_variance"]
                mm[...] = mm * self.momentum + mean * (1.0 - self.momentum)
                mv[...] = mv * self.momentum + var * (1.0 - self.momentum)
            ctx.w, ctx.count, ctx.d = w, count, d
        else:
            var = p["moving_variance"].copy()
            d = rows - p["moving_mean"]
        rstd = (1.0 / np.sqrt(var + self.epsilon)).astype(self.dtype, copy=False)
        xhat = d * rstd
        y = xhat * p["gamma"] if self.scale else xhat.copy()
        if self.center:
            y += p["beta"]
        ctx.xhat, ctx.rstd = xhat, rstd
        return self._unrows(y, ctx)

    def backprop(self, d_out: Any, ctx: Context) -> Optional[np.ndarray]:
        r"""``dx``; accumulates the ``gamma`` / ``beta`` gradients (never the moving statistics').

        Training mode, through the batch statistics, with :math:`g = \gamma\,\partial L/\partial y`,
        :math:`r = (\sigma^2+\epsilon)^{-1/2}`, :math:`d = x - \mu`, weights :math:`w` (1 without
        a mask) and :math:`n = \sum w` (+ :math:`10^{-7}` with a mask):
        :math:`\partial L/\partial d = g r - r^3 \, w d \, \sum(g d) / n`,
        :math:`\partial L/\partial x = \partial L/\partial d - w \sum(\partial L/\partial d) / n`.
        Inference: :math:`\partial L/\partial x = g r`.
        """
        dout = check_grad(self, "d_out", d_out, ctx.shape)
        dy = self._rows(dout, ctx)
        pg: Dict[str, np.ndarray] = {}
        if self.scale:
            pg["gamma"] = _col_sums(dy * ctx.xhat)
        if self.center:
            pg["beta"] = _col_sums(dy)
        self.accumulate_grads(pg)
        if not ctx.need_input_grad:
            return None
        g = dy * self.params["gamma"] if self.scale else dy
        if not ctx.batch_stats:
            return self._unrows(g * ctx.rstd, ctx)
        r, d, w, n = ctx.rstd, ctx.d, ctx.w, ctx.count
        through_var = (r ** 3) * _col_sums(g * d) / n  # [C]: r^3 sum(g d) / n
        if w is None:
            dd = g * r - d * through_var
            dx = dd - _col_sums(dd) / n
        else:
            dd = g * r - (w * d) * through_var
            dx = dd - w * (_col_sums(dd) / n)
        return self._unrows(dx, ctx)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg.update({"axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                    "center": self.center, "scale": self.scale,
                    "beta_initializer": initializers.serialize(self.beta_initializer),
                    "gamma_initializer": initializers.serialize(self.gamma_initializer),
                    "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
                    "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer)})
        return cfg
