"""Keras-style recurrent layers: SimpleRNN, LSTM, GRU (both reset_after forms) and Bidirectional.

Golden values come from `keras_reference`, a short NumPy transcription of Keras 3's cell math in
KERAS layout and gate order (kernel [C, G*U], x @ kernel; LSTM i, f, c, o; GRU z, r, h), run the
way Keras's NumPy/JAX backends run a masked, possibly backwards sequence. Gradients are checked
with float64 central differences through the layers.
"""
from __future__ import annotations

import importlib
import inspect
import json
import math
from typing import List

import numpy as np
import pytest

import helpers
from rnnkit import functional as F
from rnnkit import initializers
from rnnkit.layers.base import Layer, deserialize, serialize
from rnnkit.layers.core import Masking
from rnnkit.layers.recurrent import GRU, LSTM, SimpleRNN
from rnnkit.layers.wrappers import Bidirectional

HAS_RD = "recurrent_dropout_mask" in inspect.signature(F.lstm_forward).parameters
CELLS = ("SimpleRNN", "LSTM", "GRU", "GRU_v1")
N_STATES = {"SimpleRNN": 1, "LSTM": 2, "GRU": 1, "GRU_v1": 1}
GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3, "GRU_v1": 3}


def make_layer(cell: str, units: int, **kw) -> Layer:
    if cell == "SimpleRNN":
        return SimpleRNN(units, **kw)
    if cell == "LSTM":
        return LSTM(units, **kw)
    if cell == "GRU":
        return GRU(units, **kw)
    return GRU(units, reset_after=False, **kw)


def keras_weights(rng, cell: str, C: int, U: int, use_bias: bool = True, scale: float = 0.6) -> List[np.ndarray]:
    G = GATES[cell]
    w = [rng.uniform(-scale, scale, (C, G * U)), rng.uniform(-scale, scale, (U, G * U))]
    if use_bias:
        w.append(rng.uniform(-scale, scale, (2, G * U) if cell == "GRU" else (G * U,)))
    return w


def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def keras_reference(cell: str, x, weights, *, activation="tanh", mask=None, go_backwards=False,
                    return_sequences=False, zero_output_for_mask=False, initial_state=None,
                    dp=None, rdm=None):
    """Keras 3 semantics in Keras layout; returns (output, [states])."""
    x = np.asarray(x, np.float64)
    N, T, _ = x.shape
    K, R = weights[0], weights[1]
    b = weights[2] if len(weights) > 2 else None
    U = R.shape[0]
    states = ([np.zeros((N, U)) for _ in range(N_STATES[cell])] if initial_state is None
              else [np.array(s, np.float64) for s in initial_state])
    xs = x[:, ::-1] if go_backwards else x
    ms = None if mask is None else (mask[:, ::-1] if go_backwards else mask)
    if dp is not None:
        xs = xs * dp[:, None, :]
    outs = []
    for t in range(T):
        xt = xs[:, t]
        h = states[0]
        hd = h if rdm is None else h * rdm
        if cell == "SimpleRNN":
            pre = xt @ K + hd @ R + (0 if b is None else b)
            h_new = np.tanh(pre) if activation == "tanh" else np.maximum(pre, 0)
            new = [h_new]
        elif cell == "LSTM":
            z = xt @ K + hd @ R + (0 if b is None else b)
            i, f, cc, o = (z[:, k * U:(k + 1) * U] for k in range(4))
            c_new = _sig(f) * states[1] + _sig(i) * np.tanh(cc)
            h_new = _sig(o) * np.tanh(c_new)
            new = [h_new, c_new]
        else:
            reset_after = cell == "GRU"
            b_in = None if b is None else (b[0] if reset_after else b)
            mx = xt @ K + (0 if b_in is None else b_in)
            if reset_after:
                mi = hd @ R + (0 if b is None else b[1])
            else:
                mi = hd @ R[:, :2 * U]
            z = _sig(mx[:, :U] + mi[:, :U])
            r = _sig(mx[:, U:2 * U] + mi[:, U:2 * U])
            rh = r * mi[:, 2 * U:] if reset_after else (r * hd) @ R[:, 2 * U:]
            hh = np.tanh(mx[:, 2 * U:] + rh)
            h_new = z * h + (1 - z) * hh
            new = [h_new]
        if ms is not None:
            m = ms[:, t][:, None]
            out = np.where(m, new[0], 0.0 if zero_output_for_mask else h)
            states = [np.where(m, s_new, s) for s_new, s in zip(new, states)]
        else:
            out = new[0]
            states = new
        outs.append(out)
    seq = np.stack(outs, axis=1)
    return (seq if return_sequences else seq[:, -1]), states


def holes_mask(N: int, T: int) -> np.ndarray:
    """[N, T] mask with holes: sample 0 has gaps in the middle, sample 1 masked leading steps,
    sample 2 right padding, sample 3 (when N >= 4) is fully masked."""
    m = np.ones((N, T), bool)
    m[0, 1] = False
    if T > 3:
        m[0, T - 2] = False
    if N > 1:
        m[1, :2] = False
    if N > 2:
        m[2, T // 2 + 1:] = False
    if N > 3:
        m[3] = False
    return m


def listify(out):
    return out if isinstance(out, list) else [out]


# ---------------------------------------------------------------------------------------------
# forward semantics against the Keras reference
# ---------------------------------------------------------------------------------------------

OPTION_SETS = [
    {},
    {"return_sequences": True},
    {"return_sequences": True, "go_backwards": True},
    {"return_state": True, "go_backwards": True},
    {"return_sequences": True, "return_state": True, "mask": True},
    {"return_sequences": True, "mask": True, "zero_output_for_mask": True},
    {"return_sequences": True, "mask": True, "go_backwards": True, "initial_state": True},
    {"mask": True, "zero_output_for_mask": True, "return_state": True},
    {"return_sequences": True, "use_bias": False, "initial_state": True},
]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("opts", OPTION_SETS, ids=lambda o: "-".join(sorted(o)) or "plain")
def test_forward_matches_keras_reference(rng, cell, opts):
    N, T, C, U = 3, 6, 4, 5
    opts = dict(opts)
    use_mask = opts.pop("mask", False)
    use_init = opts.pop("initial_state", False)
    use_bias = opts.pop("use_bias", True)
    layer = make_layer(cell, U, use_bias=use_bias, dtype="float64", **opts)
    x = rng.standard_normal((N, T, C))
    layer.build(x.shape)
    w = keras_weights(rng, cell, C, U, use_bias)
    layer.set_weights(w)
    mask = holes_mask(N, T) if use_mask else None
    init = [rng.standard_normal((N, U)) * 0.5 for _ in range(N_STATES[cell])] if use_init else None
    out = listify(layer(x, mask=mask, initial_state=init))
    ref, states = keras_reference(cell, x, w, mask=mask, initial_state=init,
                                  go_backwards=opts.get("go_backwards", False),
                                  return_sequences=opts.get("return_sequences", False),
                                  zero_output_for_mask=opts.get("zero_output_for_mask", False))
    expected = [ref] + (states if opts.get("return_state") else [])
    assert len(out) == len(expected)
    for a, b in zip(out, expected):
        assert a.shape == b.shape and a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert layer.compute_output_shape(x.shape) == (
        [o.shape for o in out] if opts.get("return_state") else out[0].shape)


@pytest.mark.parametrize("cell", CELLS)
def test_float32_matches_reference(rng, cell):
    N, T, C, U = 2, 5, 3, 4
    layer = make_layer(cell, U, return_sequences=True)
    x = rng.standard_normal((N, T, C)).astype(np.float32)
    y = layer(x, mask=holes_mask(N, T))
    assert y.dtype == np.float32 and y.flags.c_contiguous
    ref, _ = keras_reference(cell, x, [np.float64(w) for w in layer.get_weights()], mask=holes_mask(N, T),
                             return_sequences=True)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_simple_rnn_relu_matches_reference(rng):
    layer = SimpleRNN(4, activation="relu", return_sequences=True, go_backwards=True, dtype="float64")
    x = rng.standard_normal((2, 5, 3))
    y = layer(x, mask=holes_mask(2, 5))
    ref, _ = keras_reference("SimpleRNN", x, layer.get_weights(), activation="relu", mask=holes_mask(2, 5),
                             go_backwards=True, return_sequences=True)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_golden_constant_initializers_simple_rnn():
    """Hand-computed: h1 = tanh(0.5 x1 + 0.1), h2 = tanh(0.5 x2 + 0.1 - 0.25 h1)."""
    layer = SimpleRNN(1, kernel_initializer=initializers.Constant(0.5),
                      recurrent_initializer=initializers.Constant(-0.25),
                      bias_initializer=initializers.Constant(0.1), return_sequences=True, dtype="float64")
    x = np.array([[[1.0], [-2.0]]])
    y = layer(x)
    h1 = math.tanh(0.5 * 1.0 + 0.1)
    h2 = math.tanh(0.5 * -2.0 + 0.1 - 0.25 * h1)
    np.testing.assert_allclose(y[0, :, 0], [h1, h2], rtol=0, atol=1e-14)
    yb = SimpleRNN(1, kernel_initializer=initializers.Constant(0.5),
                   recurrent_initializer=initializers.Constant(-0.25),
                   bias_initializer=initializers.Constant(0.1), return_sequences=True, go_backwards=True,
                   dtype="float64")(x)
    g1 = math.tanh(0.5 * -2.0 + 0.1)
    g2 = math.tanh(0.5 * 1.0 + 0.1 - 0.25 * g1)
    np.testing.assert_allclose(yb[0, :, 0], [g1, g2], rtol=0, atol=1e-14)


def test_golden_constant_initializers_lstm_and_gru():
    s = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
    x = np.array([[[2.0]]])
    # LSTM, one step from zero state: all gate pre-activations 0.3*2 + bias, forget bias 1 + 0
    lstm = LSTM(1, kernel_initializer=initializers.Constant(0.3), recurrent_initializer="zeros",
                dtype="float64", return_state=True)
    out, h, c = lstm(x)
    c_exp = s(0.6) * math.tanh(0.6)
    np.testing.assert_allclose(c[0, 0], c_exp, atol=1e-14)
    np.testing.assert_allclose(out[0, 0], s(0.6) * math.tanh(c_exp), atol=1e-14)
    np.testing.assert_allclose(lstm.get_weights()[2], [0.0, 1.0, 0.0, 0.0], atol=0)
    # GRU, one step from h0 = 0.5 with kernel 0.2, recurrent 0.4, bias rows (0.1, -0.1)
    for reset_after in (True, False):
        gru = GRU(1, kernel_initializer=initializers.Constant(0.2),
                  recurrent_initializer=initializers.Constant(0.4),
                  bias_initializer=initializers.Constant(0.1), reset_after=reset_after, dtype="float64")
        gru.build((1, 1, 1))
        if reset_after:
            gru.set_weights([gru.get_weights()[0], gru.get_weights()[1], np.array([[0.1] * 3, [-0.1] * 3])])
        y = gru(x, initial_state=[np.array([[0.5]])])
        h0 = 0.5
        z = s(0.4 + 0.1 + 0.4 * h0 - (0.1 if reset_after else 0.0))
        r = z
        if reset_after:
            hh = math.tanh(0.4 + 0.1 + r * (0.4 * h0 - 0.1))
        else:
            hh = math.tanh(0.4 + 0.1 + 0.4 * (r * h0))
        np.testing.assert_allclose(y[0, 0], z * h0 + (1 - z) * hh, atol=1e-14)


def test_go_backwards_returns_reversed_sequence(rng):
    """go_backwards output[:, k] is the state after processing input steps T-1 .. T-1-k."""
    x = rng.standard_normal((2, 5, 3))
    fwd = LSTM(4, return_sequences=True, dtype="float64")
    bwd = LSTM(4, return_sequences=True, go_backwards=True, dtype="float64")
    fwd.build(x.shape)
    bwd.build(x.shape)
    bwd.set_weights(fwd.get_weights())
    np.testing.assert_allclose(bwd(x), fwd(x[:, ::-1]), rtol=1e-13, atol=1e-13)
    last = LSTM(4, go_backwards=True, dtype="float64")
    last.build(x.shape)
    last.set_weights(fwd.get_weights())
    np.testing.assert_allclose(last(x), fwd(x[:, ::-1])[:, -1], rtol=1e-13, atol=1e-13)


def test_masked_leading_steps_output_initial_state(rng):
    """Before any valid step a masked output is the carried (initial) state (Keras JAX/NumPy)."""
    x = rng.standard_normal((1, 3, 2))
    h0 = rng.standard_normal((1, 3))
    layer = GRU(3, return_sequences=True, dtype="float64")
    y = layer(x, mask=np.array([[False, True, True]]), initial_state=[h0])
    np.testing.assert_allclose(y[0, 0], h0[0], atol=0)
    z = GRU(3, return_sequences=True, zero_output_for_mask=True, dtype="float64")
    z.build(x.shape)
    z.set_weights(layer.get_weights())
    yz = z(x, mask=np.array([[False, True, True]]), initial_state=[h0])
    np.testing.assert_allclose(yz[0, 0], 0.0, atol=0)
    np.testing.assert_allclose(yz[0, 1:], y[0, 1:], atol=1e-14)


@pytest.mark.parametrize("cell", CELLS)
def test_stateful_two_calls_equal_one(rng, cell):
    N, T, C, U = 2, 6, 3, 4
    x = rng.standard_normal((N, T, C))
    full = make_layer(cell, U, return_sequences=True, dtype="float64")
    st = make_layer(cell, U, return_sequences=True, stateful=True, dtype="float64")
    full.build(x.shape)
    st.build(x.shape)
    st.set_weights(full.get_weights())
    mask = holes_mask(N, T)
    y = full(x, mask=mask)
    y1 = st(x[:, :3], mask=mask[:, :3])
    y2 = st(x[:, 3:], mask=mask[:, 3:])
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), y, rtol=1e-13, atol=1e-13)
    assert len(st.states) == N_STATES[cell] and st.states[0].shape == (N, U)
    st.reset_state()
    assert all(np.all(s == 0) for s in st.states)
    np.testing.assert_allclose(st(x[:, :3], mask=mask[:, :3]), y1, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="stateful layer keeps its batch size: expected 2 samples, got 3"):
        st(rng.standard_normal((3, 2, C)))


def test_stateful_reset_states_alias_and_nonstateful_noop(rng):
    layer = SimpleRNN(2, stateful=True, dtype="float64")
    layer(rng.standard_normal((1, 2, 1)))
    assert np.any(layer.states[0] != 0)
    layer.reset_states()
    np.testing.assert_array_equal(layer.states[0], 0.0)
    plain = SimpleRNN(2)
    plain.reset_state()
    assert plain.states is None


# ---------------------------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_input_dropout_one_mask_per_sequence(rng, cell):
    N, T, C, U = 4, 5, 6, 3
    layer = make_layer(cell, U, dropout=0.4, return_sequences=True, seed=3, dtype="float64")
    x = rng.standard_normal((N, T, C))
    y_inf = layer(x)
    assert layer.last_dropout_masks == (None, None)
    ref, _ = keras_reference(cell, x, layer.get_weights(), return_sequences=True)
    np.testing.assert_allclose(y_inf, ref, rtol=1e-12, atol=1e-12)
    y = layer(x, training=True)
    dp, rdm = layer.last_dropout_masks
    assert rdm is None and dp.shape == (N, C)
    assert set(np.unique(dp)) <= {0.0, 1.0 / 0.6}
    assert 0 < np.count_nonzero(dp) < dp.size
    ref, _ = keras_reference(cell, x, layer.get_weights(), return_sequences=True, dp=dp)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not HAS_RD, reason="functional kernels without recurrent_dropout_mask")
@pytest.mark.parametrize("cell", CELLS)
def test_recurrent_dropout_matches_reference(rng, cell):
    N, T, C, U = 4, 5, 3, 6
    layer = make_layer(cell, U, dropout=0.25, recurrent_dropout=0.5, return_sequences=True,
                       return_state=True, seed=11, dtype="float64")
    x = rng.standard_normal((N, T, C))
    mask = np.ones((N, T), bool)
    mask[0, 2] = mask[1, 0] = False
    out = layer(x, mask=mask, training=True)
    dp, rdm = layer.last_dropout_masks
    assert dp.shape == (N, C) and rdm.shape == (N, U)
    assert set(np.unique(rdm)) <= {0.0, 2.0}
    ref, states = keras_reference(cell, x, layer.get_weights(), mask=mask, return_sequences=True, dp=dp,
                                  rdm=rdm)
    for a, b in zip(out, [ref] + states):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_dropout_seed_reproducible_and_draws_differ(rng):
    x = rng.standard_normal((3, 4, 5))
    a = LSTM(2, dropout=0.5, seed=7)
    b = LSTM(2, dropout=0.5, seed=7)
    a(x, training=True)
    b(x, training=True)
    np.testing.assert_array_equal(a.last_dropout_masks[0], b.last_dropout_masks[0])
    first = a.last_dropout_masks[0].copy()
    masks = []
    for _ in range(3):
        a(x, training=True)
        masks.append(a.last_dropout_masks[0])
    assert any(not np.array_equal(first, m) for m in masks)


# ---------------------------------------------------------------------------------------------
# weights: Keras layout, initializers, interop consistency
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,shapes", [
    ("SimpleRNN", [(3, 5), (5, 5), (5,)]),
    ("LSTM", [(3, 20), (5, 20), (20,)]),
    ("GRU", [(3, 15), (5, 15), (2, 15)]),
    ("GRU_v1", [(3, 15), (5, 15), (15,)]),
])
def test_get_set_weights_keras_layout(rng, cell, shapes):
    layer = make_layer(cell, 5, dtype="float64")
    layer.build((None, 7, 3))
    assert [w.shape for w in layer.get_weights()] == shapes
    w = [rng.standard_normal(s) for s in shapes]
    layer.set_weights(w)
    for a, b in zip(layer.get_weights(), w):
        np.testing.assert_array_equal(a, b)
    assert layer.count_params() == sum(int(np.prod(s)) for s in shapes)
    nobias = make_layer(cell, 5, use_bias=False)
    nobias.build((None, 7, 3))
    assert [w.shape for w in nobias.get_weights()] == shapes[:2]
    assert sorted(nobias.params) == ["w_hh", "w_ih"]


def test_internal_layout_is_pytorch(rng):
    """GRU Keras column blocks z, r, h map to internal row blocks r, z, n; biases to b_ih/b_hh."""
    U, C = 2, 3
    gru = GRU(U, dtype="float64")
    gru.build((1, 1, C))
    K = rng.standard_normal((C, 3 * U))
    R = rng.standard_normal((U, 3 * U))
    B = rng.standard_normal((2, 3 * U))
    gru.set_weights([K, R, B])
    z, r, h = slice(0, U), slice(U, 2 * U), slice(2 * U, 3 * U)
    np.testing.assert_array_equal(gru.params["w_ih"], np.concatenate([K[:, r], K[:, z], K[:, h]], 1).T)
    np.testing.assert_array_equal(gru.params["w_hh"], np.concatenate([R[:, r], R[:, z], R[:, h]], 1).T)
    np.testing.assert_array_equal(gru.params["b_ih"], np.concatenate([B[0, r], B[0, z], B[0, h]]))
    np.testing.assert_array_equal(gru.params["b_hh"], np.concatenate([B[1, r], B[1, z], B[1, h]]))
    assert list(gru.params) == ["w_ih", "w_hh", "b_ih", "b_hh"] == list(gru.grads)
    lstm = LSTM(U, dtype="float64")
    lstm.build((1, 1, C))
    K4 = rng.standard_normal((C, 4 * U))
    lstm.set_weights([K4, rng.standard_normal((U, 4 * U)), rng.standard_normal(4 * U)])
    np.testing.assert_array_equal(lstm.params["w_ih"], K4.T)
    assert lstm.params["w_ih"].flags.c_contiguous


@pytest.mark.parametrize("cell", CELLS)
def test_initializers_apply_in_keras_layout(cell):
    C, U = 3, 4
    G = GATES[cell]
    layer = make_layer(cell, U)
    layer.build((None, 2, C))
    kernel, rec = layer.get_weights()[:2]
    limit = math.sqrt(6.0 / (C + G * U))
    assert np.max(np.abs(kernel)) <= limit
    assert np.max(np.abs(kernel)) > 0.5 * limit
    # orthogonal over [U, G*U]: rows orthonormal (columns too for SimpleRNN)
    np.testing.assert_allclose(rec @ rec.T, np.eye(U), atol=1e-5)
    bias = layer.get_weights()[2]
    if cell == "LSTM":
        np.testing.assert_array_equal(bias, np.r_[np.zeros(U), np.ones(U), np.zeros(2 * U)])
    else:
        np.testing.assert_array_equal(bias, 0.0)


def test_lstm_unit_forget_bias_false_and_custom_bias_initializer():
    layer = LSTM(2, unit_forget_bias=False, bias_initializer=initializers.Constant(0.5))
    layer.build((None, 1, 1))
    np.testing.assert_array_equal(layer.get_weights()[2], 0.5)
    layer = LSTM(2, bias_initializer=initializers.Constant(0.5))
    layer.build((None, 1, 1))
    np.testing.assert_array_equal(layer.get_weights()[2], [0.5, 0.5, 1, 1, 0.5, 0.5, 0.5, 0.5])


def test_get_weights_agree_with_interop(rng):
    try:
        interop = importlib.import_module("rnnkit.interop")
    except ImportError as e:  # pragma: no cover - depends on the other module being present
        pytest.skip(f"rnnkit.interop not importable: {e}")
    for cell, name in (("SimpleRNN", "SimpleRNN"), ("LSTM", "LSTM"), ("GRU", "GRU")):
        layer = make_layer(cell, 3, dtype="float64")
        layer.build((None, 2, 4))
        layer.set_weights(keras_weights(rng, cell, 4, 3))
        p = layer.params
        theirs = interop.torch_to_keras(name, p["w_ih"], p["w_hh"], p.get("b_ih"), p.get("b_hh"))
        for a, b in zip(layer.get_weights(), theirs):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)
        back = interop.keras_to_torch(name, layer.get_weights())
        np.testing.assert_allclose(back["w_ih"], p["w_ih"], rtol=0, atol=1e-15)
        np.testing.assert_allclose(back["w_hh"], p["w_hh"], rtol=0, atol=1e-15)


@pytest.mark.torch
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_matches_torch_with_converted_weights(rng, cell):
    torch = pytest.importorskip("torch")
    N, T, C, U = 2, 5, 3, 4
    layer = make_layer(cell, U, return_sequences=True, dtype="float64")
    layer.build((N, T, C))
    w = keras_weights(rng, cell, C, U)
    layer.set_weights(w)
    K, R, B = w

    def to_torch_rows(M):  # Keras [in, G*U] -> torch [G*U, in]; GRU z, r, h -> r, z, n
        if cell == "GRU":
            M = np.concatenate([M[..., U:2 * U], M[..., :U], M[..., 2 * U:]], axis=-1)
        return M.T if M.ndim == 2 else M

    mod = (torch.nn.LSTM if cell == "LSTM" else torch.nn.GRU)(C, U, batch_first=True).double()
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.from_numpy(np.ascontiguousarray(to_torch_rows(K))))
        mod.weight_hh_l0.copy_(torch.from_numpy(np.ascontiguousarray(to_torch_rows(R))))
        if cell == "GRU":
            mod.bias_ih_l0.copy_(torch.from_numpy(to_torch_rows(B[0])))
            mod.bias_hh_l0.copy_(torch.from_numpy(to_torch_rows(B[1])))
        else:
            mod.bias_ih_l0.copy_(torch.from_numpy(B))
            mod.bias_hh_l0.zero_()
    x = rng.standard_normal((N, T, C))
    with torch.no_grad():
        yt, _ = mod(torch.from_numpy(x))
    np.testing.assert_allclose(layer(x), yt.numpy(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# gradients: float64 central differences through the layers
# ---------------------------------------------------------------------------------------------

def _weights_for_outputs(rng, outs):
    return [rng.standard_normal(o.shape) for o in outs]


def grad_check(layer: Layer, x, *, mask=None, initial_state=None, training=False, reseed=None,
               tol=1e-6, seed=0, check_states=True):
    """L = sum_i <out_i, W_i>; compares backward() with central differences for x, every
    parameter and (optionally) the initial states."""
    rng = np.random.default_rng(seed)

    def run():
        if reseed is not None:
            layer.rng = np.random.default_rng(reseed)
        return listify(layer(x, mask=mask, initial_state=initial_state, training=training))

    outs = run()
    W = _weights_for_outputs(rng, outs)

    def loss() -> float:
        return float(sum(np.sum(o * w) for o, w in zip(run(), W)))

    layer.zero_grad()
    run()
    d_out = W if len(W) > 1 else W[0]
    dx = layer.backward(d_out)
    analytic = {k: g.copy() for k, g in layer.grads.items()}
    d_init = getattr(layer, "d_initial_state", None)
    helpers.assert_close_rel(dx, helpers.numerical_grad(loss, x), tol, "dx")
    for k, p in layer.params.items():
        helpers.assert_close_rel(analytic[k], helpers.numerical_grad(loss, p), tol, k)
    if initial_state is not None and check_states and d_init is not None:
        for i, s in enumerate(initial_state):
            helpers.assert_close_rel(d_init[i], helpers.numerical_grad(loss, s), tol, f"d_initial_state[{i}]")
    return dx


GRAD_OPTS = [
    {"return_sequences": True, "return_state": True, "initial_state": True},
    {"return_sequences": True, "mask": True, "go_backwards": True},
    {"mask": True, "zero_output_for_mask": True, "return_state": True, "initial_state": True},
    {"return_sequences": True, "mask": True, "zero_output_for_mask": True, "use_bias": False},
]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("opts", GRAD_OPTS, ids=lambda o: "-".join(sorted(o)))
def test_gradients(rng, cell, opts):
    N, T, C, U = 3, 4, 2, 3
    opts = dict(opts)
    use_mask = opts.pop("mask", False)
    use_init = opts.pop("initial_state", False)
    layer = make_layer(cell, U, dtype="float64", **opts)
    x = rng.standard_normal((N, T, C))
    layer.build(x.shape)
    layer.set_weights(keras_weights(rng, cell, C, U, opts.get("use_bias", True), scale=0.8))
    init = [rng.standard_normal((N, U)) * 0.5 for _ in range(N_STATES[cell])] if use_init else None
    grad_check(layer, x, mask=holes_mask(N, T)[:, :T] if use_mask else None, initial_state=init)


def test_gradients_simple_rnn_relu(rng):
    layer = SimpleRNN(3, activation="relu", return_sequences=True, dtype="float64")
    x = rng.standard_normal((2, 4, 2))
    layer.build(x.shape)
    layer.set_weights(keras_weights(rng, "SimpleRNN", 2, 3))
    grad_check(layer, x, mask=holes_mask(2, 4))


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_with_dropout(rng, cell):
    if not HAS_RD:
        pytest.skip("functional kernels without recurrent_dropout_mask")
    layer = make_layer(cell, 3, dropout=0.3, recurrent_dropout=0.4, return_sequences=True, seed=5,
                       dtype="float64")
    x = rng.standard_normal((2, 4, 3))
    layer.build(x.shape)
    layer.set_weights(keras_weights(rng, cell, 3, 3))
    grad_check(layer, x, mask=holes_mask(2, 4), training=True, reseed=5)
    dp, rdm = layer.last_dropout_masks
    assert np.any(dp == 0) and np.any(rdm == 0)


def test_backward_accumulates_and_list_with_none(rng):
    layer = LSTM(3, return_state=True, dtype="float64")
    x = rng.standard_normal((2, 3, 2))
    out, h, c = layer(x)
    dx1 = layer.backward([np.ones_like(out), None, None])
    g1 = {k: v.copy() for k, v in layer.grads.items()}
    dx2 = layer.backward([np.ones_like(out), np.zeros_like(h), None])
    np.testing.assert_allclose(dx1, dx2, rtol=0, atol=0)
    for k in g1:
        np.testing.assert_allclose(layer.grads[k], 2 * g1[k], rtol=1e-14, atol=1e-14)
    layer.zero_grad()
    assert all(np.all(g == 0) for g in layer.grads.values())
    # out and h are the same quantity without a mask
    layer.zero_grad()
    a = layer.backward([None, np.ones_like(h), None])
    np.testing.assert_allclose(a, dx1, rtol=1e-14, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Bidirectional
# ---------------------------------------------------------------------------------------------

def _bidir_reference(cell, x, layer: Bidirectional, mask, merge_mode):
    wf = layer.forward_layer.get_weights()
    wb = layer.backward_layer.get_weights()
    rs = layer.return_sequences
    yf, sf = keras_reference(cell, x, wf, mask=mask, return_sequences=rs, zero_output_for_mask=rs)
    yb, sb = keras_reference(cell, x, wb, mask=mask, return_sequences=rs, zero_output_for_mask=rs,
                             go_backwards=True)
    if rs:
        yb = yb[:, ::-1]
    merged = {"concat": lambda: np.concatenate([yf, yb], -1), "sum": lambda: yf + yb,
              "ave": lambda: (yf + yb) / 2, "mul": lambda: yf * yb, None: lambda: [yf, yb]}[merge_mode]()
    return merged, sf + sb


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_bidirectional_forward_and_gradients(rng, cell, merge_mode):
    N, T, C, U = 3, 4, 2, 3
    bi = Bidirectional(make_layer(cell, U, return_sequences=True, dtype="float64"), merge_mode=merge_mode)
    x = rng.standard_normal((N, T, C))
    bi.build(x.shape)
    bi.set_weights(keras_weights(rng, cell, C, U) + keras_weights(rng, cell, C, U))
    mask = holes_mask(N, T)
    out = bi(x, mask=mask)
    ref, _ = _bidir_reference(cell, x, bi, mask, merge_mode)
    for a, b in zip(listify(out), listify(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert bi.compute_output_shape(x.shape) == ([o.shape for o in out] if merge_mode is None else out.shape)
    grad_check(bi, x, mask=mask)


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM", "GRU_v1"])
def test_bidirectional_return_state_gradients(rng, cell):
    N, T, C, U = 2, 4, 2, 3
    bi = Bidirectional(make_layer(cell, U, return_state=True, dtype="float64"), merge_mode="concat")
    x = rng.standard_normal((N, T, C))
    mask = holes_mask(N, T)
    init = [rng.standard_normal((N, U)) * 0.3 for _ in range(2 * N_STATES[cell])]
    out = bi(x, mask=mask, initial_state=init)
    assert len(out) == 1 + 2 * N_STATES[cell]
    yf, sf = keras_reference(cell, x, bi.forward_layer.get_weights(), mask=mask,
                             initial_state=init[:N_STATES[cell]])
    yb, sb = keras_reference(cell, x, bi.backward_layer.get_weights(), mask=mask, go_backwards=True,
                             initial_state=init[N_STATES[cell]:])
    for a, b in zip(out, [np.concatenate([yf, yb], -1)] + sf + sb):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    grad_check(bi, x, mask=mask, initial_state=init)
    assert len(bi.d_initial_state) == 2 * N_STATES[cell]
    assert bi.compute_mask(x, mask) == [None] + [None] * (2 * N_STATES[cell])


def test_bidirectional_structure_and_config(rng):
    base = GRU(3, return_sequences=True, name="enc")
    bi = Bidirectional(base)
    assert bi.forward_layer is not base
    assert bi.forward_layer.name == "forward_enc" and bi.backward_layer.name == "backward_enc"
    assert bi.backward_layer.go_backwards and not bi.forward_layer.go_backwards
    assert bi.forward_layer.zero_output_for_mask and bi.backward_layer.zero_output_for_mask
    x = rng.standard_normal((2, 4, 5)).astype(np.float32)
    y = bi(x)
    assert y.shape == (2, 4, 6)
    assert list(bi.params) == ["forward/w_ih", "forward/w_hh", "forward/b_ih", "forward/b_hh",
                               "backward/w_ih", "backward/w_hh", "backward/b_ih", "backward/b_hh"]
    assert bi.params["forward/w_ih"] is bi.forward_layer.params["w_ih"]
    w = bi.get_weights()
    assert [a.shape for a in w] == [(5, 9), (3, 9), (2, 9)] * 2
    cfg = json.loads(json.dumps(serialize(bi)))
    assert cfg["config"]["layer"]["config"]["name"] == "forward_enc"
    bi2 = deserialize(cfg)
    assert isinstance(bi2, Bidirectional) and bi2.get_config() == bi.get_config()
    bi2.build(x.shape)
    bi2.set_weights(w)
    np.testing.assert_allclose(bi2(x), y, rtol=1e-6, atol=1e-6)
    mask = holes_mask(2, 4)
    assert bi.compute_mask(x, mask) is mask
    assert Bidirectional(LSTM(2, return_sequences=True), merge_mode=None).compute_mask(x, mask) == [mask, mask]
    assert Bidirectional(LSTM(2)).compute_mask(x, mask) is None


def test_bidirectional_custom_backward_layer_and_errors(rng):
    f = LSTM(2, return_sequences=True)
    b = SimpleRNN(3, return_sequences=True, go_backwards=True, activation="relu")
    bi = Bidirectional(f, backward_layer=b, merge_mode="concat")
    assert bi.backward_layer is b
    assert bi(rng.standard_normal((1, 3, 2))).shape == (1, 3, 5)
    with pytest.raises(ValueError, match="expected go_backwards different"):
        Bidirectional(LSTM(2), backward_layer=LSTM(2))
    with pytest.raises(ValueError, match="expected return_sequences=True like the forward layer"):
        Bidirectional(LSTM(2, return_sequences=True), backward_layer=LSTM(2, go_backwards=True))
    with pytest.raises(ValueError, match="merge_mode: expected one of"):
        Bidirectional(LSTM(2), merge_mode="max")
    with pytest.raises(TypeError, match="layer: expected an rnnkit Layer"):
        Bidirectional("LSTM")
    with pytest.raises(ValueError, match="initial_state: expected a list with an even number"):
        Bidirectional(LSTM(2))(rng.standard_normal((1, 3, 2)), initial_state=[np.zeros((1, 2))])
    with pytest.raises(AttributeError, match="reset_state needs a stateful layer"):
        Bidirectional(LSTM(2)).reset_state()


def test_bidirectional_stateful(rng):
    bi = Bidirectional(GRU(2, stateful=True, dtype="float64"), merge_mode="sum")
    x = rng.standard_normal((2, 3, 2))
    bi(x)
    assert bi.states is not None and len(bi.states) == 2
    bi.reset_state()
    assert all(np.all(s == 0) for s in bi.states)


def test_masking_feeds_recurrent_layer(rng):
    x = rng.standard_normal((2, 5, 3))
    x[0, 3:] = 0.0
    x[1, 1] = 0.0
    m = Masking(dtype="float64")
    xm = m(x)
    mask = m.compute_mask(x, None)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]])
    layer = LSTM(3, dtype="float64")
    a = layer(xm, mask=mask)
    ref, _ = keras_reference("LSTM", x, layer.get_weights(), mask=mask)
    np.testing.assert_allclose(a, ref, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# config, masks, shapes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_config_round_trip(rng, cell):
    layer = make_layer(cell, 3, return_sequences=True, go_backwards=True, dropout=0.1, recurrent_dropout=0.2,
                       seed=4, kernel_initializer=initializers.RandomNormal(stddev=0.3, seed=1),
                       recurrent_initializer=initializers.Orthogonal(gain=0.9, seed=2),
                       input_shape=(None, 2), name=f"rnn_{cell}")
    cfg = json.loads(json.dumps(serialize(layer)))
    clone = deserialize(cfg)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    assert clone.input_shape == (None, 2) and clone.name == f"rnn_{cell}"
    assert (clone.reset_after if cell.startswith("GRU") else True) is (cell != "GRU_v1")
    x = rng.standard_normal((2, 3, 2)).astype(np.float32)
    np.testing.assert_array_equal(clone(x), layer(x))  # same seeded kernel initializer


@pytest.mark.parametrize("cell", CELLS)
def test_compute_mask(cell):
    mask = np.ones((2, 3), bool)
    assert make_layer(cell, 2).compute_mask(None, mask) is None
    assert make_layer(cell, 2, return_sequences=True).compute_mask(None, mask) is mask
    assert make_layer(cell, 2, return_state=True).compute_mask(None, mask) == [None] * (1 + N_STATES[cell])


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

def test_constructor_errors():
    with pytest.raises(ValueError, match="activation: expected one of 'tanh', 'relu', 'linear' .*got 'elu'"):
        LSTM(2, activation="elu")
    with pytest.raises(ValueError, match="recurrent_activation: expected one of 'sigmoid', 'hard_sigmoid'"):
        GRU(2, recurrent_activation="tanh")
    with pytest.raises(ValueError, match="activation: unknown name 'hard_sigmoidx'"):
        LSTM(2, recurrent_activation="hard_sigmoidx")
    with pytest.raises(ValueError, match="activation: expected one of 'tanh', 'relu', 'linear' .*got 'sigmoid'"):
        SimpleRNN(2, activation="sigmoid")
    with pytest.raises(ValueError, match=r"units: expected an int >= 1, got 0"):
        GRU(0)
    with pytest.raises(ValueError, match=r"dropout: expected a float in \[0, 1\), got 1.0"):
        LSTM(2, dropout=1.0)
    with pytest.raises(ValueError, match=r"recurrent_dropout: expected a float in \[0, 1\), got -0.1"):
        LSTM(2, recurrent_dropout=-0.1)
    with pytest.raises(TypeError, match="unexpected argument"):
        LSTM(2, kernel_regularizer="l2")


def test_call_errors(rng):
    layer = LSTM(3, name="enc")
    with pytest.raises(ValueError, match=r"enc: x: expected 3 dimensions \(batch, timesteps, features\)|"
                                         r"enc: input_shape: expected 3 dimensions"):
        layer(rng.standard_normal((2, 3)))
    layer(rng.standard_normal((2, 4, 5)))
    with pytest.raises(ValueError, match=r"enc: x: expected 5 features \(the built size\), got shape \(2, 4, 6\)"):
        layer(rng.standard_normal((2, 4, 6)))
    with pytest.raises(ValueError, match=r"enc: mask: expected shape \(2, 4\), got \(4, 2\)"):
        layer(rng.standard_normal((2, 4, 5)), mask=np.ones((4, 2), bool))
    with pytest.raises(TypeError, match="enc: mask: expected a boolean array, got dtype float64"):
        layer(rng.standard_normal((2, 4, 5)), mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"enc: initial_state: expected a list of 2 array\(s\) of shape \(2, 3\), got 1"):
        layer(rng.standard_normal((2, 4, 5)), initial_state=[np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"enc: initial_state\[1\]: expected shape \(2, 3\) = \(batch, units\), got \(2, 4\)"):
        layer(rng.standard_normal((2, 4, 5)), initial_state=[np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(TypeError, match="enc: x: expected a float32 or float64 array, got dtype int64"):
        layer(np.ones((2, 4, 5), dtype=np.int64))
    with pytest.raises(ValueError, match=r"enc: weight 'recurrent_kernel' expected shape \(3, 12\), got \(12, 3\)"):
        layer.set_weights([np.zeros((5, 12)), np.zeros((12, 3)), np.zeros(12)])
    with pytest.raises(ValueError, match="enc: expected 3 weight arrays"):
        layer.set_weights([np.zeros((5, 12))])
    with pytest.raises(ValueError, match="set_weights before the layer is built"):
        GRU(2).set_weights([])


def test_backward_errors(rng):
    layer = GRU(3, return_sequences=True, name="g")
    with pytest.raises(RuntimeError, match="g: backward called before a forward call"):
        layer.backward(np.zeros((1, 2, 3)))
    layer(rng.standard_normal((2, 4, 5)))
    with pytest.raises(ValueError, match=r"g: d_out: expected shape \(2, 4, 3\), got \(2, 3\)"):
        layer.backward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="g: d_out: expected one array"):
        layer.backward([np.zeros((2, 4, 3))])
    st = GRU(3, return_state=True, name="s")
    st(rng.standard_normal((2, 4, 5)))
    with pytest.raises(ValueError, match=r"s: d_out: expected a list of 2 gradients \(output and states\), got 1"):
        st.backward([np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"s: d_state\[0\]: expected shape \(2, 3\), got \(3,\)"):
        st.backward([None, np.zeros(3)])
