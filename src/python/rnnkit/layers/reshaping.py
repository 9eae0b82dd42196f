"""Keras-style reshaping layers: :class:`Flatten`, :class:`Reshape`, :class:`Permute`,
:class:`RepeatVector`. None has parameters; their backward reshapes the gradient back."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from rnnkit._checks import check_positive_int
from rnnkit.layers.base import Context, Layer, Shape, check_grad

__all__ = ["Flatten", "Reshape", "Permute", "RepeatVector"]


def _prod(shape: Sequence[Optional[int]]) -> Optional[int]:
    out = 1
    for s in shape:
        if s is None:
            return None
        out *= s
    return out


class Flatten(Layer):
    """Flattens every axis but the batch axis.

    Shapes
    ------
    x: [N, *dims] -> [N, prod(dims)].
    """

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        if x.ndim < 1:
            raise ValueError(f"{self.name}: x: expected at least 1 dimension, got a scalar")
        ctx.shape = x.shape
        return np.ascontiguousarray(x).reshape(x.shape[0], -1)

    def backprop(self, d_out: Any, ctx: Context) -> np.ndarray:
        d = check_grad(self, "d_out", d_out, (ctx.shape[0], int(np.prod(ctx.shape[1:], dtype=np.int64))))
        return d.reshape(ctx.shape)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0], _prod(input_shape[1:]))


class Reshape(Layer):
    """Reshapes each sample to ``target_shape`` (one entry may be -1).

    Parameters
    ----------
    target_shape
        The new shape of one sample (no batch axis).

    Shapes
    ------
    x: [N, *dims] -> [N, *target_shape] with the same number of entries per sample.
    """

    def __init__(self, target_shape: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        ts = tuple(int(s) for s in target_shape)
        if sum(s == -1 for s in ts) > 1 or any(s == 0 or s < -1 for s in ts):
            raise ValueError(f"target_shape: expected positive sizes and at most one -1, got {ts}")
        self.target_shape = ts

    def _resolve(self, per_sample: Optional[int]) -> Tuple[Optional[int], ...]:
        if -1 not in self.target_shape:
            if per_sample is not None and _prod(self.target_shape) != per_sample:
                raise ValueError(f"{self.name}: cannot reshape {per_sample} entries per sample to "
                                 f"{self.target_shape}")
            return self.target_shape
        known = -_prod(self.target_shape)  # product with the -1
        if per_sample is None:
            return tuple(None if s == -1 else s for s in self.target_shape)
        if per_sample % known:
            raise ValueError(f"{self.name}: cannot reshape {per_sample} entries per sample to "
                             f"{self.target_shape}")
        return tuple(per_sample // known if s == -1 else s for s in self.target_shape)

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        ctx.shape = x.shape
        shape = self._resolve(int(np.prod(x.shape[1:], dtype=np.int64)))
        return np.ascontiguousarray(x).reshape((x.shape[0],) + tuple(shape))

    def backprop(self, d_out: Any, ctx: Context) -> np.ndarray:
        want = (ctx.shape[0],) + self._resolve(int(np.prod(ctx.shape[1:], dtype=np.int64)))
        return check_grad(self, "d_out", d_out, want).reshape(ctx.shape)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0],) + self._resolve(_prod(input_shape[1:]))

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["target_shape"] = list(self.target_shape)
        return cfg


class Permute(Layer):
    """Permutes the non-batch axes (``dims`` counts from 1, as in Keras).

    Parameters
    ----------
    dims
        A permutation of ``1 .. ndim-1``; e.g. ``(2, 1)`` swaps time and features.

    Shapes
    ------
    x: [N, d_1, ..., d_k] -> [N, d_dims[0], ..., d_dims[k-1]].
    """

    def __init__(self, dims: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        d = tuple(int(v) for v in dims)
        if sorted(d) != list(range(1, len(d) + 1)):
            raise ValueError(f"dims: expected a permutation of 1..{len(d)}, got {d}")
        self.dims = d

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        if x.ndim != len(self.dims) + 1:
            raise ValueError(f"{self.name}: x: expected {len(self.dims) + 1} dimensions, got shape {x.shape}")
        ctx.shape = x.shape
        return x.transpose((0,) + self.dims)

    def backprop(self, d_out: Any, ctx: Context) -> np.ndarray:
        want = (ctx.shape[0],) + tuple(ctx.shape[i] for i in self.dims)
        d = check_grad(self, "d_out", d_out, want)
        return d.transpose(tuple(np.argsort((0,) + self.dims)))

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0],) + tuple(input_shape[i] for i in self.dims)

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["dims"] = list(self.dims)
        return cfg


class RepeatVector(Layer):
    """Repeats a vector ``n`` times along a new time axis (an encoder's summary fed to every
    decoder step).

    Parameters
    ----------
    n
        The number of repetitions.

    Shapes
    ------
    x: [N, C] -> [N, n, C]; the gradient is summed over the repetitions.
    """

    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = check_positive_int("n", n)

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        if x.ndim != 2:
            raise ValueError(f"{self.name}: x: expected 2 dimensions (batch, features), got shape {x.shape}")
        ctx.shape = x.shape
        return np.repeat(x[:, None, :], self.n, axis=1)

    def backprop(self, d_out: Any, ctx: Context) -> np.ndarray:
        N, C = ctx.shape
        return check_grad(self, "d_out", d_out, (N, self.n, C)).sum(axis=1)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0], self.n, input_shape[-1])

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["n"] = self.n
        return cfg
