"""Step-by-step inference of a whole trained model (``model.stream()``): the recurrent layers run
in their C++ streams (state carried between calls, weights packed once), the per-step layers after
them (Dense, Activation, LayerNormalization, TimeDistributed, Dropout as identity, Embedding) on
each step's rows.

``step(x_t)`` gives the outputs of step t as ``predict`` computes them on the whole sequence, and
``run(x)`` a chunk of steps; ``reset()`` starts a new sequence. Layers that need the whole sequence
(Bidirectional, go_backwards, pooling over time, attention, Conv1D, Masking) are refused with the
layer's name.

Shapes
------
``step``: x_t [N, C] (or [N] token ids for an Embedding first) -> [N, F];
``run``: x [N, steps, C] (batch-major, as ``predict``) -> [N, steps, F]; N = batch_size.
A recurrent layer with ``return_sequences=False`` gives its state at every step: the output of
``predict`` is the last step's.
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import numpy as np

from rnnkit._checks import check_positive_int

__all__ = ["ModelStream"]

# layers applied to one step's rows as they are
_PER_STEP = ("Dense", "Activation", "Dropout", "LayerNormalization", "TimeDistributed", "Embedding",
             "InputLayer", "SpatialDropout1D", "GaussianNoise", "ActivityRegularization")


class ModelStream:
    """A chain of layers run one step at a time (see the module documentation).

    Parameters
    ----------
    layers
        The model's layers in order (a ``Sequential``'s or a ``RecurrentNetwork``'s).
    batch_size
        Sequences advanced together by every call (the streams' N).
    precision
        The recurrent layers' weights in C++: 'float32', 'bfloat16' or 'int8' (see
        :mod:`rnnkit.streaming`); the per-step layers stay float.
    """

    def __init__(self, layers: Sequence[Any], batch_size: int = 1, precision: str = "float32") -> None:
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.precision = precision
        self._stages: List[Tuple[str, Any]] = []
        for layer in layers:
            kind = type(layer).__name__
            if hasattr(layer, "stream") and callable(layer.stream) and hasattr(layer, "kernel_weights"):
                self._stages.append(("recurrent", layer.stream(self.batch_size, precision=precision)))
            elif kind in _PER_STEP:
                self._stages.append(("step", layer))
            else:
                raise ValueError(f"stream: layer {layer.name!r} ({kind}) needs the whole sequence or is not "
                                 f"supported step by step; supported: recurrent layers (SimpleRNN, LSTM, GRU "
                                 f"without go_backwards) and {', '.join(_PER_STEP[:6])}")
        if not any(k == "recurrent" for k, _ in self._stages):
            raise ValueError("stream: the model has no recurrent layer to stream")

    @classmethod
    def from_model(cls, model: Any, batch_size: int = 1, precision: str = "float32") -> "ModelStream":
        """The stream of a built ``Sequential`` (or any model that is a plain chain of layers with
        a ``layers`` list)."""
        if type(model).__name__ not in ("Sequential", "FeedForwardNetwork", "RecurrentNetwork"):
            raise TypeError(f"model: expected a Sequential, FeedForwardNetwork or RecurrentNetwork (a "
                            f"chain of layers), got {type(model).__name__}")
        if not model.layers or not all(getattr(layer, "built", True) for layer in model.layers):
            raise ValueError("model: build it first (fit, predict or build(input_shape))")
        return cls(model.layers, batch_size, precision)

    def step(self, x_t: Any) -> np.ndarray:
        """One step of every sequence: ``x_t: [N, C]`` -> ``[N, F]``."""
        out = np.asarray(x_t)
        if out.shape[:1] != (self.batch_size,):
            raise ValueError(f"x_t: expected {self.batch_size} rows (batch_size), got shape {out.shape}")
        for kind, stage in self._stages:
            if kind == "recurrent":
                dt = np.dtype(stage.dtype)
                out = stage.step(np.ascontiguousarray(out, dtype=dt))
            else:
                # as one step of a sequence: [N, 1, ...] in, [N, 1, F] out
                out = stage.apply(out[:, None], training=False)[0][:, 0]
        return out

    def run(self, x: Any) -> np.ndarray:
        """A chunk of steps: ``x: [N, steps, C]`` -> ``[N, steps, F]`` (batch-major, as predict)."""
        out = np.asarray(x)
        if out.ndim < 2 or out.shape[0] != self.batch_size:
            raise ValueError(f"x: expected shape ({self.batch_size}, steps, ...) (batch_size rows), got "
                             f"{out.shape}")
        for kind, stage in self._stages:
            if kind == "recurrent":  # the streams are time-major
                tm = np.ascontiguousarray(np.swapaxes(out, 0, 1), dtype=np.dtype(stage.dtype))
                out = np.swapaxes(stage.run(tm), 0, 1)
            else:
                out = stage.apply(out, training=False)[0]
        return np.ascontiguousarray(out)

    def reset(self) -> None:
        """Starts new sequences: every recurrent layer's state back to zero."""
        for kind, stage in self._stages:
            if kind == "recurrent":
                stage.reset()
