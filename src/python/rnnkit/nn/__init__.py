r"""PyTorch-style modules over NumPy arrays: :class:`RNN`, :class:`LSTM`, :class:`GRU` and
:class:`Linear`.

The modules mirror ``torch.nn``: the same constructor arguments, parameter names, shapes,
``state_dict`` keys and call conventions, so a state dict saved from PyTorch loads as it is
(see :meth:`Module.load_state_dict`) and gives the same outputs. Everything is a NumPy array;
there is no autograd. Instead every module has an explicit ``backward`` that takes the gradient
of the loss w.r.t. the outputs of the last ``forward`` (of the calling thread), returns the
gradient w.r.t. the inputs and **accumulates** (``+=``) the parameter gradients into each
:class:`Parameter`'s ``.grad`` — what ``loss.backward()`` does in PyTorch. ``zero_grad()``
clears them.

- ``module.py``: :class:`Parameter`, :class:`Module` (registration, ``state_dict``, modes, dtypes);
- ``linear.py``: :class:`Linear`;
- ``recurrent.py``: :class:`RNN`, :class:`LSTM`, :class:`GRU`, adapters over
  :mod:`rnnkit._recurrent`, the same recurrent core as the Keras-style layers.

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

from rnnkit.nn.linear import Linear
from rnnkit.nn.module import IncompatibleKeys, Module, Parameter
from rnnkit.nn.recurrent import GRU, LSTM, RNN

__all__ = ["Parameter", "Module", "RNN", "LSTM", "GRU", "Linear", "IncompatibleKeys"]
