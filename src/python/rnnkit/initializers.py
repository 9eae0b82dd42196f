"""Weight initializers with Keras 3's names, defaults and semantics.

Every initializer is called as ``init(shape, dtype="float32")`` and returns a new NumPy array.

Seeds
-----
- ``seed=<int>``: every call returns the same values (Keras 3's behaviour for an integer seed).
- ``seed=None``: a seed is drawn once, at construction, from NumPy's global generator
  (``np.random.seed(k)`` therefore makes a model's initialisation reproducible); the instance
  then behaves as if seeded with that integer. Strings given to :func:`get` build a new instance
  each time, so two weights initialised from ``'glorot_uniform'`` differ.
- ``seed=<np.random.Generator>``: every call draws fresh values from that generator (the
  counterpart of Keras's ``SeedGenerator``). Such an initializer serialises its seed as None.

Fans (Keras's ``compute_fans``)
-------------------------------
For a shape of rank 0: ``fan_in = fan_out = 1``; rank 1: both ``shape[0]``; rank 2:
``fan_in = shape[0]``, ``fan_out = shape[1]``; higher ranks (convolution kernels):
``receptive = prod(shape[:-2])``, ``fan_in = shape[-2] * receptive``,
``fan_out = shape[-1] * receptive``. Keras kernels are ``[in, out]``, so initialise in Keras's
layout and transpose afterwards when the storage layout is PyTorch's ``[out, in]``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type, Union

import numpy as np

from rnnkit._registry import deserialize_object, serialize_object

__all__ = [
    "Initializer", "Constant", "Zeros", "Ones", "RandomUniform", "RandomNormal", "TruncatedNormal",
    "VarianceScaling", "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform",
    "LecunNormal", "Orthogonal", "compute_fans", "get", "serialize", "deserialize",
]

SeedLike = Union[None, int, np.random.Generator]


def _check_shape(shape: Any) -> Tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape: expected a tuple of ints, got {type(shape).__name__}") from None
    out = []
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"shape: expected a tuple of ints, got {dims!r}")
        if d < 0:
            raise ValueError(f"shape: expected non-negative sizes, got {dims!r}")
        out.append(int(d))
    return tuple(out)


def _check_dtype(dtype: Any, *, floating: bool) -> np.dtype:
    dt = np.dtype("float32" if dtype is None else dtype)
    if floating and dt.kind != "f":
        raise TypeError(f"dtype: expected a floating dtype for a random initializer, got {dt}")
    return dt


def compute_fans(shape: Sequence[int]) -> Tuple[float, float]:
    """Keras's ``(fan_in, fan_out)`` of a weight of ``shape`` (see the module documentation)."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    receptive = float(np.prod(shape[:-2]))
    return float(shape[-2]) * receptive, float(shape[-1]) * receptive


class Initializer:
    """Base class: ``init(shape, dtype="float32") -> np.ndarray`` plus Keras-style config.

    Shapes
    ------
    ``shape`` is any tuple of non-negative ints; the result has exactly that shape.
    """

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__")

    def get_config(self) -> Dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Initializer":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class _Seeded(Initializer):
    """Shared seed handling of the random initializers (see the module documentation)."""

    def __init__(self, seed: SeedLike = None) -> None:
        if isinstance(seed, np.random.Generator):
            self._init_seed: Optional[int] = None
            self._generator: Optional[np.random.Generator] = seed
            self._seed = 0
        elif seed is None:
            self._init_seed = None
            self._generator = None
            self._seed = int(np.random.randint(1, 2**31 - 1))
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
            if seed < 0:
                raise ValueError(f"seed: expected a non-negative int, got {seed}")
            self._init_seed = int(seed)
            self._generator = None
            self._seed = int(seed)
        else:
            raise TypeError(f"seed: expected None, an int or a numpy Generator, got {type(seed).__name__}")

    @property
    def seed(self) -> Optional[int]:
        """The seed given by the user (None when unseeded or seeded by a Generator)."""
        return self._init_seed

    def _rng(self) -> np.random.Generator:
        if self._generator is not None:
            return self._generator
        return np.random.default_rng(self._seed)

    def get_config(self) -> Dict[str, Any]:
        return {"seed": self._init_seed}


class Constant(Initializer):
    """Fills with ``value`` (a scalar, or an array broadcastable to the shape).

    Shapes
    ------
    ``value`` must broadcast to ``shape``.
    """

    def __init__(self, value: Any = 0.0) -> None:
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"value: expected a number or numeric array, got dtype {arr.dtype}")
        self.value = value

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        shape = _check_shape(shape)
        dt = _check_dtype(dtype, floating=False)
        v = np.asarray(self.value, dtype=dt)
        try:
            return np.array(np.broadcast_to(v, shape), dtype=dt)
        except ValueError:
            raise ValueError(f"value: shape {v.shape} does not broadcast to the requested shape {shape}") from None

    def get_config(self) -> Dict[str, Any]:
        v = self.value
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        return {"value": v}


class Zeros(Initializer):
    """All zeros.

    Shapes
    ------
    Any shape.
    """

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        return np.zeros(_check_shape(shape), dtype=_check_dtype(dtype, floating=False))


class Ones(Initializer):
    """All ones.

    Shapes
    ------
    Any shape.
    """

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        return np.ones(_check_shape(shape), dtype=_check_dtype(dtype, floating=False))


class RandomUniform(_Seeded):
    """Uniform on ``[minval, maxval)``; Keras defaults ``-0.05, 0.05``.

    Shapes
    ------
    Any shape.
    """

    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: SeedLike = None) -> None:
        if not float(minval) < float(maxval):
            raise ValueError(f"minval, maxval: expected minval < maxval, got {minval} and {maxval}")
        self.minval = float(minval)
        self.maxval = float(maxval)
        super().__init__(seed)

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        shape = _check_shape(shape)
        dt = _check_dtype(dtype, floating=True)
        return self._rng().uniform(self.minval, self.maxval, size=shape).astype(dt)

    def get_config(self) -> Dict[str, Any]:
        return {"minval": self.minval, "maxval": self.maxval, **super().get_config()}


class RandomNormal(_Seeded):
    """Normal with ``mean`` and ``stddev``; Keras defaults ``0.0, 0.05``.

    Shapes
    ------
    Any shape.
    """

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: SeedLike = None) -> None:
        if not float(stddev) >= 0.0:
            raise ValueError(f"stddev: expected >= 0, got {stddev}")
        self.mean = float(mean)
        self.stddev = float(stddev)
        super().__init__(seed)

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        shape = _check_shape(shape)
        dt = _check_dtype(dtype, floating=True)
        return self._rng().normal(self.mean, self.stddev, size=shape).astype(dt)

    def get_config(self) -> Dict[str, Any]:
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


def _truncated_normal(rng: np.random.Generator, mean: float, stddev: float, shape: Tuple[int, ...]) -> np.ndarray:
    """Normal(mean, stddev) redrawn until within two standard deviations of the mean."""
    z = rng.standard_normal(size=shape)
    bad = np.abs(z) > 2.0
    while np.any(bad):
        z[bad] = rng.standard_normal(size=int(np.count_nonzero(bad)))
        bad = np.abs(z) > 2.0
    return mean + stddev * z


class TruncatedNormal(RandomNormal):
    """Normal with ``mean`` and ``stddev`` truncated at two standard deviations (redrawn).

    Shapes
    ------
    Any shape.
    """

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        shape = _check_shape(shape)
        dt = _check_dtype(dtype, floating=True)
        return _truncated_normal(self._rng(), self.mean, self.stddev, shape).astype(dt)


class VarianceScaling(_Seeded):
    """Keras's ``VarianceScaling``: variance ``scale / n`` with ``n`` from the fans.

    Parameters
    ----------
    scale
        Positive scaling factor.
    mode
        ``'fan_in'``, ``'fan_out'`` or ``'fan_avg'``.
    distribution
        ``'truncated_normal'`` (stddev ``sqrt(scale/n) / 0.8796...``, cut at 2 stddev),
        ``'untruncated_normal'`` or ``'uniform'`` (limit ``sqrt(3 scale / n)``).
    seed
        See the module documentation.

    Shapes
    ------
    Any shape; fans as in :func:`compute_fans`.
    """

    _MODES = ("fan_in", "fan_out", "fan_avg")
    _DISTS = ("truncated_normal", "untruncated_normal", "uniform")

    def __init__(self, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal",
                 seed: SeedLike = None) -> None:
        if not float(scale) > 0.0:
            raise ValueError(f"scale: expected a positive float, got {scale}")
        if mode not in self._MODES:
            raise ValueError(f"mode: expected one of {self._MODES}, got {mode!r}")
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in self._DISTS:
            raise ValueError(f"distribution: expected one of {self._DISTS}, got {distribution!r}")
        self.scale = float(scale)
        self.mode = mode
        self.distribution = distribution
        super().__init__(seed)

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        shape = _check_shape(shape)
        dt = _check_dtype(dtype, floating=True)
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        scale = self.scale / max(1.0, n)
        rng = self._rng()
        if self.distribution == "truncated_normal":
            stddev = math.sqrt(scale) / 0.87962566103423978
            out = _truncated_normal(rng, 0.0, stddev, shape)
        elif self.distribution == "untruncated_normal":
            out = rng.normal(0.0, math.sqrt(scale), size=shape)
        else:
            limit = math.sqrt(3.0 * scale)
            out = rng.uniform(-limit, limit, size=shape)
        return np.asarray(out).astype(dt)

    def get_config(self) -> Dict[str, Any]:
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                **super().get_config()}


class _FixedVarianceScaling(VarianceScaling):
    _SCALE = 1.0
    _MODE = "fan_avg"
    _DIST = "uniform"

    def __init__(self, seed: SeedLike = None) -> None:
        super().__init__(scale=self._SCALE, mode=self._MODE, distribution=self._DIST, seed=seed)

    def get_config(self) -> Dict[str, Any]:
        return {"seed": self._init_seed}


class GlorotUniform(_FixedVarianceScaling):
    """Glorot (Xavier) uniform: ``U(-l, l)``, ``l = sqrt(6 / (fan_in + fan_out))``.

    Shapes
    ------
    Any shape; fans as in :func:`compute_fans`.
    """


class GlorotNormal(_FixedVarianceScaling):
    """Glorot normal: truncated normal, stddev ``sqrt(2 / (fan_in + fan_out))`` before truncation
    correction.

    Shapes
    ------
    Any shape; fans as in :func:`compute_fans`.
    """
    _DIST = "truncated_normal"


class HeUniform(_FixedVarianceScaling):
    """He uniform: ``U(-l, l)``, ``l = sqrt(6 / fan_in)``.

    Shapes
    ------
    Any shape; fans as in :func:`compute_fans`.
    """
    _SCALE, _MODE = 2.0, "fan_in"


class HeNormal(_FixedVarianceScaling):
    """He normal: truncated normal with variance ``2 / fan_in``.

    Shapes
    ------
    Any shape; fans as in :func:`compute_fans`.
    """
    _SCALE, _MODE, _DIST = 2.0, "fan_in", "truncated_normal"


class LecunUniform(_FixedVarianceScaling):
    """LeCun uniform: ``U(-l, l)``, ``l = sqrt(3 / fan_in)``.

    Shapes
    ------
    Any shape; fans as in :func:`compute_fans`.
    """
    _MODE = "fan_in"


class LecunNormal(_FixedVarianceScaling):
    """LeCun normal: truncated normal with variance ``1 / fan_in``.

    Shapes
    ------
    Any shape; fans as in :func:`compute_fans`.
    """
    _MODE, _DIST = "fan_in", "truncated_normal"


class Orthogonal(_Seeded):
    """Orthogonal matrix times ``gain`` (Keras 3's algorithm: QR of a normal matrix of shape
    ``(max(rows, cols), min(rows, cols))``, column signs fixed by ``diag(R)``, transposed when
    ``rows < cols``), with ``rows = prod(shape[:-1])``, ``cols = shape[-1]``.

    Shapes
    ------
    At least two dimensions; the result reshaped to ``shape`` has orthonormal rows or columns
    (whichever are fewer) times ``gain``.
    """

    def __init__(self, gain: float = 1.0, seed: SeedLike = None) -> None:
        self.gain = float(gain)
        super().__init__(seed)

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        shape = _check_shape(shape)
        dt = _check_dtype(dtype, floating=True)
        if len(shape) < 2:
            raise ValueError(f"shape: the orthogonal initializer needs at least 2 dimensions, got {shape}")
        rows = int(np.prod(shape[:-1]))
        cols = shape[-1]
        if rows == 0 or cols == 0:
            return np.zeros(shape, dtype=dt)
        a = self._rng().standard_normal(size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        d = np.sign(np.diag(r))
        d[d == 0] = 1.0
        q = q * d[None, :]
        if rows < cols:
            q = q.T
        return (self.gain * q.reshape(shape)).astype(dt)

    def get_config(self) -> Dict[str, Any]:
        return {"gain": self.gain, **super().get_config()}


# ---------------------------------------------------------------------------------------------
# lookup and (de)serialisation
# ---------------------------------------------------------------------------------------------

_CLASSES: Dict[str, Type[Initializer]] = {
    c.__name__: c for c in (Constant, Zeros, Ones, RandomUniform, RandomNormal, TruncatedNormal,
                            VarianceScaling, GlorotUniform, GlorotNormal, HeUniform, HeNormal,
                            LecunUniform, LecunNormal, Orthogonal)
}

_ALIASES: Dict[str, str] = {
    "constant": "Constant", "zeros": "Zeros", "zero": "Zeros", "ones": "Ones", "one": "Ones",
    "random_uniform": "RandomUniform", "uniform": "RandomUniform",
    "random_normal": "RandomNormal", "normal": "RandomNormal",
    "truncated_normal": "TruncatedNormal", "variance_scaling": "VarianceScaling",
    "glorot_uniform": "GlorotUniform", "glorot_normal": "GlorotNormal",
    "he_uniform": "HeUniform", "he_normal": "HeNormal",
    "lecun_uniform": "LecunUniform", "lecun_normal": "LecunNormal", "orthogonal": "Orthogonal",
}


def _find(name: str) -> Optional[Type[Initializer]]:
    return _CLASSES.get(_ALIASES.get(name, name))


def _lookup(name: str) -> Type[Initializer]:
    cls = _find(name)
    if cls is None:
        known = sorted(set(_ALIASES) | set(_CLASSES))
        raise ValueError(f"initializer: unknown name {name!r}; expected one of {known}")
    return cls


def serialize(initializer: Any) -> Any:
    """``{"class_name": ..., "config": {...}}`` for an :class:`Initializer`; a plain callable is
    returned as it is (it round-trips in memory but is not JSON-serialisable)."""
    if not isinstance(initializer, Initializer) and callable(initializer):
        return initializer
    return serialize_object(initializer, Initializer, "initializer")


def deserialize(config: Dict[str, Any]) -> Initializer:
    """Inverse of :func:`serialize` for ``{"class_name": ..., "config": {...}}`` dicts."""
    return deserialize_object(config, _find, "initializer", set(_ALIASES) | set(_CLASSES))


def get(identifier: Any) -> Callable[..., np.ndarray]:
    """An initializer from a name (``'glorot_uniform'``, ``'GlorotUniform'``, ``'orthogonal'``,
    ``'zeros'``, ``'uniform'``...), a config dict, an :class:`Initializer` or any callable
    ``f(shape, dtype=...)`` (returned as is). Names build a fresh instance."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        return _lookup(identifier)()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    raise TypeError(
        f"initializer: expected a name, a config dict, an Initializer or a callable, got "
        f"{type(identifier).__name__}")
