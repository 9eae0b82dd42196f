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

from rnnkit import losses as _losses
from rnnkit._checks import check_finite as _check_finite_arr
from rnnkit._checks import check_positive_int, shape_str
from rnnkit._random import generator
from rnnkit.callbacks import Callback, CallbackList, History

__all__ = ["fit", "evaluate", "predict", "train_on_batch", "prepare_targets"]

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
        if t.size and K is not None:
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= K:
                raise ValueError(f"{name}: labels must be in [0, {K}) for the model's {K} output classes, "
                                 f"got values in [{lo}, {hi}]")
        return t
    want = (n,) + tuple(out_shape[1:])
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


def _check_args(epochs: int, batch_size: int, verbose: int) -> Tuple[int, int, int]:
    epochs = check_positive_int("epochs", epochs, minimum=0)
    batch_size = check_positive_int("batch_size", batch_size)
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose: expected 0, 1 or 2, got {verbose!r}")
    return epochs, batch_size, int(verbose)


class _Data:
    """Inputs and targets of one call, checked once, sliced per batch."""

    def __init__(self, xs: List[np.ndarray], ys: List[Optional[np.ndarray]]) -> None:
        self.xs, self.ys = xs, ys
        self.n = xs[0].shape[0]

    def batch(self, idx: Any) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]]]:
        return [x[idx] for x in self.xs], [None if y is None else y[idx] for y in self.ys]

    def split(self, at: int) -> Tuple["_Data", "_Data"]:
        return (_Data([x[:at] for x in self.xs], [None if y is None else y[:at] for y in self.ys]),
                _Data([x[at:] for x in self.xs], [None if y is None else y[at:] for y in self.ys]))


def _prepare(model: Any, x: Any, y: Any, names: Tuple[str, str], check: bool) -> _Data:
    xs = model.prepare_inputs(x, names[0])
    ys = prepare_targets(model, y, xs[0].shape[0], names[1])
    if check:
        for i, a in enumerate(xs):
            if a.dtype.kind == "f":
                _check_finite_arr(names[0] if len(xs) == 1 else f"{names[0]}[{i}]", a)
        for i, a in enumerate(ys):
            if a is not None and a.dtype.kind == "f":
                _check_finite_arr(names[1] if len(ys) == 1 else f"{names[1]}[{i}]", a)
    return _Data(xs, ys)


# ---- one step ----------------------------------------------------------------------------------

def _loss_mask(out: np.ndarray, mask: Any) -> Optional[np.ndarray]:
    if mask is None:
        return None
    mask = np.asarray(mask)
    return mask if mask.shape == out.shape[:-1] else None


def _losses_and_grads(model: Any, trace: Any, ys: List[Optional[np.ndarray]], need_grad: bool
                      ) -> Tuple[float, List[Optional[np.ndarray]], List[bool], List[Optional[np.ndarray]]]:
    """The weighted total loss; per output its gradient, whether that gradient is w.r.t. the
    logits (loss fusion), and the mask used."""
    total = 0.0
    ds: List[Optional[np.ndarray]] = []
    logits: List[bool] = []
    masks: List[Optional[np.ndarray]] = []
    for k, (loss, w, yb) in enumerate(zip(model.output_losses, model.loss_weights, ys)):
        out = trace.outputs[k]
        m = _loss_mask(out, trace.output_masks[k])
        masks.append(m)
        if loss is None or yb is None:
            ds.append(None)
            logits.append(False)
            continue
        fused = loss.fusable_activation is not None and model.fusable_activation(k) == loss.fusable_activation
        if fused and need_grad:
            value, d = loss.logits_value_and_grad(yb, out, mask=m)
        elif need_grad:
            value, d = loss.value_and_grad(yb, out, m)
        else:
            value, d = loss(yb, out, m), None
        total += w * value
        if d is not None and w != 1.0:
            d = d * w
        ds.append(d)
        logits.append(fused)
    return total, ds, logits, masks


def _train_step(model: Any, xb: List[np.ndarray], yb: List[Optional[np.ndarray]],
                params: List[np.ndarray], grads: List[np.ndarray]) -> Tuple[float, Any, List[Any]]:
    trace = model.run(xb, training=True)
    value, ds, logits, masks = _losses_and_grads(model, trace, yb, need_grad=True)
    model.zero_grad()
    model.backprop(trace, ds, logits)
    model.optimizer.apply(grads, params)
    return value, trace, masks


def _update_metrics(model: Any, ys: List[Optional[np.ndarray]], outputs: List[np.ndarray],
                    masks: List[Optional[np.ndarray]]) -> None:
    for m, k in zip(model.compiled_metrics, model.metric_outputs):
        if ys[k] is not None:
            m.update_state(ys[k], outputs[k], masks[k])


def _reseed_layers(model: Any, rng: np.random.Generator) -> None:
    """Gives every layer that draws random numbers (its generator in ``layer.rng``) a fresh one
    derived from ``rng``, in layer order, so that ``fit(seed=...)`` is reproducible."""
    for layer in model.all_layers():
        seed = int(rng.integers(0, 2**63 - 1))
        if isinstance(getattr(layer, "rng", None), np.random.Generator):
            layer.rng = np.random.default_rng(seed)


def _batches(n: int, batch_size: int, order: Optional[np.ndarray]) -> Iterator[Union[slice, np.ndarray]]:
    for s in range(0, n, batch_size):
        yield slice(s, min(s + batch_size, n)) if order is None else order[s:s + batch_size]


def _postfix(logs: Dict[str, float]) -> Dict[str, str]:
    return {k: f"{v:.4f}" for k, v in logs.items()}


# ---- public loops ------------------------------------------------------------------------------

def fit(model: Any, x: Any, y: Any, epochs: int = 1, batch_size: int = 32,
        validation_split: float = 0.0, validation_data: Optional[Tuple[Any, Any]] = None,
        shuffle: bool = True, callbacks: Optional[Sequence[Callback]] = None, verbose: int = 1,
        seed: Optional[int] = None, initial_epoch: int = 0,
        check_finite: Optional[bool] = None) -> History:
    """See :meth:`rnnkit.models.Model.fit`.

    Shapes
    ------
    ``x``: ``[N, ...]`` per input; ``y``: ``[N, ...]`` per output; returns the History.
    """
    model.require_compiled("fit")
    epochs, batch_size, verbose = _check_args(epochs, batch_size, verbose)
    initial_epoch = check_positive_int("initial_epoch", initial_epoch, minimum=0)
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
            or not 0.0 <= float(validation_split) < 1.0:
        raise ValueError(f"validation_split: expected a float in [0, 1), got {validation_split!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed: expected None or an int, got {type(seed).__name__}")
    check = model.check_finite if check_finite is None else bool(check_finite)
    data = _prepare(model, x, y, ("x", "y"), check)

    val: Optional[_Data] = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data: expected a tuple (x_val, y_val), got "
                             f"{type(validation_data).__name__}"
                             f"{' of length ' + str(len(validation_data)) if isinstance(validation_data, (tuple, list)) else ''}")
        val = _prepare(model, validation_data[0], validation_data[1],
                       ("validation_data[0]", "validation_data[1]"), check)
    elif validation_split > 0:
        n_all = data.n
        split = int(math.floor(n_all * (1.0 - float(validation_split))))
        if split == 0 or split == n_all:
            raise ValueError(f"validation_split: {validation_split} of {n_all} samples leaves "
                             f"{split} for training and {n_all - split} for validation; both must be > 0")
        data, val = data.split(split)

    n = data.n
    steps = -(-n // batch_size)
    rng = generator(seed)
    if seed is not None:
        _reseed_layers(model, rng)
    params, grads = model.trainable_variables()
    history = History()
    cbs = CallbackList(list(callbacks or []) + [history], model,
                       {"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size,
                        "samples": n})
    model.stop_training = False
    model.history = history
    metrics = model.compiled_metrics
    cbs.on_train_begin()
    logs: Dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        cbs.on_epoch_begin(epoch)
        for m in metrics:
            m.reset_state()
        order = rng.permutation(n) if shuffle else None
        total, seen = 0.0, 0
        t0 = time.perf_counter()
        bar = tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", disable=verbose != 1,
                   leave=True, file=sys.stderr, dynamic_ncols=True)
        try:
            for b, idx in enumerate(_batches(n, batch_size, order)):
                cbs.on_train_batch_begin(b)
                xb, yb = data.batch(idx)
                value, trace, masks = _train_step(model, xb, yb, params, grads)
                if check and not math.isfinite(value):
                    raise FloatingPointError(f"fit: the loss became {value} at epoch {epoch + 1}, "
                                             f"batch {b + 1}")
                nb = xb[0].shape[0]
                total += value * nb
                seen += nb
                _update_metrics(model, yb, trace.outputs, masks)
                if verbose == 1 or cbs.has_batch_hooks:
                    blogs = {"loss": total / seen, **{m.name: m.result() for m in metrics}}
                    if verbose == 1:
                        bar.set_postfix(_postfix(blogs), refresh=False)
                        bar.update(1)
                    cbs.on_train_batch_end(b, blogs)
                if model.stop_training:
                    break
        finally:
            bar.close()
        logs = {"loss": total / max(seen, 1), **{m.name: m.result() for m in metrics}}
        if val is not None:
            vlogs = _evaluate_data(model, val, batch_size)
            logs.update({"val_" + k: v for k, v in vlogs.items()})
        cbs.on_epoch_end(epoch, logs)
        if verbose == 2:
            items = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - t0:.1f}s - {items}")
        elif verbose == 1 and val is not None:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items() if k.startswith("val_")),
                  file=sys.stderr)
        if model.stop_training:
            break
    cbs.on_train_end(logs)
    return history


def _evaluate_data(model: Any, data: _Data, batch_size: int, verbose: int = 0) -> Dict[str, float]:
    metrics = model.compiled_metrics
    for m in metrics:
        m.reset_state()
    n = data.n
    total = 0.0
    with tqdm(total=-(-n // batch_size), desc="Evaluate", unit="batch", disable=verbose != 1,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for idx in _batches(n, batch_size, None):
            xb, yb = data.batch(idx)
            trace = model.run(xb, training=False)
            value, _, _, masks = _losses_and_grads(model, trace, yb, need_grad=False)
            total += value * xb[0].shape[0]
            _update_metrics(model, yb, trace.outputs, masks)
            bar.update(1)
    return {"loss": total / n, **{m.name: m.result() for m in metrics}}


def evaluate(model: Any, x: Any, y: Any, batch_size: int = 32, verbose: int = 0,
             return_dict: bool = False) -> Union[float, List[float], Dict[str, float]]:
    """See :meth:`rnnkit.models.Model.evaluate`.

    Shapes
    ------
    ``x``: ``[N, ...]`` per input; ``y``: ``[N, ...]`` per output; returns scalars.
    """
    model.require_compiled("evaluate")
    _, batch_size, verbose = _check_args(1, batch_size, verbose)
    logs = _evaluate_data(model, _prepare(model, x, y, ("x", "y"), model.check_finite), batch_size, verbose)
    if return_dict:
        return logs
    if not model.compiled_metrics:
        return logs["loss"]
    return list(logs.values())


def predict(model: Any, x: Any, batch_size: int = 32, verbose: int = 0) -> Any:
    """See :meth:`rnnkit.models.Model.predict`.

    Shapes
    ------
    ``x``: ``[N, ...]`` per input -> ``[N, *output_shape]`` per output (C-contiguous arrays).
    """
    _, batch_size, verbose = _check_args(1, batch_size, verbose)
    xs = model.prepare_inputs(x, "x")
    if model.check_finite:
        for i, a in enumerate(xs):
            if a.dtype.kind == "f":
                _check_finite_arr("x" if len(xs) == 1 else f"x[{i}]", a)
    n = xs[0].shape[0]
    results: Optional[List[np.ndarray]] = None
    with tqdm(total=-(-n // batch_size), desc="Predict", unit="batch", disable=verbose != 1,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for idx in _batches(n, batch_size, None):
            outs = model.run([a[idx] for a in xs], training=False).outputs
            if results is None:
                results = [np.empty((n,) + o.shape[1:], dtype=o.dtype) for o in outs]
            for r, o in zip(results, outs):
                r[idx] = o
            bar.update(1)
    assert results is not None
    return results[0] if len(results) == 1 else results


def train_on_batch(model: Any, x: Any, y: Any) -> Union[float, List[float]]:
    """See :meth:`rnnkit.models.Model.train_on_batch`.

    Shapes
    ------
    ``x``: ``[n, ...]``; ``y``: ``[n, ...]``; returns scalars.
    """
    model.require_compiled("train_on_batch")
    data = _prepare(model, x, y, ("x", "y"), model.check_finite)
    params, grads = model.trainable_variables()
    value, trace, masks = _train_step(model, data.xs, data.ys, params, grads)
    if model.check_finite and not math.isfinite(value):
        raise FloatingPointError(f"train_on_batch: the loss became {value}")
    if not model.compiled_metrics:
        return value
    res = [value]
    for m in model.compiled_metrics:
        m.reset_state()
    _update_metrics(model, data.ys, trace.outputs, masks)
    res.extend(m.result() for m in model.compiled_metrics)
    return res
