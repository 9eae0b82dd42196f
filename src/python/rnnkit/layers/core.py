"""Keras-style core layers: :class:`Dense`, :class:`Activation`, :class:`Embedding`,
:class:`Dropout`, :class:`Masking`.

Dense, Activation and Dropout work on the memory of their input as it lies (see
:func:`rnnkit._checks.memory_perm`): a batch-major view of time-major memory handed on by a
recurrent layer goes through them without a copy and comes out in the same order.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from rnnkit import activations, initializers
from rnnkit._random import generator
from rnnkit._checks import check_positive_int, check_rate, check_seed, from_rows, memory_perm, to_rows
from rnnkit._recurrent import dropout_mask
from rnnkit._rows import sum_rows_of_matrix
from rnnkit._threads import GRAD_LOCK
from rnnkit.layers.base import Context, Layer, Shape, check_grad

__all__ = ["Dense", "Activation", "Embedding", "Dropout", "Masking"]


class Dense(Layer):
    """Densely-connected layer ``activation(x @ kernel + bias)`` applied to the last axis, so a
    3-D input ``[N, T, C]`` is processed at every time step (Keras's Dense on sequences).

    Parameters
    ----------
    units
        Output features.
    activation
        Any of :mod:`rnnkit.activations` by Keras's name (``None``/``'linear'``, ``'relu'``,
        ``'gelu'``, ``'swish'``, ``'softmax'`` along the last axis, ...).
    use_bias
        Whether to add a bias.
    kernel_initializer, bias_initializer
        Keras defaults ``'glorot_uniform'`` and ``'zeros'``.
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    x: [..., C] (at least 2-D) -> [..., units]. Parameters (Keras layout, also the storage):
    ``kernel [C, units]``, ``bias [units]``. The incoming mask passes through.
    """

    supports_masking = True

    def __init__(self, units: int, activation: Any = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.input_dim: Optional[int] = None

    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(f"{self.name}: input_shape: expected at least 2 dimensions with a known last "
                             f"size, got {input_shape}")
        self.input_dim = check_positive_int("input features", input_shape[-1])
        self.add_weight("kernel", (self.input_dim, self.units), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer)
        self.built = True

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        if x.ndim < 2 or x.shape[-1] != self.input_dim:
            raise ValueError(f"{self.name}: x: expected shape (..., {self.input_dim}), got {x.shape}")
        perm = memory_perm(x)
        x2 = to_rows(x, perm)
        # z = x · kernel + bias, on the rows in memory order
        z = x2 @ self.params["kernel"]
        if self.use_bias:
            z += self.params["bias"]
        y2 = self.activation(z)
        ctx.x2, ctx.y2, ctx.perm, ctx.lead = x2, y2, perm, x.shape[:-1]
        ctx.z2 = z if self.activation.needs_input else None  # gelu, swish, ... need their input
        return from_rows(y2, x.shape[:-1], perm)

    def _backprop_pre(self, dz2: np.ndarray, ctx: Context) -> Optional[np.ndarray]:
        """From the gradient w.r.t. the pre-activation rows: kernel and bias gradients, dx."""
        pg = {"kernel": ctx.x2.T @ dz2}
        if self.use_bias:
            pg["bias"] = sum_rows_of_matrix(dz2)
        self.accumulate_grads(pg)
        if not ctx.need_input_grad:
            return None
        return from_rows(dz2 @ self.params["kernel"].T, ctx.lead, ctx.perm)

    def backprop(self, d_out: Any, ctx: Context) -> Optional[np.ndarray]:
        """``dx [..., C]``; accumulates ``kernel`` and ``bias`` gradients."""
        d = check_grad(self, "d_out", d_out, tuple(ctx.lead) + (self.units,))
        dz2 = self.activation.backward(to_rows(d, ctx.perm), ctx.y2, ctx.z2)
        return self._backprop_pre(dz2, ctx)

    @property
    def output_activation(self) -> Optional[str]:
        return self.activation.name

    def backprop_logits(self, d_logits: Any, ctx: Context) -> Optional[np.ndarray]:
        """Like :meth:`backprop` from the gradient w.r.t. ``x @ kernel + bias``."""
        d = check_grad(self, "d_logits", d_logits, tuple(ctx.lead) + (self.units,))
        return self._backprop_pre(to_rows(d, ctx.perm), ctx)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg.update({"units": self.units, "activation": activations.serialize(self.activation),
                    "use_bias": self.use_bias,
                    "kernel_initializer": initializers.serialize(self.kernel_initializer),
                    "bias_initializer": initializers.serialize(self.bias_initializer)})
        return cfg


class Activation(Layer):
    """Applies an activation function (Keras's ``Activation``).

    Parameters
    ----------
    activation
        A name (``'relu'``, ``'softmax'``, ...) or an :class:`rnnkit.activations.Activation`.

    Shapes
    ------
    x: any shape (softmax along the last axis) -> same shape. The incoming mask passes through.
    """

    supports_masking = True

    def __init__(self, activation: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        if x.ndim == 0:
            raise ValueError(f"{self.name}: x: expected at least 1 dimension, got a scalar")
        perm = memory_perm(x)
        x2 = to_rows(x, perm)
        y2 = self.activation(x2)
        ctx.y2, ctx.perm, ctx.lead = y2, perm, x.shape[:-1]
        ctx.x2 = x2 if self.activation.needs_input else None
        return from_rows(y2, x.shape[:-1], perm)

    def backprop(self, d_out: Any, ctx: Context) -> np.ndarray:
        d = check_grad(self, "d_out", d_out, tuple(ctx.lead) + (ctx.y2.shape[-1],))
        return from_rows(self.activation.backward(to_rows(d, ctx.perm), ctx.y2, ctx.x2), ctx.lead, ctx.perm)

    @property
    def output_activation(self) -> Optional[str]:
        return self.activation.name

    def backprop_logits(self, d_logits: Any, ctx: Context) -> np.ndarray:
        return check_grad(self, "d_logits", d_logits, tuple(ctx.lead) + (ctx.y2.shape[-1],))

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["activation"] = activations.serialize(self.activation)
        return cfg


class Embedding(Layer):
    """Lookup table from integer indices to dense vectors.

    Parameters
    ----------
    input_dim
        Vocabulary size (indices in ``[0, input_dim)``).
    output_dim
        Vector size.
    embeddings_initializer
        Keras default ``'uniform'`` (``RandomUniform(-0.05, 0.05)``).
    mask_zero
        When True, index 0 is padding: :meth:`compute_mask` returns ``x != 0`` for the next layer
        (so index 0 should not be a real token).
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    x: [N, T] (any shape) of integers -> [N, T, output_dim]; parameter ``embeddings
    [input_dim, output_dim]``. :meth:`backward` returns None (no gradient w.r.t. indices).
    """

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer: Any = "uniform",
                 mask_zero: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_dim = check_positive_int("input_dim", input_dim)
        self.output_dim = check_positive_int("output_dim", output_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.mask_zero = bool(mask_zero)

    def check_inputs(self, x: Any) -> np.ndarray:
        a = x if isinstance(x, np.ndarray) else np.asarray(x)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{self.name}: x: expected an integer array of indices, got dtype {a.dtype}")
        if a.size:
            lo, hi = int(a.min()), int(a.max())
            bad = lo if lo < 0 else (hi if hi >= self.input_dim else None)
            if bad is not None:
                raise ValueError(f"{self.name}: x: index {bad} out of range [0, {self.input_dim}) "
                                 f"(input_dim={self.input_dim})")
        return a

    def build(self, input_shape: Shape) -> None:
        self.add_weight("embeddings", (self.input_dim, self.output_dim), self.embeddings_initializer)
        self.built = True

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        ctx.x = x
        return self.params["embeddings"][x]

    def backprop(self, d_out: Any, ctx: Context) -> None:
        """Accumulates the ``embeddings`` gradient (``np.add.at``); returns None."""
        g = check_grad(self, "d_out", d_out, ctx.x.shape + (self.output_dim,))
        with GRAD_LOCK:
            np.add.at(self.grads["embeddings"], ctx.x, g)
        return None

    def compute_mask(self, x: Any, mask: Any) -> Optional[np.ndarray]:
        if not self.mask_zero:
            return None
        return np.asarray(x) != 0

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape) + (self.output_dim,)

    def output_dtype(self) -> str:
        return self.dtype.name

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg.update({"input_dim": self.input_dim, "output_dim": self.output_dim,
                    "embeddings_initializer": initializers.serialize(self.embeddings_initializer),
                    "mask_zero": self.mask_zero})
        return cfg


class Dropout(Layer):
    """Inverted dropout: in training, zeroes each entry with probability ``rate`` and scales the
    rest by ``1 / (1 - rate)``; the identity when ``training=False``.

    Parameters
    ----------
    rate
        In ``[0, 1)``.
    noise_shape
        Shape of the random mask, broadcast against the input (``None`` entries take the input's
        size), e.g. ``(None, 1, None)`` drops the same features at every time step.
    seed
        Seed of the layer's generator (successive calls draw different masks).
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    x: any shape -> same shape. The incoming mask passes through.
    """

    supports_masking = True

    def __init__(self, rate: float, noise_shape: Optional[Sequence[Optional[int]]] = None,
                 seed: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate = check_rate("rate", rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = check_seed("seed", seed)
        self.rng = generator(self.seed)

    def _noise_shape(self, shape: Tuple[int, ...]) -> Tuple[int, ...]:
        if self.noise_shape is None:
            return shape
        if len(self.noise_shape) != len(shape):
            raise ValueError(f"{self.name}: noise_shape {self.noise_shape} does not match the input rank "
                             f"{len(shape)} (input shape {shape})")
        out = tuple(s if n is None else int(n) for n, s in zip(self.noise_shape, shape))
        for n, s in zip(out, shape):
            if n not in (1, s):
                raise ValueError(f"{self.name}: noise_shape {self.noise_shape} does not broadcast to the "
                                 f"input shape {shape}")
        return out

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        ctx.shape = x.shape
        if not training or self.rate == 0.0:
            ctx.m = None
            return x
        ctx.m = dropout_mask(self.rng, self.rate, self._noise_shape(x.shape), self.dtype)
        return x * ctx.m

    def backprop(self, d_out: Any, ctx: Context) -> np.ndarray:
        """``d_out`` times the mask of the call (unchanged after an identity call)."""
        d = check_grad(self, "d_out", d_out, ctx.shape)
        return d if ctx.m is None else d * ctx.m

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg.update({"rate": self.rate,
                    "noise_shape": None if self.noise_shape is None else list(self.noise_shape),
                    "seed": self.seed})
        return cfg


class Masking(Layer):
    """Marks time steps whose features all equal ``mask_value`` as padding.

    :meth:`compute_mask` returns ``any(x != mask_value, axis=-1)`` (the incoming mask is ignored,
    as in Keras) and the output is ``x`` with the masked steps set to zero.

    Parameters
    ----------
    mask_value
        The padding value.
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    x: [N, T, C] (at least 2-D) -> same shape; mask: ``x.shape[:-1]`` bool.
    """

    def __init__(self, mask_value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)

    def _keep(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 2:
            raise ValueError(f"{self.name}: x: expected at least 2 dimensions, got shape {x.shape}")
        return np.any(x != self.mask_value, axis=-1)

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        keep = self._keep(x)
        ctx.keep = keep
        return x * keep[..., None].astype(x.dtype)

    def backprop(self, d_out: Any, ctx: Context) -> np.ndarray:
        """``d_out`` with the masked steps zeroed."""
        d = check_grad(self, "d_out", d_out, ctx.keep.shape + (None,))
        return d * ctx.keep[..., None].astype(self.dtype)

    def compute_mask(self, x: Any, mask: Any) -> np.ndarray:
        return self._keep(np.asarray(x))

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["mask_value"] = self.mask_value
        return cfg
