"""Keras-style cells and the generic RNN layer (``rnnkit.layers.rnn_cells``).

- ``RNN(LSTMCell/GRUCell/SimpleRNNCell)`` is the fused ``LSTM``/``GRU``/``SimpleRNN`` layer
  (bit-for-bit in float64: masks with holes, initial states, return_state, go_backwards,
  stateful, dropout with a seed);
- the step-by-step path (``RNN(StackedRNNCells([cell]))``) equals the fused path, including
  masks, ``zero_output_for_mask``, state gradients and per-sequence dropout masks (1e-12);
- a user cell written in NumPy: float64 finite differences of every gradient through
  ``RNN(user_cell)`` (masks, go_backwards, initial states, return_state; relative error
  < 1e-7), and a user cell with SimpleRNNCell's math equals the fused SimpleRNN (1e-12);
- Keras 3 parity (float32, 1e-5): ``keras.layers.RNN(keras.layers.LSTMCell(n))`` etc. and
  ``StackedRNNCells`` against ours (outputs, input/state gradients, every weight gradient), and
  direct cell calls;
- configs, serialization, model files, Bidirectional, functional models, errors.
"""
from __future__ import annotations

import numpy as np
import pytest

from rnnkit import _layouts
from rnnkit.layers import (GRU, LSTM, RNN, AbstractRNNCell, Bidirectional, Dense, GRUCell, Input, LSTMCell,
                           SimpleRNN, SimpleRNNCell, StackedRNNCells, deserialize, serialize)
from rnnkit.models import Model, RecurrentNetwork, Sequential, load_model

from helpers import mask_with_holes, numerical_grad, rel_err

N, T, C, U = 3, 6, 4, 5
EXACT = 1e-12      # float64, the same kernels in another order at most
FD_TOL = 1e-7
KERAS_TOL = 1e-5

# cell class, layer class, Keras layout name
KINDS = {"lstm": (LSTMCell, LSTM, "lstm"), "gru": (GRUCell, GRU, "gru"),
         "gru_v1": (GRUCell, GRU, "gru"), "rnn": (SimpleRNNCell, SimpleRNN, "rnn")}
EXTRA = {"gru_v1": {"reset_after": False}}


def _cell(kind, **kw):
    return KINDS[kind][0](U, dtype="float64", **EXTRA.get(kind, {}), **kw)


def _layer(kind, **kw):
    return KINDS[kind][1](U, dtype="float64", **EXTRA.get(kind, {}), **kw)


def _n_states(kind):
    return 2 if kind == "lstm" else 1


def _as_list(out):
    return out if isinstance(out, list) else [out]


def _run(layer, x, W, **kw):
    """Forward, then backward of sum(W_i * out_i): (outputs, dx, d_initial_state, grads)."""
    layer.zero_grad()
    out = _as_list(layer(x, **kw))
    d = [w for w in W] if len(out) > 1 else W[0]
    dx = layer.backward(d)
    return out, dx, layer.d_initial_state, {k: g.copy() for k, g in layer.grads.items()}


def _weights(d):
    """A layer's grads dict in its params order, keys stripped of the RNN's prefixes."""
    return {k.split("/")[-1]: v for k, v in d.items()}


def _close(a, b, tol, what=""):
    assert len(a) == len(b), what
    for i, (p, q) in enumerate(zip(a, b)):
        assert rel_err(p, q) < tol, f"{what}[{i}]: {rel_err(p, q):.2e}"


FLAGS = [dict(),
         dict(return_sequences=True),
         dict(return_sequences=True, go_backwards=True, return_state=True),
         dict(return_state=True, zero_output_for_mask=True),
         dict(return_sequences=True, zero_output_for_mask=True, go_backwards=True)]


# ---------------------------------------------------------------------------------------------
# the fused path is the layer; the step-by-step path is the fused path
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("flags", FLAGS)
@pytest.mark.parametrize("masked,with_init", [(False, False), (True, True)])
def test_fused_and_step_paths_equal_the_layer(kind, flags, masked, with_init):
    rng = np.random.default_rng(3)
    cell = _cell(kind, activation="relu" if kind == "rnn" else "tanh")
    fused = RNN(cell, **flags)
    step = RNN(StackedRNNCells([cell]), **flags)
    layer = _layer(kind, activation="relu" if kind == "rnn" else "tanh", **flags)
    assert fused.fused and not step.fused
    fused.build((None, T, C))
    step.build((None, T, C))
    layer.build((None, T, C))
    layer.set_weights([w * 1.5 for w in fused.get_weights()])
    cell.set_weights(layer.get_weights())
    assert fused.params["cell/w_ih"] is cell.params["w_ih"]            # shared, not copied
    x = rng.standard_normal((N, T, C))
    kw = {}
    if masked:
        kw["mask"] = mask_with_holes(T, N).T
    if with_init:
        kw["initial_state"] = [rng.standard_normal((N, U)) for _ in range(_n_states(kind))]
    shapes = _as_list(layer.compute_output_shape((N, T, C)))
    W = [rng.standard_normal(s) for s in shapes]
    want = _run(layer, x, W, **kw)
    for rnn in (fused, step):
        got = _run(rnn, x, W, **kw)
        _close(got[0], want[0], EXACT, "outputs")
        assert rel_err(got[1], want[1]) < EXACT
        _close(got[2], want[2], EXACT, "d_initial_state")
        g, w = _weights(got[3]), want[3]
        assert list(g) == list(w)
        _close(list(g.values()), list(w.values()), EXACT, "weight grads")


@pytest.mark.parametrize("kind", ["lstm", "gru_v1", "rnn"])
def test_stateful_and_dropout_behave_as_the_layer(kind):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((N, T, C))
    kw = dict(dropout=0.3, recurrent_dropout=0.2, seed=7)
    layer = _layer(kind, stateful=True, return_sequences=True, **kw)
    layer.build((None, T, C))
    rnns = [RNN(_cell(kind, **kw), stateful=True, return_sequences=True),
            RNN(StackedRNNCells([_cell(kind, **kw)]), stateful=True, return_sequences=True)]
    for r in rnns:
        r.build((None, T, C))
        r.set_weights(layer.get_weights())
    # two training calls (fresh masks per sequence, the same at every step), states carried
    W = rng.standard_normal((N, T, U))
    for call in range(2):
        want = _run(layer, x, [W], training=True)
        for r in rnns:
            got = _run(r, x, [W], training=True)
            assert rel_err(got[0][0], want[0][0]) < EXACT, call
            assert rel_err(got[1], want[1]) < EXACT, call
            _close(list(_weights(got[3]).values()), list(want[3].values()), EXACT)
    for r in rnns:
        _close(r.states, layer.states, EXACT, "kept states")
        r.reset_state()
        assert all(not s.any() for s in r.states)
    with pytest.raises(ValueError, match=r"a stateful layer keeps its batch size: expected 3 samples, got 2"):
        rnns[1](x[:2])


def test_dropout_masks_are_drawn_once_per_sequence_in_the_step_path():
    # no recurrence, no bias: h_t = tanh((x_t * dropout_mask) @ K), the same at every step iff
    # the step path draws one mask per sequence (Keras's semantics)
    cell = SimpleRNNCell(U, dropout=0.5, seed=1, dtype="float64", recurrent_initializer="zeros")
    rnn = RNN(StackedRNNCells([cell]), return_sequences=True)
    x = np.ones((N, T, C))
    y = rnn(x, training=True)
    np.testing.assert_array_equal(y, np.repeat(y[:, :1], T, axis=1))
    assert not np.allclose(y, rnn(x, training=False))
    assert not np.array_equal(y, rnn(x, training=True))           # a fresh mask per call


# ---------------------------------------------------------------------------------------------
# cells of your own
# ---------------------------------------------------------------------------------------------

class MinimalRNNCell(AbstractRNNCell):
    """SimpleRNNCell's math in NumPy: h' = tanh(x K + h R + b)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.add_weight("kernel", (input_shape[-1], self.units), "glorot_uniform")
        self.add_weight("recurrent_kernel", (self.units, self.units), "orthogonal")
        self.add_weight("bias", (self.units,), "zeros")

    def call(self, inputs, states, ctx, training=False):
        p = self.params
        h = np.tanh(inputs @ p["kernel"] + states[0] @ p["recurrent_kernel"] + p["bias"])
        ctx.x, ctx.h_prev, ctx.h = inputs, states[0], h
        return h, [h]

    def backprop(self, d_output, d_states, ctx):
        p = self.params
        dz = (d_output + d_states[0]) * (1 - ctx.h ** 2)
        self.accumulate_grads({"kernel": ctx.x.T @ dz, "recurrent_kernel": ctx.h_prev.T @ dz,
                               "bias": dz.sum(axis=0)})
        return dz @ p["kernel"].T, [dz @ p["recurrent_kernel"].T]

    def get_config(self):
        cfg = super().get_config()
        cfg["units"] = self.units
        return cfg


class TwoStateCell(AbstractRNNCell):
    """Two states (h [U], s [2]) and an output that is not a state: h' = tanh(x K + h R + s P),
    s' = s / 2 + h' Q, output 2 h'."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.state_size = [units, 2]
        self.output_size = units

    def build(self, input_shape):
        U2 = self.state_size[0]
        init = lambda shape, dtype: np.random.default_rng(sum(shape)).uniform(-0.6, 0.6, shape)  # noqa: E731
        for name, shape in (("K", (input_shape[-1], U2)), ("R", (U2, U2)), ("P", (2, U2)), ("Q", (U2, 2))):
            self.add_weight(name, shape, init)

    def call(self, inputs, states, ctx, training=False):
        p = self.params
        h, s = states
        h2 = np.tanh(inputs @ p["K"] + h @ p["R"] + s @ p["P"])
        s2 = s / 2 + h2 @ p["Q"]
        ctx.saved = (inputs, h, s, h2)
        return 2 * h2, [h2, s2]

    def backprop(self, d_output, d_states, ctx):
        p = self.params
        x, h, s, h2 = ctx.saved
        dh2 = 2 * d_output + d_states[0] + d_states[1] @ p["Q"].T
        dz = dh2 * (1 - h2 ** 2)
        self.accumulate_grads({"K": x.T @ dz, "R": h.T @ dz, "P": s.T @ dz, "Q": h2.T @ d_states[1]})
        return dz @ p["K"].T, [dz @ p["R"].T, d_states[1] / 2 + dz @ p["P"].T]


USER_FLAGS = [dict(return_sequences=True, return_state=True, go_backwards=True),
              dict(return_state=True),
              dict(return_sequences=True, zero_output_for_mask=True)]


@pytest.mark.parametrize("cls", [MinimalRNNCell, TwoStateCell])
@pytest.mark.parametrize("flags", USER_FLAGS)
def test_user_cell_gradients_match_finite_differences(cls, flags):
    rng = np.random.default_rng(6)
    cell = cls(U, dtype="float64")
    rnn = RNN(cell, **flags)
    x = rng.standard_normal((N, T, C))
    mask = mask_with_holes(T, N).T
    sizes = [U] if cls is MinimalRNNCell else [U, 2]
    init = [rng.standard_normal((N, s)) * 0.5 for s in sizes]
    rnn.build((None, T, C))
    for p in cell.params.values():
        p[...] = rng.uniform(-0.6, 0.6, p.shape)
    W = [rng.standard_normal(s) for s in _as_list(rnn.compute_output_shape((N, T, C)))]

    def loss():
        out = _as_list(rnn(x, mask=mask, initial_state=init))
        return float(sum((o * w).sum() for o, w in zip(out, W)))

    loss()
    rnn.zero_grad()
    dx = rnn.backward(W if len(W) > 1 else W[0])
    d_init = rnn.d_initial_state
    grads = {k: g.copy() for k, g in rnn.grads.items()}
    assert rel_err(dx, numerical_grad(loss, x)) < FD_TOL
    for d, s in zip(d_init, init):
        assert rel_err(d, numerical_grad(loss, s)) < FD_TOL
    for k, p in rnn.params.items():
        assert rel_err(grads[k], numerical_grad(loss, p)) < FD_TOL, k


@pytest.mark.parametrize("flags", FLAGS)
def test_user_cell_with_simple_rnn_math_equals_the_fused_layer(flags):
    rng = np.random.default_rng(8)
    user = RNN(MinimalRNNCell(U, dtype="float64"), **flags)
    fused = SimpleRNN(U, dtype="float64", **flags)
    user.build((None, T, C))
    fused.build((None, T, C))
    fused.set_weights(user.get_weights())
    assert not user.fused
    x = rng.standard_normal((N, T, C))
    kw = dict(mask=mask_with_holes(T, N).T, initial_state=[rng.standard_normal((N, U))])
    W = [rng.standard_normal(s) for s in _as_list(fused.compute_output_shape((N, T, C)))]
    got, want = _run(user, x, W, **kw), _run(fused, x, W, **kw)
    _close(got[0], want[0], EXACT, "outputs")
    assert rel_err(got[1], want[1]) < EXACT
    _close(got[2], want[2], EXACT, "d_initial_state")
    g = got[3]
    want_keras = _layouts.internal_to_keras("rnn", want[3]["w_ih"], want[3]["w_hh"], want[3]["b_ih"])
    _close([g["cell/kernel"], g["cell/recurrent_kernel"], g["cell/bias"]], want_keras, EXACT, "weight grads")


def test_masked_output_of_a_cell_whose_output_is_not_its_first_state_needs_zero_output():
    class Wide(MinimalRNNCell):
        output_size = U + 1

        def call(self, inputs, states, ctx, training=False):
            h, new = super().call(inputs, states, ctx, training)
            return np.concatenate([h, h[:, :1]], axis=1), new

    rnn = RNN(Wide(U, dtype="float64"))
    x = np.zeros((N, T, C))
    assert rnn(x).shape == (N, U + 1)
    with pytest.raises(ValueError, match=r"zero_output_for_mask: a masked step outputs the carried state 0 of "
                                         r"size 5, but the cell's output_size is 6"):
        rnn(x, mask=np.ones((N, T), bool))
    zero = RNN(Wide(U, dtype="float64"), zero_output_for_mask=True)
    assert zero(x, mask=np.ones((N, T), bool)).shape == (N, U + 1)


def test_user_cell_protocol_errors():
    class NoBackprop(AbstractRNNCell):
        state_size = 2

        def call(self, inputs, states, ctx, training=False):
            return states[0], states

    class BadStates(NoBackprop):
        def call(self, inputs, states, ctx, training=False):
            return states[0], [states[0], states[0]]

    x = np.zeros((N, T, C), np.float32)
    rnn = RNN(NoBackprop())
    rnn(x)
    with pytest.raises(NotImplementedError, match=r"NoBackprop does not implement backprop"):
        rnn.backward(np.zeros((N, 2), np.float32))
    with pytest.raises(ValueError, match=r"the new states of call: expected 1 array\(s\) of shapes \[\(3, 2\)\]"):
        RNN(BadStates())(x)
    with pytest.raises(TypeError, match=r"state_size: expected a positive int or a non-empty list of them"):
        RNN(AbstractRNNCell())
    with pytest.raises(TypeError, match=r"cell: expected an RNN cell .*got Dense"):
        RNN(Dense(3))


# ---------------------------------------------------------------------------------------------
# calling a cell directly
# ---------------------------------------------------------------------------------------------

def test_direct_cell_calls_states_structure_and_backward():
    rng = np.random.default_rng(10)
    cell = LSTMCell(U, dtype="float64")
    x = rng.standard_normal((N, C))
    h, c = rng.standard_normal((N, U)), rng.standard_normal((N, U))
    out, (h1, c1) = cell(x, [h, c])
    np.testing.assert_array_equal(out, h1)
    layer = LSTM(U, dtype="float64", return_state=True)
    layer.build((None, 1, C))
    layer.set_weights(cell.get_weights())
    want = layer(x[:, None], initial_state=[h, c])
    _close([out, h1, c1], want, EXACT, "one step")
    dx, (dh, dc) = cell.backward(np.ones((N, U)), [None, np.ones((N, U))])
    wdx = layer.backward([np.ones((N, U)), None, np.ones((N, U))])
    assert rel_err(dx, wdx[:, 0]) < EXACT
    _close([dh, dc], layer.d_initial_state, EXACT, "state grads")
    _close(list(cell.grads.values()), list(layer.grads.values()), EXACT, "weight grads")

    gru = GRUCell(U, dtype="float64")
    out, new = gru(x, h)                        # a bare state in, a bare state out
    assert isinstance(new, np.ndarray) and new.shape == (N, U)
    dx, dh = gru.backward(None, np.ones((N, U)))
    assert isinstance(dh, np.ndarray) and dh.shape == (N, U)
    (o1, _), ctx1 = gru.apply(x, None)          # None: zero states; apply returns the context
    gru(x * 2, h)
    dx1, (dh1,) = gru.backward(np.ones((N, U)), None, ctx=ctx1)
    gru(x, [np.zeros((N, U))])
    dx2, (dh2,) = gru.backward(np.ones((N, U)))
    np.testing.assert_allclose(dx1, dx2, rtol=0, atol=1e-14)
    assert gru.state_size == U and cell.state_size == [U, U] and cell.output_size == U


def test_direct_cell_call_with_dropout_masks_the_input_gradient():
    cell = SimpleRNNCell(U, dropout=0.5, seed=3, dtype="float64", activation="linear")
    x = np.ones((N, C))
    cell(x, training=True)
    dx, _ = cell.backward(np.ones((N, U)))
    cell(x, training=False)
    dx0, _ = cell.backward(np.ones((N, U)))
    assert np.all((dx == 0) | np.isclose(dx, 2 * dx0, rtol=1e-14, atol=0))  # inverted dropout: 0 or 2
    assert np.any(dx == 0) and np.any(dx != 0)


def test_direct_call_errors():
    cell = LSTMCell(U)
    x = np.zeros((N, C), np.float32)
    with pytest.raises(ValueError, match=r"inputs: expected 2 dimensions \(batch, features\) for one step, "
                                         r"got shape \(3, 6, 4\)"):
        cell(np.zeros((N, T, C), np.float32))
    with pytest.raises(ValueError, match=r"states: expected 2 array\(s\) of shapes \[\(3, 5\), \(3, 5\)\]"):
        cell(x, [np.zeros((N, U), np.float32)])
    with pytest.raises(ValueError, match=r"states\[1\]: expected shape \(3, 5\), got \(3, 4\)"):
        cell(x, [np.zeros((N, U)), np.zeros((N, 4))])
    with pytest.raises(RuntimeError, match=r"backward called before a forward call in this thread"):
        LSTMCell(U).backward(np.zeros((N, U)))
    cell(x)
    with pytest.raises(ValueError, match=r"inputs: expected 4 features \(the built size\), got shape \(3, 2\)"):
        cell(np.zeros((N, 2), np.float32))
    with pytest.raises(ValueError, match=r"d_states: expected 2 gradient\(s\) \(one per state\), got 1"):
        cell.backward(None, [np.zeros((N, U))])
    with pytest.raises(TypeError, match=r"a cell is not a node of a model on its own; wrap it in RNN"):
        cell(Input(shape=(C,)))
    with pytest.raises(ValueError, match=r"activation: expected one of 'tanh', 'relu', 'linear' .*got 'gelu'"):
        LSTMCell(U, activation="gelu")
    with pytest.raises(ValueError, match=r"dtype: expected the cell's dtype 'float32', got 'float64'"):
        RNN(LSTMCell(U), dtype="float64")


# ---------------------------------------------------------------------------------------------
# stacks, wrappers, models, configs
# ---------------------------------------------------------------------------------------------

def test_stacked_cells_equal_stacked_layers():
    rng = np.random.default_rng(12)
    cells = [LSTMCell(U, dtype="float64"), GRUCell(3, dtype="float64", reset_after=False)]
    rnn = RNN(cells, return_sequences=True, return_state=True)       # a list: StackedRNNCells
    assert isinstance(rnn.cell, StackedRNNCells) and rnn.cell.state_size == [[U, U], 3]
    l1 = LSTM(U, dtype="float64", return_sequences=True, return_state=True)
    l2 = GRU(3, dtype="float64", return_sequences=True, return_state=True, reset_after=False)
    rnn.build((None, T, C))
    l1.build((None, T, C))
    l2.build((None, T, U))
    rnn.set_weights([w * 2 for w in l1.get_weights() + l2.get_weights()])
    l1.set_weights(rnn.get_weights()[:3])
    l2.set_weights(rnn.get_weights()[3:])
    x = rng.standard_normal((N, T, C))
    mask = mask_with_holes(T, N).T
    out, h1, c1, h2 = rnn(x, mask=mask)
    y1, wh1, wc1 = l1(x, mask=mask)
    y2, wh2 = l2(y1, mask=mask)
    _close([out, h1, c1, h2], [y2, wh1, wc1, wh2], EXACT, "outputs")
    W = [rng.standard_normal(a.shape) for a in (out, h1, c1, h2)]
    rnn.backward(W)
    dy1 = l2.backward([W[0], W[3]])
    dx = l1.backward([dy1, W[1], W[2]])
    assert rel_err(rnn.backward(W), dx) < EXACT                     # twice: gradients accumulate
    g = rnn.grads
    for i, layer in enumerate((l1, l2)):
        for k, v in layer.grads.items():
            assert rel_err(g[f"cell/cell_{i}/{k}"] / 2, v) < EXACT


def test_bidirectional_recurrent_network_and_functional_model():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((N, T, C))
    bi_cell = Bidirectional(RNN(LSTMCell(U, dtype="float64"), return_sequences=True))
    bi_layer = Bidirectional(LSTM(U, dtype="float64", return_sequences=True))
    bi_cell.build((None, T, C))
    bi_layer.build((None, T, C))
    bi_layer.set_weights(bi_cell.get_weights())
    mask = mask_with_holes(T, N).T
    np.testing.assert_allclose(bi_cell(x, mask=mask), bi_layer(x, mask=mask), rtol=0, atol=1e-13)

    net = RecurrentNetwork([RNN(GRUCell(U, dtype="float64"), return_sequences=True)])
    full, _ = net.forward(x)
    a, state = net.forward(x[:, :2])
    b, _ = net.forward(x[:, 2:], state)
    np.testing.assert_allclose(np.concatenate([a, b], axis=1), full, rtol=0, atol=1e-13)

    def model(cells):
        inp = Input(shape=(T, C), dtype="float64")
        enc = RNN(LSTMCell(U, dtype="float64"), return_state=True) if cells else LSTM(U, return_state=True,
                                                                                      dtype="float64")
        _, h, c = enc(inp)
        dec = RNN(LSTMCell(U, dtype="float64"), return_sequences=True) if cells else \
            LSTM(U, return_sequences=True, dtype="float64")
        return Model(inp, dec(inp, initial_state=[h, c]))

    m1, m2 = model(True), model(False)
    m2.set_weights(m1.get_weights())
    np.testing.assert_allclose(m1.predict(x, verbose=0), m2.predict(x, verbose=0), rtol=0, atol=1e-13)
    for m in (m1, m2):
        m.compile(optimizer="sgd", loss="mse")
        m.fit(x, np.ones((N, T, U)), epochs=1, batch_size=N, shuffle=False, verbose=0)
    _close(m1.get_weights(), m2.get_weights(), EXACT, "trained weights (gradients through the states)")


def test_configs_serialization_and_model_files(tmp_path):
    cell = LSTMCell(4, activation="relu", recurrent_activation="hard_sigmoid", unit_forget_bias=False,
                    dropout=0.1, seed=3, name="enc_cell")
    cfg = cell.get_config()
    assert list(cfg)[:3] == ["name", "dtype", "trainable"]
    assert {k: cfg[k] for k in ("units", "activation", "recurrent_activation", "unit_forget_bias", "dropout",
                                "recurrent_dropout", "seed")} == \
        dict(units=4, activation="relu", recurrent_activation="hard_sigmoid", unit_forget_bias=False,
             dropout=0.1, recurrent_dropout=0.0, seed=3)
    assert set(GRUCell(2).get_config()) - set(cfg) == {"reset_after"}
    assert "recurrent_activation" not in SimpleRNNCell(2).get_config()
    rnn = RNN(StackedRNNCells([cell, MinimalRNNCell(3)]), return_sequences=True, go_backwards=True)
    again = deserialize(serialize(rnn))
    assert type(again.cell.cells[1]) is MinimalRNNCell and again.cell.cells[0].activation.name == "relu"
    assert again.get_config() == rnn.get_config()
    for c in (LSTMCell(3), GRUCell(3, reset_after=False), SimpleRNNCell(3, activation="linear")):
        assert deserialize(serialize(RNN(c))).get_config()["cell"] == serialize(c)

    model = Sequential([RNN(GRUCell(U), return_sequences=True, input_shape=(T, C)),
                        RNN([SimpleRNNCell(3), LSTMCell(2)]), Dense(1)])
    x = np.random.default_rng(0).standard_normal((N, T, C)).astype(np.float32)
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, np.ones((N, 1), np.float32), epochs=1, verbose=0)
    path = str(tmp_path / "cells.rnnkit")
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


# ---------------------------------------------------------------------------------------------
# Keras 3 parity
# ---------------------------------------------------------------------------------------------

KERAS_CASES = [("LSTMCell", {}), ("LSTMCell", dict(activation="relu", recurrent_activation="hard_sigmoid")),
               ("GRUCell", {}), ("GRUCell", dict(reset_after=False, activation="linear")),
               ("SimpleRNNCell", {}), ("SimpleRNNCell", dict(activation="relu"))]
KERAS_FLAGS = [("seq", dict(return_sequences=True), False, False),
               ("back_state_mask", dict(return_sequences=True, go_backwards=True, return_state=True), True, False),
               ("init_state", dict(return_state=True), False, True),
               ("zero_out", dict(return_sequences=True, zero_output_for_mask=True), True, False)]
LAYOUT = {"LSTMCell": "lstm", "GRUCell": "gru", "SimpleRNNCell": "rnn"}


def _keras_grads(cell):
    """The cell's gradients in Keras's layout and order."""
    g = cell.grads
    return _layouts.internal_to_keras(LAYOUT[type(cell).__name__], g["w_ih"], g["w_hh"], g.get("b_ih"),
                                      g.get("b_hh"), getattr(cell, "reset_after", True), True)


def _torch_loss(torch, outs, W):
    return sum((o * torch.tensor(w)).sum() for o, w in zip(outs, W))


@pytest.mark.keras
@pytest.mark.parametrize("name,extra", KERAS_CASES)
@pytest.mark.parametrize("case,flags,masked,with_init", KERAS_FLAGS)
def test_rnn_of_cell_matches_keras(keras, name, extra, case, flags, masked, with_init):
    import torch

    rng = np.random.default_rng(21)
    x = (rng.standard_normal((N, T, C)) * 1.5).astype(np.float32)
    theirs = keras.layers.RNN(getattr(keras.layers, name)(U, **extra), **flags)
    theirs.build((N, T, C))
    weights = [rng.uniform(-0.8, 0.8, tuple(v.shape)).astype(np.float32) for v in theirs.weights]
    theirs.set_weights(weights)
    cell = {"LSTMCell": LSTMCell, "GRUCell": GRUCell, "SimpleRNNCell": SimpleRNNCell}[name](U, **extra)
    mine = RNN(cell, **flags)
    mine.build((N, T, C))
    mine.set_weights(weights)

    n_states = 2 if name == "LSTMCell" else 1
    kw, tkw = {}, {}
    if masked:
        # holes anywhere; zero initial states, where Keras's torch backend and rnnkit agree on
        # the output of a masked step before any valid step
        kw["mask"] = mask_with_holes(T, N).T
        tkw["mask"] = torch.tensor(kw["mask"])
    init = [rng.standard_normal((N, U)).astype(np.float32) for _ in range(n_states)] if with_init else None
    init_t = None
    if with_init:
        kw["initial_state"] = init
        init_t = [torch.tensor(s, requires_grad=True) for s in init]
        tkw["initial_state"] = init_t
    xt = torch.tensor(x, requires_grad=True)
    want = theirs(xt, **tkw)
    want = list(want) if isinstance(want, (tuple, list)) else [want]
    got = _as_list(mine(x, training=True, **kw))
    W = [rng.standard_normal(tuple(w.shape)).astype(np.float32) for w in want]
    _torch_loss(torch, want, W).backward()
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.detach().numpy(), rtol=KERAS_TOL, atol=KERAS_TOL)

    mine.zero_grad()
    dx = mine.backward(W if len(W) > 1 else W[0])
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=KERAS_TOL, atol=KERAS_TOL)
    if with_init:
        for d, t in zip(mine.d_initial_state, init_t):
            np.testing.assert_allclose(d, t.grad.numpy(), rtol=KERAS_TOL, atol=KERAS_TOL)
    k_grads = [v.value.grad.detach().numpy() for v in theirs.trainable_weights]
    m_grads = _keras_grads(cell)
    assert len(m_grads) == len(k_grads)
    for a, b in zip(m_grads, k_grads):
        np.testing.assert_allclose(a, b, rtol=KERAS_TOL, atol=KERAS_TOL * max(1.0, float(np.max(np.abs(b)))))


@pytest.mark.keras
@pytest.mark.parametrize("name,extra", KERAS_CASES)
def test_direct_cell_call_matches_keras(keras, name, extra):
    import torch

    rng = np.random.default_rng(22)
    theirs = getattr(keras.layers, name)(U, **extra)
    theirs.build((N, C))
    weights = [rng.uniform(-0.8, 0.8, tuple(v.shape)).astype(np.float32) for v in theirs.weights]
    theirs.set_weights(weights)
    mine = {"LSTMCell": LSTMCell, "GRUCell": GRUCell, "SimpleRNNCell": SimpleRNNCell}[name](U, **extra)
    mine.build((N, C))
    mine.set_weights(weights)
    assert mine.state_size == theirs.state_size and mine.output_size == theirs.output_size
    k_cfg = theirs.get_config()
    m_cfg = mine.get_config()
    assert set(k_cfg) - set(m_cfg) == {f"{w}_{kind}" for w in ("kernel", "recurrent", "bias")
                                       for kind in ("regularizer", "constraint")}
    for k in set(m_cfg) - {"name", "dtype", "trainable", "kernel_initializer", "recurrent_initializer",
                           "bias_initializer"}:
        assert m_cfg[k] == k_cfg[k], k

    x = rng.standard_normal((N, C)).astype(np.float32)
    states = [rng.standard_normal((N, U)).astype(np.float32) for _ in range(2 if name == "LSTMCell" else 1)]
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    out_t, new_t = theirs(xt, st)
    out, new = mine(x, states)
    want = [out_t] + list(new_t)
    got = [out] + list(new)
    W = [rng.standard_normal((N, U)).astype(np.float32) for _ in want]
    _torch_loss(torch, want, W).backward()
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.detach().numpy(), rtol=KERAS_TOL, atol=KERAS_TOL)
    dx, d_states = mine.backward(W[0], W[1:])
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=KERAS_TOL, atol=KERAS_TOL)
    for d, t in zip(d_states, st):
        np.testing.assert_allclose(d, t.grad.numpy(), rtol=KERAS_TOL, atol=KERAS_TOL)
    for a, v in zip(_keras_grads(mine), theirs.trainable_weights):
        b = v.value.grad.detach().numpy()
        np.testing.assert_allclose(a, b, rtol=KERAS_TOL, atol=KERAS_TOL * max(1.0, float(np.max(np.abs(b)))))


@pytest.mark.keras
def test_stacked_cells_match_keras(keras):
    import torch

    rng = np.random.default_rng(23)
    x = rng.standard_normal((N, T, C)).astype(np.float32)
    theirs = keras.layers.RNN(keras.layers.StackedRNNCells([keras.layers.GRUCell(U), keras.layers.LSTMCell(3)]),
                              return_sequences=True, return_state=True)
    theirs.build((N, T, C))
    weights = [rng.uniform(-0.8, 0.8, tuple(v.shape)).astype(np.float32) for v in theirs.weights]
    theirs.set_weights(weights)
    cells = [GRUCell(U), LSTMCell(3)]
    mine = RNN(StackedRNNCells(cells), return_sequences=True, return_state=True)
    mine.build((N, T, C))
    mine.set_weights(weights)
    mask = mask_with_holes(T, N).T
    xt = torch.tensor(x, requires_grad=True)
    want = theirs(xt, mask=torch.tensor(mask))
    flat = [want[0], *want[1], *want[2]]                    # Keras nests the states per cell
    got = mine(x, mask=mask)
    W = [rng.standard_normal(tuple(w.shape)).astype(np.float32) for w in flat]
    _torch_loss(torch, flat, W).backward()
    for g, w in zip(got, flat):
        np.testing.assert_allclose(g, w.detach().numpy(), rtol=KERAS_TOL, atol=KERAS_TOL)
    dx = mine.backward(W)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=KERAS_TOL, atol=KERAS_TOL)
    m_grads = _keras_grads(cells[0]) + _keras_grads(cells[1])
    for a, v in zip(m_grads, theirs.trainable_weights):
        b = v.value.grad.detach().numpy()
        np.testing.assert_allclose(a, b, rtol=KERAS_TOL, atol=KERAS_TOL * max(1.0, float(np.max(np.abs(b)))))
