"""Keras-style merge layers: :class:`Concatenate`, :class:`Add`, :class:`Subtract`,
:class:`Multiply`, :class:`Average`, :class:`Maximum`, :class:`Minimum` and :class:`Dot`.

A merge layer is called on a list of arrays (``layer([a, b])``, or on a list of KerasTensors in a
functional model); its :meth:`~rnnkit.layers.base.Layer.backward` returns a list with one
gradient per input. None of them has parameters.

Keras 3's semantics, including its masks (``keras/src/layers/merging``):

- Elementwise merges broadcast like Keras: the batch sizes must be equal, the other axes are
  aligned from the right (an input of lower rank gets size-1 axes inserted after the batch axis)
  and broadcast with NumPy's rules; the gradient of an input is summed over the axes it was
  broadcast along.
- Output mask of the elementwise merges: the logical OR of the input masks when every input has
  one, else None (Keras's ``Merge.compute_mask``).
- Masked entries are left out of :class:`Maximum`, :class:`Minimum` (an input's masked entries
  take the running result's value) and :class:`Multiply` (they count as 1, and where every input
  is masked the product is 0 when all inputs carry masks); :class:`Add`, :class:`Subtract` and
  :class:`Average` combine masked entries like any other. As in Keras, masks change the values
  only when all inputs have the same rank.
- :class:`Concatenate`'s mask is Keras 3's ``any(concatenate(masks, axis), axis=-1)`` with an
  all-True mask for an unmasked input: along the time axis the masks are concatenated, along the
  feature axis the result is the OR of the masks (all True as soon as one input has no mask).
- :class:`Dot` drops masks.

A mask is a bool array of the input's shape without its last axis (``[N, T]`` for ``[N, T, C]``);
``mask`` arguments are lists with one mask or None per input.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from rnnkit._checks import as_float_array, as_mask, shape_str
from rnnkit.layers.base import Context, Layer, Shape, check_grad

__all__ = ["Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Dot"]

#: Keras's ``backend.epsilon()``: the smallest norm :class:`Dot` divides by when normalizing
EPSILON = 1e-7

Masks = Optional[List[Optional[np.ndarray]]]


class _Merge(Layer):
    """What every merge layer shares: list inputs, their masks, list gradients."""

    supports_masking = True
    #: exact number of inputs (None: one or more)
    n_inputs: Optional[int] = None

    # ---- inputs ---------------------------------------------------------------------------------
    def _check_count(self, what: str, n: int) -> None:
        if self.n_inputs is not None and n != self.n_inputs:
            raise ValueError(f"{self.name}: {what}: expected a list of {self.n_inputs} arrays, got {n}")
        if n < 1:
            raise ValueError(f"{self.name}: {what}: expected a list of at least 1 array, got 0")

    def check_inputs(self, inputs: Any) -> List[np.ndarray]:
        """``inputs`` as a list of float arrays in the layer's dtype (any memory layout), checked
        for count and compatible shapes."""
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"{self.name}: inputs: expected a list of arrays, got a {type(inputs).__name__}")
        self._check_count("inputs", len(inputs))
        xs = []
        for i, v in enumerate(inputs):
            a = as_float_array(f"{self.name}: inputs[{i}]", v, contiguous=False)
            if a.ndim < 1:
                raise ValueError(f"{self.name}: inputs[{i}]: expected an array with a batch axis, got a scalar")
            xs.append(a if a.dtype == self.dtype else a.astype(self.dtype))
        self._output_shape([a.shape for a in xs], "inputs")
        return xs

    def _check_shape_list(self, input_shape: Any) -> List[Shape]:
        if not isinstance(input_shape, (list, tuple)) or \
                not all(isinstance(s, (list, tuple)) for s in input_shape):
            raise ValueError(f"{self.name}: input_shape: expected a list of shapes (one per input), "
                             f"got {input_shape!r}")
        self._check_count("input_shape", len(input_shape))
        shapes = [tuple(s) for s in input_shape]
        for i, s in enumerate(shapes):
            if len(s) < 1:
                raise ValueError(f"{self.name}: input_shape[{i}]: expected a batch axis, got ()")
        return shapes

    def build(self, input_shape: Any) -> None:
        """Checks that the inputs' shapes can be merged (there are no parameters)."""
        self._output_shape(self._check_shape_list(input_shape), "input_shape")
        self.built = True

    def compute_output_shape(self, input_shape: Any) -> Shape:
        return self._output_shape(self._check_shape_list(input_shape), "input_shape")

    def _output_shape(self, shapes: List[Shape], what: str) -> Shape:
        raise NotImplementedError

    def _batch_size(self, shapes: Sequence[Shape], what: str) -> Optional[int]:
        """The common batch size (None when unknown); ValueError when two differ."""
        known = [(i, s[0]) for i, s in enumerate(shapes) if s[0] is not None]
        for i, b in known[1:]:
            if b != known[0][1]:
                raise ValueError(f"{self.name}: {what}[{i}]: expected batch size {known[0][1]} (that of "
                                 f"{what}[{known[0][0]}]), got shape {shape_str(shapes[i])}")
        return known[0][1] if known else None

    def _check_masks(self, mask: Any, xs: Sequence[Any]) -> Masks:
        """``mask`` as a list with one ``x.shape[:-1]`` bool array or None per input, or None when
        no input has a mask."""
        if mask is None:
            return None
        if not isinstance(mask, (list, tuple)):
            raise TypeError(f"{self.name}: mask: expected a list with one mask (or None) per input, "
                            f"got a {type(mask).__name__}")
        if len(mask) != len(xs):
            raise ValueError(f"{self.name}: mask: expected {len(xs)} entries (one per input), got {len(mask)}")
        out: List[Optional[np.ndarray]] = []
        for i, (m, x) in enumerate(zip(mask, xs)):
            if m is None:
                out.append(None)
                continue
            shape = np.shape(x)
            if len(shape) < 2:
                raise ValueError(f"{self.name}: mask[{i}]: a mask needs an input with at least 2 "
                                 f"dimensions, inputs[{i}] has shape {shape_str(shape)}")
            out.append(as_mask(f"{self.name}: mask[{i}]", m, shape[:-1]))
        return None if all(m is None for m in out) else out

    # ---- backward -------------------------------------------------------------------------------
    def backprop(self, d_out: Any, ctx: Context) -> List[Optional[np.ndarray]]:
        """One gradient per input (each of that input's shape)."""
        d = check_grad(self, "d_out", d_out, ctx.out_shape)
        if not ctx.need_input_grad:
            return [None] * len(ctx.shapes)
        return self._backprop(d, ctx)

    def _backprop(self, d: np.ndarray, ctx: Context) -> List[Optional[np.ndarray]]:
        raise NotImplementedError


class _ElementwiseMerge(_Merge):
    """Elementwise merges: Keras's broadcasting and mask rules (see the module documentation)."""

    def _output_shape(self, shapes: List[Shape], what: str) -> Shape:
        batch = self._batch_size(shapes, what)
        rank = max(len(s) for s in shapes) - 1
        out: List[Optional[int]] = [1] * rank
        for i, s in enumerate(shapes):
            rest = (1,) * (rank - len(s) + 1) + tuple(s[1:])
            for k, (a, b) in enumerate(zip(out, rest)):
                if a is None or b is None:
                    out[k] = None
                elif a == 1:
                    out[k] = b
                elif b != 1 and a != b:
                    prev = "inputs[0]" if i == 1 else f"inputs[0..{i - 1}]"
                    raise ValueError(f"{self.name}: {what}[{i}]: shape {shape_str(s)} does not broadcast "
                                     f"with the shape {shape_str((batch,) + tuple(out))} of {prev}")
        if len(shapes) == 1:
            out = list(shapes[0][1:])
        return (batch,) + tuple(out)

    @staticmethod
    def _expand(x: np.ndarray, ndim: int) -> np.ndarray:
        """``x`` with size-1 axes inserted after the batch axis up to ``ndim`` dimensions (a view)."""
        if x.ndim == ndim:
            return x
        return x.reshape((x.shape[0],) + (1,) * (ndim - x.ndim) + x.shape[1:])

    @staticmethod
    def _unbroadcast(g: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
        """``g`` (of the output's shape) summed over the axes an input of ``shape`` was broadcast
        along, as an array of ``shape``."""
        full = (shape[0],) + (1,) * (g.ndim - len(shape)) + tuple(shape[1:])
        axes = tuple(k for k, (s, o) in enumerate(zip(full, g.shape)) if s == 1 and o != 1)
        if axes:
            g = g.sum(axis=axes, keepdims=True)
        return g.reshape(shape)

    def _value_masks(self, xs: Sequence[np.ndarray], masks: Masks) -> Masks:
        """The masks that change the values: each as ``[..., 1]`` for broadcasting, None when the
        inputs' ranks differ (Keras reshapes such inputs and so loses their masks)."""
        if masks is None or len({x.ndim for x in xs}) != 1:
            return None
        return [None if m is None else m[..., None] for m in masks]

    def call(self, inputs: List[np.ndarray], ctx: Context, training: bool = False,
             mask: Any = None) -> np.ndarray:
        masks = self._check_masks(mask, inputs)
        out_shape = self._output_shape([x.shape for x in inputs], "inputs")
        ndim = len(out_shape)
        xs = [self._expand(x, ndim) for x in inputs]
        ctx.shapes = [x.shape for x in inputs]
        ctx.out_shape = out_shape
        return self._merge(xs, self._value_masks(inputs, masks), ctx)

    def _merge(self, xs: List[np.ndarray], masks: Masks, ctx: Context) -> np.ndarray:
        raise NotImplementedError

    def _backprop(self, d: np.ndarray, ctx: Context) -> List[Optional[np.ndarray]]:
        return [self._unbroadcast(g, s) for g, s in zip(self._grads(d, ctx), ctx.shapes)]

    def _grads(self, d: np.ndarray, ctx: Context) -> List[np.ndarray]:
        """The gradient of each (expanded) input, of the output's shape or broadcastable to it."""
        raise NotImplementedError

    def compute_mask(self, inputs: Any, mask: Any) -> Optional[np.ndarray]:
        """The OR of the input masks when every input has one, else None."""
        if mask is None:
            return None
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"{self.name}: inputs: expected a list of arrays, got a {type(inputs).__name__}")
        masks = self._check_masks(mask, inputs)
        if masks is None or any(m is None for m in masks):
            return None
        if len({len(np.shape(x)) for x in inputs}) != 1:
            raise ValueError(f"{self.name}: mask: cannot merge the masks of inputs of different ranks "
                             f"{[shape_str(np.shape(x)) for x in inputs]}")
        out = masks[0]
        for m in masks[1:]:
            out = np.logical_or(out, m)
        return np.ascontiguousarray(out)


class Add(_ElementwiseMerge):
    """Elementwise sum of the inputs (Keras's ``Add``).

    Parameters
    ----------
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    inputs: [x_1: [N, *d_1], ..., x_k: [N, *d_k]] (broadcastable) -> [N, *broadcast(d_1, ..., d_k)].
    Masks do not change the values; the output mask is the OR of the input masks (None unless
    every input has one).
    """

    def _merge(self, xs: List[np.ndarray], masks: Masks, ctx: Context) -> np.ndarray:
        out = xs[0] + xs[1] if len(xs) > 1 else xs[0].copy()
        for x in xs[2:]:
            out += x
        return out

    def _grads(self, d: np.ndarray, ctx: Context) -> List[np.ndarray]:
        return [d] * len(ctx.shapes)


class Subtract(_ElementwiseMerge):
    """``inputs[0] - inputs[1]`` (Keras's ``Subtract``).

    Parameters
    ----------
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    inputs: [a: [N, *d_a], b: [N, *d_b]] (broadcastable) -> [N, *broadcast(d_a, d_b)]. Masks do not
    change the values; the output mask is ``mask_a | mask_b`` (None unless both are given).
    """

    n_inputs = 2

    def _merge(self, xs: List[np.ndarray], masks: Masks, ctx: Context) -> np.ndarray:
        return xs[0] - xs[1]

    def _grads(self, d: np.ndarray, ctx: Context) -> List[np.ndarray]:
        return [d, -d]


class Average(_ElementwiseMerge):
    """Elementwise mean of the inputs (Keras's ``Average``).

    Parameters
    ----------
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    inputs: [x_1: [N, *d_1], ..., x_k: [N, *d_k]] (broadcastable) -> [N, *broadcast(d_1, ..., d_k)].
    Masks do not change the values (masked entries are averaged too, as in Keras); the output mask
    is the OR of the input masks (None unless every input has one).
    """

    def _merge(self, xs: List[np.ndarray], masks: Masks, ctx: Context) -> np.ndarray:
        out = xs[0] + xs[1] if len(xs) > 1 else xs[0].copy()
        for x in xs[2:]:
            out += x
        out /= len(xs)
        return out

    def _grads(self, d: np.ndarray, ctx: Context) -> List[np.ndarray]:
        return [d / len(ctx.shapes)] * len(ctx.shapes)


class Multiply(_ElementwiseMerge):
    """Elementwise product of the inputs (Keras's ``Multiply``).

    With masks (inputs of equal rank), an input's masked entries count as 1; when every input has
    a mask, the entries masked in all of them are 0 in the output.

    Parameters
    ----------
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    inputs: [x_1: [N, *d_1], ..., x_k: [N, *d_k]] (broadcastable) -> [N, *broadcast(d_1, ..., d_k)];
    the output mask is the OR of the input masks (None unless every input has one).
    """

    def _merge(self, xs: List[np.ndarray], masks: Masks, ctx: Context) -> np.ndarray:
        one = self.dtype.type(1)
        fs = [x if masks is None or masks[i] is None else np.where(masks[i], x, one) for i, x in enumerate(xs)]
        keep = None
        if masks is not None and all(m is not None for m in masks):
            keep = masks[0]
            for m in masks[1:]:
                keep = keep | m
        out = fs[0].copy() if len(fs) == 1 else fs[0] * fs[1]
        for f in fs[2:]:
            out = out * f
        if keep is not None:
            out = np.where(keep, out, self.dtype.type(0))
        ctx.factors, ctx.masks, ctx.keep = fs, masks, keep
        return out

    def _grads(self, d: np.ndarray, ctx: Context) -> List[np.ndarray]:
        fs: List[np.ndarray] = ctx.factors
        if ctx.keep is not None:
            d = np.where(ctx.keep, d, self.dtype.type(0))
        n = len(fs)
        # products of the factors before and after each input (no division: zeros are fine)
        before: List[Any] = [None] * n
        after: List[Any] = [None] * n
        for i in range(1, n):
            before[i] = fs[i - 1] if before[i - 1] is None else before[i - 1] * fs[i - 1]
        for i in range(n - 2, -1, -1):
            after[i] = fs[i + 1] if after[i + 1] is None else after[i + 1] * fs[i + 1]
        grads = []
        for i in range(n):
            g = d
            if before[i] is not None:
                g = g * before[i]
            if after[i] is not None:
                g = g * after[i]
            if ctx.masks is not None and ctx.masks[i] is not None:
                g = np.where(ctx.masks[i], g, self.dtype.type(0))
            grads.append(g)
        return grads


class _Extremum(_ElementwiseMerge):
    """Maximum/Minimum: Keras's ``_apply_merge_op_and_or_mask`` (masked entries take no part)."""

    def _better(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _merge(self, xs: List[np.ndarray], masks: Masks, ctx: Context) -> np.ndarray:
        out = xs[0]
        src = np.zeros(out.shape, dtype=np.intp)  # which input each entry of ``out`` comes from
        omask = None if masks is None else masks[0]
        for i in range(1, len(xs)):
            x, xsrc = xs[i], np.intp(i)
            m = None if masks is None else masks[i]
            if m is not None:
                x = np.where(m, x, out)
                xsrc = np.where(m, xsrc, src)
            if omask is not None:
                out = np.where(omask, out, x)
                src = np.where(omask, src, xsrc)
            omask = omask | m if (m is not None and omask is not None) else None
            take = self._better(x, out)  # ties keep the earlier input
            out = np.where(take, x, out)
            src = np.where(take, xsrc, src)
        ctx.src = np.broadcast_to(src, ctx.out_shape)
        return out if len(xs) > 1 else out.copy()

    def _grads(self, d: np.ndarray, ctx: Context) -> List[np.ndarray]:
        zero = self.dtype.type(0)
        return [np.where(ctx.src == i, d, zero) for i in range(len(ctx.shapes))]


class Maximum(_Extremum):
    """Elementwise maximum of the inputs (Keras's ``Maximum``).

    With masks (inputs of equal rank), an input's masked entries take no part: they take the
    running result's value, and the running result's masked entries (those masked in every input
    so far) take the next input's; an entry masked everywhere is the first input's. The gradient
    of an entry goes to the input whose value was selected (the earliest one on ties).

    Parameters
    ----------
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    inputs: [x_1: [N, *d_1], ..., x_k: [N, *d_k]] (broadcastable) -> [N, *broadcast(d_1, ..., d_k)];
    the output mask is the OR of the input masks (None unless every input has one).
    """

    def _better(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a > b


class Minimum(_Extremum):
    """Elementwise minimum of the inputs (Keras's ``Minimum``); masks as for :class:`Maximum`.

    Parameters
    ----------
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    inputs: [x_1: [N, *d_1], ..., x_k: [N, *d_k]] (broadcastable) -> [N, *broadcast(d_1, ..., d_k)];
    the output mask is the OR of the input masks (None unless every input has one).
    """

    def _better(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a < b


class Concatenate(_Merge):
    """Concatenates the inputs along ``axis`` (Keras's ``Concatenate``).

    Parameters
    ----------
    axis
        The axis to concatenate along (negative counts from the end; ``-1``: features, ``1``:
        time for ``[N, T, C]`` inputs).
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    inputs: [x_1: [N, ..., a_1, ...], ..., x_k: [N, ..., a_k, ...]] (equal but along ``axis``) ->
    [N, ..., a_1 + ... + a_k, ...]. Output mask (Keras 3): along the time axis of ``[N, T_i, C]``
    inputs, the concatenation of the masks ``[N, sum T_i]`` (all True for an unmasked input);
    along the last axis, the OR of the masks (all True when one input has none); None when no
    input has a mask.
    """

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"axis: expected an int, got {type(axis).__name__}")
        self.axis = int(axis)

    def _axis(self, ndim: int, what: str) -> int:
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"{self.name}: {what}: axis {self.axis} is out of range for inputs of "
                             f"{ndim} dimensions")
        return self.axis % ndim

    def _output_shape(self, shapes: List[Shape], what: str) -> Shape:
        ndim = len(shapes[0])
        for i, s in enumerate(shapes):
            if len(s) != ndim:
                raise ValueError(f"{self.name}: {what}[{i}]: expected {ndim} dimensions (like "
                                 f"{what}[0], shape {shape_str(shapes[0])}), got shape {shape_str(s)}")
        ax = self._axis(ndim, what)
        out = list(shapes[0])
        for i, s in enumerate(shapes[1:], 1):
            for k in range(ndim):
                if k == ax:
                    out[k] = None if out[k] is None or s[k] is None else out[k] + s[k]
                elif out[k] is None:
                    out[k] = s[k]
                elif s[k] is not None and s[k] != out[k]:
                    raise ValueError(f"{self.name}: {what}[{i}]: shape {shape_str(s)} does not match "
                                     f"{shape_str(shapes[0])} except along the concatenation axis {self.axis}")
        return tuple(out)

    def call(self, inputs: List[np.ndarray], ctx: Context, training: bool = False,
             mask: Any = None) -> np.ndarray:
        self._check_masks(mask, inputs)
        out_shape = self._output_shape([x.shape for x in inputs], "inputs")
        ax = self.axis % inputs[0].ndim
        ctx.shapes = [x.shape for x in inputs]
        ctx.out_shape = out_shape
        ctx.ax = ax
        return np.concatenate(inputs, axis=ax)

    def _backprop(self, d: np.ndarray, ctx: Context) -> List[Optional[np.ndarray]]:
        cuts = np.cumsum([s[ctx.ax] for s in ctx.shapes])[:-1]
        return list(np.split(d, cuts, axis=ctx.ax))

    def compute_mask(self, inputs: Any, mask: Any) -> Optional[np.ndarray]:
        """Keras 3's ``any(concatenate(masks, axis), axis=-1)`` (see the class documentation)."""
        if mask is None:
            return None
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"{self.name}: inputs: expected a list of arrays, got a {type(inputs).__name__}")
        masks = self._check_masks(mask, inputs)
        if masks is None:
            return None
        shapes = [tuple(np.shape(x)) for x in inputs]
        self._output_shape(shapes, "inputs")
        ndim = len(shapes[0])
        ax = self.axis % ndim
        if ax == ndim - 1:
            # any() over the concatenated feature axis: True where any input is unmasked
            if any(m is None for m in masks):
                return np.ones(shapes[0][:-1], dtype=bool)
            out = masks[0]
            for m in masks[1:]:
                out = out | m
            return np.ascontiguousarray(out)
        full = [np.ones(s[:-1], dtype=bool) if m is None else m for m, s in zip(masks, shapes)]
        return np.concatenate(full, axis=ax)

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["axis"] = self.axis
        return cfg


class Dot(_Merge):
    """Batchwise dot product of two inputs along one axis of each (Keras's ``Dot``).

    For ``x [N, *xr, K]`` and ``y [N, K, *yr]`` (after moving the contracted axes there):
    ``out[n, i, j] = sum_k x[n, i, k] * y[n, k, j]``.

    Parameters
    ----------
    axes
        One int (the same axis of both inputs; negative counts from the end of each) or a pair
        ``(axis_of_x, axis_of_y)``. The batch axis 0 cannot be contracted.
    normalize
        L2-normalize both inputs along their contracted axes first, as ``v / max(|v|, 1e-7)``
        (the output is then the cosine similarity).
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    inputs: [x: [N, *x_rest], y: [N, *y_rest]] -> [N, *x_rest without axes[0], *y_rest without
    axes[1]], or [N, 1] when that is empty: e.g. [N, C], [N, C] -> [N, 1] (axes=1);
    [N, T1, C], [N, T2, C] -> [N, T1, T2] (axes=2). Masks are dropped (output mask None).
    """

    n_inputs = 2

    def __init__(self, axes: Union[int, Sequence[int]], normalize: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)

        def is_int(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

        if is_int(axes):
            ax: Union[int, Tuple[int, int]] = int(axes)
            values = [ax]
        elif isinstance(axes, (list, tuple)):
            if len(axes) != 2:
                raise ValueError(f"axes: expected an int or a pair of ints, got {tuple(axes)!r}")
            if not all(is_int(a) for a in axes):
                raise TypeError(f"axes: expected an int or a pair of ints, got {tuple(axes)!r}")
            ax = (int(axes[0]), int(axes[1]))
            values = list(ax)
        else:
            raise TypeError(f"axes: expected an int or a pair of ints, got {type(axes).__name__}")
        if 0 in values:
            raise ValueError(f"axes: the batch axis 0 cannot be contracted, got {axes!r}")
        self.axes = ax
        self.normalize = bool(normalize)

    def _resolve(self, ndims: Tuple[int, int], what: str) -> Tuple[int, int]:
        pair = (self.axes, self.axes) if isinstance(self.axes, int) else self.axes
        out = []
        for i, (a, n) in enumerate(zip(pair, ndims)):
            if n < 2:
                raise ValueError(f"{self.name}: {what}[{i}]: expected at least 2 dimensions (batch and "
                                 f"the contracted axis), got {n}")
            if not -n <= a < n or a % n == 0:
                raise ValueError(f"{self.name}: axes: {self.axes!r} does not name a non-batch axis of "
                                 f"{what}[{i}], which has {n} dimensions")
            out.append(a % n)
        return out[0], out[1]

    def _output_shape(self, shapes: List[Shape], what: str) -> Shape:
        s1, s2 = shapes
        a1, a2 = self._resolve((len(s1), len(s2)), what)
        batch = self._batch_size(shapes, what)
        if s1[a1] is not None and s2[a2] is not None and s1[a1] != s2[a2]:
            raise ValueError(f"{self.name}: {what}: the contracted axes differ in size: "
                             f"{what}[0] {shape_str(s1)} axis {a1} has {s1[a1]}, {what}[1] "
                             f"{shape_str(s2)} axis {a2} has {s2[a2]}")
        rest = [v for k, v in enumerate(s1) if k not in (0, a1)] + [v for k, v in enumerate(s2) if k not in (0, a2)]
        return (batch,) + (tuple(rest) if rest else (1,))

    @staticmethod
    def _l2_normalize(x: np.ndarray, axis: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``x / max(|x|, eps)`` along ``axis``, the ``1 / max(|x|, eps)`` it used and where the
        norm was clamped to ``eps``."""
        eps = x.dtype.type(EPSILON)
        norm = np.sqrt(np.sum(np.square(x), axis=axis, keepdims=True))
        inv = x.dtype.type(1) / np.maximum(norm, eps)
        return x * inv, inv, norm < eps

    def call(self, inputs: List[np.ndarray], ctx: Context, training: bool = False,
             mask: Any = None) -> np.ndarray:
        self._check_masks(mask, inputs)
        x, y = inputs
        out_shape = self._output_shape([x.shape, y.shape], "inputs")
        a1, a2 = self._resolve((x.ndim, y.ndim), "inputs")
        ctx.shapes = [x.shape, y.shape]
        ctx.out_shape = out_shape
        ctx.axes = (a1, a2)
        ctx.inv = None
        if self.normalize:
            x, inv_x, clamped_x = self._l2_normalize(x, a1)
            y, inv_y, clamped_y = self._l2_normalize(y, a2)
            ctx.inv = ((inv_x, clamped_x), (inv_y, clamped_y))
        N, K = x.shape[0], x.shape[a1]
        xm = np.moveaxis(x, a1, -1)  # [N, *xr, K]
        ym = np.moveaxis(y, a2, 1)   # [N, K, *yr]
        x3 = xm.reshape(N, -1, K)
        y3 = ym.reshape(N, K, -1)
        ctx.x3, ctx.y3, ctx.xm_shape, ctx.ym_shape = x3, y3, xm.shape, ym.shape
        ctx.xn, ctx.yn = x, y
        return np.matmul(x3, y3).reshape(out_shape)

    def _backprop(self, d: np.ndarray, ctx: Context) -> List[Optional[np.ndarray]]:
        a1, a2 = ctx.axes
        g3 = d.reshape(ctx.x3.shape[0], ctx.x3.shape[1], ctx.y3.shape[2])
        dx = np.moveaxis((g3 @ ctx.y3.transpose(0, 2, 1)).reshape(ctx.xm_shape), -1, a1)
        dy = np.moveaxis((ctx.x3.transpose(0, 2, 1) @ g3).reshape(ctx.ym_shape), 1, a2)
        if ctx.inv is not None:
            # through u = v * inv, inv = 1 / max(|v|, eps): du -> (du - u <u, du>) * inv where
            # |v| > eps, du * inv where the norm was clamped
            grads = []
            for g, u, (inv, clamped), ax in ((dx, ctx.xn, ctx.inv[0], a1), (dy, ctx.yn, ctx.inv[1], a2)):
                proj = np.where(clamped, u.dtype.type(0), np.sum(g * u, axis=ax, keepdims=True))
                grads.append((g - u * proj) * inv)
            dx, dy = grads
        return [dx, dy]

    def compute_mask(self, inputs: Any, mask: Any) -> None:
        """Always None (Keras's ``Dot`` drops masks)."""
        return None

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg.update({"axes": self.axes if isinstance(self.axes, int) else list(self.axes),
                    "normalize": self.normalize})
        return cfg
