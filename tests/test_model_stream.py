"""model.stream(): step-by-step inference of a whole trained model equals predict.

float64 models (1e-12) and float32 (1e-6): recurrent layers of every kind (zoneout as its
expectation, LayerNorm, GRU reset_after=False, non-default activations), Dense/Activation/
LayerNormalization/TimeDistributed after them, an Embedding first, return_sequences=False,
batch > 1, step() and run() in chunks, reset(); RecurrentNetwork; refusals name the layer.
"""
from __future__ import annotations

import numpy as np
import pytest

from rnnkit.layers import (GRU, LSTM, Activation, Bidirectional, Dense, Embedding, LayerNormalization,
                           SimpleRNN, TimeDistributed)
from rnnkit.models import RecurrentNetwork, Sequential


def _check(model, x, tol):
    want = model.predict(x, verbose=0)
    s = model.stream(batch_size=x.shape[0])
    steps = np.stack([s.step(x[:, t]) for t in range(x.shape[1])], axis=1)
    s.reset()
    chunks = np.concatenate([s.run(x[:, :4]), s.run(x[:, 4:])], axis=1)
    if want.ndim == 2:  # return_sequences=False: predict is the last step
        steps, chunks = steps[:, -1], chunks[:, -1]
    np.testing.assert_allclose(steps, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(chunks, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-6)])
def test_sequences_match_predict(dtype, tol):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 11, 4)).astype(dtype)
    model = Sequential([
        LSTM(12, return_sequences=True, zoneout=0.2, zoneout_cell=0.4, input_shape=(None, 4), dtype=dtype),
        GRU(10, return_sequences=True, reset_after=False, activation="relu", recurrent_activation="hard_sigmoid",
            dtype=dtype),
        LSTM(8, return_sequences=True, layer_norm=True, dtype=dtype),
        SimpleRNN(6, return_sequences=True, dtype=dtype),
        LayerNormalization(dtype=dtype), TimeDistributed(Dense(5, dtype=dtype)), Activation("softmax")])
    _check(model, x, tol)


def test_last_state_and_embedding():
    rng = np.random.default_rng(1)
    x = rng.integers(1, 30, (2, 9))
    model = Sequential([Embedding(30, 6, input_shape=(None,), dtype="float64"),
                        GRU(8, dtype="float64", layer_norm=True), Dense(3, dtype="float64")])
    _check(model, x, 1e-12)


def test_recurrent_network_and_refusals():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 7, 3))
    net = RecurrentNetwork([LSTM(5, return_sequences=True, dtype="float64"), Dense(2, dtype="float64")])
    want, _ = net.forward(x)
    s = net.stream()
    np.testing.assert_allclose(np.stack([s.step(x[:, t]) for t in range(7)], axis=1), want, rtol=1e-12, atol=1e-12)
    bi = Sequential([Bidirectional(LSTM(4, return_sequences=True), input_shape=(None, 3)), Dense(1)])
    bi.build((None, 7, 3))
    with pytest.raises(ValueError, match=r"layer 'bidirectional.*' \(Bidirectional\) needs the whole sequence"):
        bi.stream()
    back = Sequential([LSTM(4, go_backwards=True, input_shape=(None, 3))])
    back.build((None, 7, 3))
    with pytest.raises(ValueError, match="go_backwards needs the whole sequence"):
        back.stream()
    with pytest.raises(ValueError, match=r"x_t: expected 2 rows \(batch_size\)"):
        net.stream(batch_size=2).step(x[:, 0])
