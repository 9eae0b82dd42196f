"""Callbacks added for Keras 3 parity: ReduceLROnPlateau (against Keras's own callback),
CSVLogger (file contents), JSONLogger (lines), BackupAndRestore (a crashed fit resumes and ends
with the weights of an uninterrupted run) and CallbackList.resume_epoch."""
from __future__ import annotations

import csv
import json
import math
import os
import warnings

import numpy as np
import pytest

from rnnkit import callbacks as C
from rnnkit import optimizers as O
from rnnkit.layers import Dense
from rnnkit.models import Sequential


class _Crash(C.Callback):
    """Raises at the start of epoch ``at`` (0-based): a simulated crash."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise RuntimeError(f"simulated crash at epoch {epoch}")


def _model(optimizer="adam"):
    model = Sequential([Dense(4, activation="tanh", input_shape=(3,), dtype="float64"),
                        Dense(2, dtype="float64")])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _data(rng):
    return rng.normal(size=(24, 3)), rng.normal(size=(24, 2))


class _Holder:
    """A stand-in model: callbacks only touch ``model.optimizer`` here."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.stop_training = False


# ---- ReduceLROnPlateau ------------------------------------------------------------------------------

_LOSSES = [1.0, 0.9, 0.95, 0.9, 0.92, 0.91, 0.89995, 0.7, 0.71, 0.72, 0.73, 0.74, 0.75, 0.5, 0.5,
           0.5, 0.5, 0.5, 0.5, 0.5, 0.49, 0.49, 0.49, 0.49, 0.49]


@pytest.mark.keras
@pytest.mark.parametrize("kwargs", [
    {"patience": 2},
    {"patience": 1, "factor": 0.5, "cooldown": 2, "min_delta": 0.01, "min_lr": 0.02},
    {"patience": 0, "factor": 0.2, "mode": "max", "monitor": "val_accuracy"},
    {"patience": 3, "factor": 0.5, "mode": "min", "min_delta": 0.0},
], ids=["defaults", "cooldown_min_delta_min_lr", "max_mode", "min_mode_zero_delta"])
def test_reduce_lr_on_plateau_matches_keras(keras, kwargs):
    """Keras's callback and ours see the same logs, epoch by epoch, and set the same rates."""
    monitor = kwargs.get("monitor", "val_loss")
    ours = C.ReduceLROnPlateau(**kwargs)
    theirs = keras.callbacks.ReduceLROnPlateau(**kwargs)
    ours_model = _Holder(O.SGD(learning_rate=0.25))
    theirs_model = _Holder(keras.optimizers.SGD(learning_rate=0.25))
    ours.set_model(ours_model)
    theirs.set_model(theirs_model)
    ours.on_train_begin()
    theirs.on_train_begin()
    rates = []
    for epoch, value in enumerate(_LOSSES):
        logs, klogs = {monitor: value}, {monitor: value}
        ours.on_epoch_end(epoch, logs)
        with warnings.catch_warnings():
            # Keras's convert_to_numpy of its torch learning-rate variable (NumPy 2 deprecation)
            warnings.filterwarnings("ignore", category=DeprecationWarning,
                                    message="__array__ implementation doesn't accept a copy")
            theirs.on_epoch_end(epoch, klogs)
        assert logs["learning_rate"] == pytest.approx(klogs["learning_rate"], rel=1e-6)
        rates.append(ours_model.optimizer.learning_rate)
        klr = float(theirs_model.optimizer.learning_rate.value.detach().cpu().numpy())
        assert ours_model.optimizer.learning_rate == pytest.approx(klr, rel=1e-6), epoch
        assert (ours.wait, ours.cooldown_counter) == (theirs.wait, theirs.cooldown_counter), epoch
    assert len(set(rates)) > 1  # the sequence did trigger reductions


def test_reduce_lr_on_plateau_in_fit_lowers_the_rate(rng):
    """A rate too small to move the loss: it stalls, and the rate drops every ``patience``
    epochs; the logs carry ``learning_rate``."""
    x, y = _data(rng)
    model = _model(O.SGD(learning_rate=1e-9))
    cb = C.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, min_delta=1e-3)
    hist = model.fit(x, y, epochs=7, batch_size=8, verbose=0, callbacks=[cb], shuffle=False)
    # epoch 0 sets best; epochs 1, 2 stall -> reduce after epoch 2, again after epoch 4 and 6
    assert hist.history["learning_rate"] == pytest.approx(
        [1e-9, 1e-9, 1e-9, 5e-10, 5e-10, 2.5e-10, 2.5e-10], rel=1e-12)
    assert model.optimizer.learning_rate == pytest.approx(1.25e-10, rel=1e-12)


def test_reduce_lr_on_plateau_arguments_and_missing_monitor():
    with pytest.raises(ValueError, match="factor: expected a number in \\[0, 1\\)"):
        C.ReduceLROnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="patience: expected an int >= 0, got -1"):
        C.ReduceLROnPlateau(patience=-1)
    cb = C.ReduceLROnPlateau()
    cb.set_model(_Holder(O.Adam(0.1)))
    with pytest.warns(RuntimeWarning, match="monitor 'val_loss' is not in the logs"):
        cb.on_epoch_end(0, {"loss": 1.0})


# ---- CSVLogger --------------------------------------------------------------------------------------

def test_csv_logger_writes_keras_format(rng, tmp_path):
    x, y = _data(rng)
    path = tmp_path / "log.csv"
    model = _model()
    hist = model.fit(x, y, epochs=3, batch_size=8, verbose=0, validation_split=0.25,
                     callbacks=[C.CSVLogger(path)])
    raw = path.read_bytes().decode()
    assert raw.startswith("epoch,loss,val_loss\r\n") and raw.count("\r\n") == 4
    rows = list(csv.DictReader(raw.splitlines()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for key in ("loss", "val_loss"):
        assert [float(r[key]) for r in rows] == hist.history[key]  # repr round trip: exact
    # append: rows only, no second header
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, validation_split=0.25,
              callbacks=[C.CSVLogger(path, append=True)])
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and lines.count("epoch,loss,val_loss") == 1
    assert [ln.split(",")[0] for ln in lines[1:]] == ["0", "1", "2", "0", "1"]


def test_csv_logger_separator_missing_values_and_val_columns(tmp_path):
    path = tmp_path / "log.tsv"
    cb = C.CSVLogger(str(path), separator="\t")
    cb.on_train_begin()
    cb.on_epoch_end(0, {"loss": 0.5, "acc": np.float32(0.25)})
    cb.on_epoch_end(1, {"loss": 0.25})
    cb.on_train_end()
    lines = path.read_text().splitlines()
    # without validation keys at the first epoch Keras adds val_<key> columns
    assert lines == ["epoch\tacc\tloss\tval_acc\tval_loss", "0\t0.25\t0.5\tNA\tNA",
                     "1\tNA\t0.25\tNA\tNA"]
    with pytest.raises(ValueError, match="separator: expected one character, got ';;'"):
        C.CSVLogger(path, separator=";;")


# ---- JSONLogger -------------------------------------------------------------------------------------

def test_json_logger_epoch_and_batch_lines(rng, tmp_path):
    x, y = _data(rng)
    path = tmp_path / "log.jsonl"
    model = _model()
    hist = model.fit(x, y, epochs=2, batch_size=8, verbose=0, validation_split=0.25,
                     callbacks=[C.JSONLogger(path, log_batches=True)])
    records = [json.loads(line) for line in path.read_text().splitlines()]
    batches = [r for r in records if "batch" in r]
    epochs = [r for r in records if "batch" not in r]
    assert [(r["epoch"], r["batch"]) for r in batches] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert all(set(r) == {"epoch", "batch", "loss"} for r in batches)
    assert [r["epoch"] for r in epochs] == [0, 1]
    for key in ("loss", "val_loss"):
        assert [r[key] for r in epochs] == hist.history[key]
    assert records.index(epochs[0]) == 3  # after the first epoch's three batches
    # epochs only, appended
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[C.JSONLogger(path, append=True)])
    lines = path.read_text().splitlines()
    assert len(lines) == 9 and set(json.loads(lines[-1])) == {"epoch", "loss"}


def test_json_logger_non_finite_values_stay_valid_json(tmp_path):
    path = tmp_path / "log.jsonl"
    cb = C.JSONLogger(path)
    assert not C._overrides(cb, "on_train_batch_end")  # no per-batch cost unless asked
    cb.on_train_begin()
    cb.on_epoch_end(0, {"loss": math.nan, "val_loss": math.inf, "x": np.float64(-math.inf),
                        "n": np.int64(3)})
    cb.on_train_end()
    line = path.read_text()
    assert json.loads(line) == {"epoch": 0, "loss": "NaN", "val_loss": "Infinity", "x": "-Infinity",
                                "n": 3}
    assert "NaN," not in line.replace('"NaN"', "")  # no bare NaN token


# ---- BackupAndRestore -------------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", [lambda: O.Adam(0.01), lambda: O.Nadam(0.01, use_ema=True),
                                       lambda: O.SGD(0.05, momentum=0.9, weight_decay=0.01)],
                         ids=["adam", "nadam_ema", "sgd_momentum_wd"])
def test_backup_and_restore_resumes_a_crashed_fit_exactly(rng, tmp_path, optimizer):
    """Train 2 epochs, crash at the start of the third; a fresh model with the same callback
    restores weights, optimizer state and epoch, runs epochs 2..4 only, and ends with the
    weights of an uninterrupted 5-epoch run (float64, 1e-12): shuffled batches included, since
    each epoch's order comes from (seed, epoch)."""
    x, y = _data(rng)
    fit_kwargs = {"epochs": 5, "batch_size": 8, "verbose": 0, "shuffle": True, "seed": 3}
    init = _model(optimizer()).get_weights()

    reference = _model(optimizer())
    reference.set_weights(init)
    reference.fit(x, y, **fit_kwargs)

    backup_dir = tmp_path / "backup"
    backup = C.BackupAndRestore(backup_dir)
    crashed = _model(optimizer())
    crashed.set_weights(init)
    with pytest.raises(RuntimeError, match="simulated crash at epoch 2"):
        crashed.fit(x, y, callbacks=[backup, _Crash(2)], **fit_kwargs)
    assert os.listdir(backup_dir) == ["latest.safetensors"]

    fresh = _model(optimizer())  # other initial weights, a new optimizer
    hist = fresh.fit(x, y, callbacks=[backup], **fit_kwargs)
    assert backup.initial_epoch == 2
    assert hist.epoch == [2, 3, 4]
    assert fresh.optimizer.iterations == reference.optimizer.iterations == 15
    for a, b in zip(fresh.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert not backup_dir.exists()  # deleted after a normal end (delete_checkpoint=True)


def test_backup_restores_the_learning_rate_and_keeps_files_when_asked(rng, tmp_path):
    x, y = _data(rng)
    backup = C.BackupAndRestore(tmp_path / "b", delete_checkpoint=False)
    model = _model(O.Adam(0.01))
    reduce = C.LambdaCallback(on_epoch_end=lambda e, logs: setattr(model.optimizer, "learning_rate", 0.001))
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[reduce, backup])
    assert (tmp_path / "b" / "latest.safetensors").exists()
    fresh = _model(O.Adam(0.01))
    backup.set_model(fresh)
    backup.on_train_begin()
    assert backup.initial_epoch == 2 and fresh.optimizer.learning_rate == 0.001
    assert fresh.optimizer.iterations == 6
    for a, b in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_backup_every_n_batches_and_double_checkpoint(rng, tmp_path):
    """save_freq=2 with 3 batches per epoch: backups after every 2nd batch of the run (counted
    across epochs, as Keras); a corrupt latest file falls back on the previous one."""
    x, y = _data(rng)
    d = tmp_path / "b"
    backup = C.BackupAndRestore(d, save_freq=2, double_checkpoint=True)
    model = _model()
    snapshots = []
    spy = C.LambdaCallback(on_train_batch_end=lambda b, logs: snapshots.append(
        (b, [w.copy() for w in model.get_weights()])))
    with pytest.raises(RuntimeError):
        model.fit(x, y, epochs=3, batch_size=8, verbose=0, shuffle=False,
                  callbacks=[backup, spy, _Crash(2)])
    assert sorted(os.listdir(d)) == ["latest.safetensors", "latest.safetensors.bkp"]

    def restored_weights():
        fresh = _model()
        backup.set_model(fresh)
        backup.on_train_begin()
        assert backup.initial_epoch == 1  # the epoch in progress: it restarts
        return fresh.get_weights()

    # the 6 batches of epochs 0 and 1: saves after the 2nd (epoch 0), 4th and 6th (epoch 1)
    for a, b in zip(restored_weights(), snapshots[5][1]):
        np.testing.assert_array_equal(a, b)
    (d / "latest.safetensors").write_bytes(b"garbage")
    for a, b in zip(restored_weights(), snapshots[3][1]):  # the previous backup
        np.testing.assert_array_equal(a, b)


def test_backup_of_another_model_is_refused(rng, tmp_path):
    x, y = _data(rng)
    backup = C.BackupAndRestore(tmp_path / "b", delete_checkpoint=False)
    _model().fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[backup])
    other = Sequential([Dense(3, input_shape=(4,), dtype="float64")])
    other.compile(optimizer="adam", loss="mse")
    backup.set_model(other)
    with pytest.raises(ValueError, match="holds 4 weight arrays of shapes .* the model has 2 of shapes"):
        backup.on_train_begin()
    sgd_model = _model("sgd")
    backup.set_model(sgd_model)
    with pytest.raises(ValueError, match="holds the state of a Adam optimizer, the model's is a SGD"):
        backup.on_train_begin()
    (tmp_path / "b" / "latest.safetensors").write_bytes(b"not a backup")
    backup.set_model(_model())
    with pytest.raises(OSError, match="is not a readable backup"):
        backup.on_train_begin()
    with pytest.raises(ValueError, match="save_freq: expected 'epoch' or an int >= 1, got 0"):
        C.BackupAndRestore(tmp_path, save_freq=0)


def test_resume_epoch_picks_the_restored_epoch():
    class Restored(C.Callback):
        def __init__(self, e):
            super().__init__()
            self.initial_epoch = e

    assert C.CallbackList([C.History()], None, {}).resume_epoch(3) == 3
    assert C.CallbackList([Restored(None)], None, {}).resume_epoch(3) == 3
    assert C.CallbackList([Restored(5), Restored(2)], None, {}).resume_epoch(0) == 5
    assert C.CallbackList([Restored(2)], None, {}).resume_epoch(4) == 2  # Keras: the backup wins
