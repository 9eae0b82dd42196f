"""Training callbacks with Keras's names and semantics: History, EarlyStopping, ModelCheckpoint,
LearningRateScheduler, ReduceLROnPlateau, TerminateOnNaN, LambdaCallback, CSVLogger,
BackupAndRestore, and a JSON-lines logger (JSONLogger).

``fit`` calls, on every callback: ``set_model``, ``set_params``, ``on_train_begin``, then per
epoch ``on_epoch_begin``, ``on_train_batch_begin`` / ``on_train_batch_end`` per batch and
``on_epoch_end(epoch, logs)`` with the epoch's ``logs`` (``loss``, the metrics, ``val_*``), and
finally ``on_train_end``. A callback stops training by setting ``model.stop_training = True``.

Shapes
------
Callbacks see scalar logs (``Dict[str, float]``); epochs and batches are 0-based ints.
"""
from __future__ import annotations

import csv
import json
import math
import os
import warnings
from typing import IO, Any, Callable, Dict, Iterable, List, Optional, Union

import numpy as np

__all__ = [
    "Callback", "CallbackList", "History", "EarlyStopping", "ModelCheckpoint",
    "LearningRateScheduler", "ReduceLROnPlateau", "TerminateOnNaN", "LambdaCallback", "CSVLogger",
    "BackupAndRestore", "JSONLogger",
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

    def resume_epoch(self, initial_epoch: int) -> int:
        """The epoch ``fit`` should start at, asked after :meth:`on_train_begin`: the latest
        epoch a callback restored (its ``initial_epoch`` attribute, set by
        :class:`BackupAndRestore` when it found a backup) or, when none did, ``initial_epoch``
        (Keras: ``model._initial_epoch or initial_epoch``)."""
        restored = [int(cb.initial_epoch) for cb in self.callbacks
                    if getattr(cb, "initial_epoch", None) is not None]
        return max(restored) if restored and max(restored) > 0 else initial_epoch


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


def _scalar_logs(logs: Optional[Logs]) -> Dict[str, Any]:
    """Log values as plain Python values (NumPy scalars and arrays converted)."""
    out: Dict[str, Any] = {}
    for k, v in (logs or {}).items():
        if isinstance(v, (np.ndarray, np.generic)):
            v = v.tolist()
        out[k] = v
    return out


class ReduceLROnPlateau(Callback):
    """Multiplies the optimizer's learning rate by ``factor`` when ``monitor`` has not improved
    for ``patience`` epochs (Keras 3's callback, the same counters and comparisons).

    At every epoch end: the current rate is written to ``logs['learning_rate']``; during a
    cooldown the counter ``wait`` stays 0; an improvement (``current < best - min_delta`` in
    ``'min'`` mode, ``current > best + min_delta`` in ``'max'``; the first value always is one)
    resets ``wait``, anything else increments it and once ``wait >= patience`` the rate becomes
    ``max(lr * factor, min_lr)`` (only while ``lr > min_lr``), followed by ``cooldown`` epochs.

    Parameters
    ----------
    monitor
        The log key to watch (default ``'val_loss'``).
    factor
        In [0, 1): the new rate is ``lr * factor``.
    patience
        Epochs without improvement before a reduction (int >= 0).
    verbose
        Print a line per reduction.
    mode
        ``'min'``, ``'max'`` or ``'auto'`` (``max`` for accuracy/auc, else ``min``).
    min_delta
        The smallest change that counts as an improvement (its absolute value is used).
    cooldown
        Epochs to wait after a reduction before counting again (int >= 0).
    min_lr
        Lower bound on the rate.

    Shapes
    ------
    Reads the scalar ``logs[monitor]``.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: int = 0, mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0,
                 min_lr: float = 0.0) -> None:
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 <= factor < 1:
            raise ValueError(f"factor: expected a number in [0, 1) (ReduceLROnPlateau does not "
                             f"support factor >= 1), got {factor!r}")
        for name, v in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
        if isinstance(min_lr, bool) or not isinstance(min_lr, (int, float)) or min_lr < 0:
            raise ValueError(f"min_lr: expected a number >= 0, got {min_lr!r}")
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = patience
        self.verbose = verbose
        self.mode = _resolve_mode(mode, monitor)
        self.min_delta = abs(float(min_delta))
        self.cooldown = cooldown
        self.min_lr = float(min_lr)
        self.best: Optional[float] = None
        self.cooldown_counter = 0
        self.wait = 0

    def _is_improvement(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value + self.min_delta < self.best
        return value - self.min_delta > self.best

    def in_cooldown(self) -> bool:
        """Whether a reduction happened less than ``cooldown`` epochs ago."""
        return self.cooldown_counter > 0

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        self.best = None
        self.cooldown_counter = 0
        self.wait = 0

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        opt = getattr(self.model, "optimizer", None)
        if opt is None:
            raise ValueError("ReduceLROnPlateau: the model has no optimizer; compile it first")
        logs = logs if logs is not None else {}
        logs["learning_rate"] = float(opt.learning_rate)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"ReduceLROnPlateau: monitor {self.monitor!r} is not in the logs "
                          f"(available: {sorted(logs)}); the learning rate is left alone",
                          RuntimeWarning, stacklevel=2)
            return
        current = float(current)
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old = float(opt.learning_rate)
                # Keras compares in float32 (its rate is a float32 variable): a rate that
                # already equals min_lr in float32 is not reduced and starts no cooldown
                if np.float32(old) > np.float32(self.min_lr):
                    new = max(old * self.factor, self.min_lr)
                    opt.learning_rate = new
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class CSVLogger(Callback):
    """Writes one CSV row per epoch: ``epoch`` (0-based) and the logs (Keras's format).

    The columns are fixed at the first epoch: ``epoch`` then the sorted log keys, plus
    ``val_<key>`` for every key when the first epoch has no validation keys; a key missing later
    is written as ``NA``. Rows end with ``\\r\\n`` (the csv module's ``excel`` dialect, as
    Keras) and are flushed as they are written.

    Parameters
    ----------
    filename
        The CSV file.
    separator
        The field delimiter (one character).
    append
        Append to an existing file (the header is written only when the file is empty) instead
        of overwriting it.

    Shapes
    ------
    Scalar logs; list-like values are written as ``"[a, b, ...]"``.
    """

    def __init__(self, filename: Union[str, "os.PathLike[str]"], separator: str = ",",
                 append: bool = False) -> None:
        super().__init__()
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"separator: expected one character, got {separator!r}")
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = bool(append)
        self.keys: Optional[List[str]] = None
        self.append_header = True
        self.csv_file: Optional[IO[str]] = None
        self.writer: Optional[csv.DictWriter] = None

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        self.append_header = True
        if self.append and os.path.exists(self.filename):
            with open(self.filename, "r", newline="") as f:
                self.append_header = not f.readline()
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self.csv_file = open(self.filename, "a" if self.append else "w", newline="")
        self.writer = None
        self.keys = None

    @staticmethod
    def _value(v: Any) -> Any:
        if isinstance(v, str):
            return v
        if isinstance(v, (list, tuple)) or isinstance(v, np.ndarray) and v.ndim > 0:
            return f'"[{", ".join(map(str, v))}]"'
        if isinstance(v, (np.ndarray, np.generic)):
            return v.item()
        return v

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        if self.csv_file is None:
            raise RuntimeError("CSVLogger: on_epoch_end before on_train_begin (the file is not open)")
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys.extend(f"val_{k}" for k in list(self.keys))
        if self.writer is None:
            sep = self.sep

            class _Dialect(csv.excel):
                delimiter = sep

            self.writer = csv.DictWriter(self.csv_file, fieldnames=["epoch"] + self.keys,
                                         dialect=_Dialect)
            if self.append_header:
                self.writer.writeheader()
        row: Dict[str, Any] = {"epoch": epoch}
        row.update((k, self._value(logs.get(k, "NA"))) for k in self.keys)
        self.writer.writerow(row)
        self.csv_file.flush()

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self.writer = None


def _json_value(v: Any) -> Any:
    """JSON-safe: non-finite floats become the strings ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"`` (strict JSON has no such numbers)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return v


class JSONLogger(Callback):
    """Writes the logs as JSON lines: one object per epoch, ``{"epoch": e, <logs>}``, and with
    ``log_batches`` one per batch, ``{"epoch": e, "batch": b, <batch logs>}`` (epochs and
    batches 0-based). Every line is flushed when written, so a crashed run keeps its lines.
    Non-finite numbers are written as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.

    Parameters
    ----------
    filename
        The ``.jsonl`` file.
    append
        Append to an existing file instead of overwriting it.
    log_batches
        Also write a line per training batch.

    Shapes
    ------
    Scalar logs.
    """

    def __init__(self, filename: Union[str, "os.PathLike[str]"], append: bool = False,
                 log_batches: bool = False) -> None:
        super().__init__()
        self.filename = os.fspath(filename)
        self.append = bool(append)
        self.log_batches = bool(log_batches)
        self._file: Optional[IO[str]] = None
        self._epoch = 0
        if self.log_batches:
            # installed only when asked: fit skips batch hooks nobody overrides
            self.on_train_batch_end = self._batch_end  # type: ignore[method-assign]

    def _write(self, record: Dict[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError("JSONLogger: logs before on_train_begin (the file is not open)")
        line = json.dumps({k: _json_value(v) for k, v in record.items()}, allow_nan=False)
        self._file.write(line + "\n")
        self._file.flush()

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        self._file = open(self.filename, "a" if self.append else "w", encoding="utf-8")

    def on_epoch_begin(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self._epoch = epoch

    def _batch_end(self, batch: int, logs: Optional[Logs] = None) -> None:
        self._write({"epoch": self._epoch, "batch": batch, **_scalar_logs(logs)})

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self._write({"epoch": epoch, **_scalar_logs(logs)})

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


_BACKUP_FORMAT = "rnnkit-backup"


class BackupAndRestore(Callback):
    """Backs up the training state so that a crashed ``fit`` resumes where it stopped
    (Keras 3's callback).

    At the end of every epoch (or every ``save_freq`` batches) one file,
    ``<backup_dir>/latest.safetensors``, is written atomically (a temporary file renamed over the
    old one, :func:`rnnkit.serialization.atomic_write`): the model's weights
    (``model.get_weights()``), the optimizer's state (``optimizer.get_state`` of the trainable
    variables: slots and ``iterations``), its learning rate when it is a float, and the epoch to
    resume at. A crash at any moment leaves either the previous backup or the new one, never a
    mix.

    ``on_train_begin`` restores a backup when one exists: weights (``set_weights``, in place),
    optimizer state (``set_state``) and learning rate, and sets :attr:`initial_epoch` to the
    saved epoch; ``fit`` starts at that epoch (``CallbackList.resume_epoch``). After a training
    run that ends normally the backup is deleted (``delete_checkpoint``).

    The resumed run equals an uninterrupted one when the data order of an epoch does not depend
    on the epochs before it (``shuffle=False``) and no layer draws random numbers: the random
    generators are not part of the backup (as in Keras).

    Parameters
    ----------
    backup_dir
        Directory for the backup (created when needed); use it for nothing else.
    save_freq
        ``"epoch"`` or an int >= 1: back up every that many batches, counted across epochs (a
        resumed run restarts the interrupted epoch from its first batch with the backed-up
        weights, as in Keras).
    double_checkpoint
        Keep the previous backup as ``latest.safetensors.bkp`` and fall back on it when the
        latest one cannot be read.
    delete_checkpoint
        Delete the backup files when training ends normally.

    Attributes
    ----------
    initial_epoch
        ``None``, or the epoch the last ``on_train_begin`` restored (the first epoch to run).

    Shapes
    ------
    The backup holds arrays of the model's weight shapes.
    """

    def __init__(self, backup_dir: Union[str, "os.PathLike[str]"], save_freq: Union[str, int] = "epoch",
                 double_checkpoint: bool = False, delete_checkpoint: bool = True) -> None:
        super().__init__()
        if not backup_dir:
            raise ValueError(f"backup_dir: expected a directory path, got {backup_dir!r}")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int)
                                     or save_freq < 1):
            raise ValueError(f"save_freq: expected 'epoch' or an int >= 1, got {save_freq!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.double_checkpoint = bool(double_checkpoint)
        self.delete_checkpoint = bool(delete_checkpoint)
        self.initial_epoch: Optional[int] = None
        self._path = os.path.join(self.backup_dir, "latest.safetensors")
        self._prev_path = self._path + ".bkp"
        self._current_epoch = 0
        self._batches_since_save = 0
        if save_freq != "epoch":
            self.on_train_batch_end = self._batch_end  # type: ignore[method-assign]

    # ---- writing ------------------------------------------------------------------------------
    def _optimizer_and_params(self) -> Any:
        opt = getattr(self.model, "optimizer", None)
        params = self.model.trainable_variables()[0] if opt is not None else []
        return opt, params

    def _save(self, epoch: int, batch: int) -> None:
        from safetensors.numpy import save

        from rnnkit.serialization import atomic_write

        tensors: Dict[str, np.ndarray] = {}
        for i, w in enumerate(self.model.get_weights()):
            tensors[f"weights/{i:06d}"] = np.array(w, order="C")
        meta = {"format": _BACKUP_FORMAT, "epoch": str(epoch), "batch": str(batch),
                "num_weights": str(len(tensors))}
        opt, params = self._optimizer_and_params()
        if opt is not None:
            state = opt.get_state(params)
            meta["optimizer_class"] = type(opt).__name__
            meta["optimizer_iterations"] = str(int(state.pop("iterations")))
            lr = opt.get_config().get("learning_rate")
            if isinstance(lr, (int, float)) and not isinstance(lr, bool):
                meta["learning_rate"] = repr(float(lr))
            for k, v in state.items():
                tensors[f"optimizer/{k}"] = np.array(v, order="C")  # 0-d stays 0-d
        os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint and os.path.exists(self._path):
            with open(self._path, "rb") as f:
                atomic_write(self._prev_path, f.read())
        atomic_write(self._path, save(tensors, metadata=meta))

    def on_epoch_begin(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self._current_epoch = epoch

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self._current_epoch = epoch + 1
        if self.save_freq == "epoch":
            self._save(epoch + 1, 0)

    def _batch_end(self, batch: int, logs: Optional[Logs] = None) -> None:
        # counted across epochs, as Keras: every save_freq-th batch of the run
        self._batches_since_save += 1
        if self._batches_since_save >= self.save_freq:  # type: ignore[operator]
            self._batches_since_save = 0
            self._save(self._current_epoch, batch + 1)

    # ---- restoring ----------------------------------------------------------------------------
    def _load(self, path: str) -> int:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, framework="numpy") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except SafetensorError as e:
            raise OSError(f"backup_dir: {path!r} is not a readable backup ({e})") from None
        if meta.get("format") != _BACKUP_FORMAT or not meta.get("epoch", "").isdigit():
            raise OSError(f"backup_dir: {path!r} is not a BackupAndRestore backup (format "
                          f"{meta.get('format')!r})")
        weights = [tensors[k] for k in sorted(k for k in tensors if k.startswith("weights/"))]
        current = self.model.get_weights()
        if len(weights) != len(current) or any(w.shape != c.shape for w, c in zip(weights, current)):
            raise ValueError(f"backup_dir: {path!r} holds {len(weights)} weight arrays of shapes "
                             f"{[w.shape for w in weights][:6]}, the model has {len(current)} of "
                             f"shapes {[c.shape for c in current][:6]}; it was written by another "
                             "model (delete it to start afresh)")
        opt, params = self._optimizer_and_params()
        saved_cls = meta.get("optimizer_class")
        if opt is not None and saved_cls is not None and saved_cls != type(opt).__name__:
            raise ValueError(f"backup_dir: {path!r} holds the state of a {saved_cls} optimizer, the "
                             f"model's is a {type(opt).__name__}")
        self.model.set_weights(weights)
        if opt is not None and saved_cls is not None:
            state: Dict[str, np.ndarray] = {k[len("optimizer/"):]: v for k, v in tensors.items()
                                            if k.startswith("optimizer/")}
            state["iterations"] = np.asarray(int(meta["optimizer_iterations"]), dtype=np.int64)
            opt.set_state(params, state)
            if "learning_rate" in meta:
                opt.learning_rate = float(meta["learning_rate"])
        return int(meta["epoch"])

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        self.initial_epoch = None
        if not os.path.exists(self._path) and not os.path.exists(self._prev_path):
            return
        if not getattr(self.model, "built", True):
            raise ValueError("BackupAndRestore: the model must be built before fit to restore a "
                             "backup (give the first layer an input_shape or call build())")
        try:
            epoch = self._load(self._path)
        except OSError:
            if not (self.double_checkpoint and os.path.exists(self._prev_path)):
                raise
            epoch = self._load(self._prev_path)
        self.initial_epoch = epoch
        self._current_epoch = epoch

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        if not self.delete_checkpoint:
            return
        for path in (self._path, self._prev_path):
            if os.path.exists(path):
                os.remove(path)
        try:
            os.rmdir(self.backup_dir)  # only when nothing else is in it
        except OSError:
            pass
