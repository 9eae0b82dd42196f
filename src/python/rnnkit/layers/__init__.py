"""Keras-style layers (batch-major ``[batch, timesteps, features]`` inputs).

- Recurrent: :class:`SimpleRNN`, :class:`LSTM`, :class:`GRU` (Keras 3 arguments and semantics,
  compiled kernels; GRU ``reset_after=False`` in NumPy).
- Cells: :class:`SimpleRNNCell`, :class:`LSTMCell`, :class:`GRUCell` (one step; ``RNN(cell)`` runs
  the fused kernels), :class:`StackedRNNCells`, :class:`RNN`, and :class:`AbstractRNNCell`, the
  protocol of a cell of your own (``RNN`` runs it step by step).
- Wrappers: :class:`Bidirectional`, :class:`TimeDistributed`.
- Core: :class:`Dense`, :class:`Activation`, :class:`Embedding`, :class:`Dropout`,
  :class:`Masking`; reshaping: :class:`Flatten`, :class:`Reshape`, :class:`Permute`,
  :class:`RepeatVector`.
- Merging: :class:`Concatenate`, :class:`Add`, :class:`Subtract`, :class:`Multiply`,
  :class:`Average`, :class:`Maximum`, :class:`Minimum`, :class:`Dot`.
- Attention: :class:`Attention` (Luong), :class:`AdditiveAttention` (Bahdanau).
- Normalization: :class:`LayerNormalization`, :class:`BatchNormalization`.
- Pooling: :class:`GlobalAveragePooling1D`, :class:`GlobalMaxPooling1D` (both mask-aware),
  :class:`AveragePooling1D`, :class:`MaxPooling1D`; convolution: :class:`Conv1D`.
- Functional models: :func:`Input`, :class:`InputLayer`.
- Protocol and (de)serialisation: :class:`Layer`, :class:`Context`, :func:`serialize`,
  :func:`deserialize`, :func:`get`, :func:`register` (see :mod:`rnnkit.layers.base`).
"""
from __future__ import annotations

from rnnkit.layers.attention import AdditiveAttention, Attention
from rnnkit.layers.base import Context, Layer, check_mask, deserialize, get, register, serialize
from rnnkit.layers.conv import Conv1D
from rnnkit.layers.core import Activation, Dense, Dropout, Embedding, Masking
from rnnkit.layers.input_layer import Input, InputLayer
from rnnkit.layers.merge import Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract
from rnnkit.layers.normalization import BatchNormalization, LayerNormalization
from rnnkit.layers.pooling import (AveragePooling1D, AvgPool1D, GlobalAveragePooling1D, GlobalAvgPool1D,
                                   GlobalMaxPool1D, GlobalMaxPooling1D, MaxPool1D, MaxPooling1D)
from rnnkit.layers.recurrent import GRU, LSTM, SimpleRNN
from rnnkit.layers.rnn_cells import RNN, AbstractRNNCell, GRUCell, LSTMCell, SimpleRNNCell, StackedRNNCells
from rnnkit.layers.reshaping import Flatten, Permute, RepeatVector, Reshape
from rnnkit.layers.wrappers import Bidirectional, TimeDistributed

__all__ = [
    "Layer", "Context", "Input", "InputLayer", "SimpleRNN", "LSTM", "GRU", "RNN", "SimpleRNNCell",
    "LSTMCell", "GRUCell", "StackedRNNCells", "AbstractRNNCell", "Bidirectional",
    "TimeDistributed", "Dense", "Activation", "Embedding", "Dropout", "Masking", "Flatten", "Reshape",
    "Permute", "RepeatVector", "Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum",
    "Minimum", "Dot", "Attention", "AdditiveAttention", "LayerNormalization", "BatchNormalization",
    "GlobalAveragePooling1D", "GlobalMaxPooling1D", "AveragePooling1D", "MaxPooling1D",
    "GlobalAvgPool1D", "GlobalMaxPool1D", "AvgPool1D", "MaxPool1D", "Conv1D",
    "serialize", "deserialize", "get", "register", "check_mask",
]
