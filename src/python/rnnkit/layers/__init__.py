"""Keras-style layers (batch-major ``[batch, timesteps, features]`` inputs).

- Recurrent: :class:`SimpleRNN`, :class:`LSTM`, :class:`GRU` (Keras 3 arguments and semantics,
  compiled kernels; GRU ``reset_after=False`` in NumPy).
- Wrappers: :class:`Bidirectional`.
- Core: :class:`Dense`, :class:`Embedding`, :class:`Dropout`, :class:`Masking`.
- Protocol and (de)serialisation: :class:`Layer`, :func:`serialize`, :func:`deserialize`,
  :func:`get`, :func:`register` (see :mod:`rnnkit.layers.base`).
"""
from __future__ import annotations

from rnnkit.layers.base import Layer, check_mask, deserialize, get, register, serialize
from rnnkit.layers.core import Dense, Dropout, Embedding, Masking
from rnnkit.layers.recurrent import GRU, LSTM, SimpleRNN
from rnnkit.layers.wrappers import Bidirectional

__all__ = [
    "Layer", "SimpleRNN", "LSTM", "GRU", "Bidirectional", "Dense", "Embedding", "Dropout", "Masking",
    "serialize", "deserialize", "get", "register", "check_mask",
]
