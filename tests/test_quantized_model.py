"""``model.quantize(precision)``: an inference-only copy whose ``predict`` runs the recurrent
layers in reduced-precision streams. It equals ``model.stream(precision=...).run`` on each batch,
stays close to the float32 ``predict`` and keeps a trained model's accuracy."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from rnnkit.layers import GRU, LSTM, Dense, Embedding
from rnnkit.models import Sequential


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 16, 6)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[np.argmax(x[:, :, :3].sum(axis=1), axis=1)]  # sums over time
    np.random.seed(1)
    model = Sequential([LSTM(32, return_sequences=True, input_shape=(16, 6)), GRU(24), Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    return model, x, y


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "int8"])
def test_predict_keeps_the_accuracy(trained, precision):
    model, x, y = trained
    q = model.quantize(precision, batch_size=100)
    p_float = model.predict(x, verbose=0)
    p_q = q.predict(x)                                     # 5 batches of 100, one of 12 padded
    assert p_q.shape == p_float.shape == (512, 3)
    if precision == "float32":
        np.testing.assert_allclose(p_q, p_float, atol=1e-5)
    assert np.abs(p_q - p_float).max() < 0.08
    acc_float = (p_float.argmax(1) == y.argmax(1)).mean()
    acc_q = (p_q.argmax(1) == y.argmax(1)).mean()
    assert acc_float > 0.6                                  # the model learned something
    assert abs(acc_q - acc_float) <= 0.02, (acc_q, acc_float)


def test_equals_the_stream_and_padding_changes_nothing(trained):
    model, x, _ = trained
    q = model.quantize("int8", batch_size=8)
    s = model.stream(batch_size=8, precision="int8")
    np.testing.assert_allclose(q.predict(x[:8]), s.run(x[:8])[:, -1], atol=1e-6)
    np.testing.assert_array_equal(q.predict(x[:5]), q.predict(x[:8])[:5])  # 3 zero rows padded
    with pytest.raises(ValueError, match="batch_size"):
        q.predict(x, batch_size=16)


def test_sequence_outputs_and_tokens():
    np.random.seed(2)
    model = Sequential([Embedding(50, 8, input_shape=(None,)), LSTM(16, return_sequences=True), Dense(4)])
    tokens = np.random.default_rng(3).integers(0, 50, (10, 7))
    model.predict(tokens, verbose=0)
    out = model.quantize("bfloat16").predict(tokens)
    assert out.shape == (10, 7, 4)
    np.testing.assert_allclose(out, model.predict(tokens, verbose=0), atol=0.05)


def test_threads_share_one_quantized_model(trained):
    model, x, _ = trained
    q = model.quantize("int8")
    want = q.predict(x[:64])
    got = [None] * 4

    def work(i):
        got[i] = q.predict(x[:64])

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for g in got:
        np.testing.assert_array_equal(g, want)


def test_errors(trained):
    model, x, _ = trained
    with pytest.raises(ValueError, match="precision"):
        model.quantize("int4")
    with pytest.raises(ValueError, match="x"):
        model.quantize().predict(x[:0])
    with pytest.raises(ValueError, match="batch_size"):
        model.quantize(batch_size=0)
