"""LayerNorm LSTM and GRU (haste's formulation) in the fused kernels.

- forward against a float64 NumPy reference of the published equations (1e-12), float32 (1e-5);
- float64 finite differences of every gradient, gains and biases included (relative error
  < 1e-6), with masks with holes, reverse, recurrent dropout and each way of sharing the time loop;
- an autograd reference written in torch ops (float64, 1e-10), where torch is installed;
- the Keras-style layers with ``layer_norm=True``: weights in Keras's gate order, configs, a
  training run that lowers the loss, save/load.
"""
from __future__ import annotations

import numpy as np
import pytest

import rnnkit
from rnnkit import _recurrent
from rnnkit import functional as F
from rnnkit.layers import GRU, LSTM, Dense
from rnnkit.models import Sequential, load_model

from helpers import mask_with_holes, numerical_grad, rel_err

EPS = 1e-5


def _ln(v):
    m = v.mean(-1, keepdims=True)
    return (v - m) / np.sqrt(((v - m) ** 2).mean(-1, keepdims=True) + EPS)


def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def reference(cell, x, h0, c0, w):
    """NumPy float64 forward (no masks, forward order)."""
    T = x.shape[0]
    H = w["w_hh"].shape[1]
    h, c = h0.copy(), (None if c0 is None else c0.copy())
    ys = []
    for t in range(T):
        if cell == "lstm_ln":
            a = w["gamma_x"] * _ln(x[t] @ w["w_ih"].T) + w["gamma_h"] * _ln(h @ w["w_hh"].T) + w["b_ih"] + w["b_hh"]
            i, f, g, o = _sig(a[:, :H]), _sig(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), _sig(a[:, 3 * H:])
            c = f * c + i * g
            h = o * np.tanh(w["gamma_c"] * _ln(c) + w["beta_c"])
        else:
            X = w["gamma_x"] * _ln(x[t] @ w["w_ih"].T) + w["b_ih"]
            R = w["gamma_h"] * _ln(h @ w["w_hh"].T) + w["b_hh"]
            r, z = _sig(X[:, :H] + R[:, :H]), _sig(X[:, H:2 * H] + R[:, H:2 * H])
            n = np.tanh(X[:, 2 * H:] + r * R[:, 2 * H:])
            h = (1 - z) * n + z * h
        ys.append(h)
    return np.stack(ys), h, c


def _setup(cell, rng, T=4, N=3, C=3, H=5):
    G = 4 if cell == "lstm_ln" else 3
    u = lambda lo, hi, *s: rng.uniform(lo, hi, s)  # noqa: E731
    w = {"w_ih": u(-0.5, 0.5, G * H, C), "w_hh": u(-0.5, 0.5, G * H, H), "b_ih": u(-0.5, 0.5, G * H),
         "b_hh": u(-0.5, 0.5, G * H), "gamma_x": u(0.5, 1.5, G * H), "gamma_h": u(0.5, 1.5, G * H)}
    if cell == "lstm_ln":
        w["gamma_c"], w["beta_c"] = u(0.5, 1.5, H), u(-0.5, 0.5, H)
    x = rng.standard_normal((T, N, C))
    h0 = rng.standard_normal((N, H)) * 0.5
    c0 = rng.standard_normal((N, H)) * 0.5 if cell == "lstm_ln" else None
    return x, h0, c0, w


def _run(cell, x, h0, c0, w, **kw):
    return _recurrent.forward(cell, x, w, [h0, c0] if cell == "lstm_ln" else [h0], **kw)


@pytest.mark.parametrize("cell", ["lstm_ln", "gru_ln"])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_forward_matches_reference(cell, dtype, tol):
    x, h0, c0, w = _setup(cell, np.random.default_rng(0))
    cast = lambda a: None if a is None else a.astype(dtype)  # noqa: E731
    run = _run(cell, cast(x), cast(h0), cast(c0), {k: cast(v) for k, v in w.items()})
    ry, rh, rc = reference(cell, x, h0, c0, w)
    np.testing.assert_allclose(run.y, ry, rtol=tol, atol=tol)
    np.testing.assert_allclose(run.finals[0], rh, rtol=tol, atol=tol)
    if rc is not None:
        np.testing.assert_allclose(run.finals[1], rc, rtol=tol, atol=tol)


@pytest.mark.parametrize("plan", ["serial", "rows", "columns"])
@pytest.mark.parametrize("cell", ["lstm_ln", "gru_ln"])
def test_gradients_match_finite_differences(cell, plan, restore_threads):
    rnnkit.set_num_threads(2)
    rnnkit._core._set_loop_plan(plan)
    try:
        rng = np.random.default_rng(1)
        x, h0, c0, w = _setup(cell, rng, T=4, N=8, C=3, H=32)
        T, N = x.shape[:2]
        kw = dict(mask=mask_with_holes(T, N), reverse=True, zero_output=True,
                  rd=(rng.random((N, 32)) < 0.7) / 0.7)
        run = _run(cell, x, h0, c0, w, **kw)
        wy = rng.standard_normal(run.y.shape)
        wf = [rng.standard_normal(f.shape) for f in run.finals]
        dx, d_init, grads = _recurrent.backward(cell, run.cache, wy, wf)

        def loss():
            r = _run(cell, x, h0, c0, w, **kw)
            return float(np.sum(r.y * wy) + sum(np.sum(a * b) for a, b in zip(r.finals, wf)))

        checks = [("x", x, dx), ("h0", h0, d_init[0])] + [(k, w[k], grads[k]) for k in w]
        if c0 is not None:
            checks.append(("c0", c0, d_init[1]))
        for name, arr, g in checks:
            err = rel_err(g, numerical_grad(loss, arr, 1e-6))
            assert err < 1e-6, f"{cell}/{plan}: d{name} relative error {err:.2e}"
    finally:
        rnnkit._core._set_loop_plan("auto")


@pytest.mark.torch
@pytest.mark.parametrize("cell", ["lstm_ln", "gru_ln"])
def test_matches_a_torch_autograd_reference(cell):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x, h0, c0, w = _setup(cell, rng, T=5, N=4, C=3, H=6)
    tw = {k: torch.tensor(v, requires_grad=True) for k, v in w.items()}
    tx, th0 = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    tc0 = None if c0 is None else torch.tensor(c0, requires_grad=True)
    H = 6
    ln = lambda v: torch.nn.functional.layer_norm(v, v.shape[-1:], eps=EPS)  # noqa: E731
    h, c, ys = th0, tc0, []
    for t in range(x.shape[0]):
        if cell == "lstm_ln":
            a = tw["gamma_x"] * ln(tx[t] @ tw["w_ih"].T) + tw["gamma_h"] * ln(h @ tw["w_hh"].T) + tw["b_ih"] + tw["b_hh"]
            i, f, g, o = a[:, :H].sigmoid(), a[:, H:2 * H].sigmoid(), a[:, 2 * H:3 * H].tanh(), a[:, 3 * H:].sigmoid()
            c = f * c + i * g
            h = o * torch.tanh(tw["gamma_c"] * ln(c) + tw["beta_c"])
        else:
            X = tw["gamma_x"] * ln(tx[t] @ tw["w_ih"].T) + tw["b_ih"]
            R = tw["gamma_h"] * ln(h @ tw["w_hh"].T) + tw["b_hh"]
            r, z = (X[:, :H] + R[:, :H]).sigmoid(), (X[:, H:2 * H] + R[:, H:2 * H]).sigmoid()
            n = torch.tanh(X[:, 2 * H:] + r * R[:, 2 * H:])
            h = (1 - z) * n + z * h
        ys.append(h)
    y = torch.stack(ys)
    wy = rng.standard_normal(tuple(y.shape))
    (y * torch.tensor(wy)).sum().backward()
    run = _run(cell, x, h0, c0, w)
    np.testing.assert_allclose(run.y, y.detach().numpy(), rtol=1e-10, atol=1e-12)
    dx, d_init, grads = _recurrent.backward(cell, run.cache, wy)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d_init[0], th0.grad.numpy(), rtol=1e-10, atol=1e-12)
    for k, v in tw.items():
        np.testing.assert_allclose(grads[k], v.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_layer(cls, tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 12, 3)).astype(np.float32)
    y = (x[:, :, 0].sum(axis=1, keepdims=True) > 0).astype(np.float32)
    layer = cls(8, layer_norm=True)
    model = Sequential([layer, Dense(1, activation="sigmoid")])
    model.build((None, 12, 3))
    names = ["kernel", "recurrent_kernel", "bias", "gamma_x", "gamma_h"] + (["gamma_c", "beta_c"] if cls is LSTM else [])
    weights = layer.get_weights()
    assert len(weights) == len(names)
    G = 4 if cls is LSTM else 3
    assert weights[3].shape == (G * 8,) and np.all(weights[3] == 1)
    # set_weights round-trips, and the Keras gate order of the gains is honoured
    new = [rng.uniform(0.5, 1.5, wt.shape).astype(np.float32) for wt in weights]
    layer.set_weights(new)
    for a, b in zip(layer.get_weights(), new):
        np.testing.assert_array_equal(a, b)
    assert cls.from_config(layer.get_config()).layer_norm
    model.compile(optimizer=rnnkit.optimizers.Adam(0.02), loss="binary_crossentropy")
    hist = model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    assert hist.history["loss"][-1] < 0.7 * hist.history["loss"][0]
    path = tmp_path / "m.safetensors"
    model.save(path)
    np.testing.assert_array_equal(load_model(path).predict(x, verbose=0), model.predict(x, verbose=0))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="layer_norm: the LayerNorm GRU has PyTorch's form only"):
        GRU(3, layer_norm=True, reset_after=False)
    with pytest.raises(ValueError, match="zoneout, zoneout_cell: the LayerNorm LSTM has no zoneout"):
        LSTM(3, layer_norm=True, zoneout=0.1)
    x, h0, c0, w = _setup("lstm_ln", np.random.default_rng(4))
    with pytest.raises(ValueError, match=r"gamma_c: expected shape \(5,\)"):
        F.layernorm_lstm_forward(x, h0, c0, w["w_ih"], w["w_hh"], gamma_c=np.ones(4))


@pytest.mark.parametrize("cell", ["lstm_ln", "gru_ln"])
def test_stream_matches_whole_sequence(cell):
    from rnnkit import streaming

    x, h0, c0, w = _setup(cell, np.random.default_rng(5), T=7, N=2, C=3, H=6)
    x32 = x.astype(np.float32)
    w32 = {k: v.astype(np.float32) for k, v in w.items()}
    y = _run(cell, x32, None, None, w32).y
    cls = streaming.LSTMStream if cell == "lstm_ln" else streaming.GRUStream
    s = cls(**w32, batch_size=2)
    got = np.stack([s.step(x32[t]) for t in range(3)] + list(s.run(x32[3:])))
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="gamma_x, gamma_h"):
        cls(w32["w_ih"], w32["w_hh"], gamma_x=w32["gamma_x"], batch_size=2)
