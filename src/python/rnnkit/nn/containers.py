"""PyTorch-style :class:`Sequential` (``torch.nn.Sequential``) over NumPy arrays."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator, Mapping, Union

import numpy as np

from rnnkit.nn.module import Module

__all__ = ["Sequential"]


class Sequential(Module):
    """A chain of modules, as ``torch.nn.Sequential``: ``forward`` feeds each module's output to
    the next; ``backward`` runs the modules' backward passes in reverse order.

    Parameters
    ----------
    *args
        The modules in order (registered as ``"0"``, ``"1"``, ...), or a single
        ``OrderedDict`` (or dict) of ``name -> module``.

    Shapes
    ------
    - input: whatever the first module takes; output: whatever the last one returns
    - ``backward``: ``d_output`` shaped like the output -> the first module's ``backward``
      result (for an :class:`~rnnkit.nn.Embedding` first, ``None``: indices have no gradient)

    Each module must return one array from ``forward`` and take one from ``backward`` (as in
    PyTorch, a recurrent module, which returns ``(output, h_n)``, does not chain directly).

    Example
    -------
    >>> from rnnkit import nn
    >>> net = nn.Sequential(nn.Linear(4, 8, seed=0), nn.Dropout(0.1), nn.Linear(8, 2, seed=1))
    >>> len(net), type(net[1]).__name__, [n for n, _ in net.named_parameters()]
    (3, 'Dropout', ['0.weight', '0.bias', '2.weight', '2.bias'])
    """

    def __init__(self, *args: Any) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], Mapping):
            for name, module in args[0].items():
                self._check_module(f"args[0][{name!r}]", module)
                self.add_module(name, module)
        else:
            for i, module in enumerate(args):
                self._check_module(f"args[{i}]", module)
                self.add_module(str(i), module)

    @staticmethod
    def _check_module(name: str, module: Any) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"{name}: expected a rnnkit.nn Module, got {type(module).__name__}")

    # ---- container protocol ---------------------------------------------------------------------
    def _index(self, idx: Any) -> int:
        if isinstance(idx, (bool, np.bool_)) or not isinstance(idx, (int, np.integer)):
            raise TypeError(f"idx: expected an int or a slice, got {type(idx).__name__}")
        n = len(self._modules)
        i = int(idx) + n if idx < 0 else int(idx)
        if not 0 <= i < n:
            raise IndexError(f"idx: expected an int in [-{n}, {n}) ({n} modules), got {idx}")
        return i

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))

    def __getitem__(self, idx: Union[int, slice]) -> Any:
        """``seq[i]`` is the ``i``-th module; ``seq[a:b]`` a new Sequential of those modules (the
        same objects, under their names)."""
        items = list(self._modules.items())
        if isinstance(idx, slice):
            return Sequential(OrderedDict(items[idx]))
        return items[self._index(idx)][1]

    def __setitem__(self, idx: int, module: Module) -> None:
        self._check_module("module", module)
        name = list(self._modules)[self._index(idx)]
        self._modules[name] = module

    def __delitem__(self, idx: Union[int, slice]) -> None:
        names = list(self._modules)
        drop = names[idx] if isinstance(idx, slice) else [names[self._index(idx)]]
        for name in drop:
            del self._modules[name]
        # renumber, as torch does, so that names stay "0", "1", ... for positional containers
        if all(n.isdigit() for n in self._modules):
            items = list(self._modules.values())
            self._modules.clear()
            for i, m in enumerate(items):
                self._modules[str(i)] = m

    def append(self, module: Module) -> Sequential:
        """Adds ``module`` at the end (name ``str(len(self))``); returns self."""
        self._check_module("module", module)
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules: Any) -> Sequential:
        """Appends every module of ``modules``; returns self."""
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> Sequential:
        """Inserts ``module`` before position ``index`` (``0 <= index <= len``, negative counts
        from the end) and renumbers; returns self."""
        self._check_module("module", module)
        n = len(self)
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i <= n:
            raise IndexError(f"index: expected an int in [-{n}, {n}], got {index}")
        items = list(self._modules.values())
        items.insert(i, module)
        self._modules.clear()
        for k, m in enumerate(items):
            self._modules[str(k)] = m
        return self

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the first parameter (of any module), else the container's own."""
        for p in self.parameters():
            return p.dtype
        return self._dtype

    # ---- calling --------------------------------------------------------------------------------
    def forward(self, input: Any) -> Any:
        """Feeds ``input`` through the modules in order.

        Shapes
        ------
        input: the first module's input -> the last module's output
        """
        for module in self:
            input = module(input)
        return input

    def backward(self, d_output: Any) -> Any:
        """Backpropagates ``d_output`` through the modules in reverse order (each module's
        ``backward`` accumulates its parameters' gradients).

        Shapes
        ------
        d_output: the last forward's output shape -> the gradient w.r.t. its input (None for an
        Embedding first)
        """
        d = d_output
        for module in reversed(list(self._modules.values())):
            d = module.backward(d)
        return d
