"""PyTorch-style :class:`Linear` (``torch.nn.Linear``) over NumPy arrays."""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from rnnkit._checks import check_bool, check_positive_int, shape_str
from rnnkit._threads import PerThread
from rnnkit.nn.module import (DTypeLike, Module, Parameter, SeedLike, accumulate, as_float_dtype, expect_shape,
                              input_array, make_rng)

__all__ = ["Linear"]

Array = np.ndarray


class Linear(Module):
    r"""Affine map :math:`y = x W^T + b` over the last axis, as ``torch.nn.Linear``.

    Parameters
    ----------
    in_features, out_features
        Sizes of the last axis of the input and of the output.
    bias
        Whether to add the learnable bias ``b``.
    dtype
        ``np.float32`` (default) or ``np.float64``.
    seed
        ``None``, an int or a ``numpy.random.Generator`` for the initialization.

    Attributes
    ----------
    weight
        ``[out_features, in_features]``, initialized from :math:`\mathcal{U}(-k, k)`,
        :math:`k = 1/\sqrt{\text{in\_features}}` (PyTorch's default).
    bias
        ``[out_features]``, same distribution; ``None`` when ``bias=False``.

    Shapes
    ------
    - input ``[*, in_features]`` (any number of leading axes, including none)
    - output ``[*, out_features]``
    """

    _last_x = PerThread("the input of this thread's last forward")

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None) -> None:
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        use_bias = check_bool("bias", bias)
        dt = as_float_dtype("dtype", dtype)
        object.__setattr__(self, "_dtype", dt)
        rng = make_rng(seed)
        k = 1.0 / math.sqrt(self.in_features)
        self.weight = Parameter(rng.uniform(-k, k, (self.out_features, self.in_features)).astype(dt))
        self.register_parameter("bias", Parameter(rng.uniform(-k, k, (self.out_features,)).astype(dt))
                                if use_bias else None)
        self._last_x: Optional[Array] = None

    def _forget_forward(self) -> None:
        self._last_x = None

    def forward(self, x: Any) -> Array:
        """Returns ``x @ weight.T + bias``; keeps ``x`` for :meth:`backward`.

        Shapes
        ------
        x: [*, in_features] -> [*, out_features]
        """
        x = input_array("x", x, self._dtype)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (*, {self.in_features}) (last axis = in_features), "
                             f"got {shape_str(x.shape)}")
        self._last_x = x
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, d_output: Any) -> Array:
        """Gradient w.r.t. the input of the last forward; accumulates ``weight.grad`` and
        ``bias.grad``.

        Shapes
        ------
        d_output: [*, out_features] (the output's shape) -> dx: [*, in_features]
        """
        if self._last_x is None:
            raise RuntimeError("Linear.backward: call forward first (nothing to backpropagate through)")
        x = self._last_x
        dy = input_array("d_output", d_output, x.dtype)
        expect_shape("d_output", dy, x.shape[:-1] + (self.out_features,), "the output's shape")
        dx = dy @ self.weight.data
        x2 = x.reshape(-1, self.in_features)
        dy2 = dy.reshape(-1, self.out_features)
        accumulate(self.weight, dy2.T @ x2)
        if self.bias is not None:
            accumulate(self.bias, dy2.sum(axis=0))
        return dx

    def extra_repr(self) -> str:
        s = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        return s + ("" if self._dtype == np.float32 else f", dtype={self._dtype}")
