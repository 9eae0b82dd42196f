r"""PyTorch-style modules over NumPy arrays: :class:`RNN`, :class:`LSTM`, :class:`GRU`, the cells
:class:`RNNCell`, :class:`LSTMCell`, :class:`GRUCell`,
:class:`Linear`, :class:`Embedding`, :class:`Dropout`, :class:`Sequential`, the losses
:class:`CrossEntropyLoss`, :class:`BCEWithLogitsLoss`, :class:`MSELoss`, and :mod:`rnnkit.nn.utils`
(gradient clipping; padding/packing in :mod:`rnnkit.nn.utils.rnn`).

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
  :mod:`rnnkit._recurrent`, the same recurrent core as the Keras-style layers;
- ``cells.py``: :class:`RNNCell`, :class:`LSTMCell`, :class:`GRUCell`, one time step each (the
  fused kernels with ``T = 1``; backpropagation through time over a loop of cells with
  ``last_step``/``backward(..., step=...)``);
- ``sparse.py``: :class:`Embedding`; ``dropout.py``: :class:`Dropout`; ``containers.py``:
  :class:`Sequential`;
- ``loss.py``: :class:`CrossEntropyLoss`, :class:`BCEWithLogitsLoss`, :class:`MSELoss`, whose
  ``backward()`` starts the chain (the math is :mod:`rnnkit.losses`');
- ``utils/``: ``clip_grad_norm_``, ``clip_grad_value_``, ``rnn.pad_sequence``,
  ``rnn.pack_padded_sequence``, ``rnn.pad_packed_sequence``.

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

A PyTorch training loop
-----------------------
A PyTorch loop runs unchanged apart from the imports, except that ``loss.backward()`` becomes an
explicit chain of ``backward`` calls in reverse order (each accumulates its module's parameter
gradients and returns the gradient w.r.t. its input). Here a sequence is classified by its first
token:

>>> import numpy as np
>>> from rnnkit import nn, optim
>>> rng = np.random.default_rng(0)
>>> x = rng.integers(0, 8, size=(64, 6)); y = x[:, 0] % 4          # tokens [N, T], labels [N]
>>> emb, lstm, head = nn.Embedding(8, 8, seed=0), nn.LSTM(8, 16, batch_first=True, seed=1), nn.Linear(16, 4, seed=2)
>>> params = [p for m in (emb, lstm, head) for p in m.parameters()]
>>> opt, loss_fn = optim.Adam(params, lr=0.02), nn.CrossEntropyLoss()
>>> for step in range(100):
...     opt.zero_grad()
...     out, _ = lstm(emb(x))
...     logits = head(out[:, -1])
...     loss = loss_fn(logits, y)
...     d = loss_fn.backward(); d = head.backward(d)       # loss.backward(), explicitly:
...     d_out = np.zeros_like(out); d_out[:, -1] = d       #   through out[:, -1]
...     d, _ = lstm.backward(d_out); emb.backward(d)
...     norm = nn.utils.clip_grad_norm_(params, 1.0)
...     opt.step()
>>> bool(loss.item() < 0.5 * np.log(4))
True
"""
from __future__ import annotations

from rnnkit.nn.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.nn.containers import Sequential
from rnnkit.nn.dropout import Dropout
from rnnkit.nn.linear import Linear
from rnnkit.nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from rnnkit.nn.module import IncompatibleKeys, Module, Parameter
from rnnkit.nn.recurrent import GRU, LSTM, RNN
from rnnkit.nn.sparse import Embedding
from rnnkit.nn import utils

__all__ = ["Parameter", "Module", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "Linear",
           "IncompatibleKeys", "Sequential", "Embedding", "Dropout", "MSELoss", "CrossEntropyLoss",
           "BCEWithLogitsLoss", "utils"]
