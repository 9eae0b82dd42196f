r"""Switching a PyTorch model's recurrent layers to rnnkit's kernels and back:
:func:`convert` and :func:`revert`.

A ``torch.nn.LSTM``/``GRU``/``RNN`` becomes :class:`rnnkit.torch.LSTM`/``GRU``/``RNN`` by changing
its class, nothing else (the same technique as ``torch.nn.utils.parametrize``): rnnkit's classes
are subclasses that only replace ``forward``, so the module object keeps its parameters (the same
``Parameter`` objects), buffers, hooks, training mode, dtype and ``state_dict``. Shared modules
(one LSTM reachable under two names) are converted once and stay shared.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Tuple, TypeVar

import torch

from rnnkit._checks import check_bool
from rnnkit.torch.modules import GRU, LSTM, RNN

__all__ = ["convert", "revert"]

M = TypeVar("M", bound=torch.nn.Module)

_TO_RNNKIT: Dict[type, type] = {torch.nn.LSTM: LSTM, torch.nn.GRU: GRU, torch.nn.RNN: RNN}
_TO_TORCH: Dict[type, type] = {v: k for k, v in _TO_RNNKIT.items()}


def _find(model: torch.nn.Module, table: Dict[type, type]) -> List[Tuple[str, torch.nn.Module]]:
    """Every submodule (the model included) whose exact type is a key of ``table``."""
    return [(name or "model", m) for name, m in model.named_modules() if type(m) in table]


def _check_convertible(name: str, module: torch.nn.Module) -> None:
    for pname, p in module.named_parameters(recurse=False):
        if p.device.type != "cpu":
            raise ValueError(f"{name}.{pname}: rnnkit.torch runs on the CPU only, got a parameter on "
                             f"{p.device} (convert after model.cpu())")
        if p.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{name}.{pname}: expected dtype torch.float32 or torch.float64, got {p.dtype}")


def _switch(model: M, inplace: bool, table: Dict[type, type], check: bool) -> M:
    inplace = check_bool("inplace", inplace)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    found = _find(model, table)
    if check:
        for name, m in found:  # every check before the first change
            _check_convertible(name, m)
    for _, m in found:
        m.__class__ = table[type(m)]
    return model


def convert(model: M, inplace: bool = False) -> M:
    """Returns ``model`` with every ``torch.nn.LSTM``, ``GRU`` and ``RNN`` in it replaced by
    rnnkit's (:class:`rnnkit.torch.LSTM`, ...), which compute the same function on rnnkit's
    kernels.

    Submodules are found at any depth (inside ``nn.Sequential``, ``nn.ModuleList``,
    ``nn.ModuleDict`` and your own modules); ``model`` may itself be an LSTM/GRU/RNN. Only modules
    whose type is exactly ``torch.nn.LSTM``/``GRU``/``RNN`` are converted: subclasses (which may
    have their own ``forward``) and parametrized modules are left alone.

    Parameters
    ----------
    model
        A ``torch.nn.Module`` on the CPU; the recurrent modules' parameters must be float32 or
        float64 (else ``ValueError``/``TypeError`` naming the parameter, before anything changes).
    inplace
        If False (default), ``model`` is left untouched and a converted ``copy.deepcopy`` is
        returned. If True, ``model`` itself is converted and returned: its module objects and
        parameters stay the same, so an optimizer built on ``model.parameters()`` keeps working.

    Returns
    -------
    torch.nn.Module
        The converted model (the same weights, training mode and dtype; ``state_dict`` keys and
        values unchanged). :func:`revert` undoes it.

    Shapes
    ------
    Every module keeps its inputs' and outputs' shapes.
    """
    return _switch(model, inplace, _TO_RNNKIT, check=True)


def revert(model: M, inplace: bool = False) -> M:
    """The inverse of :func:`convert`: every :class:`rnnkit.torch.LSTM`/``GRU``/``RNN`` in
    ``model`` becomes the ``torch.nn`` module again (same parameters, training mode, dtype).

    Use it where rnnkit's modules cannot go: GPUs, half precision, double backward,
    ``torch.compile``, ``torch.jit``, ``torch.export``. (Equivalently, load the ``state_dict`` into
    a model built with ``torch.nn``'s modules: the keys and shapes are the same.)

    Parameters
    ----------
    model
        A ``torch.nn.Module``.
    inplace
        As in :func:`convert`.

    Returns
    -------
    torch.nn.Module

    Shapes
    ------
    Every module keeps its inputs' and outputs' shapes.
    """
    return _switch(model, inplace, _TO_TORCH, check=False)

