r"""rnnkit's kernels inside PyTorch: drop-in ``torch.nn.LSTM``, ``GRU`` and ``RNN`` with autograd.

:class:`LSTM`, :class:`GRU` and :class:`RNN` are subclasses of the ``torch.nn`` classes with the
same constructor, parameters, ``state_dict``, forward signature and outputs (``batch_first``,
unbatched input, ``hx``, ``PackedSequence``, ``proj_size``, inter-layer ``dropout`` drawn from
torch's generator); their forward and backward run rnnkit's C++ kernels, as one autograd node per
stack, sharing memory with the tensors (no copies). :func:`convert` switches the recurrent layers
of an existing model, :func:`revert` switches them back.

>>> import torch, rnnkit.torch
>>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GRU(8, 16, batch_first=True))
>>> fast = rnnkit.torch.convert(model)          # same weights, rnnkit's kernels

Needs PyTorch (``pip install "rnnkit[torch]"``); ``import rnnkit`` never imports it. CPU,
float32/float64, first-order gradients; not for ``torch.compile``/``torch.jit`` (see
:mod:`rnnkit.torch.modules`).

Shapes
------
Exactly those of ``torch.nn.LSTM``/``GRU``/``RNN`` (see :class:`LSTM`).
"""
from __future__ import annotations

try:
    import torch as _torch  # noqa: F401  (the real PyTorch: imports are absolute)
except ImportError as _e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "rnnkit.torch needs PyTorch, which is not installed (or failed to import: "
        f"{_e}). Install it with: pip install \"rnnkit[torch]\" (or pip install torch); "
        "the rest of rnnkit works without it.") from _e

from rnnkit.torch.convert import convert, revert
from rnnkit.torch.modules import GRU, LSTM, RNN

__all__ = ["LSTM", "GRU", "RNN", "convert", "revert"]
