r"""The base of the PyTorch-style modules: :class:`Parameter`, :class:`Module` (registration under
PyTorch's dotted names, ``state_dict``, train/eval modes, dtypes) and the argument helpers the
modules share.

Shapes
------
Each module documents its own; ``backward`` always takes gradients shaped like the outputs of
the last ``forward`` and returns gradients shaped like its inputs.
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections import OrderedDict
from typing import (Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Set,
                    Tuple, Union)

import numpy as np

from rnnkit._checks import FLOAT_DTYPES, check_bool, shape_str
from rnnkit._random import generator
from rnnkit._threads import GRAD_LOCK

__all__ = ["Parameter", "Module", "IncompatibleKeys", "DTypeLike", "SeedLike"]

Array = np.ndarray
DTypeLike = Union[str, type, np.dtype, Any]
SeedLike = Union[None, int, np.integer, np.random.Generator]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def to_numpy(a: Any) -> Any:
    """Tensors (anything with ``.detach``) become NumPy arrays; other objects pass through.

    torch is never imported here: ``np.asarray(t.detach().cpu())`` works on any torch tensor."""
    if not isinstance(a, np.ndarray) and callable(getattr(a, "detach", None)):
        return np.asarray(a.detach().cpu())
    return a


def as_float_dtype(name: str, dtype: DTypeLike) -> np.dtype:
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


def make_rng(seed: SeedLike) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return generator()
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected None, an int or a numpy.random.Generator, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed}")
    return np.random.default_rng(int(seed))


def input_array(name: str, a: Any, dtype: np.dtype) -> Array:
    """A float array of the module's dtype (``TypeError`` otherwise), tensors converted."""
    a = to_numpy(a)
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


def expect_shape(name: str, a: Array, shape: Tuple[int, ...], what: str) -> None:
    """ValueError unless ``a.shape == shape``, naming ``name`` and what the shape means."""
    if a.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {shape_str(shape)} = {what}, got {shape_str(a.shape)}")


def accumulate(p: Parameter, g: Optional[Array]) -> None:
    """``p.grad += g`` (autograd's accumulation); the first gradient is stored as a copy. Atomic
    with respect to other threads (:data:`rnnkit._threads.GRAD_LOCK`)."""
    if g is None or not p.requires_grad:
        return
    with GRAD_LOCK:
        if p.grad is None:
            p.grad = np.array(g, dtype=p.data.dtype, copy=True)
        else:
            p.grad += g


def _is_torch(obj: Any, type_name: str) -> bool:
    """``obj`` is a ``torch.<type_name>`` (checked by name: torch is never imported here)."""
    t = type(obj)
    return t.__module__.split(".")[0] == "torch" and t.__name__ == type_name


def _looks_like_dtype(obj: Any) -> bool:
    """Whether ``Module.to`` reads a positional argument as a dtype (not a device or tensor)."""
    if isinstance(obj, (np.dtype, type)) or _is_torch(obj, "dtype"):
        return True
    if isinstance(obj, str):
        if obj.startswith("torch."):
            return True
        try:
            np.dtype(obj)
        except TypeError:
            return False
        return True
    return False


def _looks_like_device(obj: Any) -> bool:
    return isinstance(obj, str) or _is_torch(obj, "device") or (
        isinstance(obj, (int, np.integer)) and not isinstance(obj, (bool, np.bool_)))


def _parse_to_args(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Any, Any]:
    """``(device, dtype)`` from the argument forms of ``torch.nn.Module.to``."""
    allowed = {"device", "dtype", "non_blocking"}
    bad = sorted(set(kwargs) - allowed)
    if bad:
        raise TypeError(f"to(): unexpected keyword argument(s) {', '.join(map(repr, bad))}; "
                        f"expected device, dtype, non_blocking")
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    non_blocking: Any = kwargs.get("non_blocking", False)
    rest = list(args)
    if rest:
        first = rest.pop(0)
        if _looks_like_dtype(first):
            form = "to(dtype, non_blocking)"
            if dtype is not None:
                raise TypeError("to(): dtype given both positionally and as a keyword")
            dtype = first
        elif _looks_like_device(first):
            form = "to(device, dtype, non_blocking)"
            if device is not None:
                raise TypeError("to(): device given both positionally and as a keyword")
            device = first
            if rest and not isinstance(rest[0], (bool, np.bool_)):
                if dtype is not None:
                    raise TypeError("to(): dtype given both positionally and as a keyword")
                dtype = rest.pop(0)
        elif hasattr(first, "dtype") and (isinstance(first, np.ndarray) or hasattr(first, "device")):
            form = "to(tensor, non_blocking)"
            dtype = first.dtype
            if not isinstance(first, np.ndarray):
                device = first.device
        else:
            raise TypeError(f"to(): expected a dtype, a device or an array/tensor as the first "
                            f"argument, got {type(first).__name__}")
        if len(rest) > 1:
            raise TypeError(f"to(): too many positional arguments for {form}: got {len(args)}")
        if rest:
            non_blocking = rest[0]
    check_bool("non_blocking", non_blocking)
    return device, dtype


def _check_cpu_device(device: Any) -> None:
    """Accepts ``'cpu'``, ``'cpu:<n>'`` and ``torch.device('cpu')``; ``ValueError`` naming any
    other device."""
    if isinstance(device, (int, np.integer)) and not isinstance(device, (bool, np.bool_)):
        raise ValueError(f"device: rnnkit runs on the CPU only (expected 'cpu'), got {int(device)} "
                         f"(an accelerator index, as torch reads an int device)")
    if isinstance(device, str) or _is_torch(device, "device"):
        name = str(device).strip()
        kind, _, index = name.partition(":")
        if kind == "cpu" and (not index or index.isdigit()):
            return
        raise ValueError(f"device: rnnkit runs on the CPU only (expected 'cpu'), got {name!r}")
    raise TypeError(f"device: expected a str such as 'cpu' or a torch.device, got {type(device).__name__}")


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
        self.requires_grad = check_bool("requires_grad", requires_grad)

    @staticmethod
    def _convert(data: Any) -> Array:
        arr = np.asarray(to_numpy(data))
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
        strict = check_bool("strict", strict)
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
            v = to_numpy(state_dict[k])
            arr = np.asarray(v)
            if arr.dtype.kind not in "f":
                raise TypeError(f"state_dict[{k!r}]: expected a float array, got dtype {arr.dtype}")
            if arr.shape != p.shape:
                errors.append(f"size mismatch for {k!r}: expected {shape_str(p.shape)} (this module), "
                              f"got {shape_str(arr.shape)} (state_dict)")
            values[k] = arr
        if errors:
            raise ValueError(f"state_dict: error(s) loading into {type(self).__name__}: " + "; ".join(errors))
        for k, arr in values.items():
            np.copyto(own[k].data, arr, casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    # ---- modes, dtypes, gradients ---------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Sets training mode (dropout active) on this module and its descendants; returns self."""
        mode = check_bool("mode", mode)
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        """Sets evaluation mode (no dropout); same as ``train(False)``. Returns self."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears every parameter's gradient: ``None`` (default, as PyTorch 2) or zeros."""
        set_to_none = check_bool("set_to_none", set_to_none)
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the parameters (float32 or float64); inputs must have it."""
        return self._dtype

    def to(self, *args: Any, **kwargs: Any) -> Module:
        """Casts the parameters, with ``torch.nn.Module.to``'s signatures; returns self.

        - ``to(dtype)``: converts every parameter (and gradient) to ``dtype`` (float32 or
          float64; NumPy types, their names, ``np.dtype`` or ``torch.float32``/``torch.float64``)
          and forgets the last forward;
        - ``to(device)`` / ``to(device=...)``: ``'cpu'``, ``'cpu:0'`` or ``torch.device('cpu')``
          change nothing (rnnkit runs on the CPU); any other device (``'cuda'``, ``'cuda:1'``,
          ``'mps'``, an accelerator index such as ``0``) raises ``ValueError`` naming it;
        - ``to(device, dtype)`` / ``to(device=..., dtype=...)``: both;
        - ``to(array_or_tensor)``: the dtype (and, for a tensor, the device) of that array.

        ``non_blocking`` is accepted (as a keyword or after the dtype/tensor) and has no effect.

        Raises
        ------
        ValueError
            A device other than the CPU.
        TypeError
            A dtype other than float32/float64, or arguments that match none of the forms.
        """
        device, dtype = _parse_to_args(args, kwargs)
        if device is not None:
            _check_cpu_device(device)
        if dtype is None:
            return self
        dt = as_float_dtype("dtype", dtype)
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
