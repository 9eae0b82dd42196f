"""The base class of every Keras-style layer: parameters, gradients, config and the call protocol.

Protocol (what containers and the training loop rely on)
--------------------------------------------------------
- ``layer(x, mask=None, initial_state=None, training=False)`` builds the layer on first use and
  runs :meth:`call`, which returns NumPy arrays and keeps what :meth:`backward` needs.
- ``layer.backward(d_out)`` takes the gradient of the loss w.r.t. the last call's output (a list
  matching the outputs when the layer returns several) and returns the gradient w.r.t. its input;
  parameter gradients are *accumulated* (``+=``) into ``layer.grads`` under the same keys as
  ``layer.params``. ``zero_grad()`` resets them.
- ``layer.compute_mask(x, mask)`` gives the mask passed on to the next layer (Keras semantics:
  ``[batch, timesteps]`` bool, or None).
- ``params`` is ordered as Keras orders ``get_weights()``; a layer may store a parameter in
  another layout than Keras's (the recurrent layers keep PyTorch's kernel layout), in which case
  ``get_weights()`` / ``set_weights()`` convert and ``params`` documents its own keys.
- Parameter and gradient arrays are modified *in place* (``p -= lr * g``, ``g += ...``,
  ``g.fill(0)``), never rebound: wrappers such as ``Bidirectional`` share them by reference.
- ``serialize(layer)`` gives ``{"class_name": ..., "config": layer.get_config()}`` and
  ``deserialize(that)`` rebuilds the layer: every subclass of :class:`Layer` is registered by its
  class name when it is defined (``register`` adds another name), and configs are plain
  JSON-compatible values when the layer uses built-in initializers and activations.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import itertools
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union

import numpy as np

from rnnkit._threads import GRAD_LOCK, PerThread

Shape = Tuple[Optional[int], ...]

_uid = itertools.count()

_REGISTRY: Dict[str, Type["Layer"]] = {}


class Layer:
    """Base of all layers.

    What a call keeps for its backward (``_cache``) is per thread (:class:`rnnkit._threads.PerThread`):
    several threads may call one layer and backpropagate their own calls. Gradients accumulate
    into :attr:`grads` under :data:`rnnkit._threads.GRAD_LOCK`.

    Parameters
    ----------
    name
        Unique name; defaults to the snake-cased class name plus a counter.
    input_shape
        Shape of one sample without the batch axis (Keras's ``input_shape``); lets a container
        build the layer and print a summary before seeing data.
    dtype
        ``'float32'`` (default) or ``'float64'``.
    trainable
        When False, the optimizer leaves this layer's parameters alone.
    """

    _cache = PerThread("what the calling thread's last forward keeps for its backward")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            _REGISTRY[cls.__name__] = cls

    def __init__(self, name: Optional[str] = None, input_shape: Optional[Sequence[Optional[int]]] = None,
                 dtype: str = "float32", trainable: bool = True, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected argument(s) {sorted(kwargs)}")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        self.name = name or f"{_snake(type(self).__name__)}_{next(_uid)}"
        self.input_shape: Optional[Shape] = None if input_shape is None else tuple(input_shape)
        self.dtype = np.dtype(dtype)
        self.trainable = bool(trainable)
        self.built = False
        self.params: Dict[str, np.ndarray] = {}
        self.grads: Dict[str, np.ndarray] = {}
        # False when nobody needs the gradient w.r.t. this layer's input (a model's first layer,
        # whose input is data): layers that can skip computing it return None from backward
        self.needs_input_grad = True

    # ---- building -----------------------------------------------------------------------------
    def build(self, input_shape: Shape) -> None:
        """Creates the parameters for inputs of ``input_shape`` (batch axis first, may be None)."""
        self.built = True

    def add_weight(self, name: str, shape: Sequence[int], initializer: Any) -> np.ndarray:
        """Creates parameter ``name`` of ``shape`` from ``initializer`` (a name, an
        :class:`~rnnkit.initializers.Initializer` or any ``f(shape, dtype) -> array``) and its
        zero gradient. Every parameter of every layer is made here.

        Under :func:`restoring_weights` (a model being loaded from a file) the initializer is not
        run: the parameter starts at zero, and its bytes are charged to the file's budget first.
        """
        from rnnkit import initializers

        shape = tuple(int(s) for s in shape)
        budget = _RESTORE_BUDGET.get()
        if budget is not None:
            nbytes = self.dtype.itemsize
            for s in shape:
                nbytes *= s
            if nbytes > budget[0]:
                raise ValueError(f"{self.name}: weight {name!r} of shape {shape} needs {nbytes} bytes, "
                                 f"more than the file holds ({budget[0]} bytes left)")
            budget[0] -= nbytes
            value = np.zeros(shape, dtype=self.dtype)
        else:
            init = initializers.get(initializer) if not callable(initializer) else initializer
            value = np.ascontiguousarray(init(shape, dtype=self.dtype), dtype=self.dtype)
            if value.shape != shape:
                raise ValueError(f"{self.name}: the initializer of {name!r} returned shape "
                                 f"{value.shape}, expected {shape}")
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        return value

    def _maybe_build(self, input_shape: Shape) -> None:
        if not self.built:
            self.build(tuple(input_shape))
            self.built = True

    # ---- running ------------------------------------------------------------------------------
    def __call__(self, x: Any, mask: Optional[np.ndarray] = None, initial_state: Any = None,
                 training: bool = False) -> Any:
        x = self._check_input(x)
        self._maybe_build(x.shape)
        return self.call(x, mask=mask, initial_state=initial_state, training=training)

    def forward(self, x: Any, mask: Optional[np.ndarray] = None, initial_state: Any = None,
                training: bool = False) -> Any:
        """Alias of calling the layer."""
        return self(x, mask=mask, initial_state=initial_state, training=training)

    def call(self, x: np.ndarray, mask: Optional[np.ndarray] = None, initial_state: Any = None,
             training: bool = False) -> Any:
        raise NotImplementedError

    def backward(self, d_out: Any) -> np.ndarray:
        raise NotImplementedError

    def compute_mask(self, x: Any, mask: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """The mask for the next layer; by default the incoming one passes through."""
        return mask

    def compute_output_shape(self, input_shape: Shape) -> Any:
        return tuple(input_shape)

    def _check_input(self, x: Any) -> np.ndarray:
        from rnnkit._checks import as_float_array

        # any memory layout: each layer lays its input out as its kernel needs (so a time-major
        # view handed on by a recurrent layer reaches the next one without a copy)
        x = as_float_array(f"{self.name}: x", x, contiguous=False)
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        return x

    # ---- parameters ---------------------------------------------------------------------------
    def accumulate_grads(self, grads: Dict[str, np.ndarray]) -> None:
        """``self.grads[k] += g`` for every entry, as one step with respect to other threads."""
        with GRAD_LOCK:
            for k, g in grads.items():
                self.grads[k] += g

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def get_weights(self) -> List[np.ndarray]:
        """Copies of the parameters, in Keras's order and layout."""
        return [p.copy() for p in self.params.values()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Sets the parameters from arrays in Keras's order and layout (shapes must match)."""
        if not self.built:
            raise ValueError(f"{self.name}: set_weights before the layer is built; call it on data "
                             "or give input_shape")
        if len(weights) != len(self.params):
            raise ValueError(f"{self.name}: expected {len(self.params)} weight arrays "
                             f"({list(self.params)}), got {len(weights)}")
        for (k, p), w in zip(self.params.items(), weights):
            w = np.asarray(w)
            if w.shape != p.shape:
                raise ValueError(f"{self.name}: weight {k!r} expected shape {p.shape}, got {w.shape}")
            p[...] = w

    @property
    def weights(self) -> List[np.ndarray]:
        return list(self.params.values())

    def count_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    # ---- config -------------------------------------------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        cfg: Dict[str, Any] = {"name": self.name, "dtype": self.dtype.name, "trainable": self.trainable}
        if self.input_shape is not None:
            cfg["input_shape"] = list(self.input_shape)
        return cfg

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Layer":
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} built={self.built}>"


# Bytes of parameters that layers built in this context may still create (None: no limit).
_RESTORE_BUDGET: contextvars.ContextVar[Optional[List[int]]] = contextvars.ContextVar(
    "rnnkit_restore_budget", default=None)


@contextlib.contextmanager
def restoring_weights(max_bytes: int) -> Iterator[None]:
    """Within this context, building a layer creates zero parameters without running any
    initializer, and all layers built in it together may create at most ``max_bytes`` of
    parameters (``ValueError`` beyond): what a loader uses so that a file can never make rnnkit
    allocate more than the file itself holds."""
    token = _RESTORE_BUDGET.set([int(max_bytes)])
    try:
        yield
    finally:
        _RESTORE_BUDGET.reset(token)


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def check_mask(name: str, mask: Any, batch: int, steps: int) -> Optional[np.ndarray]:
    """Returns ``mask`` as a C-contiguous ``[batch, steps]`` bool array (None passes through);
    integer masks are read as ``!= 0``, other dtypes raise TypeError, other shapes ValueError."""
    if mask is None:
        return None
    from rnnkit._checks import as_mask

    return as_mask(name, mask, (batch, steps))


# ---- registry and (de)serialisation --------------------------------------------------------

def register(cls: Optional[Type[Layer]] = None, *, name: Optional[str] = None) -> Any:
    """Registers a :class:`Layer` subclass under ``name`` (default: its class name) for
    :func:`deserialize`; usable as a decorator. Subclasses are registered automatically under
    their class name, so this is only needed for extra names."""
    def deco(c: Type[Layer]) -> Type[Layer]:
        if not (isinstance(c, type) and issubclass(c, Layer)):
            raise TypeError(f"cls: expected a Layer subclass, got {c!r}")
        _REGISTRY[name or c.__name__] = c
        return c

    return deco if cls is None else deco(cls)


def serialize(layer: Layer) -> Dict[str, Any]:
    """``{"class_name": type(layer).__name__, "config": layer.get_config()}``."""
    if not isinstance(layer, Layer):
        raise TypeError(f"layer: expected a Layer, got {type(layer).__name__}")
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def _lookup(class_name: str, custom_objects: Optional[Dict[str, Any]] = None) -> Type[Layer]:
    if custom_objects and class_name in custom_objects:
        return custom_objects[class_name]
    if class_name not in _REGISTRY:
        # Modules that define layers register them on import.
        for mod in ("rnnkit.layers.core", "rnnkit.layers.recurrent", "rnnkit.layers.wrappers",
                    "rnnkit.models"):
            try:
                importlib.import_module(mod)
            except ImportError:
                continue
    if class_name not in _REGISTRY:
        raise ValueError(f"class_name: unknown layer class {class_name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[class_name]


def deserialize(config: Dict[str, Any], custom_objects: Optional[Dict[str, Any]] = None) -> Layer:
    """Builds a layer from ``{"class_name": ..., "config": {...}}`` (the output of
    :func:`serialize`); ``custom_objects`` maps extra class names to classes."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"config: expected a dict with 'class_name' and 'config', got {config!r}")
    cls = _lookup(str(config["class_name"]), custom_objects)
    return cls.from_config(dict(config.get("config") or {}))


def get(identifier: Union[str, Dict[str, Any], Layer]) -> Union[Layer, Type[Layer]]:
    """A layer instance passes through; a config dict is deserialised; a class name returns the
    registered class (construct it with its own arguments)."""
    if isinstance(identifier, Layer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        return _lookup(identifier)
    raise TypeError(f"identifier: expected a layer, a config dict or a class name, got {type(identifier).__name__}")
