"""Training callbacks with Keras's names and semantics: History, EarlyStopping, ModelCheckpoint,
LearningRateScheduler, TerminateOnNaN, LambdaCallback.

``fit`` calls, on every callback: ``set_model``, ``set_params``, ``on_train_begin``, then per
epoch ``on_epoch_begin``, ``on_train_batch_begin`` / ``on_train_batch_end`` per batch and
``on_epoch_end(epoch, logs)`` with the epoch's ``logs`` (``loss``, the metrics, ``val_*``), and
finally ``on_train_end``. A callback stops training by setting ``model.stop_training = True``.

Shapes
------
Callbacks see scalar logs (``Dict[str, float]``); epochs and batches are 0-based ints.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np

__all__ = [
    "Callback", "CallbackList", "History", "EarlyStopping", "ModelCheckpoint",
    "LearningRateScheduler", "TerminateOnNaN", "LambdaCallback",
]

Logs = Dict[str, float]


class Callback:
    """Base class; every hook does nothing.

    Shapes
    ------
    ``logs``: ``Dict[str, float]``.
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.params: Dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: Dict[str, Any]) -> None:
        self.params = dict(params)

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        pass

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: Optional[Logs] = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        pass

    def on_train_batch_begin(self, batch: int, logs: Optional[Logs] = None) -> None:
        pass

    def on_train_batch_end(self, batch: int, logs: Optional[Logs] = None) -> None:
        pass


def _overrides(cb: Callback, hook: str) -> bool:
    return hook in vars(cb) or getattr(type(cb), hook) is not getattr(Callback, hook)


class CallbackList:
    """Dispatches every hook to a list of callbacks, in order.

    Shapes
    ------
    As :class:`Callback`.
    """

    def __init__(self, callbacks: Iterable[Callback], model: Any, params: Dict[str, Any]) -> None:
        self.callbacks: List[Callback] = []
        for i, cb in enumerate(callbacks):
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks[{i}]: expected a rnnkit.callbacks.Callback, got "
                                f"{type(cb).__name__}")
            self.callbacks.append(cb)
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)
        # Batch hooks cost a Python call per batch per callback: only call the overriding ones.
        self._batch_begin = [cb for cb in self.callbacks if _overrides(cb, "on_train_batch_begin")]
        self._batch_end = [cb for cb in self.callbacks if _overrides(cb, "on_train_batch_end")]

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: Optional[Logs] = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: Optional[Logs] = None) -> None:
        for cb in self._batch_begin:
            cb.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Optional[Logs] = None) -> None:
        for cb in self._batch_end:
            cb.on_train_batch_end(batch, logs)

    @property
    def has_batch_hooks(self) -> bool:
        return bool(self._batch_begin or self._batch_end)


class History(Callback):
    """Records the logs of every epoch: ``history.history['loss'][e]`` etc.; ``fit`` returns it.

    Shapes
    ------
    ``history``: ``Dict[str, List[float]]``, one entry per epoch; ``epoch``: ``List[int]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: Dict[str, List[float]] = {}
        self.epoch: List[int] = []

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        self.epoch = []
        self.history = {}

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _resolve_mode(mode: str, monitor: str, arg: str = "mode") -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{arg}: expected 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    name = monitor[4:] if monitor.startswith("val_") else monitor
    if name.endswith("acc") or name.endswith("accuracy") or name.endswith("auc"):
        return "max"
    return "min"


class EarlyStopping(Callback):
    """Stops training when ``monitor`` has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor
        The log key to watch (default ``'val_loss'``).
    min_delta
        The smallest change that counts as an improvement (its absolute value is used).
    patience
        Epochs without improvement before stopping.
    verbose
        Print a line when stopping.
    mode
        ``'min'``, ``'max'`` or ``'auto'`` (``max`` for accuracy/auc, else ``min``).
    baseline
        Training stops unless the monitored value beats this within ``patience`` epochs.
    restore_best_weights
        At the end of training, early or not, restore the weights of the best epoch (Keras
        restores them only when it stops early; keeping the best weights in both cases is the
        behaviour people expect from this flag).
    start_from_epoch
        Epochs to wait before monitoring starts.

    Shapes
    ------
    Reads the scalar ``logs[monitor]``.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: Optional[float] = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0) -> None:
        super().__init__()
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience: expected an int >= 0, got {patience!r}")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = patience
        self.verbose = verbose
        self.mode = _resolve_mode(mode, monitor)
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self.wait = 0
        self.stopped_epoch = 0
        self.best: float = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.best_weights: Optional[List[np.ndarray]] = None

    def _is_improvement(self, value: float, reference: float) -> bool:
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.best_weights = None

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"EarlyStopping: monitor {self.monitor!r} is not in the logs (available: "
                          f"{sorted(logs or {})}); early stopping is skipped", RuntimeWarning,
                          stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = float(current)
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")


class ModelCheckpoint(Callback):
    """Saves the model (or only its weights) at the end of epochs.

    Parameters
    ----------
    filepath
        Target path; may contain ``{epoch}`` (1-based) and log keys, e.g.
        ``'ckpt-{epoch:02d}-{val_loss:.3f}.rnnkit'``.
    monitor
        Log key used with ``save_best_only``.
    verbose
        Print a line per save.
    save_best_only
        Save only when ``monitor`` improves on the best value so far.
    save_weights_only
        Save with ``model.save_weights`` instead of ``model.save``.
    mode
        ``'min'``, ``'max'`` or ``'auto'``.
    initial_value_threshold
        With ``save_best_only``, the value to beat at the first epoch.

    Shapes
    ------
    Reads the scalar ``logs[monitor]``.
    """

    def __init__(self, filepath: str, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 initial_value_threshold: Optional[float] = None) -> None:
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = _resolve_mode(mode, monitor)
        self._initial = initial_value_threshold
        self.best: float = self._start_best()

    def _start_best(self) -> float:
        if self._initial is not None:
            return float(self._initial)
        return math.inf if self.mode == "min" else -math.inf

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        self.best = self._start_best()

    def _format(self, epoch: int, logs: Logs) -> str:
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except KeyError as e:
            raise KeyError(f"filepath: {self.filepath!r} refers to {e.args[0]!r}, which is not in "
                           f"the logs (available: epoch, {', '.join(sorted(logs))})") from None

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        logs = dict(logs or {})
        path = self._format(epoch, logs)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(f"ModelCheckpoint: monitor {self.monitor!r} is not in the logs "
                              f"(available: {sorted(logs)}); skipping", RuntimeWarning, stacklevel=2)
                return
            better = current < self.best if self.mode == "min" else current > self.best
            if not better:
                return
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                      f"{current:.5f}, saving model to {path}")
            self.best = float(current)
        elif self.verbose:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class LearningRateScheduler(Callback):
    """Sets the optimizer's learning rate at the start of every epoch to
    ``schedule(epoch, current_lr)`` (or ``schedule(epoch)`` for one-argument functions) and
    records it in the logs as ``'learning_rate'``.

    Parameters
    ----------
    schedule
        ``(epoch: int, lr: float) -> float``, epochs 0-based.
    verbose
        Print the new rate.

    Shapes
    ------
    Scalars only.
    """

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule: expected a callable, got {type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = verbose
        self._nargs: Optional[int] = None

    def _call(self, epoch: int, lr: float) -> Any:
        if self._nargs is None:
            import inspect

            try:
                params = inspect.signature(self.schedule).parameters.values()
                pos = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
                var = any(p.kind == p.VAR_POSITIONAL for p in params)
                self._nargs = 2 if var or len(pos) >= 2 else 1
            except (TypeError, ValueError):
                self._nargs = 2
        return self.schedule(epoch, lr) if self._nargs == 2 else self.schedule(epoch)

    def on_epoch_begin(self, epoch: int, logs: Optional[Logs] = None) -> None:
        opt = getattr(self.model, "optimizer", None)
        if opt is None:
            raise ValueError("LearningRateScheduler: the model has no optimizer; compile it first")
        lr = self._call(epoch, float(opt.learning_rate))
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)):
            raise TypeError(f"schedule: expected a float learning rate, got {type(lr).__name__}")
        opt.learning_rate = float(lr)
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.")

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class TerminateOnNaN(Callback):
    """Stops training as soon as a batch loss is NaN or infinite.

    Shapes
    ------
    Reads the scalar ``logs['loss']`` of every batch.
    """

    def on_train_batch_end(self, batch: int, logs: Optional[Logs] = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss, terminating training")
            self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. ``LambdaCallback(on_epoch_end=lambda e, logs: ...)``.

    Shapes
    ------
    As :class:`Callback`.
    """

    def __init__(self, on_epoch_begin: Optional[Callable] = None,
                 on_epoch_end: Optional[Callable] = None,
                 on_train_begin: Optional[Callable] = None, on_train_end: Optional[Callable] = None,
                 on_train_batch_begin: Optional[Callable] = None,
                 on_train_batch_end: Optional[Callable] = None) -> None:
        super().__init__()
        for name, fn in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                         ("on_train_begin", on_train_begin), ("on_train_end", on_train_end),
                         ("on_train_batch_begin", on_train_batch_begin),
                         ("on_train_batch_end", on_train_batch_end)):
            if fn is not None:
                if not callable(fn):
                    raise TypeError(f"{name}: expected a callable, got {type(fn).__name__}")
                setattr(self, name, fn)
