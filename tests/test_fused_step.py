"""The fused training step (rnnkit.fused, compile(jit_compile=...)) against the per-layer path:
the same weights, losses and metrics, and the per-layer path wherever the fused one does not
apply."""
from __future__ import annotations

import numpy as np
import pytest

import rnnkit
from rnnkit import fused
from rnnkit.layers import GRU, LSTM, Dense, SimpleRNN
from rnnkit.models import Sequential

CELLS = {"lstm": LSTM, "gru": GRU, "rnn": SimpleRNN}
N, T, C, K = 96, 12, 5, 4


def build(jit, cells=("lstm", "lstm"), dtype="float64", sparse=False, last_seq=True, bias=True,
          dense_bias=True, **layer_kw):
    rnnkit.utils.set_random_seed(3)
    m = Sequential()
    for i, c in enumerate(cells):
        kw = dict(return_sequences=(i < len(cells) - 1) or last_seq, dtype=dtype, use_bias=bias, **layer_kw)
        if i == 0:
            kw["input_shape"] = (T, C)
        m.add(CELLS[c]([7, 6, 5][i], **kw))
    m.add(Dense(K, activation="softmax", dtype=dtype, use_bias=dense_bias))
    m.compile(loss="sparse_categorical_crossentropy" if sparse else "categorical_crossentropy",
              optimizer="adam", metrics=["accuracy"], jit_compile=jit)
    return m


def data(dtype="float64", sparse=False, last_seq=True):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, T, C)).astype(dtype)
    lab = rng.integers(0, K, size=(N, T))
    if not last_seq:
        lab = lab[:, -1]
    y = lab if sparse else np.eye(K, dtype=dtype)[lab]
    return x, y


def train_both(epochs=2, fit_kw=None, **kw):
    x, y = data(kw.get("dtype", "float64"), kw.get("sparse", False), kw.get("last_seq", True))
    out = []
    for jit in (False, "auto"):
        m = build(jit, **kw)
        h = m.fit(x, y, epochs=epochs, batch_size=16, verbose=0, shuffle=True, seed=5, **(fit_kw or {}))
        out.append((m, h.history))
    return out


@pytest.mark.parametrize("cells", [("lstm",), ("gru",), ("rnn",), ("lstm", "gru", "rnn")])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("last_seq", [True, False])
def test_same_weights_and_logs_float64(cells, sparse, last_seq):
    (m0, h0), (m1, h1) = train_both(cells=cells, sparse=sparse, last_seq=last_seq)
    assert fused.plan(m1)[0] is not None and fused.plan(m0)[0] is not None
    for a, b in zip(m0.get_weights(), m1.get_weights()):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
    for k in ("loss", "accuracy"):
        np.testing.assert_allclose(h1[k], h0[k], rtol=1e-12, atol=0)


def test_same_weights_float32_and_no_biases():
    (m0, h0), (m1, h1) = train_both(cells=("lstm", "gru"), dtype="float32", bias=False, dense_bias=False)
    for a, b in zip(m0.get_weights(), m1.get_weights()):
        np.testing.assert_allclose(b, a, rtol=0, atol=2e-6)
    np.testing.assert_allclose(h1["loss"], h0["loss"], rtol=1e-5)
    np.testing.assert_allclose(h1["accuracy"], h0["accuracy"], rtol=0, atol=1e-12)


def test_activations_and_validation_data():
    kw = dict(cells=("rnn", "lstm"), activation="relu")
    x, y = data()
    (m0, h0), (m1, h1) = train_both(fit_kw={"validation_data": (x[:20], y[:20])}, **kw)
    for a, b in zip(m0.get_weights(), m1.get_weights()):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h1["val_loss"], h0["val_loss"], rtol=1e-12)


def test_labels_with_trailing_axis():
    x, y = data(sparse=True)
    ms = [build(j, sparse=True) for j in (False, "auto")]
    for m in ms:
        m.fit(x, y[..., None], epochs=1, batch_size=32, verbose=0, shuffle=False)
    for a, b in zip(ms[0].get_weights(), ms[1].get_weights()):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)


def test_sample_weights_fall_back_to_the_per_layer_path():
    x, y = data()
    w = np.linspace(0.5, 2.0, N)
    ms = [build(j) for j in (False, "auto")]
    for m in ms:
        m.fit(x, y, sample_weight=w, epochs=1, batch_size=32, verbose=0, shuffle=False)
    for a, b in zip(ms[0].get_weights(), ms[1].get_weights()):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)


def test_uses_the_compiled_step(monkeypatch):
    calls = []
    original = fused.FusedStep.step

    def counting(self, batch):
        out = original(self, batch)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(fused.FusedStep, "step", counting)
    m = build("auto")
    x, y = data()
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert calls == [True] * (N // 32)


@pytest.mark.parametrize("layer_kw, reason", [
    ({"dropout": 0.2}, "dropout=0.2"),
    ({"recurrent_dropout": 0.1}, "recurrent_dropout=0.1"),
    ({"go_backwards": True}, "go_backwards=True"),
    ({"recompute": "sqrt"}, "recompute"),
])
def test_plan_says_why_not(layer_kw, reason):
    m = build(True, **layer_kw)
    step, why = fused.plan(m)
    assert step is None and reason in why
    x, y = data()
    with pytest.raises(ValueError, match="jit_compile=True.*" + reason.split("=")[0]):
        m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    m.compile(loss="categorical_crossentropy", optimizer="adam", jit_compile="auto")
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)  # the per-layer path


def test_other_models_do_not_qualify():
    m = Sequential([LSTM(4, return_sequences=True, input_shape=(T, C)), Dense(K, activation="relu")])
    m.compile(loss="mse", optimizer="adam")
    assert fused.plan(m)[0] is None
    m = build("auto")
    m.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["mae"])
    step, why = fused.plan(m)
    assert step is None and "mae" in why


def test_jit_compile_argument_and_config():
    m = build(False)
    with pytest.raises(ValueError, match="jit_compile: expected 'auto', True or False, got 'yes'"):
        m.compile(loss="categorical_crossentropy", optimizer="adam", jit_compile="yes")
    m.compile(loss="categorical_crossentropy", optimizer="adam", jit_compile=False)
    cfg = m.get_compile_config()
    assert cfg["jit_compile"] is False
    m2 = build("auto")
    m2.compile_from_config(cfg)
    assert m2.jit_compile is False


def test_out_of_range_labels_are_a_clear_error():
    m = build("auto", sparse=True)
    x, y = data(sparse=True)
    y = y.copy()
    y[3, 4] = K
    with pytest.raises(ValueError, match=r"labels"):
        m.fit(x, y, epochs=1, batch_size=32, verbose=0)


def test_trainer_rejects_bad_arrays():
    tr = rnnkit._core.StackTrainerF32(["lstm"], [3], ["tanh"], ["sigmoid"], [True])
    x = np.zeros((2, 4, 5), np.float32)
    w_ih, w_hh, b = np.zeros((12, 5), np.float32), np.zeros((12, 3), np.float32), np.zeros(12, np.float32)
    g = [np.zeros_like(a) for a in (w_ih, w_hh, b)]
    wd, dwd = np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float32)
    y = np.zeros((2, 4, 4), np.float32)
    good = (w_ih, w_hh, b, None, g[0], g[1], g[2], None)
    loss, correct, rows = tr.step(x, [good], wd, None, dwd, None, y=y)
    assert rows == 8 and loss == 0.0  # zero targets: zero loss
    with pytest.raises(ValueError, match=r"params\[0\].w_ih: expected shape \(12, 5\), got \(12, 4\)"):
        tr.step(x, [(np.zeros((12, 4), np.float32),) + good[1:]], wd, None, dwd, None, y=y)
    with pytest.raises(ValueError, match=r"params\[0\].dw_hh: expected dtype float32, got float64"):
        tr.step(x, [good[:5] + (np.zeros((12, 3)),) + good[6:]], wd, None, dwd, None, y=y)
    ro = g[1].copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"dw_hh: expected a writeable array"):
        tr.step(x, [good[:5] + (ro,) + good[6:]], wd, None, dwd, None, y=y)
    with pytest.raises(ValueError, match=r"y, labels: expected exactly one"):
        tr.step(x, [good], wd, None, dwd, None)
    with pytest.raises(ValueError, match=r"return_sequences"):
        rnnkit._core.StackTrainerF32(["lstm", "gru"], [3, 3], ["tanh"] * 2, ["sigmoid"] * 2, [False, True])
    with pytest.raises(ValueError, match=r"kinds\[0\]: expected 'rnn', 'lstm' or 'gru', got 'conv'"):
        rnnkit._core.StackTrainerF32(["conv"], [3], ["tanh"], ["sigmoid"], [True])


def test_functional_models_run_layer_by_layer():
    from rnnkit.layers import Input
    from rnnkit.models import Model

    inp = Input(shape=(T, C))
    out = Dense(K, activation="softmax")(LSTM(7, return_sequences=True)(inp))
    m = Model(inp, out)
    m.compile(loss="categorical_crossentropy", optimizer="adam", jit_compile=True)
    assert m.stack_layers is None and build("auto").stack_layers is not None
    step, why = fused.plan(m)
    assert step is None and "Sequential" in why
    x, y = data()
    with pytest.raises(ValueError, match="Sequential"):
        m.fit(x, y, epochs=1, batch_size=32, verbose=0)


def test_metric_merge_state_adds_and_names_bad_entries():
    from rnnkit import metrics

    m = metrics.CategoricalAccuracy()
    m.merge_state({"total": np.float64(3), "count": np.float64(4)})
    m.merge_state({"total": 1.0, "count": 1.0})
    assert m.result() == pytest.approx(0.8, abs=1e-15)
    with pytest.raises(ValueError, match=r"expected the entries \['count', 'total'\].*got \['total'\]"):
        m.merge_state({"total": 1.0})
