"""Keras-style 1-D pooling layers: :class:`GlobalAveragePooling1D`, :class:`GlobalMaxPooling1D`,
:class:`AveragePooling1D` and :class:`MaxPooling1D` (and Keras's aliases ``GlobalAvgPool1D``,
``GlobalMaxPool1D``, ``AvgPool1D``, ``MaxPool1D``). None has parameters.

Masks follow Keras 3 exactly (``keras/src/layers/pooling``):

- :class:`GlobalAveragePooling1D` averages over the valid steps only; a sample whose steps are
  all masked gives 0 (Keras divides 0 by 0 and gives NaN there: the one deliberate difference).
- :class:`GlobalMaxPooling1D`, :class:`AveragePooling1D` and :class:`MaxPooling1D` do not support
  masking in Keras 3: the mask is ignored (masked steps take part like any other; in a Keras
  model the mask is dropped at these layers, with a warning). A
  :class:`~rnnkit.layers.core.Masking` layer before them zeroes the padded steps, which then
  take part as zeros.

The output mask of every layer here is None.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from rnnkit._checks import check_data_format, check_int_or_single, check_positive_int, shape_str
from rnnkit.layers.base import Context, Layer, Shape, check_grad, check_mask

__all__ = ["GlobalAveragePooling1D", "GlobalMaxPooling1D", "AveragePooling1D", "MaxPooling1D",
           "GlobalAvgPool1D", "GlobalMaxPool1D", "AvgPool1D", "MaxPool1D"]

class _Pooling1DBase(Layer):
    """Shared by the 1-D pooling layers: ``data_format`` and the ``[N, T, C]`` / ``[N, C, T]``
    input check."""

    def __init__(self, data_format: Optional[str] = "channels_last", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_format = check_data_format(data_format)

    @property
    def _steps_axis(self) -> int:
        return 1 if self.data_format == "channels_last" else 2

    def _layout(self) -> str:
        return "[N, T, C]" if self.data_format == "channels_last" else "[N, C, T]"

    def _check_x(self, x: np.ndarray) -> None:
        if x.ndim != 3:
            raise ValueError(f"{self.name}: x: expected 3 dimensions {self._layout()} "
                             f"(data_format={self.data_format!r}), got shape {shape_str(x.shape)}")
        if x.shape[self._steps_axis] == 0:
            raise ValueError(f"{self.name}: x: expected at least 1 time step {self._layout()}, got shape "
                             f"{shape_str(x.shape)}")

    def check_inputs(self, inputs: Any) -> np.ndarray:
        """One float array in the layer's dtype (any memory layout) of 3 dimensions with at least
        one time step: checked here, before the layer is built, so that errors name ``x``."""
        x = super().check_inputs(inputs)
        self._check_x(x)
        return x

    def _check_shape(self, input_shape: Any) -> Shape:
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ValueError(f"{self.name}: input_shape: expected 3 dimensions {self._layout()} "
                             f"(data_format={self.data_format!r}), got {shape_str(shape)}")
        return shape

    def build(self, input_shape: Shape) -> None:
        self._check_shape(input_shape)
        self.built = True

    def compute_mask(self, inputs: Any, mask: Any) -> None:
        """Always None: these layers consume the time axis or, for the windowed ones, do not
        support masking (as in Keras 3)."""
        return None

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["data_format"] = self.data_format
        return cfg


class _GlobalPooling1D(_Pooling1DBase):
    def __init__(self, data_format: Optional[str] = "channels_last", keepdims: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(data_format=data_format, **kwargs)
        self.keepdims = bool(keepdims)

    def compute_output_shape(self, input_shape: Any) -> Shape:
        n, a, b = self._check_shape(input_shape)
        if self.data_format == "channels_last":
            return (n, 1, b) if self.keepdims else (n, b)
        return (n, a, 1) if self.keepdims else (n, a)

    def _out_shape(self, shape: Tuple[int, ...]) -> Tuple[int, ...]:
        return tuple(int(v) for v in self.compute_output_shape(shape))

    def _expand(self, d: np.ndarray) -> np.ndarray:
        """The gradient ``[N, C]`` (or kept ``[N, 1, C]`` / ``[N, C, 1]``) with its steps axis."""
        return d if self.keepdims else np.expand_dims(d, self._steps_axis)

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["keepdims"] = self.keepdims
        return cfg


class GlobalAveragePooling1D(_GlobalPooling1D):
    """Mean over the time steps (Keras's ``GlobalAveragePooling1D``), over the valid steps only
    when a mask is given.

    Parameters
    ----------
    data_format
        ``'channels_last'`` (``[N, T, C]``, default; None means the same) or
        ``'channels_first'`` (``[N, C, T]``).
    keepdims
        Keep the time axis with size 1.
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    x: [N, T, C] -> [N, C] (``keepdims``: [N, 1, C]); channels_first: [N, C, T] -> [N, C]
    (``keepdims``: [N, C, 1]). mask: [N, T] bool; a sample with no valid step gives 0 (Keras
    gives NaN). Output mask: None.
    """

    supports_masking = True

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        self._check_x(x)
        ax = self._steps_axis
        N, T = x.shape[0], x.shape[ax]
        m = check_mask(f"{self.name}: mask", mask, N, T)
        ctx.shape = x.shape
        if m is None:
            ctx.w = None
            return np.mean(x, axis=ax, keepdims=self.keepdims)
        count = m.sum(axis=1, keepdims=True).astype(self.dtype)
        # weight of each step: 1/count on the valid steps, 0 elsewhere (and for empty samples)
        w = m.astype(self.dtype) / np.maximum(count, self.dtype.type(1))
        w = w[:, :, None] if ax == 1 else w[:, None, :]
        me = m[:, :, None] if ax == 1 else m[:, None, :]
        ctx.w = w
        # masked steps are replaced (not multiplied) by 0, as in Keras: inf/NaN there do not leak
        return np.sum(np.where(me, x, self.dtype.type(0)) * w, axis=ax, keepdims=self.keepdims)

    def backprop(self, d_out: Any, ctx: Context) -> np.ndarray:
        """``dx``: the output gradient spread over the (valid) steps with the same weights."""
        d = self._expand(check_grad(self, "d_out", d_out, self._out_shape(ctx.shape)))
        if ctx.w is None:
            return np.broadcast_to(d / self.dtype.type(ctx.shape[self._steps_axis]), ctx.shape).copy()
        return d * ctx.w


class GlobalMaxPooling1D(_GlobalPooling1D):
    """Maximum over the time steps (Keras's ``GlobalMaxPooling1D``), over the valid steps only
    when a mask is given.

    Masks: Keras 3's layer does not support masking (it drops the mask, so padded steps take part
    in the maximum); rnnkit takes the maximum over the valid steps, which is what a mask asks
    for. Without a mask both agree. A sample with no valid step gives 0 (zero gradient).

    Parameters
    ----------
    data_format
        ``'channels_last'`` (``[N, T, C]``, default; None means the same) or
        ``'channels_first'`` (``[N, C, T]``).
    keepdims
        Keep the time axis with size 1.
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    x: [N, T, C] -> [N, C] (``keepdims``: [N, 1, C]); channels_first: [N, C, T] -> [N, C]
    (``keepdims``: [N, C, 1]); mask: [N, T] bool. The gradient goes to the first (valid) step
    holding the maximum. Output mask: None.
    """

    supports_masking = True

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        self._check_x(x)
        ax = self._steps_axis
        N, T = x.shape[0], x.shape[ax]
        m = check_mask(f"{self.name}: mask", mask, N, T)
        ctx.shape = x.shape
        ctx.empty = None
        xs = x
        if m is not None:
            me = m[:, :, None] if ax == 1 else m[:, None, :]
            # masked steps can never win: -inf there (an all-masked sample is zeroed below)
            xs = np.where(me, x, -np.inf)
            empty = ~m.any(axis=1)
            ctx.empty = empty if empty.any() else None
        idx = np.argmax(xs, axis=ax)
        ctx.idx = np.expand_dims(idx, ax)
        out = np.take_along_axis(x, ctx.idx, axis=ax)
        if ctx.empty is not None:
            out[ctx.empty] = 0
        return out if self.keepdims else np.squeeze(out, axis=ax)

    def backprop(self, d_out: Any, ctx: Context) -> np.ndarray:
        """``dx``: the output gradient at the argmax step of each sample and channel, 0 elsewhere
        (and for samples with no valid step)."""
        d = np.array(self._expand(check_grad(self, "d_out", d_out, self._out_shape(ctx.shape))))
        if ctx.empty is not None:
            d[ctx.empty] = 0
        dx = np.zeros(ctx.shape, dtype=self.dtype)
        np.put_along_axis(dx, ctx.idx, d, axis=self._steps_axis)
        return dx


class _Pooling1D(_Pooling1DBase):
    """Windowed pooling along time: windows of ``pool_size`` steps every ``strides`` steps."""

    def __init__(self, pool_size: Union[int, Sequence[int]] = 2,
                 strides: Optional[Union[int, Sequence[int]]] = None, padding: str = "valid",
                 data_format: Optional[str] = "channels_last", **kwargs: Any) -> None:
        super().__init__(data_format=data_format, **kwargs)
        self.pool_size = check_int_or_single("pool_size", pool_size)
        self.strides = self.pool_size if strides is None else check_int_or_single("strides", strides)
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            raise ValueError(f"padding: expected 'valid' or 'same', got {padding!r}")
        self.padding = padding.lower()

    def _length(self, steps: int) -> int:
        """Keras's output length: ``(T - pool_size) // strides + 1`` (valid) or ``ceil(T / strides)``
        (same)."""
        if self.padding == "valid":
            return (steps - self.pool_size) // self.strides + 1 if steps >= self.pool_size else 0
        return -(-steps // self.strides)

    def _windows(self, steps: int) -> Tuple[np.ndarray, np.ndarray, int]:
        """The step index of every window position ``[T_out, pool_size]``, which of them lie
        inside the input (``same`` padding adds ``total // 2`` steps on the left, the rest on the
        right, TensorFlow's rule), and ``T_out``."""
        L = self._length(steps)
        if L < 1:
            raise ValueError(f"{self.name}: x: {steps} time steps are fewer than pool_size={self.pool_size} "
                             f"(padding='valid')")
        left = 0
        if self.padding == "same":
            left = max(0, (L - 1) * self.strides + self.pool_size - steps) // 2
        idx = np.arange(L)[:, None] * self.strides - left + np.arange(self.pool_size)[None, :]
        valid = (idx >= 0) & (idx < steps)
        return np.clip(idx, 0, steps - 1), valid, L

    def compute_output_shape(self, input_shape: Any) -> Shape:
        n, a, b = self._check_shape(input_shape)
        t = a if self.data_format == "channels_last" else b
        L = None if t is None else self._length(int(t))
        if L is not None and L < 1:
            raise ValueError(f"{self.name}: input_shape: {t} time steps are fewer than "
                             f"pool_size={self.pool_size} (padding='valid')")
        return (n, L, b) if self.data_format == "channels_last" else (n, a, L)

    def _to_ntc(self, x: np.ndarray) -> np.ndarray:
        return x if self.data_format == "channels_last" else x.transpose(0, 2, 1)

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        self._check_x(x)
        xt = self._to_ntc(x)
        idx, valid, L = self._windows(xt.shape[1])
        g = xt[:, idx, :]  # [N, T_out, pool_size, C]
        ctx.shape, ctx.idx, ctx.valid, ctx.L = x.shape, idx, valid, L
        out = self._pool(g, valid[None, :, :, None], ctx)
        return self._to_ntc(out)

    def _pool(self, g: np.ndarray, valid: np.ndarray, ctx: Context) -> np.ndarray:
        raise NotImplementedError

    def _tap_grad(self, d: np.ndarray, k: int, sel: np.ndarray, ctx: Context) -> np.ndarray:
        """The gradient reaching tap ``k`` of the windows ``sel`` (``d`` is ``[N, T_out, C]``)."""
        raise NotImplementedError

    def backprop(self, d_out: Any, ctx: Context) -> np.ndarray:
        """``dx``: each window's gradient scattered back onto its steps (one slice per tap)."""
        N = ctx.shape[0]
        C = ctx.shape[2] if self.data_format == "channels_last" else ctx.shape[1]
        want = (N, ctx.L, C) if self.data_format == "channels_last" else (N, C, ctx.L)
        d = self._to_ntc(check_grad(self, "d_out", d_out, want))
        T = ctx.shape[self._steps_axis]
        dx = np.zeros((N, T, C), dtype=self.dtype)
        for k in range(self.pool_size):
            sel = ctx.valid[:, k]
            # within one tap, the windows cover distinct steps (strides >= 1): no collisions
            dx[:, ctx.idx[sel, k], :] += self._tap_grad(d, k, sel, ctx)
        return self._to_ntc(dx)

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg.update({"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding})
        return cfg


class AveragePooling1D(_Pooling1D):
    """Mean over windows of time steps (Keras's ``AveragePooling1D``).

    Parameters
    ----------
    pool_size
        Steps per window (an int or a tuple of one int; default 2, which Keras does not have).
    strides
        Steps between windows (default ``pool_size``).
    padding
        ``'valid'`` (only full windows) or ``'same'`` (``ceil(T / strides)`` windows; the padded
        positions are left out of the mean, as in Keras's TensorFlow, JAX and NumPy backends).
    data_format
        ``'channels_last'`` (``[N, T, C]``, default) or ``'channels_first'`` (``[N, C, T]``).
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    x: [N, T, C] -> [N, T_out, C] (channels_first: [N, C, T] -> [N, C, T_out]) with
    ``T_out = (T - pool_size) // strides + 1`` (valid) or ``ceil(T / strides)`` (same). The mask
    is ignored (Keras 3's layer does not support masking); output mask None.
    """

    def _pool(self, g: np.ndarray, valid: np.ndarray, ctx: Context) -> np.ndarray:
        count = ctx.valid.sum(axis=1).astype(self.dtype)  # [T_out]
        ctx.count = count
        return np.where(valid, g, self.dtype.type(0)).sum(axis=2) / count[None, :, None]

    def _tap_grad(self, d: np.ndarray, k: int, sel: np.ndarray, ctx: Context) -> np.ndarray:
        return d[:, sel, :] / ctx.count[sel][None, :, None]


class MaxPooling1D(_Pooling1D):
    """Maximum over windows of time steps (Keras's ``MaxPooling1D``).

    Parameters
    ----------
    pool_size
        Steps per window (an int or a tuple of one int; default 2).
    strides
        Steps between windows (default ``pool_size``).
    padding
        ``'valid'`` (only full windows) or ``'same'`` (``ceil(T / strides)`` windows; padded
        positions never win).
    data_format
        ``'channels_last'`` (``[N, T, C]``, default) or ``'channels_first'`` (``[N, C, T]``).
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    x: [N, T, C] -> [N, T_out, C] (channels_first: [N, C, T] -> [N, C, T_out]), ``T_out`` as for
    :class:`AveragePooling1D`. The gradient of a window goes to its first step holding the
    maximum. The mask is ignored (as in Keras 3); output mask None.
    """

    def _pool(self, g: np.ndarray, valid: np.ndarray, ctx: Context) -> np.ndarray:
        g = np.where(valid, g, self.dtype.type(-np.inf))
        arg = np.argmax(g, axis=2)  # [N, T_out, C]: the winning tap
        ctx.arg = arg
        return np.take_along_axis(g, arg[:, :, None, :], axis=2)[:, :, 0, :]

    def _tap_grad(self, d: np.ndarray, k: int, sel: np.ndarray, ctx: Context) -> np.ndarray:
        return np.where(ctx.arg[:, sel, :] == k, d[:, sel, :], self.dtype.type(0))


# Keras's aliases
GlobalAvgPool1D = GlobalAveragePooling1D
GlobalMaxPool1D = GlobalMaxPooling1D
AvgPool1D = AveragePooling1D
MaxPool1D = MaxPooling1D
