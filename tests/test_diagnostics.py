"""rnnkit.diagnostics: ‖dL/dh_t‖ per step from the backward kernels' reverse loop.

- The kernels' ``dh_norms`` output equals the norm of the true dL/dh_t, checked with float64 finite
  differences: L = Σ_t <y_t, W_t> + <h_T, W_h>, perturbing the state after step t (it is output
  y_t and the next steps' initial state), for every cell and every step and sample (1e-6).
- ``gradient_flow`` on a model: the last step's norm is ‖dL/d(output)‖; the loss is the batch's;
  nothing is recorded outside the call; the Elman RNN's gradient vanishes on a long sequence
  while an LSTM's (forget gate biased open) does not; the plot is written.
"""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from rnnkit import _recurrent, diagnostics
from rnnkit._recording import gradient_flow_recorder
from rnnkit.layers import LSTM, Dense, SimpleRNN
from rnnkit.models import Sequential

from helpers import numerical_grad

CELLS = {"rnn": 1, "lstm": 4, "gru": 3, "gru_v1": 3, "lstm_ln": 4, "gru_ln": 3}


def _weights(rng, cell, C, H):
    G = CELLS[cell]
    w = {"w_ih": rng.uniform(-0.6, 0.6, (G * H, C)), "w_hh": rng.uniform(-0.6, 0.6, (G * H, H)),
         "b_ih": rng.uniform(-0.3, 0.3, G * H), "b_hh": None if cell == "gru_v1" else rng.uniform(-0.3, 0.3, G * H)}
    if cell.endswith("_ln"):
        w["gamma_x"], w["gamma_h"] = rng.uniform(0.5, 1.5, G * H), rng.uniform(0.5, 1.5, G * H)
        if cell == "lstm_ln":
            w["gamma_c"], w["beta_c"] = rng.uniform(0.5, 1.5, H), rng.uniform(-0.3, 0.3, H)
    return w


@pytest.mark.parametrize("cell", list(CELLS))
def test_kernel_dh_norms_match_finite_differences(cell):
    rng = np.random.default_rng(0)
    T, N, C, H = 5, 3, 2, 4
    x = rng.standard_normal((T, N, C))
    w = _weights(rng, cell, C, H)
    lstm = cell.startswith("lstm")
    W = rng.standard_normal((T, N, H))
    Wh = rng.standard_normal((N, H))
    run = _recurrent.forward(cell, x, w)
    norms = np.empty((T, N))
    _recurrent.backward(cell, run.cache, W, [Wh] + ([None] if lstm else []), dh_norms=norms)

    S = run.cache.S                       # [T+1, N, H]: S[t+1] is the state after step t
    Cs = run.cache.c_states if lstm else None
    for t in range(T):
        h_t = S[t + 1].copy()

        def loss():
            val = float(np.sum(W[:t] * run.y[:t]) + np.sum(W[t] * h_t))
            if t == T - 1:
                return val + float(np.sum(Wh * h_t))
            init = [h_t, Cs[t + 1]] if lstm else [h_t]
            suffix = _recurrent.forward(cell, x[t + 1:], w, init)
            return val + float(np.sum(W[t + 1:] * suffix.y) + np.sum(Wh * suffix.finals[0]))

        g = numerical_grad(loss, h_t, 1e-6)
        np.testing.assert_allclose(norms[t], np.linalg.norm(g, axis=1), rtol=1e-6, atol=1e-9,
                                   err_msg=f"{cell}: step {t}")


def test_gradient_flow_on_a_model(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 12, 3))
    y = rng.standard_normal((16, 1))
    model = Sequential([LSTM(8, input_shape=(12, 3), dtype="float64"), Dense(1, dtype="float64")])
    model.compile(optimizer="sgd", loss="mse")
    before = [w.copy() for w in model.get_weights()]
    flow = diagnostics.gradient_flow(model, x, y, training_mode=False)
    assert gradient_flow_recorder() is None            # nothing recorded outside the call
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)            # no update
    assert flow.loss == pytest.approx(model.test_on_batch(x, y), rel=1e-12)
    lf = flow.layers[model.layers[0].name]
    assert lf.dh_norm.shape == (12,) and lf.dh_norm_per_sample.shape == (12, 16)
    # dL/dh_T is dL/d(output) = (2/n) (pred - y) W_dense^T per sample
    pred = model.predict(x, verbose=0)
    kernel = model.layers[1].get_weights()[0]
    want = np.linalg.norm((2.0 / 16) * (pred - y) @ kernel.T, axis=1)
    np.testing.assert_allclose(lf.dh_norm_per_sample[-1], want, rtol=1e-10)
    assert set(lf.weight_grad_norms) == set(model.layers[0].grads)
    assert model.layers[1].name in flow.other_weight_grad_norms
    if importlib.util.find_spec("matplotlib") is not None:  # the examples extra brings it
        diagnostics.plot_gradient_flow({"LSTM": flow}, path=str(tmp_path / "flow.png"))
        assert (tmp_path / "flow.png").stat().st_size > 1000


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib raises ImportError
    with pytest.raises(ImportError, match="matplotlib"):
        diagnostics.plot_gradient_flow({})


def test_rnn_gradient_vanishes_and_lstm_keeps_it():
    """T = 100, last-step loss: ‖dL/dh_1‖ / ‖dL/dh_T‖ collapses for a tanh RNN (recurrent
    weights of spectral radius below 1), and not for an LSTM whose forget gates start open."""
    rng = np.random.default_rng(2)
    T = 100
    x = rng.standard_normal((32, T, 2))
    y = rng.standard_normal((32, 1))
    ratios = {}
    for cls, kw in ((SimpleRNN, {}), (LSTM, {"bias_initializer": "zeros"})):
        layer = cls(16, input_shape=(T, 2), dtype="float64", **kw)
        model = Sequential([layer, Dense(1, dtype="float64")])
        model.compile(optimizer="sgd", loss="mse")
        if cls is LSTM:  # forget gate fully open (bias 5), other gates as initialised
            wts = layer.get_weights()
            wts[2][16:32] = 5.0
            layer.set_weights(wts)
        else:
            wts = layer.get_weights()
            wts[1] *= 0.5  # recurrent kernel of spectral radius 0.5
            layer.set_weights(wts)
        ratios[cls.__name__] = diagnostics.gradient_flow(model, x, y).layers[layer.name].ratio_first_to_last()
    assert ratios["SimpleRNN"] < 1e-10
    assert ratios["LSTM"] > 1e-3
