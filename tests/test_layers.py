"""Non-recurrent layers (Dense, Embedding, Dropout, Masking), activations, the Layer protocol
and layer (de)serialisation."""
from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

import helpers
from rnnkit import activations, initializers
from rnnkit.layers import base
from rnnkit.layers.base import Layer, deserialize, get, register, serialize
from rnnkit.layers.core import Dense, Dropout, Embedding, Masking
from rnnkit.layers.recurrent import GRU, LSTM, SimpleRNN
from rnnkit.layers.wrappers import Bidirectional

ACTS = ["linear", "relu", "tanh", "sigmoid", "softmax"]


# ---------------------------------------------------------------------------------------------
# package
# ---------------------------------------------------------------------------------------------

def test_package_exports():
    layers = importlib.import_module("rnnkit.layers")
    if getattr(layers.__spec__, "origin", None) is None:
        pytest.skip("stale editable install: rnnkit.layers resolves as a namespace package (it had no "
                    "__init__.py when installed); reinstall the project to pick up layers/__init__.py")
    for name in ("SimpleRNN", "LSTM", "GRU", "Bidirectional", "Dense", "Embedding", "Dropout", "Masking",
                 "Layer", "serialize", "deserialize", "get", "register"):
        assert hasattr(layers, name), name
    assert layers.LSTM is LSTM and layers.deserialize is deserialize


# ---------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------

def test_activation_values():
    x = np.array([[-3.0, -0.5, 0.0, 0.5, 3.0]])
    np.testing.assert_allclose(activations.get("linear")(x), x, atol=0)
    np.testing.assert_allclose(activations.relu(x), [[0, 0, 0, 0.5, 3.0]], atol=0)
    np.testing.assert_allclose(activations.tanh(x), np.tanh(x), atol=0)
    np.testing.assert_allclose(activations.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-15, atol=0)
    e = np.exp(x)
    np.testing.assert_allclose(activations.softmax(x), e / e.sum(-1, keepdims=True), rtol=1e-14, atol=0)
    assert activations.get(None) is activations.linear
    assert activations.get(activations.tanh) is activations.tanh


def test_activations_stable_and_dtype():
    big = np.array([[1000.0, 1001.0, -1000.0]])
    s = activations.softmax(big)
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s, [[1 / (1 + np.e), np.e / (1 + np.e), 0.0]], rtol=1e-14, atol=1e-300)
    sg = activations.sigmoid(np.array([-1000.0, 1000.0]))
    np.testing.assert_allclose(sg, [0.0, 1.0], atol=1e-300)
    x32 = np.linspace(-5, 5, 7, dtype=np.float32)
    for name in ACTS:
        assert activations.get(name)(x32).dtype == np.float32, name


@pytest.mark.parametrize("name", ACTS)
def test_activation_backward_and_derivative(rng, name):
    act = activations.get(name)
    x = rng.standard_normal((3, 4))
    x[np.abs(x) < 1e-3] = 0.5  # away from relu's kink
    dy = rng.standard_normal((3, 4))
    y = act(x)
    num = helpers.numerical_grad(lambda: float(np.sum(act(x) * dy)), x)
    helpers.assert_close_rel(act.backward(dy, y), num, 1e-7, name)
    d = act.derivative(x)
    if name == "softmax":
        assert d.shape == (3, 4, 4)
        helpers.assert_close_rel(np.einsum("nj,nji->ni", dy, d), num, 1e-7, name)
    else:
        helpers.assert_close_rel(d * dy, num, 1e-7, name)


def test_activation_errors():
    with pytest.raises(ValueError, match="activation: unknown name 'swoosh'"):
        activations.get("swoosh")
    with pytest.raises(ValueError, match="x: the gelu activation needs its input"):
        activations.gelu.backward(np.zeros(2), np.zeros(2))
    with pytest.raises(TypeError, match="a plain callable has no derivative"):
        activations.get(np.tanh)
    with pytest.raises(ValueError, match=r"dy: expected the shape of y \(2,\), got \(3,\)"):
        activations.relu.backward(np.zeros(3), np.zeros(2))
    assert activations.serialize(activations.sigmoid) == "sigmoid"


# ---------------------------------------------------------------------------------------------
# Dense
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ACTS)
def test_dense_forward_and_gradients(rng, activation):
    layer = Dense(4, activation=activation, dtype="float64",
                  kernel_initializer=initializers.RandomNormal(stddev=0.7, seed=1),
                  bias_initializer=initializers.RandomUniform(-0.5, 0.5, seed=2))
    x = rng.standard_normal((2, 3, 5))  # time-distributed on 3-D input
    y = layer(x)
    K, b = layer.get_weights()
    assert K.shape == (5, 4) and b.shape == (4,)
    pre = x @ K + b
    ref = {"linear": pre, "relu": np.maximum(pre, 0), "tanh": np.tanh(pre), "sigmoid": 1 / (1 + np.exp(-pre)),
           "softmax": np.exp(pre) / np.exp(pre).sum(-1, keepdims=True)}[activation]
    np.testing.assert_allclose(y, ref, rtol=1e-13, atol=1e-13)
    W = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(layer(x) * W))

    layer.zero_grad()
    layer(x)
    dx = layer.backward(W)
    grads = {k: g.copy() for k, g in layer.grads.items()}
    helpers.assert_close_rel(dx, helpers.numerical_grad(loss, x), 1e-7, "dx")
    for k, p in layer.params.items():
        helpers.assert_close_rel(grads[k], helpers.numerical_grad(loss, p), 1e-7, k)


def test_dense_2d_no_bias_mask_passthrough_and_shapes(rng):
    layer = Dense(3, use_bias=False, input_shape=(6,))
    x = rng.standard_normal((4, 6)).astype(np.float32)
    y = layer(x)
    assert y.shape == (4, 3) and y.dtype == np.float32 and list(layer.params) == ["kernel"]
    np.testing.assert_allclose(y, x @ layer.get_weights()[0], rtol=1e-6, atol=1e-6)
    mask = np.ones((4, 5), bool)
    assert layer.compute_mask(x, mask) is mask
    assert layer.compute_output_shape((None, 7, 6)) == (None, 7, 3)
    assert layer.count_params() == 18
    limit = np.sqrt(6 / (6 + 3))
    assert np.max(np.abs(layer.get_weights()[0])) <= limit


def test_dense_errors(rng):
    layer = Dense(2, name="d")
    layer(rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match=r"d: x: expected shape \(\.\.\., 4\), got \(3, 5\)"):
        layer(rng.standard_normal((3, 5)))
    with pytest.raises(ValueError, match=r"d: d_out: expected shape \(3, 2\), got \(3, 3\)"):
        layer.backward(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"d: weight 'kernel' expected shape \(4, 2\), got \(2, 4\)"):
        layer.set_weights([np.zeros((2, 4)), np.zeros(2)])
    with pytest.raises(ValueError, match="activation: unknown name 'gelux'"):
        Dense(2, activation="gelux")
    with pytest.raises(ValueError, match=r"input_shape: expected at least 2 dimensions"):
        Dense(2)(np.zeros(3))
    with pytest.raises(RuntimeError, match="backward called before a forward call"):
        Dense(2).backward(np.zeros((1, 2)))


# ---------------------------------------------------------------------------------------------
# Embedding
# ---------------------------------------------------------------------------------------------

def test_embedding_lookup_mask_and_gradient(rng):
    emb = Embedding(6, 3, mask_zero=True, dtype="float64")
    idx = np.array([[1, 2, 0, 2], [5, 0, 0, 1]])
    y = emb(idx)
    E = emb.get_weights()[0]
    assert E.shape == (6, 3) and np.max(np.abs(E)) <= 0.05  # Keras 'uniform' default
    np.testing.assert_array_equal(y, E[idx])
    np.testing.assert_array_equal(emb.compute_mask(idx, None), idx != 0)
    assert Embedding(6, 3).compute_mask(idx, np.ones((2, 4), bool)) is None
    W = rng.standard_normal(y.shape)
    assert emb.backward(W) is None
    expected = np.zeros_like(E)
    for n in range(2):
        for t in range(4):
            expected[idx[n, t]] += W[n, t]
    np.testing.assert_allclose(emb.grads["embeddings"], expected, rtol=1e-15, atol=1e-15)
    num = helpers.numerical_grad(lambda: float(np.sum(emb(idx) * W)), emb.params["embeddings"])
    helpers.assert_close_rel(expected, num, 1e-8, "embeddings")
    assert emb.compute_output_shape((None, 4)) == (None, 4, 3)


def test_embedding_feeds_masked_lstm(rng):
    emb = Embedding(5, 3, mask_zero=True, dtype="float64")
    lstm = LSTM(2, return_sequences=True, dtype="float64")
    idx = np.array([[3, 4, 0, 0]])
    a = lstm(emb(idx), mask=emb.compute_mask(idx, None))
    b = lstm(emb(idx[:, :2]))
    np.testing.assert_allclose(a[:, :2], b, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(a[:, 2], b[:, 1], rtol=1e-14, atol=1e-14)


def test_embedding_errors():
    emb = Embedding(4, 2, name="emb")
    with pytest.raises(TypeError, match="emb: x: expected an integer array of indices, got dtype float64"):
        emb(np.array([[1.0, 2.0]]))
    with pytest.raises(TypeError, match="got dtype bool"):
        emb(np.array([[True]]))
    with pytest.raises(ValueError, match=r"emb: x: index 7 out of range \[0, 4\)"):
        emb(np.array([[1, 7, 2]]))
    with pytest.raises(ValueError, match=r"emb: x: index -1 out of range \[0, 4\)"):
        emb(np.array([[-1, 2]]))
    with pytest.raises(ValueError, match=r"input_dim: expected an int >= 1, got 0"):
        Embedding(0, 2)
    emb(np.array([[1, 2]]))
    with pytest.raises(ValueError, match=r"emb: d_out: expected shape \(1, 2, 2\), got \(1, 2\)"):
        emb.backward(np.zeros((1, 2)))


# ---------------------------------------------------------------------------------------------
# Dropout and Masking
# ---------------------------------------------------------------------------------------------

def test_dropout_inverted_and_identity(rng):
    x = rng.standard_normal((50, 40))
    d = Dropout(0.3, seed=1, dtype="float64")
    np.testing.assert_array_equal(d(x), x)
    np.testing.assert_array_equal(d.backward(np.ones_like(x)), 1.0)
    y = d(x, training=True)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-15)
    assert abs(kept.mean() - 0.7) < 0.03
    g = d.backward(np.ones_like(x))
    np.testing.assert_allclose(g, kept / 0.7, rtol=1e-15, atol=0)
    y2 = d(x, training=True)
    assert not np.array_equal(y2 != 0, kept)
    np.testing.assert_array_equal(Dropout(0.3, seed=1, dtype="float64")(x, training=True), y)


def test_dropout_noise_shape(rng):
    x = rng.standard_normal((4, 6, 8))
    y = Dropout(0.5, noise_shape=(None, 1, None), seed=0, dtype="float64")(x, training=True)
    zero = y == 0
    assert np.all(zero == zero[:, :1, :])  # the same features dropped at every step
    with pytest.raises(ValueError, match="does not broadcast"):
        Dropout(0.5, noise_shape=(None, 3, None))(x, training=True)
    with pytest.raises(ValueError, match=r"rate: expected a float in \[0, 1\), got 1"):
        Dropout(1)
    with pytest.raises(TypeError, match="rate: expected a float"):
        Dropout("0.5")


def test_masking(rng):
    x = rng.standard_normal((2, 4, 3))
    x[0, 1] = -1.0
    x[1, 3] = -1.0
    x[1, 0, 0] = -1.0  # only some features equal: not masked
    m = Masking(mask_value=-1.0, dtype="float64")
    y = m(x)
    mask = m.compute_mask(x, np.zeros((2, 4), bool))  # the incoming mask is ignored
    np.testing.assert_array_equal(mask, [[1, 0, 1, 1], [1, 1, 1, 0]])
    np.testing.assert_array_equal(y[0, 1], 0.0)
    np.testing.assert_array_equal(y[1, 3], 0.0)
    np.testing.assert_array_equal(y[mask], x[mask])
    g = m.backward(np.ones_like(x))
    np.testing.assert_array_equal(g, np.broadcast_to(mask[..., None], x.shape).astype(float))
    assert Masking.from_config(m.get_config()).mask_value == -1.0


# ---------------------------------------------------------------------------------------------
# protocol, config and registry
# ---------------------------------------------------------------------------------------------

LAYER_FACTORIES = [
    lambda: Dense(3, activation="softmax", use_bias=False, input_shape=(None, 4), name="dense_a"),
    lambda: Embedding(10, 4, mask_zero=True, embeddings_initializer="glorot_uniform"),
    lambda: Dropout(0.25, noise_shape=(None, 1, None), seed=3),
    lambda: Masking(mask_value=0.5, dtype="float64", trainable=False),
    lambda: SimpleRNN(2, activation="relu", return_state=True),
    lambda: LSTM(2, unit_forget_bias=False, stateful=True),
    lambda: GRU(2, reset_after=False, zero_output_for_mask=True),
    lambda: Bidirectional(GRU(2, return_sequences=True), merge_mode="ave"),
]


@pytest.mark.parametrize("factory", LAYER_FACTORIES)
def test_config_round_trip_json(factory):
    layer = factory()
    cfg = layer.get_config()
    blob = json.dumps(serialize(layer))
    clone = deserialize(json.loads(blob))
    assert type(clone) is type(layer)
    assert clone.get_config() == cfg
    assert type(layer).from_config(cfg).get_config() == cfg
    assert get(json.loads(blob)).get_config() == cfg


def test_registry_get_and_register():
    assert get("LSTM") is LSTM and get("Dense") is Dense
    inst = Dense(2)
    assert get(inst) is inst

    class MyDense(Dense):
        pass

    assert get("MyDense") is MyDense
    register(MyDense, name="AliasDense")
    assert deserialize({"class_name": "AliasDense", "config": {"units": 2}}).units == 2
    with pytest.raises(ValueError, match="config: unknown layer class 'Nope'"):
        deserialize({"class_name": "Nope", "config": {}})
    with pytest.raises(ValueError, match="config: expected a dict with 'class_name'"):
        deserialize({"config": {}})
    assert isinstance(deserialize({"class_name": "Other", "config": {"units": 1}},
                                  custom_objects={"Other": Dense}), Dense)
    with pytest.raises(TypeError, match="cls: expected a Layer subclass"):
        register(int)
    with pytest.raises(TypeError, match="layer: expected a Layer"):
        serialize("Dense")


def test_layer_protocol_basics(rng):
    with pytest.raises(TypeError, match=r"Dense: unexpected argument\(s\) \['foo'\]"):
        Dense(2, foo=1)
    with pytest.raises(ValueError, match="dtype: expected 'float32' or 'float64', got 'float16'"):
        Dense(2, dtype="float16")
    layer = Dense(2, name="dd")
    assert layer.get_weights() == [] and not layer.built
    layer(rng.standard_normal((1, 3)))
    assert layer.built and isinstance(layer, Layer)
    w = layer.get_weights()
    w[0][...] = 7.0  # copies
    assert not np.any(layer.params["kernel"] == 7.0)
    assert base.check_mask("m", None, 2, 3) is None
    np.testing.assert_array_equal(base.check_mask("m", [[1, 0, 2]], 1, 3), [[True, False, True]])
