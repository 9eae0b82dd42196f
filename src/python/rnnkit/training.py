"""The training loop behind :class:`rnnkit.models.Model` and ``Sequential``: ``fit``,
``evaluate``, ``predict``, ``train_on_batch`` and the checks of their data.

The loop uses only a model's public protocol, never a private method and no import of
:mod:`rnnkit.models`:

- ``model.prepare_inputs(x)`` -> one checked array per input;
- ``model.run(inputs, training)`` -> a trace with ``outputs`` and ``output_masks``;
- ``model.fusable_activation(k)``: the activation output ``k`` ends with, when the loss may fold
  it in (softmax + categorical cross-entropy, sigmoid + binary cross-entropy: the gradient w.r.t.
  the logits is ``(p - y) / count``, no Jacobian);
- ``model.backprop(trace, d_outputs, logits)``; ``model.zero_grad()``;
  ``model.trainable_variables()``; ``model.all_layers()``;
- the compile state: ``output_losses``, ``loss_weights``, ``optimizer``, ``compiled_metrics`` /
  ``metric_outputs``, ``check_finite``; and ``stop_training`` / ``history``.

One training step on a batch: forward in training mode (masks flow through the layers), each
output's loss and its gradient, ``zero_grad``, backward, one optimizer update of every trainable
parameter in place. Everything works on whole batches; nothing loops over samples in Python.

Shapes
------
``x``: ``[N, ...]`` per model input (``[N, T, C]`` floats, ``[N, T]`` ints for ``Embedding``);
``y``: per output, the output's shape ``[N, ..., K]``, or ``[N, ...]`` integer labels for the
sparse loss.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from rnnkit import fused
from rnnkit import losses as _losses
from rnnkit._blas import single_threaded_blas
from rnnkit._checks import check_finite as _check_finite_arr
from rnnkit._checks import check_positive_int, shape_str
from rnnkit._random import generator
from rnnkit._data import (ArrayData, Batch, DataSource, check_sample_weight, class_weights_to_sample_weights,
                          is_iterable_source, is_sequence_source, make_source)
from rnnkit.callbacks import Callback, CallbackList, History

__all__ = ["fit", "evaluate", "predict", "train_on_batch", "test_on_batch", "predict_on_batch",
           "compute_gradients",
           "prepare_targets", "prepare_weights"]

Shape = Tuple[Optional[int], ...]


def _matches(actual: Sequence[int], expected: Sequence[Optional[int]]) -> bool:
    return len(actual) == len(expected) and all(e is None or a == e for a, e in zip(actual, expected))


# ---- validation ------------------------------------------------------------------------------

def _prepare_target(loss: Optional[_losses.Loss], y: Any, n: int, out_shape: Shape, dtype: np.dtype,
                    name: str) -> np.ndarray:
    """Checks ``y`` against the loss and one output's shape ``out_shape`` (batch axis first):
    sample count, shape, integer labels in range for the sparse loss; converts dense targets to
    the output's dtype once."""
    t = y if isinstance(y, np.ndarray) else np.asarray(y)
    if t.ndim == 0 or t.shape[0] != n:
        got = "a scalar" if t.ndim == 0 else f"{t.shape[0]}"
        raise ValueError(f"{name}: expected {n} samples (as many as x), got {got}")
    K = out_shape[-1]
    if isinstance(loss, _losses.SparseCategoricalCrossentropy):
        lead = (n,) + tuple(out_shape[1:-1])
        if not (_matches(t.shape, lead) or _matches(t.shape, lead + (1,))):
            raise ValueError(f"{name}: expected integer labels of shape {shape_str(lead)} (the model's output "
                             f"shape {shape_str(out_shape)} without the class axis), got {shape_str(t.shape)}")
        if t.dtype.kind == "f":
            if not np.all(np.isfinite(t)) or np.any(t != np.round(t)):
                raise ValueError(f"{name}: expected integer class labels, got non-integral floats")
            t = t.astype(np.int64)
        elif t.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected integer class labels, got dtype {t.dtype}")
        ignored = getattr(loss, "ignore_class", None)
        checked = t if ignored is None else t[t != ignored]
        if checked.size and K is not None:
            lo, hi = int(checked.min()), int(checked.max())
            if lo < 0 or hi >= K:
                raise ValueError(f"{name}: labels must be in [0, {K}) for the model's {K} output classes"
                                 f"{'' if ignored is None else f' (or ignore_class={ignored})'}, "
                                 f"got values in [{lo}, {hi}]")
        return t
    want = (n,) + tuple(out_shape[1:])
    if len(want) == t.ndim + 1 and want[-1] == 1 and _matches(t.shape, want[:-1]):
        t = t[..., None]  # y of shape (N,) for a Dense(1) output, as Keras accepts
    if not _matches(t.shape, want):
        raise ValueError(f"{name}: expected shape {shape_str(want)} (the model's output shape), got "
                         f"{shape_str(t.shape)}")
    if t.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a numeric array, got dtype {t.dtype}")
    if t.dtype != dtype:
        t = t.astype(dtype)
    return t


def prepare_targets(model: Any, y: Any, n: int, name: str = "y") -> List[Optional[np.ndarray]]:
    """``y`` as one checked array per model output (None for an output without a loss): a list,
    a dict by output layer name, or one array for a one-output model."""
    outs = model.outputs
    names = model.output_names
    if isinstance(y, dict):
        unknown = [k for k in y if k not in names]
        if unknown:
            raise ValueError(f"{name}: unknown output name(s) {unknown}; the outputs are {names}")
        vals = [y.get(k) for k in names]
    elif isinstance(y, (list, tuple)) and len(outs) > 1:
        vals = list(y)
    else:
        vals = [y]
    if len(vals) != len(outs):
        raise ValueError(f"{name}: expected {len(outs)} target arrays (one per output {names}), got {len(vals)}")
    res: List[Optional[np.ndarray]] = []
    for k, (t, v, loss) in enumerate(zip(outs, vals, model.output_losses)):
        nm = name if len(outs) == 1 else f"{name}[{names[k]!r}]"
        if loss is None or v is None:
            res.append(None)
            continue
        dt = np.dtype(t.dtype) if np.dtype(t.dtype).kind == "f" else np.dtype(np.float32)
        res.append(_prepare_target(loss, v, n, t.shape, dt, nm))
    return res


def _check_args(epochs: int, batch_size: Optional[int], verbose: Any) -> Tuple[int, int, int]:
    epochs = check_positive_int("epochs", epochs, minimum=0)
    batch_size = 32 if batch_size is None else check_positive_int("batch_size", batch_size)
    if verbose == "auto":
        verbose = 1
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose: expected 'auto', 0, 1 or 2, got {verbose!r}")
    return epochs, batch_size, int(verbose)


def _check_steps(name: str, steps: Any) -> Optional[int]:
    return None if steps is None else check_positive_int(name, steps)


def _targets_lead(model: Any, k: int, y: np.ndarray) -> Tuple[int, ...]:
    """The shape of output ``k``'s loss entries for checked targets ``y``: y's shape without the
    class axis (integer labels for the sparse loss: y's own shape)."""
    if isinstance(model.output_losses[k], _losses.SparseCategoricalCrossentropy):
        return tuple(y.shape)
    return tuple(y.shape[:-1]) if y.ndim >= 2 else tuple(y.shape)


def prepare_weights(model: Any, sample_weight: Any, class_weight: Any, ys: List[Optional[np.ndarray]],
                    n: int, name: str = "sample_weight") -> Optional[List[Optional[np.ndarray]]]:
    """Per output, the weight of every loss entry (``[N]`` or ``[N, T]``), from ``sample_weight``
    (one array for all outputs, a list, or a dict by output name) times the ``class_weight`` of
    each entry's label (single-output models, as in Keras); None when neither is given."""
    if sample_weight is None and class_weight is None:
        return None
    names = model.output_names
    n_out = len(ys)
    if isinstance(sample_weight, dict):
        unknown = [k for k in sample_weight if k not in names]
        if unknown:
            raise ValueError(f"{name}: unknown output name(s) {unknown}; the outputs are {names}")
        sws = [sample_weight.get(k) for k in names]
    elif isinstance(sample_weight, (list, tuple)) and n_out > 1:
        if len(sample_weight) != n_out:
            raise ValueError(f"{name}: expected {n_out} weight arrays (one per output), got {len(sample_weight)}")
        sws = list(sample_weight)
    else:
        sws = [sample_weight] * n_out
    if class_weight is not None and n_out > 1:
        raise ValueError("class_weight: only for models with one output (as in Keras); give per-output "
                         "sample_weight instead")
    out: List[Optional[np.ndarray]] = []
    for k, (y, sw) in enumerate(zip(ys, sws)):
        if y is None:
            out.append(None)
            continue
        odt = np.dtype(model.outputs[k].dtype)
        dt = odt if odt.kind == "f" else np.dtype(np.float32)
        lead = _targets_lead(model, k, y)
        w = None if sw is None else check_sample_weight(name if n_out == 1 else f"{name}[{names[k]!r}]", sw, n, lead, dt)
        if class_weight is not None:
            sparse = isinstance(model.output_losses[k], _losses.SparseCategoricalCrossentropy)
            cw = class_weights_to_sample_weights(class_weight, y, sparse, dt)
            w = cw if w is None else (w.reshape(w.shape + (1,) * (cw.ndim - w.ndim)) * cw)
        out.append(w)
    return out


class _Checker:
    """Checks data against the model: whole arrays once, or each batch of a generator."""

    def __init__(self, model: Any, check_finite: bool, class_weight: Any, names: Tuple[str, str, str],
                 batch_size: int, shuffle: bool) -> None:
        self.model, self.check_finite, self.class_weight = model, check_finite, class_weight
        self.names, self.batch_size, self.shuffle = names, batch_size, shuffle

    def _finite(self, arrs: List[Optional[np.ndarray]], name: str) -> None:
        if self.check_finite:
            for i, a in enumerate(arrs):
                if a is not None and a.dtype.kind == "f":
                    _check_finite_arr(name if len(arrs) == 1 else f"{name}[{i}]", a)

    def check(self, x: Any, y: Any, w: Any, where: str = "") -> Batch:
        nx, ny, nw = (f"{n}{where}" for n in self.names)
        xs = self.model.prepare_inputs(x, nx)
        n = xs[0].shape[0]
        if y is None and any(l is not None for l in self.model.output_losses):
            raise ValueError(f"{ny}: expected targets for the model's loss, got None")
        ys = prepare_targets(self.model, y, n, ny) if y is not None else [None] * len(self.model.outputs)
        ws = prepare_weights(self.model, w, self.class_weight, ys, n, nw) if y is not None else None
        self._finite(xs, nx)
        self._finite(ys, ny)
        return xs, ys, ws

    def arrays(self, x: Any, y: Any, w: Any) -> ArrayData:
        xs, ys, ws = self.check(x, y, w)
        return ArrayData(xs, ys, ws, self.batch_size, self.shuffle)

    def batch(self, x: Any, y: Any, w: Any, where: str) -> Batch:
        return self.check(x, y, w, f" ({where})")


def _source(model: Any, x: Any, y: Any, sample_weight: Any, class_weight: Any, batch_size: int,
            shuffle: bool, steps: Optional[int], check: bool,
            names: Tuple[str, str, str] = ("x", "y", "sample_weight")) -> DataSource:
    chk = _Checker(model, check, class_weight, names, batch_size, shuffle)
    return make_source(x, y, sample_weight, batch_size, shuffle, steps, chk.arrays, chk.batch, names[0])


class _Cycled(DataSource):
    """``steps`` batches per epoch from an array source, continuing where the last epoch
    stopped and reshuffling at each pass through the data (Keras's ``steps_per_epoch`` on
    arrays)."""

    def __init__(self, source: DataSource, steps: int) -> None:
        self.source, self.steps = source, steps
        self._it: Optional[Iterator[Batch]] = None

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        for _ in range(self.steps):
            while True:
                if self._it is None:
                    self._it = self.source.epoch(rng)
                try:
                    batch = next(self._it)
                except StopIteration:
                    self._it = None
                    continue
                yield batch
                break


# ---- one step ----------------------------------------------------------------------------------

def _loss_mask(out: np.ndarray, mask: Any) -> Optional[np.ndarray]:
    if mask is None:
        return None
    mask = np.asarray(mask)
    return mask if mask.shape == out.shape[:-1] else None


def _weight_kw(ws: Optional[List[Optional[np.ndarray]]], k: int) -> Dict[str, Any]:
    """``sample_weight=`` for output ``k`` when weights are in use (losses and metrics without
    weights are called exactly as before)."""
    if ws is None or ws[k] is None:
        return {}
    return {"sample_weight": ws[k]}


def _losses_and_grads(model: Any, trace: Any, ys: List[Optional[np.ndarray]],
                      ws: Optional[List[Optional[np.ndarray]]], need_grad: bool
                      ) -> Tuple[float, List[Optional[np.ndarray]], List[bool], List[Optional[np.ndarray]]]:
    """The weighted total loss; per output its gradient, whether that gradient is w.r.t. the
    logits (loss fusion), and the mask used."""
    total = 0.0
    ds: List[Optional[np.ndarray]] = []
    logits: List[bool] = []
    masks: List[Optional[np.ndarray]] = []
    for k, (loss, lw, yb) in enumerate(zip(model.output_losses, model.loss_weights, ys)):
        out = trace.outputs[k]
        m = _loss_mask(out, trace.output_masks[k])
        masks.append(m)
        if loss is None or yb is None:
            ds.append(None)
            logits.append(False)
            continue
        kw = _weight_kw(ws, k)
        fused = loss.fusable_activation is not None and model.fusable_activation(k) == loss.fusable_activation
        if fused and need_grad:
            value, d = loss.logits_value_and_grad(yb, out, mask=m, **kw)
        elif need_grad:
            value, d = loss.value_and_grad(yb, out, m, **kw)
        else:
            value, d = loss(yb, out, m, **kw), None
        total += lw * value
        if d is not None and lw != 1.0:
            d = d * lw
        ds.append(d)
        logits.append(fused)
    return total, ds, logits, masks


def _train_step(model: Any, batch: Batch, params: List[np.ndarray], grads: List[np.ndarray],
                sync: Any = None) -> Tuple[float, int, Any, List[Any]]:
    """One update; returns the loss, the number of samples it is the mean over, the trace and
    the loss masks. With ``sync`` (``fit(distributed=True)``) the gradients are averaged over the
    ranks' shares of the global batch (weighted by their sizes; an empty share adds nothing, and
    then the trace is None) and the loss and count are the global batch's."""
    xb, yb, wb = batch
    nb = xb[0].shape[0]
    trace: Any = None
    masks: List[Any] = []
    value = 0.0
    if nb:
        trace = model.run(xb, training=True)
        value, ds, logits, masks = _losses_and_grads(model, trace, yb, wb, need_grad=True)
        model.zero_grad()
        model.backprop(trace, ds, logits)
    else:
        model.zero_grad()
    if sync is not None:
        grads, value, nb = sync.average_gradients(grads, nb, value)
    model.optimizer.apply(grads, params)
    return value, nb, trace, masks


def _fused_step(model: Any, sync: Any) -> Any:
    """The compiled whole-batch step for ``model`` (``compile(jit_compile=...)``), or None."""
    mode = getattr(model, "jit_compile", "auto")
    if mode is False:
        return None
    if sync is not None:
        if mode is True:
            raise ValueError("jit_compile=True: distributed training runs layer by layer; compile with "
                             "jit_compile='auto' or False")
        return None
    step, why = fused.plan(model)
    if step is None and mode is True:
        raise ValueError(f"jit_compile=True: this model cannot be trained as one compiled step: {why}")
    return step


def _update_metrics(model: Any, batch: Batch, outputs: List[np.ndarray], masks: List[Optional[np.ndarray]]) -> None:
    _, ys, ws = batch
    for m, k in zip(model.compiled_metrics, model.metric_outputs):
        if ys[k] is not None:
            m.update_state(ys[k], outputs[k], masks[k], **_weight_kw(ws, k))


def _reseed_layers(model: Any, rng: np.random.Generator, salt: Optional[int] = None) -> None:
    """Gives every layer that draws random numbers (its generator in ``layer.rng``) a fresh one
    derived from ``rng``, in layer order, so that ``fit(seed=...)`` is reproducible; ``salt``
    (a rank) gives each process of a distributed fit its own streams."""
    for layer in model.all_layers():
        seed = int(rng.integers(0, 2**63 - 1))
        if isinstance(getattr(layer, "rng", None), np.random.Generator):
            layer.rng = np.random.default_rng(seed if salt is None else [seed, salt])


def _postfix(logs: Dict[str, Any]) -> Dict[str, str]:
    return {k: f"{v:.4f}" for k, v in logs.items() if isinstance(v, float)}


def _line(logs: Dict[str, Any]) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items() if isinstance(v, float))


def _interactive() -> bool:
    """Whether progress goes to a terminal (a tqdm bar) or to a log (one line per epoch)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _logs(total: float, seen: int, metrics: List[Any]) -> Dict[str, Any]:
    """The loss and every metric's result: floats, or an array for a per-class result (F1Score
    with ``average=None``), which progress lines leave out."""
    logs: Dict[str, Any] = {"loss": total / max(seen, 1)}
    for m in metrics:
        r = m.result()
        logs[m.name] = float(r) if np.ndim(r) == 0 else np.asarray(r)
    return logs


# ---- public loops ------------------------------------------------------------------------------

@single_threaded_blas()
def fit(model: Any, x: Any = None, y: Any = None, batch_size: Optional[int] = None, epochs: int = 1,
        verbose: Any = "auto", callbacks: Optional[Sequence[Callback]] = None, validation_split: float = 0.0,
        validation_data: Any = None, shuffle: bool = True, class_weight: Optional[Dict[int, float]] = None,
        sample_weight: Any = None, initial_epoch: int = 0, steps_per_epoch: Optional[int] = None,
        validation_steps: Optional[int] = None, validation_batch_size: Optional[int] = None,
        validation_freq: int = 1, seed: Optional[int] = None, check_finite: Optional[bool] = None,
        distributed: bool = False) -> History:
    """See :meth:`rnnkit.models.Model.fit`; ``distributed=True``: data-parallel over the MPI
    ranks, see :mod:`rnnkit.distributed`.

    Shapes
    ------
    ``x``: ``[N, ...]`` per input; ``y``: ``[N, ...]`` per output; ``sample_weight``: ``[N]`` or
    ``[N, T]``; returns the History.
    """
    model.require_compiled("fit")
    epochs, batch_size, verbose = _check_args(epochs, batch_size, verbose)
    initial_epoch = check_positive_int("initial_epoch", initial_epoch, minimum=0)
    steps_per_epoch = _check_steps("steps_per_epoch", steps_per_epoch)
    validation_steps = _check_steps("validation_steps", validation_steps)
    validation_freq = check_positive_int("validation_freq", validation_freq)
    val_batch = batch_size if validation_batch_size is None else check_positive_int(
        "validation_batch_size", validation_batch_size)
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
            or not 0.0 <= float(validation_split) < 1.0:
        raise ValueError(f"validation_split: expected a float in [0, 1), got {validation_split!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed: expected None or an int, got {type(seed).__name__}")
    if not isinstance(distributed, (bool, np.bool_)):
        raise TypeError(f"distributed: expected a bool, got {type(distributed).__name__}")
    sync: Any = None
    if distributed:
        from rnnkit.distributed import TrainingSync  # imports mpi4py: only when asked for

        sync = TrainingSync()
        if not sync.is_main:
            verbose = 0  # rank 0 shows the progress
    check = model.check_finite if check_finite is None else bool(check_finite)
    train = _source(model, x, y, sample_weight, class_weight, batch_size, shuffle, steps_per_epoch, check)

    val: Optional[DataSource] = None
    if validation_data is not None:
        vd = validation_data
        if isinstance(vd, (tuple, list)):
            if len(vd) not in (2, 3):
                raise ValueError(f"validation_data: expected a tuple (x_val, y_val) or (x_val, y_val, "
                                 f"sample_weight), got a {type(vd).__name__} of length {len(vd)}")
            vx, vy, vw = vd[0], vd[1], vd[2] if len(vd) == 3 else None
        elif is_sequence_source(vd) or is_iterable_source(vd):
            vx, vy, vw = vd, None, None
        else:
            raise ValueError(f"validation_data: expected a tuple (x_val, y_val), got {type(vd).__name__}")
        val = _source(model, vx, vy, vw, None, val_batch, False, validation_steps, check,
                      ("validation_data[0]", "validation_data[1]", "validation_data[2]"))
    elif validation_split > 0:
        if not isinstance(train, ArrayData):
            raise ValueError("validation_split: only for array inputs (as in Keras); give validation_data "
                             "for a generator or dataset")
        n_all = train.n
        split = int(math.floor(n_all * (1.0 - float(validation_split))))
        if split == 0 or split == n_all:
            raise ValueError(f"validation_split: {validation_split} of {n_all} samples leaves "
                             f"{split} for training and {n_all - split} for validation; both must be > 0")
        train, held = train.split(split)
        held.batch_size = val_batch
        held.steps = -(-held.n // val_batch)
        val = held
    cycled = steps_per_epoch is not None and isinstance(train, ArrayData)
    if sync is not None:
        # arrays: this rank's slice of every global batch; other sources are each rank's own
        train = sync.shard(train)
        if val is not None and isinstance(val, ArrayData):
            val = sync.shard(val, "validation_data")
    if cycled and steps_per_epoch is not None:
        train = _Cycled(train, steps_per_epoch)

    rng = generator(seed)
    if seed is not None:
        _reseed_layers(model, rng, None if sync is None else sync.layer_seed_salt)
    params, grads = model.trainable_variables()
    fused = _fused_step(model, sync)
    history = History()
    steps = train.steps
    cb_params = {"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size,
                 "samples": getattr(train, "n", None)}
    cb_list = list(callbacks or []) + [history]
    cbs = (CallbackList(cb_list, model, cb_params) if sync is None
           else sync.callback_list(cb_list, model, cb_params))
    model.stop_training = False
    model.history = history
    metrics = model.compiled_metrics
    bar_on = verbose == 1 and _interactive()
    cbs.on_train_begin()
    # a BackupAndRestore that found a backup restored the weights and says where to go on
    initial_epoch = cbs.resume_epoch(initial_epoch)
    # each epoch's batch order comes from (base, epoch): a run resumed at epoch e shuffles as the
    # uninterrupted run did (with the same seed, or after the same rnnkit.utils.set_random_seed)
    base = int(rng.integers(0, 2**63 - 1))
    if sync is not None:
        # rank 0's weights, optimizer state (restored or not), first epoch and shuffling seed
        initial_epoch, base = sync.start(model, params, initial_epoch, base)
    logs: Dict[str, Any] = {}
    ran = False
    for epoch in range(initial_epoch, epochs):
        ran = True
        cbs.on_epoch_begin(epoch)
        for m in metrics:
            m.reset_state()
        total, seen = 0.0, 0
        t0 = time.perf_counter()
        bar = tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", disable=not bar_on,
                   leave=True, file=sys.stderr, dynamic_ncols=True)
        try:
            for b, batch in enumerate(train.epoch(np.random.default_rng([base, epoch]))):
                cbs.on_train_batch_begin(b)
                done = fused.step(batch) if fused is not None else None
                if done is not None:
                    # one compiled call: gradients written, metrics updated (rnnkit.fused)
                    value, nb = done
                    trace = None
                    model.optimizer.apply(grads, params)
                else:
                    value, nb, trace, masks = _train_step(model, batch, params, grads, sync)
                if check and not math.isfinite(value):
                    raise FloatingPointError(f"fit: the loss became {value} at epoch {epoch + 1}, "
                                             f"batch {b + 1}")
                total += value * nb
                seen += nb
                if trace is not None:
                    _update_metrics(model, batch, trace.outputs, masks)
                if bar_on or cbs.has_batch_hooks:
                    # distributed: the loss is the global batches', the metrics this rank's so far
                    blogs = _logs(total, seen, metrics)
                    if bar_on:
                        bar.set_postfix(_postfix(blogs), refresh=False)
                        bar.update(1)
                    cbs.on_train_batch_end(b, blogs)
                if sync is not None and sync.batch_hooks:
                    # a batch hook on any rank may stop training: all ranks stop together
                    model.stop_training = sync.any(model.stop_training)
                if model.stop_training:
                    break
        finally:
            bar.close()
        if seen == 0:
            raise ValueError("x: the training data produced no batches in this epoch")
        if sync is not None:
            sync.reduce(metrics)  # the loss sums are global already
            sync.end_epoch(model)
        logs = _logs(total, seen, metrics)
        if val is not None and (epoch + 1) % validation_freq == 0:
            vlogs = _evaluate_source(model, val, sync=sync)
            logs.update({"val_" + k: v for k, v in vlogs.items()})
        cbs.on_epoch_end(epoch, logs)
        if sync is not None:
            model.stop_training = sync.any(model.stop_training)
        if verbose == 2 or (verbose == 1 and not bar_on):
            print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - t0:.1f}s - {_line(logs)}", flush=True)
        elif verbose == 1 and val is not None and any(k.startswith("val_") for k in logs):
            print(_line({k: v for k, v in logs.items() if k.startswith("val_")}), file=sys.stderr)
        if model.stop_training:
            break
    if ran:
        # an optimizer with use_ema writes its moving averages into the weights (Keras)
        model.optimizer.finalize_variable_values(params)
    cbs.on_train_end(logs)
    return history


def _evaluate_source(model: Any, source: DataSource, verbose: int = 0, sync: Any = None) -> Dict[str, Any]:
    """The loss and metrics over ``source``; with ``sync``, summed over the ranks' shares."""
    metrics = model.compiled_metrics
    for m in metrics:
        m.reset_state()
    total, seen = 0.0, 0
    with tqdm(total=source.steps, desc="Evaluate", unit="batch", disable=not (verbose == 1 and _interactive()),
              file=sys.stderr, dynamic_ncols=True) as bar:
        for batch in source.epoch(np.random.default_rng(0)):
            nb = batch[0][0].shape[0]
            bar.update(1)
            if nb == 0:  # distributed: this rank's share of a short last batch
                continue
            trace = model.run(batch[0], training=False)
            value, _, _, masks = _losses_and_grads(model, trace, batch[1], batch[2], need_grad=False)
            total += value * nb
            seen += nb
            _update_metrics(model, batch, trace.outputs, masks)
    if sync is not None:
        total, seen_f = sync.reduce(metrics, total, float(seen))
        seen = int(round(seen_f))
    if seen == 0:
        raise ValueError("x: the evaluation data produced no batches")
    return _logs(total, seen, metrics)


def evaluate(model: Any, x: Any = None, y: Any = None, batch_size: Optional[int] = None, verbose: Any = "auto",
             sample_weight: Any = None, steps: Optional[int] = None, return_dict: bool = False
             ) -> Union[float, List[float], Dict[str, Any]]:
    """See :meth:`rnnkit.models.Model.evaluate`.

    Shapes
    ------
    ``x``: ``[N, ...]`` per input; ``y``: ``[N, ...]`` per output; returns scalars.
    """
    model.require_compiled("evaluate")
    _, batch_size, verbose = _check_args(1, batch_size, verbose)
    steps = _check_steps("steps", steps)
    source = _source(model, x, y, sample_weight, None, batch_size, False, steps, model.check_finite)
    logs = _evaluate_source(model, source, verbose)
    if return_dict:
        return logs
    if not model.compiled_metrics:
        return logs["loss"]
    return list(logs.values())


def predict(model: Any, x: Any, batch_size: Optional[int] = None, verbose: Any = "auto",
            steps: Optional[int] = None) -> Any:
    """See :meth:`rnnkit.models.Model.predict`.

    Shapes
    ------
    ``x``: ``[N, ...]`` per input -> ``[N, *output_shape]`` per output (C-contiguous arrays).
    """
    _, batch_size, verbose = _check_args(1, batch_size, verbose)
    steps = _check_steps("steps", steps)
    bar_on = verbose == 1 and _interactive()
    if is_sequence_source(x) or is_iterable_source(x):
        chunks: Optional[List[List[np.ndarray]]] = None
        it = iter(x) if not is_sequence_source(x) else (x[i] for i in range(len(x)))
        for i, b in enumerate(it):
            if steps is not None and i >= steps:
                break
            xb = b[0] if isinstance(b, (tuple, list)) and len(b) in (2, 3) and len(model.inputs) == 1 else b
            outs = model.run(model.prepare_inputs(xb, f"x (batch {i})"), training=False).outputs
            if chunks is None:
                chunks = [[] for _ in outs]
            for c, o in zip(chunks, outs):
                c.append(np.array(o, order="C"))
        if chunks is None:
            raise ValueError("x: the data produced no batches")
        results = [np.concatenate(c, axis=0) for c in chunks]
        return results[0] if len(results) == 1 else results
    xs = model.prepare_inputs(x, "x")
    if model.check_finite:
        for i, a in enumerate(xs):
            if a.dtype.kind == "f":
                _check_finite_arr("x" if len(xs) == 1 else f"x[{i}]", a)
    n = xs[0].shape[0]
    res: Optional[List[np.ndarray]] = None
    with tqdm(total=-(-n // batch_size), desc="Predict", unit="batch", disable=not bar_on,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for s in range(0, n, batch_size):
            idx = slice(s, min(s + batch_size, n))
            outs = model.run([a[idx] for a in xs], training=False).outputs
            if res is None:
                res = [np.empty((n,) + o.shape[1:], dtype=o.dtype) for o in outs]
            for r, o in zip(res, outs):
                r[idx] = o
            bar.update(1)
    assert res is not None
    return res[0] if len(res) == 1 else res


def _batch_logs(model: Any, value: float, batch: Batch, trace: Any, masks: List[Any],
                return_dict: bool) -> Any:
    for m in model.compiled_metrics:
        m.reset_state()
    _update_metrics(model, batch, trace.outputs, masks)
    logs = _logs(value, 1, model.compiled_metrics)
    if return_dict:
        return logs
    if not model.compiled_metrics:
        return value
    return list(logs.values())


def train_on_batch(model: Any, x: Any, y: Any = None, sample_weight: Any = None, class_weight: Any = None,
                   return_dict: bool = False) -> Any:
    """See :meth:`rnnkit.models.Model.train_on_batch`.

    Shapes
    ------
    ``x``: ``[n, ...]``; ``y``: ``[n, ...]``; returns scalars.
    """
    model.require_compiled("train_on_batch")
    batch = _Checker(model, model.check_finite, class_weight, ("x", "y", "sample_weight"), 1, False).check(
        x, y, sample_weight)
    params, grads = model.trainable_variables()
    value, _, trace, masks = _train_step(model, batch, params, grads)
    if model.check_finite and not math.isfinite(value):
        raise FloatingPointError(f"train_on_batch: the loss became {value}")
    return _batch_logs(model, value, batch, trace, masks, return_dict)


def compute_gradients(model: Any, x: Any, y: Any = None, sample_weight: Any = None, *,
                      training: bool = True) -> float:
    """Forward, loss and backward on one batch, with no update: afterwards every layer's
    ``grads`` holds the gradient of the batch's loss (zeroed first). Returns the loss.

    Shapes
    ------
    ``x``: ``[n, ...]`` per input; ``y``: ``[n, ...]`` per output; returns a scalar.
    """
    model.require_compiled("compute_gradients")
    batch = _Checker(model, model.check_finite, None, ("x", "y", "sample_weight"), 1, False).check(
        x, y, sample_weight)
    trace = model.run(batch[0], training=bool(training))
    value, ds, logits, _ = _losses_and_grads(model, trace, batch[1], batch[2], need_grad=True)
    model.zero_grad()
    model.backprop(trace, ds, logits)
    return float(value)


def test_on_batch(model: Any, x: Any, y: Any = None, sample_weight: Any = None, return_dict: bool = False) -> Any:
    """See :meth:`rnnkit.models.Model.test_on_batch`.

    Shapes
    ------
    ``x``: ``[n, ...]``; ``y``: ``[n, ...]``; returns scalars.
    """
    model.require_compiled("test_on_batch")
    batch = _Checker(model, model.check_finite, None, ("x", "y", "sample_weight"), 1, False).check(
        x, y, sample_weight)
    trace = model.run(batch[0], training=False)
    value, _, _, masks = _losses_and_grads(model, trace, batch[1], batch[2], need_grad=False)
    return _batch_logs(model, value, batch, trace, masks, return_dict)


def predict_on_batch(model: Any, x: Any) -> Any:
    """See :meth:`rnnkit.models.Model.predict_on_batch`.

    Shapes
    ------
    ``x``: ``[n, ...]`` per input -> ``[n, *output_shape]`` per output.
    """
    outs = model.run(model.prepare_inputs(x, "x"), training=False).outputs
    res = [np.array(o, order="C") for o in outs]
    return res[0] if len(res) == 1 else res
