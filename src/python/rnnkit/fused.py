"""The whole training step of a recurrent stack in one compiled call (``compile(jit_compile=...)``).

The most common sequence model, a stack of ``LSTM``/``GRU``/``SimpleRNN`` layers under a
``Dense(K, activation="softmax")`` trained with categorical cross-entropy, spends a fifth of its
``fit`` epoch in Python: every layer's call and backward, the loss and the accuracy each run a
few NumPy operations per batch. :class:`FusedStep` hands a batch to one C++ call
(``src/cpp/train_step.h``) that runs the forward of every layer, the output layer, the fused
softmax cross-entropy, the accuracy count and every backward, writing the gradients into the
layers' own gradient arrays; the optimizer then updates the weights as in the per-layer path.
Python's ``fit`` stays the driver of epochs, batches and callbacks.

The math is the per-layer path's: the same kernels, the same loss formula (probabilities clipped
to [1e-7, 1 - 1e-7] for the value; gradient ``(p - y) / rows`` with respect to the logits), so
both give the same weights (``tests/test_fused_step.py``: 1e-12 in float64 after several
epochs of Adam). :func:`plan` says why a model does not qualify; ``fit`` then runs the
per-layer path.

Measured (``bench/fused_step.py``, the seed model LSTM(64) -> LSTM(32) -> Dense(10, softmax) on
2048 x 50 x 32, batch 32, Adam, both paths alternating in one process, AMD EPYC Zen 4): 0.330 ->
0.299 s per epoch on 1 thread (1.10x), 0.206 -> 0.172 s on 2 (1.20x); the fused epoch is within
10-12% of the time its LSTM kernels alone take.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np

from rnnkit import _core
from rnnkit import losses as _losses
from rnnkit import metrics as _metrics
from rnnkit.layers.core import Dense
from rnnkit.layers.recurrent import GRU, LSTM, SimpleRNN

__all__ = ["FusedStep", "plan"]

_KINDS = {SimpleRNN: "rnn", LSTM: "lstm", GRU: "gru"}


def _layer_reason(i: int, layer: Any) -> Optional[str]:
    """Why recurrent layer ``layer`` (the i-th) cannot join the fused step, or None."""
    name = f"layer {i} ({layer.name})"
    if not layer.trainable:
        return f"{name} is frozen (trainable=False)"
    for attr in ("dropout", "recurrent_dropout", "zoneout", "zoneout_cell"):
        if getattr(layer, attr, 0.0):
            return f"{name} has {attr}={getattr(layer, attr)}"
    for attr in ("stateful", "go_backwards", "return_state", "layer_norm"):
        if getattr(layer, attr, False):
            return f"{name} has {attr}=True"
    if getattr(layer, "recompute", None) is not None:
        return f"{name} has recompute={layer.recompute!r}"
    if isinstance(layer, GRU) and not layer.reset_after:
        return f"{name} is a GRU with reset_after=False"
    if set(layer.kernel_weights()) != {"w_ih", "w_hh", "b_ih", "b_hh"}:
        return f"{name} has weights beyond w_ih, w_hh and biases"
    return None


def plan(model: Any) -> Tuple[Optional["FusedStep"], str]:
    """A :class:`FusedStep` for ``model``, or ``(None, reason)`` when it does not qualify.

    Qualifies: a compiled :class:`~rnnkit.models.Sequential` of one or more ``LSTM``/``GRU``
    (``reset_after=True``)/``SimpleRNN`` layers (every one but the last returning sequences; no
    dropout, zoneout, state, reversal, LayerNorm or recomputation; all trainable) and a trainable
    ``Dense(K, activation="softmax")``; the loss ``CategoricalCrossentropy`` or
    ``SparseCategoricalCrossentropy`` with its defaults (no label smoothing, probabilities, the
    last axis, ``sum_over_batch_size``); metrics none, ``'accuracy'`` or the matching accuracy class; float32 or
    float64 throughout.
    """
    layers = getattr(model, "stack_layers", None)
    if layers is None:
        return None, "only Sequential models (plain stacks of layers) are fused"
    if len(layers) < 2:
        return None, "the model needs recurrent layers and a Dense output"
    *rec, out = layers
    for i, layer in enumerate(rec):
        if type(layer) not in _KINDS:
            return None, f"layer {i} ({layer.name}) is a {type(layer).__name__}, not LSTM/GRU/SimpleRNN"
        why = _layer_reason(i, layer)
        if why:
            return None, why
        if i + 1 < len(rec) and not layer.return_sequences:
            return None, f"layer {i} ({layer.name}) does not return sequences but feeds another recurrent layer"
    if type(out) is not Dense or out.activation.name != "softmax" or not out.trainable or out.units < 2:
        return None, "the last layer is not a trainable Dense(K >= 2, activation='softmax')"
    dtypes = {np.dtype(layer.dtype) for layer in layers}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (np.dtype(np.float32), np.dtype(np.float64)):
        return None, f"the layers' dtypes are {sorted(map(str, dtypes))}, not one of float32/float64"
    loss = model.output_losses[0] if len(model.output_losses) == 1 else None
    if type(loss) not in (_losses.CategoricalCrossentropy, _losses.SparseCategoricalCrossentropy):
        return None, f"the loss is {type(loss).__name__}, not (sparse) categorical cross-entropy"
    if loss.from_logits or loss.axis != -1 or loss.reduction != "sum_over_batch_size" \
            or getattr(loss, "label_smoothing", 0.0) or getattr(loss, "ignore_class", None) is not None:
        return None, "the loss has non-default arguments"
    if model.loss_weights != [1.0]:
        return None, "loss_weights are set"
    sparse = type(loss) is _losses.SparseCategoricalCrossentropy
    acc = _metrics.SparseCategoricalAccuracy if sparse else _metrics.CategoricalAccuracy
    for m in model.compiled_metrics:
        # 'accuracy' resolves to the same count for these losses and K >= 2 classes
        if type(m) is not acc and type(m) is not _metrics.Accuracy:
            return None, f"metric {m.name!r} ({type(m).__name__}) is not computed by the fused step"
    return FusedStep(rec, out, sparse, list(model.compiled_metrics), next(iter(dtypes))), ""


class FusedStep:
    """One training batch of a qualifying model as one compiled call (see :func:`plan`).

    Built once per ``fit``; it keeps the C++ workspaces between batches (one batch at a time:
    the trainer holds a lock). The weight and gradient arrays are read from the layers at every
    step, so weights replaced between batches (``set_weights``, a callback) are seen.

    Shapes
    ------
    ``step`` takes a batch ``([x], [y], weights)``: x ``[N, T, C]``; y ``[N, T, K]`` one-hot (or
    integer labels ``[N, T]`` for the sparse loss), or ``[N, K]`` / ``[N]`` when the last
    recurrent layer returns only its last state.
    """

    def __init__(self, recurrent: List[Any], dense: Any, sparse: bool, metrics: List[Any],
                 dtype: np.dtype) -> None:
        self.recurrent = recurrent
        self.dense = dense
        self.sparse = sparse
        self.metrics = metrics
        self.dtype = dtype
        cls = _core.StackTrainerF32 if dtype == np.float32 else _core.StackTrainerF64
        self._trainer = cls(
            [_KINDS[type(layer)] for layer in recurrent], [layer.units for layer in recurrent],
            [layer.activation.name for layer in recurrent],
            [getattr(getattr(layer, "recurrent_activation", None), "name", "sigmoid") for layer in recurrent],
            [bool(layer.return_sequences) for layer in recurrent])

    def step(self, batch: Any) -> Optional[Tuple[float, int]]:
        """Computes the gradients of one batch into the layers' gradient arrays and updates the
        metrics; returns ``(mean loss, samples)``, or None when the batch itself does not qualify
        (several inputs, sample weights): the caller then runs the per-layer step."""
        xb, yb, wb = batch
        if len(xb) != 1 or len(yb) != 1 or yb[0] is None or (wb is not None and any(w is not None for w in wb)):
            return None
        x = xb[0]
        if not isinstance(x, np.ndarray) or x.ndim != 3 or x.dtype != self.dtype:
            return None
        x = np.ascontiguousarray(x)
        y = yb[0]
        params = []
        for layer in self.recurrent:
            p, g = layer.params, layer.grads
            params.append((p["w_ih"], p["w_hh"], p.get("b_ih"), p.get("b_hh"),
                           g["w_ih"], g["w_hh"], g.get("b_ih"), g.get("b_hh")))
        dp, dg = self.dense.params, self.dense.grads
        if self.sparse:
            labels = np.asarray(y)
            lead = x.shape[:2] if self.recurrent[-1].return_sequences else x.shape[:1]
            if labels.shape == lead + (1,):
                labels = labels.reshape(lead)  # Keras's labels with a trailing axis of 1
            if labels.dtype.kind not in "iu":
                return None  # the per-layer path checks and converts other label arrays
            labels = np.ascontiguousarray(labels, dtype=np.int64)
            loss_sum, correct, rows = self._trainer.step(x, params, dp["kernel"], dp.get("bias"), dg["kernel"],
                                                         dg.get("bias"), labels=labels)
        else:
            yd = np.ascontiguousarray(y, dtype=self.dtype)
            loss_sum, correct, rows = self._trainer.step(x, params, dp["kernel"], dp.get("bias"), dg["kernel"],
                                                         dg.get("bias"), y=yd)
        n = x.shape[0]
        per_sample = rows // n  # entries per sample: T, or 1
        for m in self.metrics:
            # Keras's Mean over entries, a sample's steps averaged first (Metric.update_state)
            m.merge_state({"total": np.float64(correct / per_sample), "count": np.float64(n)})
        return loss_sum / rows, n
