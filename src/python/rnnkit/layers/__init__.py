"""Keras-style layers (batch-major ``[batch, timesteps, features]`` inputs).

- Recurrent: :class:`SimpleRNN`, :class:`LSTM`, :class:`GRU` (Keras 3 arguments and semantics,
  compiled kernels; GRU ``reset_after=False`` in NumPy).
- Wrappers: :class:`Bidirectional`, :class:`TimeDistributed`.
- Core: :class:`Dense`, :class:`Activation`, :class:`Embedding`, :class:`Dropout`,
  :class:`Masking`; reshaping: :class:`Flatten`, :class:`Reshape`, :class:`Permute`,
  :class:`RepeatVector`.
- Functional models: :func:`Input`, :class:`InputLayer`.
- Protocol and (de)serialisation: :class:`Layer`, :class:`Context`, :func:`serialize`,
  :func:`deserialize`, :func:`get`, :func:`register` (see :mod:`rnnkit.layers.base`).
"""
from __future__ import annotations

from rnnkit.layers.base import Context, Layer, check_mask, deserialize, get, register, serialize
from rnnkit.layers.core import Activation, Dense, Dropout, Embedding, Masking
from rnnkit.layers.input_layer import Input, InputLayer
from rnnkit.layers.recurrent import GRU, LSTM, SimpleRNN
from rnnkit.layers.reshaping import Flatten, Permute, RepeatVector, Reshape
from rnnkit.layers.wrappers import Bidirectional, TimeDistributed

__all__ = [
    "Layer", "Context", "Input", "InputLayer", "SimpleRNN", "LSTM", "GRU", "Bidirectional",
    "TimeDistributed", "Dense", "Activation", "Embedding", "Dropout", "Masking", "Flatten", "Reshape",
    "Permute", "RepeatVector", "serialize", "deserialize", "get", "register", "check_mask",
]
