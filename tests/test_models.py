"""Containers: FeedForwardNetwork, RecurrentNetwork (state threading), Sequential building,
summary, weights and config."""
from __future__ import annotations

import numpy as np
import pytest

import rnnkit
from helpers import numerical_grad, rel_err
from rnnkit.layers import GRU, LSTM, Bidirectional, Dense, Dropout, Embedding, Masking, SimpleRNN
from rnnkit.models import FeedForwardNetwork, RecurrentNetwork, Sequential

pytestmark = [pytest.mark.threads, pytest.mark.usefixtures("one_thread")]



F64 = {"dtype": "float64"}


# ---- FeedForwardNetwork ---------------------------------------------------------------------------

def test_feedforward_forward_and_backward_match_finite_differences(rng):
    net = FeedForwardNetwork([Dense(5, activation="tanh", **F64), Dense(3, **F64)])
    x = rng.normal(size=(4, 6))
    out = net.forward(x)
    k1, b1 = net.layers[0].params["kernel"], net.layers[0].params["bias"]
    k2, b2 = net.layers[1].params["kernel"], net.layers[1].params["bias"]
    np.testing.assert_allclose(out, np.tanh(x @ k1 + b1) @ k2 + b2, rtol=1e-12)
    r = rng.normal(size=out.shape)
    net.zero_grad()
    dx = net.backward(r)

    def f():
        return float(np.sum(net.forward(x) * r))

    assert rel_err(dx, numerical_grad(f, x)) < 1e-7
    for layer in net.layers:
        for k, p in layer.params.items():
            assert rel_err(layer.grads[k], numerical_grad(f, p)) < 1e-7, (layer.name, k)


def test_feedforward_recurrent_stack_gradients(rng):
    net = FeedForwardNetwork([LSTM(4, return_sequences=True, **F64), GRU(3, **F64), Dense(2, **F64)])
    x = rng.normal(size=(3, 5, 2))
    out = net.forward(x)
    assert out.shape == (3, 2)
    r = rng.normal(size=out.shape)
    net.zero_grad()
    dx = net.backward(r)

    def f():
        return float(np.sum(net.forward(x) * r))

    assert rel_err(dx, numerical_grad(f, x)) < 1e-6
    w = net.layers[0].params["w_hh"]
    assert rel_err(net.layers[0].grads["w_hh"], numerical_grad(f, w)) < 1e-6


def test_feedforward_masks_flow_from_masking_layer(rng):
    net = FeedForwardNetwork([Masking(0.0), LSTM(4, **F64), Dense(2, **F64)])
    x = rng.normal(size=(2, 6, 3))
    padded = x.copy()
    padded[0, 4:] = 0.0  # sample 0 is 4 steps long
    out = net.forward(padded)
    short = net.forward(x[:1, :4])
    np.testing.assert_allclose(out[0], short[0], rtol=1e-12)
    assert net.output_mask is None  # LSTM without return_sequences drops the mask


def test_feedforward_embedding_stops_gradient_and_accumulates(rng):
    net = FeedForwardNetwork([Embedding(10, 4, mask_zero=True, **F64), LSTM(3, return_sequences=True, **F64)])
    x = np.array([[1, 2, 3, 0], [4, 5, 0, 0]])
    out = net.forward(x)
    assert out.shape == (2, 4, 3)
    np.testing.assert_array_equal(net.output_mask, x != 0)
    net.zero_grad()
    assert net.backward(np.ones_like(out)) is None
    g = net.layers[0].grads["embeddings"]
    assert np.any(g[1:6] != 0) and np.all(g[6:] == 0)


def test_feedforward_rejects_bad_layers():
    with pytest.raises(TypeError, match=r"layers\[1\]: expected an rnnkit Layer, got str"):
        FeedForwardNetwork([Dense(2), "dense"])
    with pytest.raises(TypeError, match="expected a list of layers"):
        FeedForwardNetwork(Dense(2))
    with pytest.raises(ValueError, match=r"duplicates \['same'\]"):
        FeedForwardNetwork([Dense(2, name="same"), Dense(2, name="same")])
    net = FeedForwardNetwork([LSTM(2, return_state=True)])
    with pytest.raises(ValueError, match="returns 3 outputs"):
        net.forward(np.zeros((1, 2, 2), np.float32))


# ---- RecurrentNetwork -----------------------------------------------------------------------------

def _recurrent_stack():
    return RecurrentNetwork([LSTM(5, return_sequences=True, **F64), Dropout(0.3, **F64),
                             GRU(4, return_sequences=True, **F64), Dense(3, **F64)])


def test_recurrent_network_threads_state_across_chunks(rng):
    net = _recurrent_stack()
    x = rng.normal(size=(2, 9, 3))
    full, state = net.forward(x)
    assert full.shape == (2, 9, 3)
    assert [None if s is None else [a.shape for a in s] for s in state] == [
        [(2, 5), (2, 5)], None, [(2, 4)], None]
    a, s1 = net.forward(x[:, :4])
    b, s2 = net.forward(x[:, 4:], s1)
    np.testing.assert_allclose(np.concatenate([a, b], axis=1), full, rtol=1e-12, atol=1e-14)
    for got, want in zip(s2, state):
        if want is not None:
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
    # the layers' own configuration is left unchanged
    assert net.layers[0].return_state is False and net.layers[2].return_state is False


def test_recurrent_network_backward_matches_finite_differences(rng):
    net = _recurrent_stack()
    x = rng.normal(size=(2, 4, 3))
    h0 = [rng.normal(size=(2, 5)), rng.normal(size=(2, 5))]
    g0 = [rng.normal(size=(2, 4))]
    state = [h0, None, g0, None]
    out, final = net.forward(x, state)
    r = rng.normal(size=out.shape)
    rc = rng.normal(size=final[0][1].shape)  # a loss term on the LSTM's final cell state

    def f():
        o, s = net.forward(x, state)
        return float(np.sum(o * r) + np.sum(s[0][1] * rc))

    net.zero_grad()
    dx = net.backward(r, d_state=[[None, rc], None, None, None])
    assert rel_err(dx, numerical_grad(f, x)) < 1e-6
    d0 = net.d_initial_state
    assert d0[1] is None and d0[3] is None
    assert rel_err(d0[0][0], numerical_grad(f, h0[0])) < 1e-6
    assert rel_err(d0[0][1], numerical_grad(f, h0[1])) < 1e-6
    assert rel_err(d0[2][0], numerical_grad(f, g0[0])) < 1e-6
    w = net.layers[2].params["w_ih"]
    assert rel_err(net.layers[2].grads["w_ih"], numerical_grad(f, w)) < 1e-6


def test_recurrent_network_bidirectional_and_simple_rnn(rng):
    net = RecurrentNetwork([Bidirectional(LSTM(3, return_sequences=True, **F64)), SimpleRNN(2, **F64)])
    x = rng.normal(size=(2, 5, 4))
    ref = FeedForwardNetwork(net.layers).forward(x)
    out, state = net.forward(x)
    assert out.shape == (2, 2)
    assert [a.shape for a in state[0]] == [(2, 3)] * 4 and [a.shape for a in state[1]] == [(2, 2)]
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    net.zero_grad()
    dx = net.backward(np.ones_like(out))
    assert dx.shape == x.shape and len(net.d_initial_state[0]) == 4


def test_recurrent_network_bad_state():
    net = RecurrentNetwork([LSTM(2), Dense(1)])
    x = np.zeros((1, 3, 2), np.float32)
    with pytest.raises(ValueError, match=r"state: expected a list with one entry per layer \(2\), got 1"):
        net.forward(x, [None])
    with pytest.raises(ValueError, match=r"state\[1\]: layer .* is not recurrent"):
        net.forward(x, [None, [np.zeros((1, 1), np.float32)]])
    with pytest.raises(ValueError, match="initial_state"):
        net.forward(x, [[np.zeros((1, 2), np.float32)], None])  # LSTM needs [h, c]


# ---- Sequential -----------------------------------------------------------------------------------

def _seq(timesteps=6, input_dim=3):
    return Sequential([LSTM(8, return_sequences=True, input_shape=(timesteps, input_dim)),
                       GRU(4, return_sequences=True), Dense(5, activation="softmax")], name="demo")


def test_sequential_builds_from_input_shape_and_counts_params():
    model = _seq()
    assert model.built and model.output_shape == (None, 6, 5)
    # Keras's counts: LSTM 4U(C+U+1), GRU (reset_after) 3U(C+U+2), Dense K(U+1)
    counts = [4 * 8 * (3 + 8 + 1), 3 * 4 * (8 + 4 + 2), 5 * (4 + 1)]
    assert [layer.count_params() for layer in model.layers] == counts
    assert model.count_params() == sum(counts)


def test_sequential_lazy_build_on_first_use(rng):
    model = Sequential()
    model.add(LSTM(4))
    model.add(Dense(2))
    assert not model.built
    with pytest.raises(ValueError, match="summary: the model 'sequential.*' is not built"):
        model.summary()
    out = model.predict(rng.normal(size=(3, 7, 5)).astype(np.float32))
    assert out.shape == (3, 2) and model.built and model.input_shape == (None, 7, 5)


def test_summary_table():
    model = _seq()
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert 'Model: "demo"' in text
    for layer, shape in zip(model.layers, ["(None, 6, 8)", "(None, 6, 4)", "(None, 6, 5)"]):
        row = next(line for line in text.splitlines() if f"{layer.name} ({type(layer).__name__})" in line)
        assert shape in row and f"{layer.count_params():,}" in row
    assert f"Total params: {model.count_params():,}" in text
    assert f"Trainable params: {model.count_params():,}" in text
    assert "Non-trainable params: 0" in text
    model.layers[0].trainable = False
    lines.clear()
    model.summary(print_fn=lines.append)
    assert f"Non-trainable params: {model.layers[0].count_params():,}" in "\n".join(lines)


def test_summary_prints_to_stdout(capsys):
    _seq().summary()
    assert "Layer (type)" in capsys.readouterr().out


def test_get_set_weights_keras_order(rng):
    model = _seq()
    w = model.get_weights()
    # layer by layer, Keras layout: LSTM kernel [C, 4U], recurrent [U, 4U], bias [4U]; ...
    assert [a.shape for a in w[:3]] == [(3, 32), (8, 32), (32,)]
    assert [a.shape for a in w[3:6]] == [(8, 12), (4, 12), (2, 12)]
    assert [a.shape for a in w[6:]] == [(4, 5), (5,)]
    new = [rng.normal(size=a.shape).astype(a.dtype) for a in w]
    model.set_weights(new)
    for a, b in zip(model.get_weights(), new):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="weights: expected 8 arrays"):
        model.set_weights(new[:-1])


def test_sequential_add_validation():
    model = Sequential([Dense(2, name="d", input_shape=(3,))])
    with pytest.raises(ValueError, match="a layer named 'd' is already in"):
        model.add(Dense(2, name="d"))
    with pytest.raises(ValueError, match="return_state=True"):
        model.add(LSTM(2, return_state=True))
    with pytest.raises(TypeError, match="layer: expected an rnnkit Layer, got int"):
        model.add(3)
    with pytest.raises(ValueError):
        model.add(LSTM(2))  # needs 3-D input: rejected while building, model unchanged
    assert [l.name for l in model.layers] == ["d"]
    assert model.pop().name == "d" and model.layers == []


def test_sequential_config_round_trip(rng):
    model = _seq()
    clone = Sequential.from_config(model.get_config())
    assert [type(l) for l in clone.layers] == [type(l) for l in model.layers]
    assert [l.name for l in clone.layers] == [l.name for l in model.layers]
    clone.set_weights(model.get_weights())
    x = rng.normal(size=(2, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(clone.predict(x), model.predict(x))


def test_call_and_get_layer(rng):
    model = _seq()
    x = rng.normal(size=(2, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x), model.predict(x, batch_size=1), rtol=1e-6, atol=1e-7)
    assert model.get_layer(index=1) is model.layers[1]
    assert model.get_layer(model.layers[2].name) is model.layers[2]
    with pytest.raises(ValueError, match="name: no layer named 'nope'"):
        model.get_layer("nope")
