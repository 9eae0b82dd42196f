"""The layer protocol that models, wrappers and the training loop use, and nothing else.

A layer is called on arrays (eagerly) or on :class:`~rnnkit.layers.symbolic.KerasTensor` objects
(building a functional model). Eager calls go through one pair of methods, and everything one call
needs for its backward lives in that call's :class:`Context`, never on the layer:

- ``outputs, ctx = layer.apply(inputs, training=..., mask=..., **kwargs)`` builds the layer on
  first use, checks the inputs and runs :meth:`Layer.call`.
- ``d_inputs = layer.backward(d_outputs, ctx)`` runs :meth:`Layer.backprop` and *accumulates*
  the parameter gradients into ``layer.grads`` (under a lock: several threads, or a layer shared
  by several nodes of a model, add up exactly). ``d_outputs`` mirrors the outputs (a list when
  there are several; ``None`` entries are zeros); ``d_inputs`` mirrors the inputs (``None`` where
  an input has no gradient, e.g. integer indices). Gradients w.r.t. tensor-valued keyword
  arguments (a recurrent layer's ``initial_state``) are left in ``ctx.kwarg_grads``.
- ``layer(x)`` is ``apply`` keeping the context as the calling thread's last call, so that
  ``layer.backward(d)`` without a context backpropagates through it (the Keras/PyTorch habit).
- ``layer.compute_mask(inputs, mask)`` is the mask of the outputs (``[batch, timesteps]`` bool or
  None); by default the input mask passes through when :attr:`Layer.supports_masking`, else None.
- Loss fusion, explicit: a layer whose last operation is an activation names it in
  :attr:`Layer.output_activation`; when the loss folds that activation's Jacobian in (softmax +
  cross-entropy, sigmoid + binary cross-entropy: gradient ``p - y``), the training loop calls
  ``layer.backprop_logits(d_logits, ctx)`` instead of ``backward``.
- ``params`` / ``grads``: parameter arrays and their gradients under the same keys, modified in
  place only (wrappers share them by reference); ``get_weights()`` in Keras's order and layout.
- ``get_config()`` / ``from_config()``; every subclass registers under its class name for
  :func:`deserialize`.

Shapes
------
Each layer documents its own. ``input_shape`` arguments include the batch axis first (``None``
where unknown), except the ``input_shape=`` constructor argument, which is one sample's shape as
in Keras.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import itertools
import re
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union

import numpy as np

from rnnkit._checks import as_float_array, as_mask, shape_str
from rnnkit._registry import deserialize_object, serialize_object
from rnnkit._threads import GRAD_LOCK, PerThread
from rnnkit.layers.symbolic import KerasTensor, Node, flatten, is_symbolic, map_structure

__all__ = ["Layer", "Context", "check_mask", "register", "serialize", "deserialize", "get",
           "restoring_weights", "shape_of"]

Shape = Tuple[Optional[int], ...]

_uid = itertools.count()

_REGISTRY: Dict[str, Type["Layer"]] = {}


class Context:
    """What one call of a layer keeps for its backward: one per call (a layer called twice in a
    model has two), owned by the caller. Layers set their own attributes on it; the framework
    sets ``training`` and ``need_input_grad`` (False when nobody needs the gradient w.r.t. the
    inputs, e.g. a model's first layer, whose input is data) and reads ``kwarg_grads``."""

    def __init__(self, training: bool = False, need_input_grad: bool = True) -> None:
        self.training = training
        self.need_input_grad = need_input_grad
        self.kwarg_grads: Dict[str, Any] = {}


def shape_of(inputs: Any) -> Any:
    """The shape of an array, or the list of shapes of a list of arrays/KerasTensors."""
    if isinstance(inputs, (list, tuple)):
        return [shape_of(v) for v in inputs]
    return tuple(inputs.shape)


class Layer:
    """Base of all layers (see the module documentation for the protocol).

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

    #: whether an input mask passes through to the outputs (see :meth:`compute_mask`)
    supports_masking = False

    _last = PerThread("the Context of the calling thread's last eager call")

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
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ValueError(f"name: expected a non-empty string without '/', got {name!r}")
        self.name = name or f"{_snake(type(self).__name__)}_{next(_uid)}"
        self.input_shape: Optional[Shape] = None if input_shape is None else tuple(input_shape)
        self.dtype = np.dtype(dtype)
        self.trainable = bool(trainable)
        self.built = False
        self.params: Dict[str, np.ndarray] = {}
        self.grads: Dict[str, np.ndarray] = {}
        self.non_trainable_keys: set = set()
        self._warned_mask = False

    # ---- building -----------------------------------------------------------------------------
    def build(self, input_shape: Any) -> None:
        """Creates the parameters for inputs of ``input_shape`` (batch axis first, may be None;
        a list of shapes for a layer with several inputs)."""
        self.built = True

    def maybe_build(self, input_shape: Any) -> None:
        """Builds the layer once, for the first shape it meets."""
        if not self.built:
            self.build(input_shape if isinstance(input_shape, list) else tuple(input_shape))
            self.built = True

    def add_weight(self, name: str, shape: Sequence[int], initializer: Any, trainable: bool = True) -> np.ndarray:
        """Creates parameter ``name`` of ``shape`` (``()`` for a scalar) from ``initializer`` (a
        name, an :class:`~rnnkit.initializers.Initializer` or any ``f(shape, dtype) -> array``)
        and its zero gradient. Every parameter of every layer is made here. A non-trainable
        parameter (``trainable=False``, e.g. BatchNormalization's moving statistics) is saved and
        restored with the others but never given to an optimizer.

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
            value = np.array(init(shape, dtype=self.dtype), dtype=self.dtype, order="C")
            if value.shape != shape:
                raise ValueError(f"{self.name}: the initializer of {name!r} returned shape "
                                 f"{value.shape}, expected {shape}")
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        if not trainable:
            self.non_trainable_keys.add(name)
        return value

    @property
    def trainable_weights(self) -> List[np.ndarray]:
        """The parameters an optimizer updates (none when the layer is frozen)."""
        if not self.trainable:
            return []
        return [p for k, p in self.params.items() if k not in self.non_trainable_keys]

    @property
    def non_trainable_weights(self) -> List[np.ndarray]:
        """The parameters no optimizer touches (all of them when the layer is frozen)."""
        if not self.trainable:
            return list(self.params.values())
        return [p for k, p in self.params.items() if k in self.non_trainable_keys]

    def trainable_keys(self) -> List[str]:
        """The keys of :attr:`trainable_weights` (what a model hands to its optimizer)."""
        if not self.trainable:
            return []
        return [k for k in self.params if k not in self.non_trainable_keys]

    # ---- the eager protocol ---------------------------------------------------------------------
    def check_inputs(self, inputs: Any) -> Any:
        """The inputs as this layer's :meth:`call` takes them: by default one float array in the
        layer's dtype, in any memory layout (so that a time-major view handed on by a recurrent
        layer reaches the next one without a copy). Layers with other inputs override this."""
        if isinstance(inputs, (list, tuple)):
            raise TypeError(f"{self.name}: inputs: expected one array, got a {type(inputs).__name__} "
                            f"of {len(inputs)}")
        x = as_float_array(f"{self.name}: x", inputs, contiguous=False)
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        return x

    def apply(self, inputs: Any, *, training: bool = False, mask: Any = None,
              need_input_grad: bool = True, **kwargs: Any) -> Tuple[Any, Context]:
        """Runs one eager call: ``(outputs, ctx)``; pass ``ctx`` to :meth:`backward`."""
        inputs = self.check_inputs(inputs)
        self.maybe_build(shape_of(inputs))
        if mask is not None and not self.supports_masking and any(m is not None for m in flatten(mask)):
            if not self._warned_mask:
                self._warned_mask = True
                warnings.warn(f"Layer {self.name!r} (of type {type(self).__name__}) was passed an input with "
                              "a mask attached to it. However, this layer does not support masking and will "
                              "therefore destroy the mask information. Downstream layers will not see the "
                              "mask.", UserWarning, stacklevel=3)
            mask = None
        ctx = Context(bool(training), bool(need_input_grad))
        return self.call(inputs, ctx, training=bool(training), mask=mask, **kwargs), ctx

    def call(self, inputs: Any, ctx: Context, training: bool = False, mask: Any = None,
             **kwargs: Any) -> Any:
        """The forward computation of one call; keeps what :meth:`backprop` needs on ``ctx``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement call")

    def backprop(self, d_outputs: Any, ctx: Context) -> Any:
        """The gradient w.r.t. the inputs of the call that made ``ctx``; adds the parameter
        gradients with :meth:`accumulate_grads`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backprop")

    @property
    def output_activation(self) -> Optional[str]:
        """The name of the activation that is this layer's last operation (for loss fusion), or
        None."""
        return None

    def backprop_logits(self, d_logits: Any, ctx: Context) -> Any:
        """Like :meth:`backprop`, from the gradient w.r.t. the pre-activation of
        :attr:`output_activation` (what a fused loss gives)."""
        raise NotImplementedError(f"{type(self).__name__} has no output activation to fuse with a loss")

    def backward(self, d_outputs: Any, ctx: Optional[Context] = None) -> Any:
        """Backpropagates ``d_outputs`` through the call that made ``ctx`` (default: the calling
        thread's last eager call of this layer) and returns the gradient w.r.t. its inputs."""
        if ctx is None:
            ctx = self._last
            if ctx is None:
                raise RuntimeError(f"{self.name}: backward called before a forward call in this thread")
        return self.backprop(d_outputs, ctx)

    def __call__(self, inputs: Any, mask: Any = None, training: bool = False, **kwargs: Any) -> Any:
        """Eager: the outputs for ``inputs`` (the call's context is kept for :meth:`backward`).
        On KerasTensors: a node of a model being built, and its output KerasTensor(s)."""
        if is_symbolic(inputs, kwargs):
            return self._symbolic_call(inputs, mask, kwargs)
        outputs, ctx = self.apply(inputs, training=training, mask=mask, **kwargs)
        self._last = ctx
        # NumPy in, NumPy out: fresh C-contiguous arrays for the user, which the user may change
        # in place without touching what the call keeps for its backward (inside a model, layers
        # hand on views in whatever memory order they computed, e.g. time-major)
        return map_structure(lambda v: np.array(v, order="C") if isinstance(v, np.ndarray) else v, outputs)

    def forward(self, inputs: Any, mask: Any = None, training: bool = False, **kwargs: Any) -> Any:
        """Alias of calling the layer."""
        return self(inputs, mask=mask, training=training, **kwargs)

    def _symbolic_call(self, inputs: Any, mask: Any, kwargs: Dict[str, Any]) -> Any:
        if mask is not None:
            raise ValueError(f"{self.name}: mask: masks reach a layer of a model through its inputs "
                             "(Embedding(mask_zero=True), Masking); do not pass mask= to a symbolic call")
        for t in flatten(inputs):
            if not isinstance(t, KerasTensor):
                raise TypeError(f"{self.name}: inputs: expected KerasTensors (from Input or another layer) "
                                f"when building a model, got {type(t).__name__}")
        shapes = map_structure(lambda t: t.shape, inputs)
        shapes = list(shapes) if isinstance(shapes, tuple) and isinstance(inputs, (list, tuple)) else shapes
        self.maybe_build(shapes)
        out_shape = self.compute_output_shape_of_call(shapes, **kwargs)
        node = Node(self, inputs, kwargs)
        several = isinstance(out_shape, list)
        out_shapes = out_shape if several else [out_shape]
        dtype = self.output_dtype()
        node.outputs = [KerasTensor(s, dtype, node, i) for i, s in enumerate(out_shapes)]
        node.outputs_structure = several
        return list(node.outputs) if several else node.outputs[0]

    def output_dtype(self) -> str:
        """The dtype of the outputs (the layer's dtype)."""
        return self.dtype.name

    # ---- masks and shapes -----------------------------------------------------------------------
    def compute_mask(self, inputs: Any, mask: Any) -> Any:
        """The mask of the outputs (see :attr:`supports_masking`)."""
        return mask if self.supports_masking else None

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape)

    def compute_output_shape_of_call(self, input_shape: Any, **call_kwargs: Any) -> Any:
        """The output shape(s) of a call with these keyword arguments (for a layer whose outputs
        depend on them, e.g. ``return_attention_scores``); by default :meth:`compute_output_shape`."""
        return self.compute_output_shape(input_shape)

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
            if w.dtype.kind not in "fiu":
                raise TypeError(f"{self.name}: weight {k!r} expected a numeric array, got dtype {w.dtype}")
        for (k, p), w in zip(self.params.items(), weights):
            p[...] = w

    @property
    def weights(self) -> List[np.ndarray]:
        return list(self.params.values())

    def count_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def sublayers(self) -> List["Layer"]:
        """Layers this layer wraps (their parameters are also this layer's); none by default."""
        return []

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


def _snake(name: str) -> str:
    """Keras's ``to_snake_case``: ``SimpleRNN`` -> ``simple_rnn``, ``Conv1D`` -> ``conv1d``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def check_mask(name: str, mask: Any, batch: int, steps: int) -> Optional[np.ndarray]:
    """Returns ``mask`` as a C-contiguous ``[batch, steps]`` bool array (None passes through);
    integer masks are read as ``!= 0``, other dtypes raise TypeError, other shapes ValueError."""
    if mask is None:
        return None
    return as_mask(name, mask, (batch, steps))


def check_grad(layer: Layer, name: str, a: Any, shape: Sequence[Optional[int]]) -> np.ndarray:
    """An incoming gradient as a float array of the layer's dtype (any layout), of ``shape``."""
    g = as_float_array(f"{layer.name}: {name}", a, contiguous=False)
    if g.dtype != layer.dtype:
        g = g.astype(layer.dtype)
    if g.ndim != len(shape) or any(e is not None and e != s for e, s in zip(shape, g.shape)):
        raise ValueError(f"{layer.name}: {name}: expected shape {shape_str(shape)}, got {shape_str(g.shape)}")
    return g


# ---- weights restored from a file --------------------------------------------------------------

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


# modules whose import registers the built-in layers
_LAYER_MODULES = ("rnnkit.layers.core", "rnnkit.layers.recurrent", "rnnkit.layers.rnn_cells",
                  "rnnkit.layers.wrappers",
                  "rnnkit.layers.merge", "rnnkit.layers.attention", "rnnkit.layers.normalization",
                  "rnnkit.layers.pooling", "rnnkit.layers.conv", "rnnkit.layers.reshaping",
                  "rnnkit.layers.input_layer")


def _lookup(class_name: str, custom_objects: Optional[Dict[str, Any]] = None) -> Optional[Type[Layer]]:
    if custom_objects and class_name in custom_objects:
        return custom_objects[class_name]
    if class_name not in _REGISTRY:
        for mod in _LAYER_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:  # a module not shipped; any other error surfaces
                if e.name != mod:
                    raise
    return _REGISTRY.get(class_name)


def serialize(layer: Layer) -> Dict[str, Any]:
    """``{"class_name": type(layer).__name__, "config": layer.get_config()}``."""
    return serialize_object(layer, Layer, "layer")


def deserialize(config: Dict[str, Any], custom_objects: Optional[Dict[str, Any]] = None) -> Layer:
    """Builds a layer from ``{"class_name": ..., "config": {...}}`` (the output of
    :func:`serialize`); ``custom_objects`` maps extra class names to classes."""
    return deserialize_object(config, lambda n: _lookup(n, custom_objects), "layer class", _REGISTRY)


def get(identifier: Union[str, Dict[str, Any], Layer]) -> Union[Layer, Type[Layer]]:
    """A layer instance passes through; a config dict is deserialised; a class name returns the
    registered class (construct it with its own arguments)."""
    if isinstance(identifier, Layer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = _lookup(identifier)
        if cls is None:
            raise ValueError(f"identifier: unknown layer class {identifier!r}; known: {sorted(_REGISTRY)}")
        return cls
    raise TypeError(f"identifier: expected a layer, a config dict or a class name, got {type(identifier).__name__}")
