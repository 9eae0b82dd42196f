"""The training loop behind :class:`rnnkit.models.Sequential`: ``fit``, ``evaluate``, ``predict``,
``train_on_batch`` and their input validation.

One training step on a batch: forward in training mode (masks flow through the layers), the loss
and its gradient (w.r.t. the logits when the output is a softmax/sigmoid ``Dense`` and the loss a
matching cross-entropy: ``(p - y) / count``, no softmax Jacobian), ``zero_grad``, backward
through the layers, one optimizer update of every trainable parameter in place. Everything works
on whole batches; nothing loops over samples in Python.

Shapes
------
``x``: ``[N, ...]`` (``[N, T, C]`` floats, ``[N, T]`` ints for ``Embedding``); ``y``: the
model's output shape ``[N, ..., K]``, or ``[N, ...]`` integer labels for the sparse loss.
"""
from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from rnnkit import losses as _losses
from rnnkit._checks import check_finite as _check_finite_arr
from rnnkit._checks import check_positive_int
from rnnkit.callbacks import Callback, CallbackList, History
from rnnkit.layers.base import Layer

if TYPE_CHECKING:  # pragma: no cover
    from rnnkit.models import Sequential

__all__ = ["fit", "evaluate", "predict", "train_on_batch", "prepare_x", "prepare_y"]

Shape = Tuple[Optional[int], ...]


def _fmt(shape: Sequence[Optional[int]]) -> str:
    parts = ["?" if s is None else str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _matches(actual: Sequence[int], expected: Sequence[Optional[int]]) -> bool:
    return len(actual) == len(expected) and all(e is None or a == e for a, e in zip(actual, expected))


# ---- validation ------------------------------------------------------------------------------

def prepare_x(model: "Sequential", x: Any, name: str = "x") -> np.ndarray:
    """``x`` as an array the first layer accepts: floats in the model's dtype (converted once, not
    per batch), integers kept for ``Embedding``; checks the per-sample shape once built."""
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    if a.dtype.kind == "f":
        dt = model.layers[0].dtype if model.layers else a.dtype
        if a.dtype != dt:
            a = a.astype(dt)
    elif a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected a float or integer array, got dtype {a.dtype}")
    if a.ndim < 1 or a.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample (shape (N, ...)), got shape {a.shape}")
    if model.build_input_shape is not None:
        want = (None,) + tuple(model.build_input_shape[1:])
        if not _matches(a.shape, want):
            raise ValueError(f"{name}: expected shape {_fmt(want)} (the model's input shape), "
                             f"got {_fmt(a.shape)}")
    return a


def prepare_y(model: "Sequential", y: Any, n: int, out_shape: Shape, name: str = "y") -> np.ndarray:
    """Checks ``y`` against the loss and the model's output shape ``out_shape`` (batch axis
    first): sample count, shape, integer labels in range for the sparse loss; converts dense
    targets to the output's dtype once."""
    t = y if isinstance(y, np.ndarray) else np.asarray(y)
    if t.ndim == 0 or t.shape[0] != n:
        got = "a scalar" if t.ndim == 0 else f"{t.shape[0]}"
        raise ValueError(f"{name}: expected {n} samples (as many as x), got {got}")
    loss = model.loss
    K = out_shape[-1]
    if isinstance(loss, _losses.SparseCategoricalCrossentropy):
        lead = (n,) + tuple(out_shape[1:-1])
        if not (_matches(t.shape, lead) or _matches(t.shape, lead + (1,))):
            raise ValueError(f"{name}: expected integer labels of shape {_fmt(lead)} (the model's output "
                             f"shape {_fmt(out_shape)} without the class axis), got {_fmt(t.shape)}")
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
        raise ValueError(f"{name}: expected shape {_fmt(want)} (the model's output shape), got "
                         f"{_fmt(t.shape)}")
    if t.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a numeric array, got dtype {t.dtype}")
    dt = model.layers[-1].dtype
    if t.dtype != dt:
        t = t.astype(dt)
    return t


def _check_args(epochs: int, batch_size: int, verbose: int) -> Tuple[int, int, int]:
    epochs = check_positive_int("epochs", epochs, minimum=0)
    batch_size = check_positive_int("batch_size", batch_size)
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose: expected 0, 1 or 2, got {verbose!r}")
    return epochs, batch_size, int(verbose)


def _prepare(model: "Sequential", x: Any, y: Any, names: Tuple[str, str], check: bool
             ) -> Tuple[np.ndarray, np.ndarray]:
    xa = prepare_x(model, x, names[0])
    if not model.built:
        model.build((None,) + xa.shape[1:])
    out_shape = model._output_shape_for((None,) + xa.shape[1:])
    if isinstance(out_shape[0], (tuple, list)):
        raise ValueError(f"{names[0]}: the model has several outputs; Sequential needs one")
    ya = prepare_y(model, y, xa.shape[0], out_shape, names[1])
    if check:
        if xa.dtype.kind == "f":
            _check_finite_arr(names[0], xa)
        if ya.dtype.kind == "f":
            _check_finite_arr(names[1], ya)
    return xa, ya


# ---- one step ----------------------------------------------------------------------------------

def _loss_mask(out: np.ndarray, mask: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if mask is None:
        return None
    mask = np.asarray(mask)
    return mask if mask.shape == out.shape[:-1] else None


def _loss(model: "Sequential", yb: np.ndarray, out: np.ndarray, mask: Optional[np.ndarray],
          fused: bool, need_grad: bool) -> Tuple[float, Optional[np.ndarray]]:
    loss = model.loss
    assert loss is not None
    if fused:
        logits = getattr(model.layers[-1], "last_logits", None)
        if logits is not None and np.shape(logits) != out.shape:
            logits = None
        return loss.logits_value_and_grad(yb, out, logits=logits, mask=mask)
    if need_grad:
        return loss.value_and_grad(yb, out, mask)
    return loss(yb, out, mask), None


def _train_step(model: "Sequential", xb: np.ndarray, yb: np.ndarray, params: List[np.ndarray],
                grads: List[np.ndarray], fused: bool) -> Tuple[float, np.ndarray, Optional[np.ndarray]]:
    out, mask = model._run(xb, training=True)
    mask = _loss_mask(out, mask)
    value, d = _loss(model, yb, out, mask, fused, need_grad=True)
    model.zero_grad()
    # the input is data: the first layer need not compute its input gradient
    first = model.layers[0]
    saved, first.needs_input_grad = first.needs_input_grad, False
    try:
        if fused:
            model._backward_from_logits(d)  # type: ignore[arg-type]
        else:
            model.backward(d)
    finally:
        first.needs_input_grad = saved
    assert model.optimizer is not None
    model.optimizer.apply(grads, params)
    return value, out, mask


def _walk(layer: Layer) -> Iterator[Layer]:
    yield layer
    for v in list(vars(layer).values()):
        if isinstance(v, Layer) and v is not layer:
            yield from _walk(v)


def _reseed_layers(model: "Sequential", rng: np.random.Generator) -> None:
    """Gives every layer with a random generator (dropout) a fresh one derived from ``rng``, in
    layer order, so that ``fit(seed=...)`` is reproducible."""
    for top in model.layers:
        for layer in _walk(top):
            seed = int(rng.integers(0, 2**63 - 1))
            reseed = getattr(layer, "reseed", None)
            if callable(reseed):
                reseed(seed)
            elif isinstance(getattr(layer, "_rng", None), np.random.Generator):
                layer._rng = np.random.default_rng(seed)  # type: ignore[attr-defined]


def _batches(n: int, batch_size: int, order: Optional[np.ndarray]) -> Iterator[Union[slice, np.ndarray]]:
    for s in range(0, n, batch_size):
        yield slice(s, min(s + batch_size, n)) if order is None else order[s:s + batch_size]


def _postfix(logs: Dict[str, float]) -> Dict[str, str]:
    return {k: f"{v:.4f}" for k, v in logs.items()}


# ---- public loops ------------------------------------------------------------------------------

def fit(model: "Sequential", x: Any, y: Any, epochs: int = 1, batch_size: int = 32,
        validation_split: float = 0.0, validation_data: Optional[Tuple[Any, Any]] = None,
        shuffle: bool = True, callbacks: Optional[Sequence[Callback]] = None, verbose: int = 1,
        seed: Optional[int] = None, initial_epoch: int = 0,
        check_finite: Optional[bool] = None) -> History:
    """See :meth:`rnnkit.models.Sequential.fit`.

    Shapes
    ------
    ``x``: ``[N, ...]``; ``y``: ``[N, ...]`` (see the module docstring); returns the History.
    """
    model._require_compiled("fit")
    epochs, batch_size, verbose = _check_args(epochs, batch_size, verbose)
    initial_epoch = check_positive_int("initial_epoch", initial_epoch, minimum=0)
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
            or not 0.0 <= float(validation_split) < 1.0:
        raise ValueError(f"validation_split: expected a float in [0, 1), got {validation_split!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed: expected None or an int, got {type(seed).__name__}")
    check = model.check_finite if check_finite is None else bool(check_finite)
    xa, ya = _prepare(model, x, y, ("x", "y"), check)

    xv: Optional[np.ndarray] = None
    yv: Optional[np.ndarray] = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data: expected a tuple (x_val, y_val), got "
                             f"{type(validation_data).__name__}"
                             f"{' of length ' + str(len(validation_data)) if isinstance(validation_data, (tuple, list)) else ''}")
        xv, yv = _prepare(model, validation_data[0], validation_data[1],
                          ("validation_data[0]", "validation_data[1]"), check)
    elif validation_split > 0:
        n_all = xa.shape[0]
        split = int(math.floor(n_all * (1.0 - float(validation_split))))
        if split == 0 or split == n_all:
            raise ValueError(f"validation_split: {validation_split} of {n_all} samples leaves "
                             f"{split} for training and {n_all - split} for validation; both must be > 0")
        xa, xv = xa[:split], xa[split:]
        ya, yv = ya[:split], ya[split:]

    n = xa.shape[0]
    steps = -(-n // batch_size)
    rng = np.random.default_rng(seed)
    if seed is not None:
        _reseed_layers(model, rng)
    params, grads = model.trainable_variables()
    fused = model._fused_activation() is not None
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
                xb, yb = xa[idx], ya[idx]
                value, out, mask = _train_step(model, xb, yb, params, grads, fused)
                if check and not math.isfinite(value):
                    raise FloatingPointError(f"fit: the loss became {value} at epoch {epoch + 1}, "
                                             f"batch {b + 1}")
                nb = xb.shape[0]
                total += value * nb
                seen += nb
                for m in metrics:
                    m.update_state(yb, out, mask)
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
        if xv is not None and yv is not None:
            val = _evaluate_arrays(model, xv, yv, batch_size)
            logs.update({"val_" + k: v for k, v in val.items()})
        cbs.on_epoch_end(epoch, logs)
        if verbose == 2:
            items = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - t0:.1f}s - {items}")
        elif verbose == 1 and xv is not None:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items() if k.startswith("val_")),
                  file=sys.stderr)
        if model.stop_training:
            break
    cbs.on_train_end(logs)
    return history


def _evaluate_arrays(model: "Sequential", xa: np.ndarray, ya: np.ndarray, batch_size: int,
                     verbose: int = 0) -> Dict[str, float]:
    metrics = model.compiled_metrics
    for m in metrics:
        m.reset_state()
    fused = model._fused_activation() is not None
    n = xa.shape[0]
    total = 0.0
    with tqdm(total=-(-n // batch_size), desc="Evaluate", unit="batch", disable=verbose != 1,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for idx in _batches(n, batch_size, None):
            xb, yb = xa[idx], ya[idx]
            out, mask = model._run(xb, training=False)
            mask = _loss_mask(out, mask)
            value, _ = _loss(model, yb, out, mask, fused, need_grad=False)
            total += value * xb.shape[0]
            for m in metrics:
                m.update_state(yb, out, mask)
            bar.update(1)
    return {"loss": total / n, **{m.name: m.result() for m in metrics}}


def evaluate(model: "Sequential", x: Any, y: Any, batch_size: int = 32, verbose: int = 0,
             return_dict: bool = False) -> Union[float, List[float], Dict[str, float]]:
    """See :meth:`rnnkit.models.Sequential.evaluate`.

    Shapes
    ------
    ``x``: ``[N, ...]``; ``y``: ``[N, ...]``; returns scalars.
    """
    model._require_compiled("evaluate")
    _, batch_size, verbose = _check_args(1, batch_size, verbose)
    xa, ya = _prepare(model, x, y, ("x", "y"), model.check_finite)
    logs = _evaluate_arrays(model, xa, ya, batch_size, verbose)
    if return_dict:
        return logs
    if not model.compiled_metrics:
        return logs["loss"]
    return list(logs.values())


def predict(model: "Sequential", x: Any, batch_size: int = 32, verbose: int = 0) -> np.ndarray:
    """See :meth:`rnnkit.models.Sequential.predict`.

    Shapes
    ------
    ``x``: ``[N, ...]`` -> ``[N, *output_shape]``.
    """
    _, batch_size, verbose = _check_args(1, batch_size, verbose)
    if not model.layers:
        raise ValueError("predict: the model has no layers")
    xa = prepare_x(model, x, "x")
    if model.check_finite and xa.dtype.kind == "f":
        _check_finite_arr("x", xa)
    if not model.built:
        model.build((None,) + xa.shape[1:])
    n = xa.shape[0]
    result: Optional[np.ndarray] = None
    with tqdm(total=-(-n // batch_size), desc="Predict", unit="batch", disable=verbose != 1,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for idx in _batches(n, batch_size, None):
            out = model.forward(xa[idx], training=False)
            if result is None:
                result = np.empty((n,) + out.shape[1:], dtype=out.dtype)
            result[idx] = out
            bar.update(1)
    assert result is not None
    return result


def train_on_batch(model: "Sequential", x: Any, y: Any) -> Union[float, List[float]]:
    """See :meth:`rnnkit.models.Sequential.train_on_batch`.

    Shapes
    ------
    ``x``: ``[n, ...]``; ``y``: ``[n, ...]``; returns scalars.
    """
    model._require_compiled("train_on_batch")
    xa, ya = _prepare(model, x, y, ("x", "y"), model.check_finite)
    params, grads = model.trainable_variables()
    value, out, mask = _train_step(model, xa, ya, params, grads, model._fused_activation() is not None)
    if model.check_finite and not math.isfinite(value):
        raise FloatingPointError(f"train_on_batch: the loss became {value}")
    if not model.compiled_metrics:
        return value
    res = [value]
    for m in model.compiled_metrics:
        m.reset_state()
        m.update_state(ya, out, mask)
        res.append(m.result())
    return res
