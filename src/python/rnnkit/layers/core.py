"""Keras-style non-recurrent layers: :class:`Dense`, :class:`Embedding`, :class:`Dropout`,
:class:`Masking`."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from rnnkit import activations, initializers
from rnnkit._rows import sum_rows_of_matrix
from rnnkit._threads import GRAD_LOCK
from rnnkit._checks import as_float_array, check_positive_int, check_shape
from rnnkit.layers.base import Layer, Shape

__all__ = ["Dense", "Embedding", "Dropout", "Masking"]


def _grad(layer: Layer, a: Any, shape: Tuple[int, ...]) -> np.ndarray:
    name = f"{layer.name}: d_out"
    a = np.asarray(as_float_array(name, a), dtype=layer.dtype)
    check_shape(name, a, shape)
    return a


class Dense(Layer):
    """Densely-connected layer ``activation(x @ kernel + bias)`` applied to the last axis, so a
    3-D input ``[N, T, C]`` is processed at every time step (Keras's Dense on sequences).

    Parameters
    ----------
    units
        Output features.
    activation
        ``None``/``'linear'``, ``'relu'``, ``'tanh'``, ``'sigmoid'`` or ``'softmax'`` (last axis).
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
        self._cache: Optional[Tuple[np.ndarray, np.ndarray]] = None

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

    def call(self, x: np.ndarray, mask: Optional[np.ndarray] = None, initial_state: Any = None,
             training: bool = False) -> np.ndarray:
        if x.ndim < 2 or x.shape[-1] != self.input_dim:
            raise ValueError(f"{self.name}: x: expected shape (..., {self.input_dim}), got {x.shape}")
        z = x @ self.params["kernel"]
        if self.use_bias:
            z += self.params["bias"]
        y = self.activation(z)
        self._cache = (x, y)
        return y

    def backward(self, d_out: Any) -> np.ndarray:
        """``dx [..., C]``; accumulates ``kernel`` and ``bias`` gradients."""
        if self._cache is None:
            raise RuntimeError(f"{self.name}: backward called before a forward call")
        x, y = self._cache
        dy = _grad(self, d_out, y.shape)
        dz = self.activation.backward(dy, y)
        dz2 = dz.reshape(-1, self.units)
        pg = {"kernel": x.reshape(-1, self.input_dim).T @ dz2}
        if self.use_bias:
            pg["bias"] = sum_rows_of_matrix(dz2)
        self.accumulate_grads(pg)
        return dz @ self.params["kernel"].T

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg.update({"units": self.units, "activation": activations.serialize(self.activation),
                    "use_bias": self.use_bias,
                    "kernel_initializer": initializers.serialize(self.kernel_initializer),
                    "bias_initializer": initializers.serialize(self.bias_initializer)})
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
        self._cache: Optional[np.ndarray] = None

    def _check_input(self, x: Any) -> np.ndarray:
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

    def call(self, x: np.ndarray, mask: Optional[np.ndarray] = None, initial_state: Any = None,
             training: bool = False) -> np.ndarray:
        self._cache = x
        return self.params["embeddings"][x]

    def backward(self, d_out: Any) -> None:
        """Accumulates the ``embeddings`` gradient (``np.add.at``); returns None."""
        if self._cache is None:
            raise RuntimeError(f"{self.name}: backward called before a forward call")
        x = self._cache
        g = _grad(self, d_out, x.shape + (self.output_dim,))
        with GRAD_LOCK:
            np.add.at(self.grads["embeddings"], x, g)
        return None

    def compute_mask(self, x: Any, mask: Optional[np.ndarray]) -> Optional[np.ndarray]:
        if not self.mask_zero:
            return None
        return np.asarray(x) != 0

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape) + (self.output_dim,)

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

    def __init__(self, rate: float, noise_shape: Optional[Sequence[Optional[int]]] = None,
                 seed: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.integer, np.floating)):
            raise TypeError(f"rate: expected a float in [0, 1), got {type(rate).__name__}")
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"rate: expected a float in [0, 1), got {rate}")
        if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed: expected None or an int, got {type(seed).__name__}")
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = None if seed is None else int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._cache: Optional[np.ndarray] = None
        self._called = False

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

    def call(self, x: np.ndarray, mask: Optional[np.ndarray] = None, initial_state: Any = None,
             training: bool = False) -> np.ndarray:
        self._called = True
        if not training or self.rate == 0.0:
            self._cache = None
            return x.copy()
        keep = self._rng.random(self._noise_shape(x.shape)) >= self.rate
        m = (keep / (1.0 - self.rate)).astype(self.dtype)
        self._cache = m
        return x * m

    def backward(self, d_out: Any) -> np.ndarray:
        """``d_out`` times the mask of the last call (unchanged after an identity call)."""
        if not self._called:
            raise RuntimeError(f"{self.name}: backward called before a forward call")
        d = np.array(as_float_array(f"{self.name}: d_out", d_out), dtype=self.dtype)
        if self._cache is None:
            return d
        return d * self._cache

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
        self._cache: Optional[np.ndarray] = None

    def _keep(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 2:
            raise ValueError(f"{self.name}: x: expected at least 2 dimensions, got shape {x.shape}")
        return np.any(x != self.mask_value, axis=-1)

    def call(self, x: np.ndarray, mask: Optional[np.ndarray] = None, initial_state: Any = None,
             training: bool = False) -> np.ndarray:
        keep = self._keep(x)
        self._cache = keep
        return x * keep[..., None].astype(x.dtype)

    def backward(self, d_out: Any) -> np.ndarray:
        """``d_out`` with the masked steps zeroed."""
        if self._cache is None:
            raise RuntimeError(f"{self.name}: backward called before a forward call")
        keep = self._cache
        d = np.asarray(as_float_array(f"{self.name}: d_out", d_out), dtype=self.dtype)
        check_shape(f"{self.name}: d_out", d, keep.shape + (None,))
        return d * keep[..., None].astype(self.dtype)

    def compute_mask(self, x: Any, mask: Optional[np.ndarray]) -> np.ndarray:
        return self._keep(np.asarray(x))

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["mask_value"] = self.mask_value
        return cfg
