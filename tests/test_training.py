"""fit / evaluate / predict / train_on_batch, the fused softmax path, masks, metrics, callbacks,
reproducibility and input validation."""
from __future__ import annotations

import os

import numpy as np
import pytest

import rnnkit
from rnnkit import losses as L
from rnnkit import metrics as M
from rnnkit import optimizers as O
from rnnkit import schedules as S
from rnnkit.callbacks import (Callback, EarlyStopping, LambdaCallback, LearningRateScheduler,
                              ModelCheckpoint, TerminateOnNaN)
from rnnkit.layers import GRU, LSTM, Dense, Dropout, Embedding, SimpleRNN
from rnnkit.models import Sequential, load_model

pytestmark = [pytest.mark.threads, pytest.mark.usefixtures("one_thread")]



def _delay_task(rng, n=256, t=8, c=4, delay=1):
    """Per-step label = argmax of the input `delay` steps earlier (chance 1/c)."""
    x = rng.normal(size=(n, t, c)).astype(np.float32)
    src = np.maximum(np.arange(t) - delay, 0)
    labels = np.argmax(x[:, src, :], axis=-1)
    return x, labels, np.eye(c, dtype=np.float32)[labels]


def _model(c=4, units=16, dropout=0.0, seed_weights=0, dtype="float32", t=8):
    np.random.seed(seed_weights)
    return Sequential([LSTM(units, return_sequences=True, dropout=dropout, input_shape=(t, c), dtype=dtype),
                       Dense(c, activation="softmax", dtype=dtype)])


# ---- learning -------------------------------------------------------------------------------------

def test_fit_lowers_loss_and_beats_chance(rng):
    x, labels, y = _delay_task(rng)
    model = _model()
    model.compile(optimizer=O.Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    before = model.evaluate(x, y)[0]
    hist = model.fit(x, y, epochs=25, batch_size=32, verbose=0, seed=0)
    assert hist.epoch == list(range(25)) and set(hist.history) == {"loss", "accuracy"}
    loss, acc = model.evaluate(x, y)
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]
    assert loss < 0.5 * before
    assert acc > 0.7  # chance is 0.25
    # sparse labels give the same numbers on the same model
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    l2, a2 = model.evaluate(x, labels)
    assert l2 == pytest.approx(loss, rel=1e-5) and a2 == pytest.approx(acc, abs=1e-12)


def test_fit_with_embedding_masks_and_binary_output(rng):
    n, t = 128, 6
    x = rng.integers(1, 10, size=(n, t))
    lengths = rng.integers(2, t + 1, size=n)
    x[np.arange(t)[None, :] >= lengths[:, None]] = 0  # right padding
    y = (np.cumsum(x >= 5, axis=1) % 2).astype(np.float32)[..., None]  # parity of "big" tokens so far
    np.random.seed(1)
    model = Sequential([Embedding(10, 8, mask_zero=True, input_shape=(t,)), GRU(16, return_sequences=True),
                        Dense(1, activation="sigmoid")])
    model.compile(optimizer=O.Adam(0.02), loss="binary_crossentropy", metrics=["acc"])
    hist = model.fit(x, y, epochs=12, batch_size=32, verbose=0, seed=0)
    assert hist.history["loss"][-1] < 0.6 * hist.history["loss"][0]
    # the loss and the metric only count the valid (unmasked) steps
    p = model.predict(x)
    valid = x != 0
    ref_loss = L.BinaryCrossentropy()(y, p, mask=valid)
    ref_acc = float(((p > 0.5) == (y > 0.5))[..., 0][valid].mean())
    loss, acc = model.evaluate(x, y, batch_size=n)
    assert loss == pytest.approx(ref_loss, rel=1e-6) and acc == pytest.approx(ref_acc, abs=1e-12)
    assert acc > 0.8


# ---- fused softmax / cross-entropy ----------------------------------------------------------------

def _manual_sgd_update(model, x, y, lr):
    """Reference update through the plain (unfused) softmax backward."""
    out = model.forward(x, training=True)
    _, d = model.loss.value_and_grad(y, out, model.output_mask)
    model.zero_grad()
    model.backward(d)
    params, grads = model.trainable_variables()
    return [p - lr * g for p, g in zip(params, grads)]


@pytest.mark.parametrize("loss,act,k", [("categorical_crossentropy", "softmax", 4),
                                        ("sparse_categorical_crossentropy", "softmax", 4),
                                        ("binary_crossentropy", "sigmoid", 3)])
def test_fused_output_gradient_equals_unfused(rng, loss, act, k):
    x = rng.normal(size=(6, 5, 3))
    if loss == "sparse_categorical_crossentropy":
        y = rng.integers(0, k, size=(6, 5))
    elif loss == "binary_crossentropy":
        y = (rng.random((6, 5, k)) > 0.5).astype(np.float64)
    else:
        y = np.eye(k)[rng.integers(0, k, size=(6, 5))]
    np.random.seed(3)
    model = Sequential([SimpleRNN(7, return_sequences=True, input_shape=(5, 3), dtype="float64"),
                        Dense(k, activation=act, dtype="float64")])
    model.compile(optimizer=O.SGD(0.5), loss=loss)
    w0 = model.get_weights()
    expected = _manual_sgd_update(model, x, y, 0.5)
    model.set_weights(w0)
    model.train_on_batch(x, y)  # the training loop takes the fused path
    for got, want in zip(model.trainable_variables()[0], expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_fused_softmax_keeps_gradients_when_the_softmax_saturates(rng):
    # Huge logits: softmax outputs are exactly 0/1, where the unfused path's clipped log has zero
    # gradient; the fused path still gets (p - y) / count.
    model = Sequential([Dense(3, activation="softmax", input_shape=(2,), dtype="float64")])
    model.set_weights([np.array([[400.0, 0.0, -400.0], [0.0, 0.0, 0.0]]), np.zeros(3)])
    model.compile(optimizer=O.SGD(1.0), loss="sparse_categorical_crossentropy")
    x = np.array([[1.0, 0.0], [1.0, 0.0]])
    y = np.array([2, 2])  # the class with probability exp(-800) == 0.0
    p = model.predict(x)
    assert p[0, 2] == 0.0
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    d_logits = (p - np.eye(3)[y]) / 2  # [[0.5, 0, -0.5]] * 2 rows / 2
    np.testing.assert_allclose(model.layers[0].params["bias"], -d_logits.sum(axis=0), rtol=1e-12)
    # the unfused gradient is all zero here: no learning signal
    _, dp = L.SparseCategoricalCrossentropy().value_and_grad(y, p)
    assert not np.any(dp[:, :2])


# ---- evaluate / predict ---------------------------------------------------------------------------

def test_evaluate_and_predict_shapes_and_values(rng):
    x, labels, y = _delay_task(rng, n=50)
    model = _model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    p = model.predict(x, batch_size=7)
    assert p.shape == (50, 8, 4) and p.dtype == np.float32
    np.testing.assert_allclose(p, model.predict(x, batch_size=64), rtol=1e-6, atol=1e-7)
    loss = model.evaluate(x, y, batch_size=50)
    assert isinstance(loss, float)
    assert loss == pytest.approx(L.CategoricalCrossentropy()(y, p), rel=1e-5)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy", "mse"])
    res = model.evaluate(x, y)
    assert isinstance(res, list) and len(res) == 3
    assert res[1] == pytest.approx(float((p.argmax(-1) == labels).mean()), abs=1e-12)
    d = model.evaluate(x, y, return_dict=True)
    assert list(d) == ["loss", "accuracy", "mse"] and d["mse"] == pytest.approx(res[2], rel=1e-9)


def test_accuracy_resolution():
    yp = np.array([[0.1, 0.9], [0.8, 0.2]])
    for y, fn in ((np.array([[0, 1], [0, 1]]), M.categorical_accuracy),
                  (np.array([1, 1]), M.sparse_categorical_accuracy),
                  (np.array([[1], [1]]), M.sparse_categorical_accuracy)):
        acc = M.get("accuracy")
        assert acc.resolve(y, yp) is fn
        acc.update_state(y, yp)
        assert acc.result() == 0.5
    b = M.get("acc")
    assert b.resolve(np.array([[1.0], [0.0]]), np.array([[0.7], [0.6]])) is M.binary_accuracy
    multi = M.get("accuracy", loss=L.BinaryCrossentropy())
    assert multi.resolve(yp, yp) is M.binary_accuracy
    m = M.get("accuracy")
    m.update_state(np.array([[1, 0], [1, 1]]), np.zeros((2, 2, 3)) + [0, 1, 0], mask=np.array([[1, 0], [0, 0]], bool))
    assert m.result() == 1.0  # only the one valid step is counted
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        M.get("f1")


# ---- reproducibility ------------------------------------------------------------------------------

def test_fit_is_reproducible_with_seed(rng):
    x, _, y = _delay_task(rng, n=64)

    def run(seed):
        np.random.seed(0)
        model = Sequential([LSTM(8, return_sequences=True, dropout=0.2, recurrent_dropout=0.2, input_shape=(8, 4)),
                            Dropout(0.3), Dense(4, activation="softmax")])
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        h = model.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=seed)
        return h.history, model.get_weights()

    h1, w1 = run(7)
    h2, w2 = run(7)
    h3, w3 = run(8)
    # Same shuffling and dropout masks. Not bitwise: the compiled kernels' float32 reductions
    # may round differently from call to call (~1e-7 relative), hence the tolerances.
    assert h1["loss"] == pytest.approx(h2["loss"], rel=1e-5)
    assert h1["accuracy"] == pytest.approx(h2["accuracy"], abs=1e-9)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    # another seed: other masks and order, a clearly different result
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(w1, w3)) > 1e-3
    assert h1["loss"][0] != pytest.approx(h3["loss"][0], rel=1e-4)


# ---- validation, callbacks ------------------------------------------------------------------------

def test_validation_split_and_data(rng):
    x, _, y = _delay_task(rng, n=40)
    model = _model()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    seen = []

    class Count(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(self.params["samples"])

    h = model.fit(x, y, epochs=2, validation_split=0.25, verbose=0, callbacks=[Count()])
    assert seen == [30, 30]
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    # the validation samples are the last 25%, evaluated (not trained on) at the end of each epoch
    val = model.evaluate(x[30:], y[30:], return_dict=True)
    assert h.history["val_loss"][-1] == pytest.approx(val["loss"], rel=1e-6)
    h = model.fit(x, y, epochs=1, validation_data=(x[:5], y[:5]), verbose=0)
    assert h.history["val_loss"][0] == pytest.approx(model.evaluate(x[:5], y[:5])[0], rel=1e-6)


def _fake_monitor(values):
    """A callback that writes values[epoch] into logs['fake'] (placed before the one under test)."""
    return LambdaCallback(on_epoch_end=lambda epoch, logs: logs.__setitem__("fake", values[epoch]))


def test_early_stopping_patience_and_restore_best_weights(rng):
    x, _, y = _delay_task(rng, n=32)
    model = _model()
    model.compile(optimizer=O.SGD(0.1), loss="categorical_crossentropy")
    weights = []
    record = LambdaCallback(on_epoch_end=lambda e, logs: weights.append(model.get_weights()))
    values = [5.0, 3.0, 4.0, 3.5, 2.0, 1.0]
    es = EarlyStopping(monitor="fake", patience=2, restore_best_weights=True)
    h = model.fit(x, y, epochs=6, verbose=0, callbacks=[_fake_monitor(values), record, es])
    assert h.epoch == [0, 1, 2, 3] and es.stopped_epoch == 3 and es.best == 3.0 and es.best_epoch == 1
    for a, b in zip(model.get_weights(), weights[1]):
        np.testing.assert_array_equal(a, b)
    # mode='max' and min_delta
    es = EarlyStopping(monitor="fake", patience=1, mode="max", min_delta=0.5)
    h = model.fit(x, y, epochs=4, verbose=0, callbacks=[_fake_monitor([1.0, 1.2, 1.4, 3.0]), es])
    assert h.epoch == [0, 1]
    assert EarlyStopping(monitor="val_accuracy").mode == "max" and EarlyStopping().mode == "min"
    with pytest.warns(RuntimeWarning, match="monitor 'nope' is not in the logs"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[EarlyStopping(monitor="nope")])


def test_model_checkpoint(rng, tmp_path):
    x, _, y = _delay_task(rng, n=32)
    model = _model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    pattern = str(tmp_path / "ckpt-{epoch:02d}-{fake:.1f}.rnnkit")
    cb = ModelCheckpoint(pattern, monitor="fake", save_best_only=True)
    model.fit(x, y, epochs=4, verbose=0, callbacks=[_fake_monitor([3.0, 2.0, 2.5, 1.0]), cb])
    assert sorted(os.listdir(tmp_path)) == ["ckpt-01-3.0.rnnkit", "ckpt-02-2.0.rnnkit", "ckpt-04-1.0.rnnkit"]
    last = load_model(str(tmp_path / "ckpt-04-1.0.rnnkit"))
    np.testing.assert_array_equal(last.predict(x), model.predict(x))
    wpath = tmp_path / "w" / "weights.safetensors"
    model.fit(x, y, epochs=1, verbose=0, callbacks=[ModelCheckpoint(str(wpath), save_weights_only=True)])
    fresh = _model(seed_weights=5)
    fresh.load_weights(str(wpath))
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))
    with pytest.raises(KeyError, match="refers to 'val_acc'"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[ModelCheckpoint(str(tmp_path / "{val_acc}.rnnkit"))])


def test_learning_rate_scheduler_and_schedules(rng):
    x, _, y = _delay_task(rng, n=32)
    model = _model()
    model.compile(optimizer=O.SGD(0.1), loss="categorical_crossentropy")
    h = model.fit(x, y, epochs=3, verbose=0,
                  callbacks=[LearningRateScheduler(lambda epoch, lr: lr * 0.5)])
    assert h.history["learning_rate"] == pytest.approx([0.05, 0.025, 0.0125])
    h = model.fit(x, y, epochs=2, verbose=0, callbacks=[LearningRateScheduler(lambda epoch: 0.3 / (epoch + 1))])
    assert h.history["learning_rate"] == pytest.approx([0.3, 0.15])
    # a schedule as learning_rate advances per batch (32 samples / 8 = 4 steps per epoch)
    model.compile(optimizer=O.SGD(S.PiecewiseConstantDecay([3], [0.1, 0.01])), loss="categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert model.optimizer.iterations == 8 and model.optimizer.learning_rate == 0.01


def test_terminate_on_nan_and_stop_training(rng):
    x, _, y = _delay_task(rng, n=32)
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    y_nan = y.copy()
    y_nan[9, 0, 0] = np.nan  # in the third batch of 4 (no shuffling)
    h = model.fit(x, y_nan, epochs=5, batch_size=4, shuffle=False, verbose=0, callbacks=[TerminateOnNaN()])
    assert h.epoch == [0] and model.optimizer.iterations == 3
    model.compile(optimizer="sgd", loss="mse", check_finite=True)
    with pytest.raises(ValueError, match="y: holds 1 NaN"):
        model.fit(x, y_nan, verbose=0)
    stopper = LambdaCallback(on_train_batch_end=lambda b, logs: setattr(model, "stop_training", b == 1))
    model.compile(optimizer="sgd", loss="mse")
    h = model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[stopper])
    assert h.epoch == [0] and model.optimizer.iterations == 2


def test_progress_bar_output(rng, capsys, monkeypatch):
    x, _, y = _delay_task(rng, n=32)
    model = _model()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    # not a terminal (a log file, as here under pytest): one line per epoch, no carriage returns
    model.fit(x, y, epochs=2, batch_size=8, verbose=1)
    captured = capsys.readouterr()
    assert captured.err == "" and "\r" not in captured.out
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2") and "loss: " in lines[0] and "accuracy: " in lines[1]
    # a terminal: the tqdm bar on stderr
    from rnnkit import training
    monkeypatch.setattr(training, "_interactive", lambda: True)
    model.fit(x, y, epochs=2, batch_size=8, verbose="auto")
    err = capsys.readouterr().err
    assert "Epoch 1/2" in err and "Epoch 2/2" in err and "loss=" in err and "accuracy=" in err
    monkeypatch.undo()
    model.fit(x, y, epochs=1, verbose=0)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    model.fit(x, y, epochs=1, verbose=2)
    assert "Epoch 1/1" in capsys.readouterr().out


# ---- bad inputs -----------------------------------------------------------------------------------

def test_fit_input_validation(rng):
    x, labels, y = _delay_task(rng, n=10)
    model = _model()
    with pytest.raises(RuntimeError, match="fit: the model must be compiled first"):
        model.fit(x, y, verbose=0)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    with pytest.raises(ValueError, match=r"y: expected 10 samples \(as many as x\), got 9"):
        model.fit(x, y[:9], verbose=0)
    with pytest.raises(ValueError, match=r"y: expected shape \(10, 8, 4\) \(the model's output shape\), got \(10, 8, 3\)"):
        model.fit(x, y[..., :3], verbose=0)
    with pytest.raises(ValueError, match=r"x: expected shape \(\?, 8, 4\) \(the model's input shape\), got \(10, 8, 5\)"):
        model.fit(np.zeros((10, 8, 5), np.float32), y, verbose=0)
    with pytest.raises(TypeError, match="x: expected a float or integer array, got dtype <U1"):
        model.fit(np.full((10, 8, 4), "a"), y, verbose=0)
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1, got 0"):
        model.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match=r"validation_split: expected a float in \[0, 1\)"):
        model.fit(x, y, validation_split=1.0, verbose=0)
    with pytest.raises(ValueError, match="validation_data: expected a tuple"):
        model.fit(x, y, validation_data=(x,), verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[1\]: expected shape"):
        model.fit(x, y, validation_data=(x, y[..., :2]), verbose=0)
    bad = x.copy()
    bad[3, 2, 1] = np.nan
    model.fit(bad[:2], y[:2], epochs=1, verbose=0)  # not checked unless asked
    with pytest.raises(ValueError, match="x: holds 1 NaN or infinite value"):
        model.fit(bad, y, verbose=0, check_finite=True)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", check_finite=True)
    with pytest.raises(ValueError, match="x: holds 1 NaN"):
        model.evaluate(bad, labels)
    wrong = labels.copy()
    wrong[0, 0] = 4
    with pytest.raises(ValueError, match=r"y: labels must be in \[0, 4\) for the model's 4 output classes, got values in \[0, 4\]"):
        model.fit(x, wrong, verbose=0)
    with pytest.raises(ValueError, match=r"y: expected integer labels of shape \(10, 8\)"):
        model.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="loss: unknown loss 'hinge'"):
        model.compile(optimizer="adam", loss="hinge")
    with pytest.raises(ValueError, match="optimizer: unknown optimizer 'lbfgs'"):
        model.compile(optimizer="lbfgs", loss="mse")


def test_train_on_batch_returns_loss_and_metrics(rng):
    x, labels, y = _delay_task(rng, n=16)
    model = _model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, acc = model.train_on_batch(x, labels)
    assert np.isfinite(loss) and 0.0 <= acc <= 1.0 and model.optimizer.iterations == 1


def test_frozen_layer_is_not_updated(rng):
    x, _, y = _delay_task(rng, n=32)
    model = _model()
    model.layers[0].trainable = False
    frozen = [w.copy() for w in model.layers[0].get_weights()]
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    dense_before = model.layers[1].get_weights()
    model.fit(x, y, epochs=2, verbose=0)
    for a, b in zip(model.layers[0].get_weights(), frozen):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(model.layers[1].get_weights()[0], dense_before[0])
