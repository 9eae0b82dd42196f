"""An inference-only copy of a trained model with its recurrent weights in bfloat16 or int8
(``model.quantize("int8")``).

The recurrent layers run in reduced-precision C++ streams (:mod:`rnnkit.streaming`, section
Precision: int8 with one scale per output unit, and on AVX512-VNNI each step's input and state
quantized per row, as PyTorch's ``quantize_dynamic``; or bfloat16), the per-step layers after
them (Dense, Activation, LayerNormalization, TimeDistributed, Embedding, Dropout as identity) in
float32, exactly as :class:`~rnnkit.models.stream.ModelStream` runs them. ``predict`` feeds each
batch as one chunk of steps from zero states.

The recurrent weights are copied (and quantized) when the model is quantized; the per-step
layers (Dense, ...) are the original's, so quantize again after more training. Calls of one
quantized model from several threads run one at a time (its streams carry state within a call).

Shapes
------
predict: x [N, T, C] (or [N, T] token ids for an Embedding first) -> [N, T, F] when the model
outputs sequences, else [N, F] (the last step's).
"""
from __future__ import annotations

import threading
from typing import Any, Optional

import numpy as np

from rnnkit._checks import check_positive_int
from rnnkit.models.stream import ModelStream

__all__ = ["QuantizedModel"]


class QuantizedModel:
    """See the module documentation.

    Parameters
    ----------
    model
        A built ``Sequential`` or ``RecurrentNetwork`` (a chain of streamable layers).
    precision
        ``'int8'``, ``'bfloat16'`` or ``'float32'`` (the same path with float weights).
    batch_size
        Rows per call of the streams, fixed now (their weights are copied and packed once):
        ``predict`` runs the data in batches of this size, the last one padded with zero rows
        (each row is computed independently of the others, padding included).
    """

    def __init__(self, model: Any, precision: str = "int8", batch_size: int = 32) -> None:
        self.precision = precision
        self.batch_size = check_positive_int("batch_size", batch_size)
        # the recurrent weights copied (and quantized) now; the per-step layers are the model's
        self._stream = ModelStream.from_model(model, self.batch_size, precision)
        self._layers = list(model.layers)
        self._sequences = all(getattr(layer, "return_sequences", True) for layer in self._layers
                              if hasattr(layer, "kernel_weights"))
        self._lock = threading.Lock()

    def predict(self, x: Any, batch_size: Optional[int] = None, verbose: Any = 0) -> np.ndarray:
        """The outputs for ``x`` (see Shapes). ``batch_size`` must be None or the quantized
        model's; ``verbose`` is accepted for Keras compatibility and ignored."""
        if batch_size is not None and batch_size != self.batch_size:
            raise ValueError(f"batch_size: this quantized model runs batches of {self.batch_size} "
                             f"(model.quantize(..., batch_size=)), got {batch_size!r}")
        x = np.asarray(x)
        if x.ndim < 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x: expected shape (batch, timesteps, ...) with both at least 1, got {x.shape}")
        n, bs = x.shape[0], self.batch_size
        parts = []
        with self._lock:  # the streams carry state within a call
            for i in range(0, n, bs):
                chunk = x[i:i + bs]
                rows = chunk.shape[0]
                if rows < bs:  # the last batch, padded with zero rows
                    chunk = np.concatenate([chunk, np.zeros((bs - rows,) + chunk.shape[1:], chunk.dtype)])
                self._stream.reset()
                y = self._stream.run(chunk)[:rows]
                parts.append(y if self._sequences else y[:, -1])
        return np.concatenate(parts, axis=0)

    def __call__(self, x: Any) -> np.ndarray:
        return self.predict(x)

    def __repr__(self) -> str:
        return (f"<QuantizedModel {self.precision} batch_size={self.batch_size} "
                f"layers={[layer.name for layer in self._layers]}>")
