"""Zoneout (Krueger et al. 2016) in the fused kernels: LSTM (h and c, with and without a
projection) and GRU (both forms).

- forward against a NumPy reference of the published equations, with training masks and with the
  inference constant (float64 1e-12);
- float64 finite differences of every gradient with fixed masks (relative error < 1e-6), with
  masks with holes, reverse, recurrent dropout and each way of sharing the time loop;
- the layers: training draws fresh masks (outputs differ between calls, gradients match the
  kernels'), inference uses the expectation, configs round-trip, streams use the expectation;
- errors name the argument.
"""
from __future__ import annotations

import numpy as np
import pytest

import rnnkit
from rnnkit import _recurrent, streaming
from rnnkit import functional as F
from rnnkit.layers import GRU, LSTM

from helpers import mask_with_holes, numerical_grad, rel_err


def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def reference(cell, x, h0, c0, w, zh, zc=None):
    """NumPy forward: zh, zc are [T, N, H] arrays or constants (no masks, forward order)."""
    T, N, _ = x.shape
    w = {k: (0.0 if v is None and k in ("b_ih", "b_hh") else v) for k, v in w.items()}
    h, c = h0.copy(), (None if c0 is None else c0.copy())
    H = w["w_ih"].shape[0] // (4 if cell == "lstm" else 3)
    ys = []
    for t in range(T):
        z_h = zh[t] if isinstance(zh, np.ndarray) else zh
        gx = x[t] @ w["w_ih"].T + w["b_ih"]
        if cell == "lstm":
            g = gx + h @ w["w_hh"].T + w["b_hh"]
            i, f, gg, o = _sig(g[:, :H]), _sig(g[:, H:2 * H]), np.tanh(g[:, 2 * H:3 * H]), _sig(g[:, 3 * H:])
            c_new = f * c + i * gg
            h_new = o * np.tanh(c_new)
            if w.get("w_hr") is not None:
                h_new = h_new @ w["w_hr"].T
            z_c = zc[t] if isinstance(zc, np.ndarray) else zc
            c = c_new + z_c * (c - c_new)
        elif cell == "gru":
            gh = h @ w["w_hh"].T + w["b_hh"]
            r, z = _sig(gx[:, :H] + gh[:, :H]), _sig(gx[:, H:2 * H] + gh[:, H:2 * H])
            n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
            h_new = (1 - z) * n + z * h
        else:  # gru_v1
            rz = _sig(gx[:, :2 * H] + h @ w["w_hh"][:2 * H].T)
            r, z = rz[:, :H], rz[:, H:]
            n = np.tanh(gx[:, 2 * H:] + (r * h) @ w["w_hh"][2 * H:].T)
            h_new = (1 - z) * n + z * h
        h = h_new + z_h * (h - h_new)
        ys.append(h)
    return np.stack(ys), h, c


def _setup(cell, rng, T=4, N=3, C=2, H=5, P=0):
    G = 4 if cell == "lstm" else 3
    u = lambda *s: rng.uniform(-0.5, 0.5, s)  # noqa: E731
    Hs = P or H
    w = {"w_ih": u(G * H, C), "w_hh": u(G * H, Hs), "b_ih": u(G * H),
         "b_hh": None if cell == "gru_v1" else u(G * H)}
    if P:
        w["w_hr"] = u(P, H)
    x = rng.standard_normal((T, N, C))
    h0 = rng.standard_normal((N, Hs)) * 0.5
    c0 = rng.standard_normal((N, H)) * 0.5 if cell == "lstm" else None
    return x, h0, c0, w


def _run(cell, x, h0, c0, w, **kw):
    init = [h0, c0] if cell == "lstm" else [h0]
    return _recurrent.forward(cell, x, w, init, **kw)


CASES = [("lstm", 0), ("lstm", 3), ("gru", 0), ("gru_v1", 0)]


@pytest.mark.parametrize("cell,P", CASES)
@pytest.mark.parametrize("training", [True, False])
def test_forward_matches_reference(cell, P, training):
    rng = np.random.default_rng(1)
    x, h0, c0, w = _setup(cell, rng, P=P)
    T, N = x.shape[:2]
    H = w["w_ih"].shape[0] // (4 if cell == "lstm" else 3)
    if training:
        zh = (rng.random((T, N, P or H)) < 0.3).astype(float)
        zc = (rng.random((T, N, H)) < 0.5).astype(float) if cell == "lstm" else None
    else:
        zh, zc = 0.3, (0.5 if cell == "lstm" else None)
    run = _run(cell, x, h0, c0, w, zoneout_h=zh, zoneout_c=zc)
    ry, rh, rc = reference(cell, x, h0, c0, w, zh, zc)
    np.testing.assert_allclose(run.y, ry, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run.finals[0], rh, rtol=1e-12, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(run.finals[1], rc, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("plan", ["serial", "rows", "columns"])
@pytest.mark.parametrize("cell,P", CASES)
def test_gradients_match_finite_differences(cell, P, plan, restore_threads):
    """Fixed masks; masks with holes, reverse and recurrent dropout; H = 32 so that both parallel
    plans split the products on 2 threads."""
    rnnkit.set_num_threads(2)
    rnnkit._core._set_loop_plan(plan)
    try:
        rng = np.random.default_rng(2)
        x, h0, c0, w = _setup(cell, rng, T=4, N=8, C=3, H=32, P=20 if P else 0)
        T, N = x.shape[:2]
        H = w["w_ih"].shape[0] // (4 if cell == "lstm" else 3)
        Hs = h0.shape[1]
        kw = dict(zoneout_h=(rng.random((T, N, Hs)) < 0.3).astype(float),
                  mask=mask_with_holes(T, N), reverse=True, zero_output=True,
                  rd=(rng.random((N, Hs)) < 0.7) / 0.7)
        if cell == "lstm":
            kw["zoneout_c"] = (rng.random((T, N, H)) < 0.5).astype(float)
        run = _run(cell, x, h0, c0, w, **kw)
        wy = rng.standard_normal(run.y.shape)
        wf = [rng.standard_normal(f.shape) for f in run.finals]
        dx, d_init, grads = _recurrent.backward(cell, run.cache, wy, wf)

        def loss():
            r = _run(cell, x, h0, c0, w, **kw)
            return float(np.sum(r.y * wy) + sum(np.sum(a * b) for a, b in zip(r.finals, wf)))

        checks = [("x", x, dx), ("h0", h0, d_init[0])] + [(k, w[k], grads[k]) for k in w if w[k] is not None]
        if cell == "lstm":
            checks.append(("c0", c0, d_init[1]))
        for name, arr, g in checks:
            err = rel_err(g, numerical_grad(loss, arr, 1e-6))
            assert err < 1e-6, f"{cell}/P={P}/{plan}: d{name} relative error {err:.2e}"
    finally:
        rnnkit._core._set_loop_plan("auto")


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_layer_trains_with_masks_and_infers_with_the_expectation(cls):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6, 3))
    kw = dict(zoneout=0.3, **({"zoneout_cell": 0.4} if cls is LSTM else {}))
    layer = cls(5, return_sequences=True, dtype="float64", seed=0, **kw)
    y1, y2 = layer(x, training=True), layer(x, training=True)
    assert not np.allclose(y1, y2)  # fresh masks every call
    plain = cls(5, return_sequences=True, dtype="float64")
    plain.build(x.shape)
    layer.set_weights(plain.get_weights())
    # inference: the kernel with the rates as constants, i.e. the reference's expectation
    cell = "lstm" if cls is LSTM else "gru"
    w = layer.kernel_weights()
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    N, H = x.shape[0], 5
    ry, _, _ = reference(cell, xt, np.zeros((N, H)), np.zeros((N, H)) if cls is LSTM else None, w,
                         0.3, 0.4 if cls is LSTM else None)
    np.testing.assert_allclose(layer(x, training=False), ry.transpose(1, 0, 2), rtol=1e-12, atol=1e-12)
    assert not np.allclose(layer(x, training=False), plain(x))
    # zoneout 0 is the plain layer
    assert cls.from_config({**layer.get_config(), "zoneout": 0.0, "zoneout_cell": 0.0}
                           if cls is LSTM else {**layer.get_config(), "zoneout": 0.0}).zoneout == 0.0


def test_layer_gradients_match_finite_differences_with_its_own_masks():
    """A training call's backward uses that call's masks: with the layer's generator reset to the
    same state before each call, the loss is a fixed function of the weights."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 2))
    layer = LSTM(4, return_sequences=True, dtype="float64", zoneout=0.3, zoneout_cell=0.5, seed=1)
    layer.build(x.shape)
    W = rng.standard_normal((3, 5, 4))
    state = layer.rng.bit_generator.state
    y, ctx = layer.apply(x, training=True)
    layer.zero_grad()
    layer.backward(W, ctx)

    def loss():
        layer.rng.bit_generator.state = state
        return float(np.sum(layer.apply(x, training=True)[0] * W))

    for k, p in layer.params.items():
        err = rel_err(layer.grads[k], numerical_grad(loss, p, 1e-6))
        assert err < 1e-6, f"{k}: relative error {err:.2e}"


def test_streams_use_the_expectation():
    rng = np.random.default_rng(5)
    x, h0, c0, w = _setup("lstm", rng, T=6, N=2, C=3, H=7)
    x32 = x.astype(np.float32)
    w32 = {k: v.astype(np.float32) for k, v in w.items()}
    y = _run("lstm", x32, None, None, w32, zoneout_h=0.2, zoneout_c=0.6).y
    s = streaming.LSTMStream(**w32, batch_size=2, zoneout=0.2, zoneout_cell=0.6)
    np.testing.assert_allclose(np.stack([s.step(x32[t]) for t in range(6)]), y, rtol=1e-6, atol=1e-6)
    xg, _, _, wg = _setup("gru", rng, T=6, N=2, C=3, H=7)
    wg32 = {k: v.astype(np.float32) for k, v in wg.items()}
    yg = _run("gru", xg.astype(np.float32), None, None, wg32, zoneout_h=0.4).y
    sg = streaming.GRUStream(**wg32, batch_size=2, zoneout=0.4)
    np.testing.assert_allclose(sg.run(xg.astype(np.float32)), yg, rtol=1e-6, atol=1e-6)


def test_errors_name_the_argument():
    rng = np.random.default_rng(6)
    x, h0, c0, w = _setup("lstm", rng)
    with pytest.raises(ValueError, match=r"zoneout_h: expected a zoneout probability in \[0, 1\) or a mask array, got 1.0"):
        F.lstm_forward(x, h0, c0, **w, zoneout_h=1.0)
    with pytest.raises(ValueError, match=r"zoneout_c: expected shape \(4, 3, 5\)"):
        F.lstm_forward(x, h0, c0, **w, zoneout_c=np.zeros((4, 3, 4)))
    with pytest.raises(ValueError, match=r"zoneout_h: expected mask values in \[0, 1\]"):
        F.lstm_forward(x, h0, c0, **w, zoneout_h=np.full((4, 3, 5), 2.0))
    with pytest.raises(ValueError, match=r"zoneout: expected a float in \[0, 1\), got 1.5"):
        LSTM(3, zoneout=1.5)
    with pytest.raises(ValueError, match=r"zoneout_cell: expected a float in \[0, 1\), got -0.1"):
        LSTM(3, zoneout_cell=-0.1)
    with pytest.raises(TypeError, match="zoneout_cell"):
        GRU(3, zoneout_cell=0.1)
    with pytest.raises(ValueError, match="zoneout: the gru cell has no zoneout of c"):
        _recurrent.forward("gru", x, {"w_ih": np.zeros((15, 2)), "w_hh": np.zeros((15, 5))}, zoneout_c=0.1)
