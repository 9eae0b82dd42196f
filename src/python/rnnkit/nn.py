r"""PyTorch-style modules: :class:`RNN`, :class:`LSTM`, :class:`GRU` and :class:`Linear`.

The modules mirror ``torch.nn``: the same constructor arguments, parameter names, shapes,
``state_dict`` keys and call conventions, so a state dict saved from PyTorch loads as it is
(see :meth:`Module.load_state_dict`) and gives the same outputs. Everything is a NumPy array;
there is no autograd. Instead every module has an explicit ``backward`` that takes the gradient
of the loss w.r.t. the outputs of the last ``forward``, returns the gradient w.r.t. the inputs and
**accumulates** (``+=``) the parameter gradients into each :class:`Parameter`'s ``.grad`` — what
``loss.backward()`` does in PyTorch. ``zero_grad()`` clears them.

Example
-------
>>> import numpy as np
>>> from rnnkit import nn
>>> lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True, bidirectional=True, seed=0)
>>> x = np.random.default_rng(1).standard_normal((4, 10, 8)).astype(np.float32)
>>> out, (h_n, c_n) = lstm(x)
>>> out.shape, h_n.shape
((4, 10, 32), (4, 4, 16))
>>> dx, (dh0, dc0) = lstm.backward(np.ones_like(out))
>>> lstm.weight_ih_l0.grad.shape
(64, 8)
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections import OrderedDict
from typing import (Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Set,
                    Tuple, Union)

import numpy as np

from rnnkit import functional as F
from rnnkit._checks import FLOAT_DTYPES, as_mask, check_positive_int
from rnnkit._threads import GRAD_LOCK, PerThread

__all__ = ["Parameter", "Module", "RNN", "LSTM", "GRU", "Linear", "IncompatibleKeys"]

Array = np.ndarray
DTypeLike = Union[str, type, np.dtype, Any]
SeedLike = Union[None, int, np.integer, np.random.Generator]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _to_numpy(a: Any) -> Any:
    """Tensors (anything with ``.detach``) become NumPy arrays; other objects pass through.

    torch is never imported here: ``np.asarray(t.detach().cpu())`` works on any torch tensor."""
    if not isinstance(a, np.ndarray) and callable(getattr(a, "detach", None)):
        return np.asarray(a.detach().cpu())
    return a


def _as_float_dtype(name: str, dtype: DTypeLike) -> np.dtype:
    """``np.float32``/``np.float64``, their names, ``np.dtype`` objects or ``torch.float32``/
    ``torch.float64`` (matched by name, torch is not imported) -> ``np.dtype``."""
    spec: Any = dtype
    if type(dtype).__module__.split(".")[0] == "torch" or (isinstance(dtype, str) and dtype.startswith("torch.")):
        spec = str(dtype)[len("torch."):]
    try:
        dt = np.dtype(spec)
    except TypeError:
        raise TypeError(f"{name}: expected float32 or float64 (np.float32, 'float64', ...), "
                        f"got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float32 or float64, got {dt}")
    return dt


def _make_rng(seed: SeedLike) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected None, an int or a numpy.random.Generator, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed}")
    return np.random.default_rng(int(seed))


def _check_bool(name: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(v).__name__}")
    return bool(v)


def _input_array(name: str, a: Any, dtype: np.dtype) -> Array:
    """A float array of the module's dtype (``TypeError`` otherwise), tensors converted."""
    a = _to_numpy(a)
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name}: expected a float array, got {type(a).__name__} ({e})") from None
    if arr.dtype.kind != "f" or arr.dtype.newbyteorder("=") not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}")
    if arr.dtype.newbyteorder("=") != dtype:
        raise TypeError(
            f"{name}: expected dtype {dtype} (the module's dtype), got {arr.dtype}; convert the "
            f"input with .astype(np.{dtype}) or the module with .to(np.{arr.dtype.newbyteorder('=')})")
    return arr


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _expect_shape(name: str, a: Array, shape: Tuple[int, ...], what: str) -> None:
    if a.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {_shape_str(shape)} = {what}, got {_shape_str(a.shape)}")


def _accumulate(p: Parameter, g: Optional[Array]) -> None:
    """``p.grad += g`` (autograd's accumulation); the first gradient is stored as a copy. Atomic
    with respect to other threads (:data:`rnnkit._threads.GRAD_LOCK`)."""
    if g is None or not p.requires_grad:
        return
    with GRAD_LOCK:
        if p.grad is None:
            p.grad = np.array(g, dtype=p.data.dtype, copy=True)
        else:
            p.grad += g


def _addindent(s: str, n: int) -> str:
    lines = s.split("\n")
    return lines[0] if len(lines) == 1 else lines[0] + "\n" + "\n".join(" " * n + ln for ln in lines[1:])


# ---------------------------------------------------------------------------------------------
# Parameter and Module
# ---------------------------------------------------------------------------------------------

class Parameter:
    """A trainable array: ``data`` (a C-contiguous float32/float64 NumPy array) and ``grad``.

    ``grad`` is ``None`` until the first ``backward`` of the owning module; backward passes then
    add to it (``+=``), as PyTorch's autograd does. Set ``requires_grad=False`` to freeze the
    parameter: backward then leaves ``grad`` alone.

    Parameters
    ----------
    data
        A float32 or float64 array (or a tensor); an array that already is C-contiguous is used
        without a copy (the parameter shares its memory, like ``torch.nn.Parameter``).
    requires_grad
        Whether backward accumulates a gradient into ``grad``.

    Shapes
    ------
    ``grad`` always has the shape and dtype of ``data``.
    """

    __slots__ = ("_data", "grad", "requires_grad")

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        self._data = self._convert(data)
        self.grad: Optional[Array] = None
        self.requires_grad = _check_bool("requires_grad", requires_grad)

    @staticmethod
    def _convert(data: Any) -> Array:
        arr = np.asarray(_to_numpy(data))
        if arr.dtype.kind != "f" or arr.dtype.newbyteorder("=") not in FLOAT_DTYPES:
            raise TypeError(f"data: expected a float32 or float64 array, got dtype {arr.dtype}")
        return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))

    @property
    def data(self) -> Array:
        """The parameter's values (a NumPy array)."""
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = self._convert(value)

    @property
    def shape(self) -> Tuple[int, ...]:
        return self._data.shape

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        return int(self._data.size)

    def numel(self) -> int:
        """Number of elements (PyTorch's name)."""
        return int(self._data.size)

    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> Array:
        if copy is None:
            return np.asarray(self._data, dtype=dtype)
        return np.array(self._data, dtype=dtype, copy=copy)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` returns: keys it did not find / did not use."""
    missing_keys: List[str]
    unexpected_keys: List[str]


class Module:
    """Base class of the PyTorch-style modules.

    Assigning a :class:`Parameter` or a :class:`Module` to an attribute registers it, so
    :meth:`named_parameters` and :meth:`state_dict` see it under PyTorch's dotted names
    (``"rnn.weight_ih_l0"`` for ``self.rnn = LSTM(...)``). Subclasses implement ``forward`` and
    ``backward``; calling the module calls ``forward``.

    Attributes
    ----------
    training
        ``True`` after :meth:`train` (the default), ``False`` after :meth:`eval`; only dropout
        depends on it.

    Shapes
    ------
    Each subclass documents its own; ``backward`` always takes gradients shaped like the
    outputs of the last ``forward`` and returns gradients shaped like its inputs.
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_dtype", np.dtype(np.float32))

    # ---- registration ---------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        modules = self.__dict__.get("_modules")
        if isinstance(value, (Parameter, Module)) and params is None:
            raise AttributeError(f"cannot assign {type(value).__name__} {name!r} before Module.__init__() is called")
        if isinstance(value, Parameter):
            self.__dict__.pop(name, None)
            modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            self.__dict__.pop(name, None)
            params.pop(name, None)
            modules[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"{name}: expected a Parameter or None for a registered parameter, "
                                f"got {type(value).__name__}")
            params[name] = None
        elif modules is not None and name in modules:
            if value is not None:
                raise TypeError(f"{name}: expected a Module or None for a registered submodule, "
                                f"got {type(value).__name__}")
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        if "_parameters" in d and name in d["_parameters"]:
            return d["_parameters"][name]
        if "_modules" in d and name in d["_modules"]:
            return d["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        if name in self._parameters:
            del self._parameters[name]
        elif name in self._modules:
            del self._modules[name]
        else:
            object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Optional[Parameter]) -> None:
        """Registers ``param`` (or ``None``: a declared but absent parameter, e.g. ``bias=False``)."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"name: expected a non-empty string without '.', got {name!r}")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"param: expected a Parameter or None, got {type(param).__name__}")
        self.__dict__.pop(name, None)
        self._modules.pop(name, None)
        self._parameters[name] = param

    def add_module(self, name: str, module: Optional[Module]) -> None:
        """Registers a submodule under ``name``."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"name: expected a non-empty string without '.', got {name!r}")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"module: expected a Module or None, got {type(module).__name__}")
        self.__dict__.pop(name, None)
        self._parameters.pop(name, None)
        self._modules[name] = module

    # ---- traversal ------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[Tuple[str, Module]]:
        """Yields ``(name, module)`` for this module (name ``prefix``) and every descendant."""
        seen: Set[int] = set()

        def walk(m: Module, pre: str) -> Iterator[Tuple[str, Module]]:
            if id(m) in seen:
                return
            seen.add(id(m))
            yield pre, m
            for n, child in m._modules.items():
                if child is not None:
                    yield from walk(child, f"{pre}.{n}" if pre else n)

        return walk(self, prefix)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[Tuple[str, Module]]:
        for n, m in self._modules.items():
            if m is not None:
                yield n, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def _all_named_parameters(self, remove_duplicate: bool) -> Iterator[Tuple[str, Parameter]]:
        seen: Set[int] = set()

        def walk(m: Module, pre: str) -> Iterator[Tuple[str, Parameter]]:
            for n, p in m._parameters.items():
                if p is None or (remove_duplicate and id(p) in seen):
                    continue
                seen.add(id(p))
                yield (f"{pre}.{n}" if pre else n), p
            for n, child in m._modules.items():
                if child is not None:
                    yield from walk(child, f"{pre}.{n}" if pre else n)

        return walk(self, "")

    def named_parameters(self) -> Iterator[Tuple[str, Parameter]]:
        """Yields ``(name, parameter)`` in registration order with PyTorch's dotted names; a
        parameter shared by several modules is listed once."""
        return self._all_named_parameters(remove_duplicate=True)

    def parameters(self) -> Iterator[Parameter]:
        """Yields every :class:`Parameter` (what an optimizer takes)."""
        for _, p in self.named_parameters():
            yield p

    # ---- state dicts ----------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, Array]":
        """Copies of every parameter's values under PyTorch's keys (``weight_ih_l0``, ...).

        Returns
        -------
        OrderedDict[str, numpy.ndarray]
            Fresh arrays: changing them does not change the module.
        """
        return OrderedDict((n, p.data.copy()) for n, p in self._all_named_parameters(remove_duplicate=False))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copies values into the parameters (in place, as PyTorch does).

        Parameters
        ----------
        state_dict
            Mapping from PyTorch keys to NumPy arrays or torch tensors (converted with
            ``np.asarray(t.detach().cpu())``); values are cast to the module's dtype.
        strict
            When True (default) a missing or unexpected key raises ``ValueError``; when False
            those keys are skipped and reported in the result.

        Returns
        -------
        IncompatibleKeys
            ``(missing_keys, unexpected_keys)``.

        Raises
        ------
        ValueError
            Missing/unexpected keys (strict), or any shape mismatch (always). Nothing is copied
            unless every key passes.
        TypeError
            A value that is not a float array.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a mapping of names to arrays, got {type(state_dict).__name__}")
        strict = _check_bool("strict", strict)
        own = OrderedDict(self._all_named_parameters(remove_duplicate=False))
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing key(s): " + ", ".join(repr(k) for k in missing))
            if unexpected:
                parts.append("unexpected key(s): " + ", ".join(repr(k) for k in unexpected))
            raise ValueError(f"state_dict: error(s) loading into {type(self).__name__}: " + "; ".join(parts))
        values: Dict[str, Array] = {}
        errors = []
        for k, p in own.items():
            if k not in state_dict:
                continue
            v = _to_numpy(state_dict[k])
            arr = np.asarray(v)
            if arr.dtype.kind not in "f":
                raise TypeError(f"state_dict[{k!r}]: expected a float array, got dtype {arr.dtype}")
            if arr.shape != p.shape:
                errors.append(f"size mismatch for {k!r}: expected {_shape_str(p.shape)} (this module), "
                              f"got {_shape_str(arr.shape)} (state_dict)")
            values[k] = arr
        if errors:
            raise ValueError(f"state_dict: error(s) loading into {type(self).__name__}: " + "; ".join(errors))
        for k, arr in values.items():
            np.copyto(own[k].data, arr, casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    # ---- modes, dtypes, gradients ---------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Sets training mode (dropout active) on this module and its descendants; returns self."""
        mode = _check_bool("mode", mode)
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        """Sets evaluation mode (no dropout); same as ``train(False)``. Returns self."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears every parameter's gradient: ``None`` (default, as PyTorch 2) or zeros."""
        set_to_none = _check_bool("set_to_none", set_to_none)
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the parameters (float32 or float64); inputs must have it."""
        return self._dtype

    def to(self, dtype: DTypeLike) -> Module:
        """Converts every parameter (and gradient) to ``dtype`` (float32 or float64) in place of
        the arrays; forgets the last forward. Returns self."""
        dt = _as_float_dtype("dtype", dtype)
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None and p.dtype != dt:
                    p.data = p.data.astype(dt)
                    if p.grad is not None:
                        p.grad = p.grad.astype(dt)
            object.__setattr__(m, "_dtype", dt)
            m._forget_forward()
        return self

    def float(self) -> Module:
        """``to(np.float32)``."""
        return self.to(np.float32)

    def double(self) -> Module:
        """``to(np.float64)``."""
        return self.to(np.float64)

    def _forget_forward(self) -> None:
        """Drops what the last forward kept for backward (modules that keep something override)."""
        return None

    # ---- calling --------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def backward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define backward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({n}): " + _addindent(repr(m), 2) for n, m in self._modules.items()]
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = ([extra] if extra else []) + lines
        return f"{type(self).__name__}(\n  " + "\n  ".join(body) + "\n)"


# ---------------------------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------------------------

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
        use_bias = _check_bool("bias", bias)
        dt = _as_float_dtype("dtype", dtype)
        object.__setattr__(self, "_dtype", dt)
        rng = _make_rng(seed)
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
        x = _input_array("x", x, self._dtype)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (*, {self.in_features}) (last axis = in_features), "
                             f"got {_shape_str(x.shape)}")
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
        dy = _input_array("d_output", d_output, x.dtype)
        _expect_shape("d_output", dy, x.shape[:-1] + (self.out_features,), "the output's shape")
        dx = dy @ self.weight.data
        x2 = x.reshape(-1, self.in_features)
        dy2 = dy.reshape(-1, self.out_features)
        _accumulate(self.weight, dy2.T @ x2)
        if self.bias is not None:
            _accumulate(self.bias, dy2.sum(axis=0))
        return dx

    def extra_repr(self) -> str:
        s = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        return s + ("" if self._dtype == np.float32 else f", dtype={self._dtype}")


# ---------------------------------------------------------------------------------------------
# recurrent modules
# ---------------------------------------------------------------------------------------------

class _LastForward(NamedTuple):
    caches: List[List[Any]]            # [num_layers][D] functional caches
    drop_masks: List[Optional[Array]]  # [num_layers] dropout scale applied to each layer's output
    batched: bool
    x_shape: Tuple[int, ...]           # shape of the input as given
    out_shape: Tuple[int, ...]         # shape of the output as returned
    state_shape: Tuple[int, ...]       # shape of h_n as returned
    T: int
    N: int


class _RNNBase(Module):
    """Shared machinery of :class:`RNN`, :class:`LSTM` and :class:`GRU`.

    What a forward keeps for backward is per thread: several threads may share one module and
    each backpropagate its own forward; gradients accumulate under a lock.
    """

    _last = PerThread("what this thread's last forward keeps for backward")

    _gates = 1
    _n_states = 1  # 2 for LSTM (h, c)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, bias: bool,
                 batch_first: bool, dropout: float, bidirectional: bool, dtype: DTypeLike,
                 seed: SeedLike) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.bias = _check_bool("bias", bias)
        self.batch_first = _check_bool("batch_first", batch_first)
        self.bidirectional = _check_bool("bidirectional", bidirectional)
        if isinstance(dropout, (bool, np.bool_)) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"dropout: expected a float in [0, 1), got {type(dropout).__name__}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero "
                          f"dropout expects num_layers greater than 1, but got dropout={self.dropout} "
                          f"and num_layers={self.num_layers}", UserWarning, stacklevel=3)
        dt = _as_float_dtype("dtype", dtype)
        object.__setattr__(self, "_dtype", dt)
        self._rng = _make_rng(seed)
        self._last: Optional[_LastForward] = None
        G, H = self._gates, self.hidden_size
        D = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else D * H
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                setattr(self, "weight_ih" + sfx, Parameter(np.zeros((G * H, in_size), dt)))
                setattr(self, "weight_hh" + sfx, Parameter(np.zeros((G * H, H), dt)))
                if self.bias:
                    setattr(self, "bias_ih" + sfx, Parameter(np.zeros((G * H,), dt)))
                    setattr(self, "bias_hh" + sfx, Parameter(np.zeros((G * H,), dt)))
        self.reset_parameters()

    # ---- parameters -----------------------------------------------------------------------------
    @property
    def num_directions(self) -> int:
        """2 when bidirectional, else 1 (``D`` in the shapes)."""
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        r"""Draws every weight and bias from :math:`\mathcal{U}(-k, k)`, :math:`k = 1/\sqrt{H}`
        (PyTorch's initialization), using the module's random generator."""
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            p.data[...] = self._rng.uniform(-k, k, p.shape)

    def _param_names(self, layer: int, direction: int) -> List[str]:
        sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        names = ["weight_ih" + sfx, "weight_hh" + sfx]
        return names + (["bias_ih" + sfx, "bias_hh" + sfx] if self.bias else [])

    @property
    def all_weights(self) -> List[List[Parameter]]:
        """``[w_ih, w_hh(, b_ih, b_hh)]`` per layer and direction, in PyTorch's order."""
        return [[self._parameters[n] for n in self._param_names(layer, d)]
                for layer in range(self.num_layers) for d in range(self.num_directions)]

    def direction_weights(self, layer: int = 0, reverse: bool = False) -> Dict[str, Optional[Array]]:
        """The live weight arrays of one layer and direction in :mod:`rnnkit.functional`'s naming.

        This is the bridge to :mod:`rnnkit.functional`, :mod:`rnnkit.interop` and the streaming
        (step-by-step) runners, which all take ``w_ih, w_hh, b_ih, b_hh``.

        Returns
        -------
        dict
            ``{"w_ih", "w_hh", "b_ih", "b_hh"}``; the biases are ``None`` when ``bias=False``.
            The arrays are the parameters' own (no copy).

        Shapes
        ------
        w_ih: [G*H, C_layer], w_hh: [G*H, H], b_ih, b_hh: [G*H]; ``C_layer`` is ``input_size``
        for layer 0 and ``D*H`` above.
        """
        layer = check_positive_int("layer", layer, minimum=0)
        if layer >= self.num_layers:
            raise ValueError(f"layer: expected an int in [0, {self.num_layers - 1}] (num_layers={self.num_layers}), got {layer}")
        reverse = _check_bool("reverse", reverse)
        if reverse and not self.bidirectional:
            raise ValueError("reverse: this module is not bidirectional, it has no reverse direction")
        names = self._param_names(layer, 1 if reverse else 0)
        p = [self._parameters[n].data for n in names]
        return {"w_ih": p[0], "w_hh": p[1], "b_ih": p[2] if self.bias else None,
                "b_hh": p[3] if self.bias else None}

    def stream(self, batch_size: int = 1) -> Any:
        """A stateful step-by-step runner for real-time inference (see :mod:`rnnkit.streaming`).

        The weights are copied into C++ once, now (a later change of the module's weights needs
        a new stream); the state starts at zero and is carried between calls.

        Returns
        -------
        LSTMStream, GRUStream or RNNStream for one layer; StackedStream for several.

        Shapes
        ------
        step: x [N, input_size] -> h [N, hidden_size];  run: x [steps, N, input_size] ->
        y [steps, N, hidden_size];  N = batch_size.
        """
        from rnnkit import streaming

        if self.bidirectional:
            raise ValueError("stream: a bidirectional module needs the whole sequence (its reverse "
                             "direction starts at the end); stream a unidirectional one")
        cls = {1: streaming.RNNStream, 4: streaming.LSTMStream, 3: streaming.GRUStream}[self._gates]
        kw = {"nonlinearity": self.nonlinearity} if self._gates == 1 else {}
        layers = [cls(**self.direction_weights(layer), batch_size=batch_size, **kw)
                  for layer in range(self.num_layers)]
        return layers[0] if len(layers) == 1 else streaming.StackedStream(layers)

    def _forget_forward(self) -> None:
        self._last = None

    @property
    def last_caches(self) -> Optional[List[List[Any]]]:
        """The :mod:`rnnkit.functional` caches of the last forward, ``[layer][direction]``
        (``None`` before the first forward or after :meth:`~Module.to`). They hold references
        to the inputs and weights that :meth:`backward` uses."""
        return None if self._last is None else self._last.caches

    # Subclasses define ``_cell_forward(x, init, w, reverse, mask) -> (y, finals, cache)`` and
    # ``_cell_backward(cache, dy, d_finals) -> (dx, d_inits, (dw_ih, dw_hh, db_ih, db_hh))`` on top
    # of rnnkit.functional.

    # ---- forward --------------------------------------------------------------------------------
    def _time_mask(self, lengths: Any, mask: Any, T: int, N: int, batched: bool) -> Optional[Array]:
        if lengths is not None and mask is not None:
            raise ValueError("lengths, mask: pass at most one of them")
        if lengths is not None:
            arr = np.asarray(_to_numpy(lengths))
            if arr.dtype.kind not in "iu":
                raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
            if not batched and arr.shape in ((), (1,)):
                arr = arr.reshape(1)
            elif arr.shape != (N,):
                want = "() or (1,) for unbatched input" if not batched else f"(N,) = ({N},)"
                raise ValueError(f"lengths: expected shape {want}, got {_shape_str(arr.shape)}")
            if arr.min() < 0 or arr.max() > T:
                raise ValueError(f"lengths: expected values in [0, T] = [0, {T}], got min {arr.min()}, max {arr.max()}")
            m = np.arange(T)[:, None] < arr[None, :]
        elif mask is not None:
            mask = _to_numpy(mask)
            if not batched:
                m = as_mask("mask", mask, (T,))[:, None]
            elif self.batch_first:
                m = as_mask("mask", mask, (N, T)).T
            else:
                m = as_mask("mask", mask, (T, N))
        else:
            return None
        return None if m.all() else np.ascontiguousarray(m)

    def _prepare_states(self, hx: Any, N: int, batched: bool) -> Tuple[Optional[Array], ...]:
        DL, H = self.num_directions * self.num_layers, self.hidden_size
        names = ("h_0", "c_0")[: self._n_states]
        if hx is None:
            return (None,) * self._n_states
        if self._n_states == 2:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx: expected a tuple (h_0, c_0) for LSTM, got {type(hx).__name__}"
                                + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else ""))
            items = tuple(hx)
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"hx: expected an array h_0 for {type(self).__name__}, got a {type(hx).__name__}")
            items = (hx,)
        out = []
        for name, s in zip(names, items):
            if s is None:
                out.append(None)
                continue
            s = _input_array(name, s, self._dtype)
            if batched:
                _expect_shape(name, s, (DL, N, H), "(D*num_layers, N, hidden_size)")
            else:
                _expect_shape(name, s, (DL, H), "(D*num_layers, hidden_size) for unbatched input")
                s = s[:, None, :]
            out.append(np.ascontiguousarray(s))
        return tuple(out)

    def _forward(self, x: Any, hx: Any, lengths: Any, mask: Any) -> Tuple[Array, Tuple[Array, ...]]:
        x = _input_array("x", x, self._dtype)
        if x.ndim not in (2, 3):
            layout = "[N, T, C] (batch_first)" if self.batch_first else "[T, N, C]"
            raise ValueError(f"x: expected 3 dimensions {layout} or 2 dimensions [T, C] (unbatched), "
                             f"got shape {_shape_str(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"x: expected {self.input_size} features (input_size) in the last dimension, "
                             f"got shape {_shape_str(x.shape)}")
        if 0 in x.shape:
            raise ValueError(f"x: every dimension must be at least 1, got shape {_shape_str(x.shape)}")
        batched = x.ndim == 3
        if not batched:
            xt = x[:, None, :]
        elif self.batch_first:
            xt = x.transpose(1, 0, 2)
        else:
            xt = x
        T, N = xt.shape[0], xt.shape[1]
        init = self._prepare_states(hx, N, batched)
        tmask = self._time_mask(lengths, mask, T, N, batched)

        D, L, H, dt = self.num_directions, self.num_layers, self.hidden_size, self._dtype
        finals = [np.empty((D * L, N, H), dt) for _ in range(self._n_states)]
        caches: List[List[Any]] = []
        drop_masks: List[Optional[Array]] = []
        inp = xt
        for layer in range(L):
            ys, layer_caches = [], []
            for d in range(D):
                k = layer * D + d
                y, fin, cache = self._cell_forward(
                    inp, tuple(None if s is None else s[k] for s in init),
                    self.direction_weights(layer, d == 1), d == 1, tmask)
                for store, f in zip(finals, fin):
                    store[k] = f
                ys.append(y)
                layer_caches.append(cache)
            out = ys[0] if D == 1 else np.concatenate(ys, axis=2)
            dm = None
            if self.training and self.dropout > 0 and layer < L - 1:
                keep = self._rng.random(out.shape) >= self.dropout
                dm = keep.astype(dt) * dt.type(1.0 / (1.0 - self.dropout))
                out = out * dm
            drop_masks.append(dm)
            caches.append(layer_caches)
            inp = out

        if not batched:
            output = np.ascontiguousarray(out[:, 0, :])
            states = tuple(np.ascontiguousarray(s[:, 0, :]) for s in finals)
        elif self.batch_first:
            output = np.ascontiguousarray(out.transpose(1, 0, 2))
            states = tuple(finals)
        else:
            output = out
            states = tuple(finals)
        self._last = _LastForward(caches, drop_masks, batched, x.shape, output.shape,
                                  states[0].shape, T, N)
        return output, states

    # ---- backward -------------------------------------------------------------------------------
    def _to_time_major(self, a: Array, batched: bool) -> Array:
        if not batched:
            return a[:, None, :]
        return a.transpose(1, 0, 2) if self.batch_first else a

    def _backward(self, d_output: Any, d_finals: Tuple[Any, ...]) -> Tuple[Array, Tuple[Array, ...]]:
        last = self._last
        if last is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward first "
                               "(nothing to backpropagate through)")
        names = ("d_hn", "d_cn")[: self._n_states]
        if d_output is None and all(g is None for g in d_finals):
            raise ValueError(f"d_output, {', '.join(names)}: pass at least one gradient")
        D, L, H, dt = self.num_directions, self.num_layers, self.hidden_size, self._dtype
        T, N = last.T, last.N
        if d_output is None:
            dy = np.zeros((T, N, D * H), dt)
        else:
            d_output = _input_array("d_output", d_output, dt)
            _expect_shape("d_output", d_output, last.out_shape, "the output's shape")
            dy = self._to_time_major(d_output, last.batched)
        dfin: List[Optional[Array]] = []
        for name, g in zip(names, d_finals):
            if g is None:
                dfin.append(None)
                continue
            g = _input_array(name, g, dt)
            _expect_shape(name, g, last.state_shape, "the shape of h_n")
            dfin.append(g if last.batched else g[:, None, :])
        d_init = [np.empty((D * L, N, H), dt) for _ in range(self._n_states)]

        for layer in reversed(range(L)):
            if last.drop_masks[layer] is not None:
                dy = dy * last.drop_masks[layer]
            dx_sum: Optional[Array] = None
            for d in range(D):
                k = layer * D + d
                dyd = dy if D == 1 else dy[:, :, d * H:(d + 1) * H]
                dx, dinit, grads = self._cell_backward(
                    last.caches[layer][d], dyd, tuple(None if g is None else np.ascontiguousarray(g[k]) for g in dfin))
                for store, g in zip(d_init, dinit):
                    store[k] = g
                for n, g in zip(self._param_names(layer, d), grads):
                    _accumulate(self._parameters[n], g)
                dx_sum = dx if dx_sum is None else dx_sum + dx
            dy = dx_sum

        if not last.batched:
            dx_out = np.ascontiguousarray(dy[:, 0, :])
            d_states = tuple(np.ascontiguousarray(s[:, 0, :]) for s in d_init)
        elif self.batch_first:
            dx_out = np.ascontiguousarray(dy.transpose(1, 0, 2))
            d_states = tuple(d_init)
        else:
            dx_out = dy
            d_states = tuple(d_init)
        return dx_out, d_states

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self._dtype != np.float32:
            s += f", dtype={self._dtype}"
        return s


_SHAPES_DOC = r"""
    Shapes
    ------
    With ``D = 2`` if bidirectional else 1, ``H = hidden_size``, ``C = input_size``:

    - input ``x``: ``[T, N, C]``, ``[N, T, C]`` when ``batch_first=True``, or ``[T, C]``
      unbatched (``batch_first`` does not apply to unbatched input)
    - initial state(s): ``[D*num_layers, N, H]`` (``[D*num_layers, H]`` unbatched); omitted = zeros
    - ``output``: ``[T, N, D*H]`` (``[N, T, D*H]`` with ``batch_first``, ``[T, D*H]`` unbatched) —
      the last layer's states for every step, forward direction first
    - final state(s): like the initial ones; entry ``layer*D + direction``
    - ``lengths``: ``[N]`` ints in ``[0, T]`` (``()`` or ``[1]`` unbatched)
    - ``mask``: bool ``[T, N]`` (``[N, T]`` with ``batch_first``, ``[T]`` unbatched)
"""

_VARLEN_DOC = r"""
    Variable-length batches
    -----------------------
    ``lengths`` gives each sample's number of valid leading steps (PyTorch's packed sequences:
    ``pack_padded_sequence`` then ``pad_packed_sequence``): padded steps output zeros, the final
    state is the state after the sample's last valid step, and the reverse direction starts at
    that step. ``mask`` generalizes this to any pattern of valid steps (a masked step carries the
    state and outputs zero).
"""


class _HiddenStateRNN(_RNNBase):
    """The modules whose only state is ``h`` (RNN, GRU): their ``forward``/``backward``."""

    def forward(self, x: Any, hx: Any = None, *, lengths: Any = None,
                mask: Any = None) -> Tuple[Array, Array]:
        """Runs the layers over ``x``; keeps what :meth:`backward` needs.

        Parameters
        ----------
        x
            Input sequence (see Shapes).
        hx
            Initial hidden state ``h_0``, or None for zeros.
        lengths, mask
            Optional valid-step information (see the class documentation).

        Returns
        -------
        output, h_n

        Shapes
        ------
        x: [T, N, C] / [N, T, C] / [T, C], hx: [D*num_layers, N, H]
        -> output: [T, N, D*H] / [N, T, D*H] / [T, D*H], h_n: [D*num_layers, N, H]
        """
        output, (h_n,) = self._forward(x, hx, lengths, mask)
        return output, h_n

    def backward(self, d_output: Any, d_hn: Any = None) -> Tuple[Array, Array]:
        """Backpropagation through time for the last :meth:`forward`.

        Accumulates (``+=``) every parameter's ``.grad``. May be called more than once for the
        same forward (each call adds its gradients).

        Parameters
        ----------
        d_output
            Gradient of the loss w.r.t. ``output`` (``None`` = zeros).
        d_hn
            Gradient w.r.t. ``h_n`` (``None`` = zeros).

        Returns
        -------
        dx, dh_0
            Gradients w.r.t. the input and the initial hidden state (also when ``hx`` was
            omitted, i.e. w.r.t. the zero state).

        Shapes
        ------
        d_output: like output, d_hn: like h_n -> dx: like x, dh_0: like h_n
        """
        dx, (dh0,) = self._backward(d_output, (d_hn,))
        return dx, dh0


class RNN(_HiddenStateRNN):
    __doc__ = r"""Multi-layer Elman RNN, as ``torch.nn.RNN``.

    For each layer and each time step

    .. math::
        h_t = \tanh(x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh})

    (:math:`\mathrm{ReLU}` instead of :math:`\tanh` with ``nonlinearity='relu'``). The input of
    layer ``l > 0`` is the output of layer ``l - 1`` (both directions concatenated), multiplied
    by dropout in training mode when ``dropout > 0``.

    Parameters
    ----------
    input_size
        Features of the input ``x``.
    hidden_size
        Features of the hidden state ``h``.
    num_layers
        Number of stacked recurrent layers.
    nonlinearity
        ``'tanh'`` or ``'relu'``.
    bias
        If False, the layers have no ``b_ih``/``b_hh``.
    batch_first
        If True, batched input and output are ``[N, T, *]`` instead of ``[T, N, *]``.
    dropout
        Probability in ``[0, 1)`` of zeroing each output of every layer but the last, in
        training mode only (:meth:`~Module.eval` turns it off).
    bidirectional
        If True, every layer also runs from ``t = T-1`` down to 0 (``*_reverse`` parameters).
    dtype
        ``np.float32`` (default) or ``np.float64``.
    seed
        ``None``, an int or a ``numpy.random.Generator``: source of the initialization and of
        the dropout masks.

    Attributes
    ----------
    weight_ih_l[k]
        ``[H, C]`` for ``k = 0``, else ``[H, D*H]``.
    weight_hh_l[k]
        ``[H, H]``.
    bias_ih_l[k], bias_hh_l[k]
        ``[H]``.

    Every parameter starts from :math:`\mathcal{U}(-\sqrt{k}, \sqrt{k})`, :math:`k = 1/H`;
    reverse-direction parameters carry the ``_reverse`` suffix.
    {_SHAPES_DOC}{_VARLEN_DOC}"""

    _gates = 1
    _n_states = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, *,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed)
        self.nonlinearity = nonlinearity

    def _cell_forward(self, x, init, w, reverse, mask):
        o = F.rnn_forward(x, init[0], w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"],
                          nonlinearity=self.nonlinearity, mask=mask, reverse=reverse,
                          zero_output_for_mask=True)
        return o.y, (o.h_n,), o.cache

    def _cell_backward(self, cache, dy, d_final):
        g = F.rnn_backward(cache, dy, d_final[0])
        return g.dx, (g.dh0,), (g.dw_ih, g.dw_hh, g.db_ih, g.db_hh)

class LSTM(_RNNBase):
    __doc__ = r"""Multi-layer long short-term memory, as ``torch.nn.LSTM``.

    For each layer and each time step (gate order in the weights: **i, f, g, o**)

    .. math::
        \begin{array}{ll}
        i_t = \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
        f_t = \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        g_t = \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
        o_t = \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
        c_t = f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t = o_t \odot \tanh(c_t)
        \end{array}

    The input of layer ``l > 0`` is the output of layer ``l - 1`` (both directions
    concatenated), multiplied by dropout in training mode when ``dropout > 0``.

    Parameters
    ----------
    input_size
        Features of the input ``x``.
    hidden_size
        Features of the states ``h`` and ``c``.
    num_layers
        Number of stacked recurrent layers.
    bias
        If False, the layers have no ``b_ih``/``b_hh``.
    batch_first
        If True, batched input and output are ``[N, T, *]`` instead of ``[T, N, *]``.
    dropout
        Probability in ``[0, 1)`` of zeroing each output of every layer but the last, in
        training mode only.
    bidirectional
        If True, every layer also runs from ``t = T-1`` down to 0 (``*_reverse`` parameters).
    dtype
        ``np.float32`` (default) or ``np.float64``.
    seed
        ``None``, an int or a ``numpy.random.Generator``: source of the initialization and of
        the dropout masks.

    Attributes
    ----------
    weight_ih_l[k]
        ``(W_ii|W_if|W_ig|W_io)``: ``[4H, C]`` for ``k = 0``, else ``[4H, D*H]``.
    weight_hh_l[k]
        ``(W_hi|W_hf|W_hg|W_ho)``: ``[4H, H]``.
    bias_ih_l[k], bias_hh_l[k]
        ``[4H]``.

    Every parameter starts from :math:`\mathcal{U}(-\sqrt{k}, \sqrt{k})`, :math:`k = 1/H`;
    reverse-direction parameters carry the ``_reverse`` suffix. (PyTorch's ``proj_size`` is not
    supported.)
    {_SHAPES_DOC}{_VARLEN_DOC}"""

    _gates = 4
    _n_states = 2

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed)

    def _cell_forward(self, x, init, w, reverse, mask):
        o = F.lstm_forward(x, init[0], init[1], w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"],
                           mask=mask, reverse=reverse, zero_output_for_mask=True)
        return o.y, (o.h_n, o.c_n), o.cache

    def _cell_backward(self, cache, dy, d_final):
        g = F.lstm_backward(cache, dy, d_final[0], d_final[1])
        return g.dx, (g.dh0, g.dc0), (g.dw_ih, g.dw_hh, g.db_ih, g.db_hh)

    def forward(self, x: Any, hx: Any = None, *, lengths: Any = None,
                mask: Any = None) -> Tuple[Array, Tuple[Array, Array]]:
        """Runs the LSTM over ``x``; keeps what :meth:`backward` needs.

        Parameters
        ----------
        x
            Input sequence (see Shapes).
        hx
            ``(h_0, c_0)``, or None for zeros (either element may also be None).
        lengths, mask
            Optional valid-step information (see the class documentation).

        Returns
        -------
        output, (h_n, c_n)

        Shapes
        ------
        x: [T, N, C] / [N, T, C] / [T, C], h_0, c_0: [D*num_layers, N, H]
        -> output: [T, N, D*H] / [N, T, D*H] / [T, D*H], h_n, c_n: [D*num_layers, N, H]
        """
        output, (h_n, c_n) = self._forward(x, hx, lengths, mask)
        return output, (h_n, c_n)

    def backward(self, d_output: Any, d_hn: Any = None,
                 d_cn: Any = None) -> Tuple[Array, Tuple[Array, Array]]:
        """Backpropagation through time for the last :meth:`forward`.

        Accumulates (``+=``) every parameter's ``.grad``. May be called more than once for the
        same forward (each call adds its gradients).

        Parameters
        ----------
        d_output
            Gradient of the loss w.r.t. ``output`` (``None`` = zeros).
        d_hn, d_cn
            Gradients w.r.t. ``h_n`` and ``c_n`` (``None`` = zeros).

        Returns
        -------
        dx, (dh_0, dc_0)

        Shapes
        ------
        d_output: like output, d_hn, d_cn: like h_n -> dx: like x, dh_0, dc_0: like h_n
        """
        dx, (dh0, dc0) = self._backward(d_output, (d_hn, d_cn))
        return dx, (dh0, dc0)


class GRU(_HiddenStateRNN):
    __doc__ = r"""Multi-layer gated recurrent unit, as ``torch.nn.GRU``.

    For each layer and each time step (gate order in the weights: **r, z, n**)

    .. math::
        \begin{array}{ll}
        r_t = \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z_t = \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t = \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}
        \end{array}

    (Keras's ``reset_after=True`` form.) The input of layer ``l > 0`` is the output of layer
    ``l - 1`` (both directions concatenated), multiplied by dropout in training mode when
    ``dropout > 0``.

    Parameters
    ----------
    input_size
        Features of the input ``x``.
    hidden_size
        Features of the hidden state ``h``.
    num_layers
        Number of stacked recurrent layers.
    bias
        If False, the layers have no ``b_ih``/``b_hh``.
    batch_first
        If True, batched input and output are ``[N, T, *]`` instead of ``[T, N, *]``.
    dropout
        Probability in ``[0, 1)`` of zeroing each output of every layer but the last, in
        training mode only.
    bidirectional
        If True, every layer also runs from ``t = T-1`` down to 0 (``*_reverse`` parameters).
    dtype
        ``np.float32`` (default) or ``np.float64``.
    seed
        ``None``, an int or a ``numpy.random.Generator``: source of the initialization and of
        the dropout masks.

    Attributes
    ----------
    weight_ih_l[k]
        ``(W_ir|W_iz|W_in)``: ``[3H, C]`` for ``k = 0``, else ``[3H, D*H]``.
    weight_hh_l[k]
        ``(W_hr|W_hz|W_hn)``: ``[3H, H]``.
    bias_ih_l[k], bias_hh_l[k]
        ``[3H]``.

    Every parameter starts from :math:`\mathcal{U}(-\sqrt{k}, \sqrt{k})`, :math:`k = 1/H`;
    reverse-direction parameters carry the ``_reverse`` suffix.
    {_SHAPES_DOC}{_VARLEN_DOC}"""

    _gates = 3
    _n_states = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed)

    def _cell_forward(self, x, init, w, reverse, mask):
        o = F.gru_forward(x, init[0], w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], mask=mask,
                          reverse=reverse, zero_output_for_mask=True)
        return o.y, (o.h_n,), o.cache

    def _cell_backward(self, cache, dy, d_final):
        g = F.gru_backward(cache, dy, d_final[0])
        return g.dx, (g.dh0,), (g.dw_ih, g.dw_hh, g.db_ih, g.db_hh)

for _cls in (RNN, LSTM, GRU):
    _cls.__doc__ = _cls.__doc__.replace("{_SHAPES_DOC}", _SHAPES_DOC).replace("{_VARLEN_DOC}", _VARLEN_DOC)
del _cls
