"""Recurrent cells with non-default activations, all in the fused kernels: an activation φ in
(tanh, relu, linear) and, for LSTM and GRU, a recurrent activation σ in (sigmoid, hard_sigmoid),
Keras's ``activation``/``recurrent_activation``.

- forward against a NumPy reference (float64 1e-12, float32 1e-5), on both loop plans;
- float64 finite differences of every gradient (relative error < 1e-6), with seeds chosen so that
  no pre-activation lies within 1e-3 of a kink (relu at 0, hard_sigmoid at ±3);
- the NumPy ``reset_after=False`` GRU with the same activations;
- streams with activations equal the whole-sequence kernels;
- Keras 3 parity of the layers' outputs and of every weight gradient (float32, 1e-5);
- clear errors for the activations the kernels do not compute.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import rnnkit
from rnnkit import _layouts, _recurrent, streaming
from rnnkit import functional as F
from rnnkit.layers import GRU, LSTM, SimpleRNN

from helpers import mask_with_holes, numerical_grad, rel_err

PHIS = ("tanh", "relu", "linear")
SIGMAS = ("sigmoid", "hard_sigmoid")
GATES = {"rnn": 1, "lstm": 4, "gru": 3, "gru_v1": 3}
KINK_MARGIN = 1e-3
GRAD_TOL = 1e-6

ACT = {
    "tanh": np.tanh,
    "relu": lambda v: np.maximum(v, 0.0),
    "linear": lambda v: v,
    "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
    "hard_sigmoid": lambda v: np.clip(v / 6.0 + 0.5, 0.0, 1.0),
}
KINKS = {"tanh": (), "linear": (), "sigmoid": (), "relu": (0.0,), "hard_sigmoid": (-3.0, 3.0)}


def _margin(values, name):
    """Distance of the values to the kinks of activation ``name`` (inf without kinks)."""
    v = np.concatenate([np.ravel(a) for a in values]) if values else np.zeros(0)
    return min((np.min(np.abs(v - k)) for k in KINKS[name]), default=np.inf)


def reference(cell, x, h0, c0, p, phi, sig, mask=None, reverse=False):
    """NumPy float64 forward in PyTorch's layout. Returns (y, h_n, c_n, margin) where margin is
    the smallest distance of a pre-activation (or, for LSTM, of c_t under φ) to a kink."""
    T, N, _ = x.shape
    H = p["w_hh"].shape[1]
    f, s = ACT[phi], ACT[sig]
    h = np.zeros((N, H)) if h0 is None else h0.copy()
    c = np.zeros((N, H)) if c0 is None else c0.copy()
    y = np.zeros((T, N, H))
    phi_in, sig_in = [], []
    b_ih = 0 if p.get("b_ih") is None else p["b_ih"]
    b_hh = 0 if p.get("b_hh") is None else p["b_hh"]
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        gx = x[t] @ p["w_ih"].T + b_ih
        if cell == "rnn":
            pre = gx + h @ p["w_hh"].T + b_hh
            phi_in.append(pre)
            hn, cn = f(pre), c
        elif cell == "lstm":
            pre = gx + h @ p["w_hh"].T + b_hh
            i, fg, g, o = np.split(pre, 4, axis=1)
            sig_in += [i, fg, o]
            phi_in.append(g)
            cn = s(fg) * c + s(i) * f(g)
            phi_in.append(cn)
            hn = s(o) * f(cn)
        elif cell == "gru":
            gh = h @ p["w_hh"].T + b_hh
            r_pre = gx[:, :H] + gh[:, :H]
            z_pre = gx[:, H:2 * H] + gh[:, H:2 * H]
            r, z = s(r_pre), s(z_pre)
            n_pre = gx[:, 2 * H:] + r * gh[:, 2 * H:]
            sig_in += [r_pre, z_pre]
            phi_in.append(n_pre)
            n = f(n_pre)
            hn, cn = (1 - z) * n + z * h, c
        else:  # gru_v1: reset before the recurrent product, no recurrent bias
            w_rz, w_n = p["w_hh"][:2 * H], p["w_hh"][2 * H:]
            rz_pre = gx[:, :2 * H] + h @ w_rz.T
            rz = s(rz_pre)
            r, z = rz[:, :H], rz[:, H:]
            n_pre = gx[:, 2 * H:] + (r * h) @ w_n.T
            sig_in.append(rz_pre)
            phi_in.append(n_pre)
            n = f(n_pre)
            hn, cn = (1 - z) * n + z * h, c
        if mask is not None:
            m = mask[t][:, None]
            hn, cn = np.where(m, hn, h), np.where(m, cn, c)
        h, c = hn, cn
        y[t] = h
    margin = min(_margin(phi_in, phi), _margin(sig_in, sig) if cell != "rnn" else np.inf)
    return y, h, (c if cell == "lstm" else None), margin


def _params(rng, cell, C, H, scale):
    G = GATES[cell]
    p = {"w_ih": rng.uniform(-scale, scale, (G * H, C)), "w_hh": rng.uniform(-scale, scale, (G * H, H)),
         "b_ih": rng.uniform(-scale, scale, G * H),
         "b_hh": None if cell == "gru_v1" else rng.uniform(-scale, scale, G * H)}
    return p


def _setup(cell, phi, sig, T=4, N=3, C=3, H=5, scale=1.5, holes=False):
    """Inputs whose pre-activations keep KINK_MARGIN away from every kink, large enough that
    relu and hard_sigmoid visit both sides of their kinks."""
    for attempt in range(500):
        rng = np.random.default_rng([attempt, GATES[cell], len(phi), len(sig), T, H])
        x = rng.standard_normal((T, N, C)) * 1.5
        h0 = rng.standard_normal((N, H)) * 0.5
        c0 = rng.standard_normal((N, H)) * 0.5 if cell == "lstm" else None
        p = _params(rng, cell, C, H, scale)
        mask = mask_with_holes(T, N) if holes else None
        *_, margin = reference(cell, x, h0, c0, p, phi, sig, mask)
        if margin > KINK_MARGIN:
            return rng, x, h0, c0, p, mask
    pytest.fail(f"no kink-free seed for {cell}/{phi}/{sig}")  # pragma: no cover


def _forward(cell, x, h0, c0, p, phi, sig, **kw):
    """(y, finals, cache) through the one recurrent op (rnnkit._recurrent)."""
    init = [h0, c0] if cell == "lstm" else [h0]
    run = _recurrent.forward(cell, x, p, init, activation=phi, recurrent_activation=sig, **kw)
    return run.y, run.finals, run.cache


def _combos(cell):
    return [(phi, "sigmoid") for phi in PHIS] if cell == "rnn" else list(itertools.product(PHIS, SIGMAS))


CASES = [(cell, phi, sig) for cell in ("rnn", "lstm", "gru", "gru_v1") for phi, sig in _combos(cell)]


@pytest.mark.parametrize("plan", ["rows", "columns"])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("cell,phi,sig", CASES)
def test_forward_matches_reference(cell, phi, sig, dtype, tol, plan, restore_threads):
    # wide enough (H = 32) for both plans to split the step on 2 threads
    rnnkit.set_num_threads(2)
    rnnkit._core._set_loop_plan(plan)
    try:
        _, x, h0, c0, p, mask = _setup(cell, phi, sig, T=5, N=6, C=3, H=32, scale=0.4, holes=True)
        pc = {k: (None if v is None else v.astype(dtype)) for k, v in p.items()}
        cast = (lambda a: None if a is None else a.astype(dtype))
        y, finals, _ = _forward(cell, cast(x), cast(h0), cast(c0), pc, phi, sig, mask=mask)
    finally:
        rnnkit._core._set_loop_plan("auto")
    ry, rh, rc, _ = reference(cell, x, h0, c0, p, phi, sig, mask)
    scale = max(1.0, np.max(np.abs(ry)))
    np.testing.assert_allclose(y, ry, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(finals[0], rh, rtol=tol, atol=tol * scale)
    if rc is not None:
        np.testing.assert_allclose(finals[1], rc, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("variant", ["plain", "holes_reverse"])
@pytest.mark.parametrize("cell,phi,sig", CASES)
def test_gradients_match_finite_differences(cell, phi, sig, variant):
    holes = variant != "plain"
    reverse = variant == "holes_reverse"
    rng, x, h0, c0, p, mask = _setup(cell, phi, sig, holes=holes)
    if reverse:  # the margin was checked forward; re-check for the reverse order
        assert reference(cell, x, h0, c0, p, phi, sig, mask, reverse=True)[3] > KINK_MARGIN or \
            pytest.skip("kink within the margin in reverse order")
    T, N, _ = x.shape
    H = p["w_hh"].shape[1]
    wy = rng.standard_normal((T, N, H))
    wf = [rng.standard_normal((N, H)) for _ in range(2 if cell == "lstm" else 1)]
    kw = dict(mask=mask, reverse=reverse)
    y, finals, cache = _forward(cell, x, h0, c0, p, phi, sig, **kw)
    dx, d_init, grads = _recurrent.backward(cell, cache, wy, wf)

    def loss():
        y_, f_, _ = _forward(cell, x, h0, c0, p, phi, sig, **kw)
        return float(np.sum(y_ * wy) + sum(np.sum(a * b) for a, b in zip(f_, wf)))

    wrt = {"x": (x, dx), "h0": (h0, d_init[0])}
    if cell == "lstm":
        wrt["c0"] = (c0, d_init[1])
    for k in ("w_ih", "w_hh", "b_ih", "b_hh"):
        if p[k] is not None:
            wrt[k] = (p[k], grads[k])
    for name, (arr, g) in wrt.items():
        num = numerical_grad(loss, arr, 1e-6)
        err = rel_err(g, num)
        assert err < GRAD_TOL, f"{cell}/{phi}/{sig}/{variant}: d{name} relative error {err:.2e}"


@pytest.mark.parametrize("cell,phi,sig", [c for c in CASES if c[0] != "gru_v1"])
def test_stream_matches_whole_sequence(cell, phi, sig):
    _, x, h0, c0, p, _ = _setup(cell, phi, sig, T=6, N=2, C=3, H=9, scale=0.5)
    x = x.astype(np.float32)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    y, _, _ = _forward(cell, x, None, None, p32, phi, sig)
    if cell == "rnn":
        s = streaming.RNNStream(**p32, batch_size=2, nonlinearity=phi)
    else:
        cls = streaming.LSTMStream if cell == "lstm" else streaming.GRUStream
        s = cls(**p32, batch_size=2, activation=phi, recurrent_activation=sig)
    got = np.stack([s.step(x[t]) for t in range(3)] + list(s.run(x[3:])))
    np.testing.assert_allclose(got, y, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Keras 3 parity
# ---------------------------------------------------------------------------------------------

LAYER_CASES = ([("SimpleRNN", phi, None, {}) for phi in PHIS]
               + [(c, phi, sig, {}) for c in ("LSTM", "GRU") for phi, sig in itertools.product(PHIS, SIGMAS)]
               + [("GRU", "relu", "hard_sigmoid", {"reset_after": False})])


@pytest.mark.keras
@pytest.mark.parametrize("cls,phi,sig,extra", LAYER_CASES)
def test_layer_matches_keras(keras, cls, phi, sig, extra):
    import torch

    N, T, C, U = 3, 5, 4, 6
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((N, T, C)) * 1.5).astype(np.float32)
    kw = dict(activation=phi, return_sequences=True, **extra)
    if sig is not None:
        kw["recurrent_activation"] = sig
    theirs = getattr(keras.layers, cls)(U, **kw)
    theirs.build((N, T, C))
    weights = [rng.uniform(-0.8, 0.8, tuple(v.shape)).astype(np.float32) for v in theirs.weights]
    theirs.set_weights(weights)
    mine = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}[cls](U, **kw)
    mine.build((N, T, C))
    mine.set_weights(weights)

    W = rng.standard_normal((N, T, U)).astype(np.float32)
    xt = torch.tensor(x)
    want = theirs(xt)
    (want * torch.tensor(W)).sum().backward()
    got = mine(x, training=True)
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-5, atol=1e-5)

    mine.zero_grad()
    mine.backward(W)
    k_grads = [v.value.grad.detach().numpy() for v in theirs.trainable_weights]
    g = mine.grads
    m_grads = _layouts.internal_to_keras(mine._CELL, g["w_ih"], g["w_hh"], g.get("b_ih"), g.get("b_hh"),
                                         getattr(mine, "reset_after", True), True)
    assert len(m_grads) == len(k_grads)
    for a, b in zip(m_grads, k_grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(np.max(np.abs(b)))))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

def test_unsupported_activations_raise_naming_the_argument():
    with pytest.raises(ValueError, match=r"activation: expected one of 'tanh', 'relu', 'linear' .*got 'gelu'"):
        LSTM(2, activation="gelu")
    with pytest.raises(ValueError, match=r"recurrent_activation: expected one of 'sigmoid', 'hard_sigmoid' "
                                         r".*got 'tanh'"):
        GRU(2, recurrent_activation="tanh")
    with pytest.raises(ValueError, match=r"activation: expected one of .*got 'sigmoid'"):
        SimpleRNN(2, activation="sigmoid")
    x = np.zeros((2, 1, 3))
    w = np.zeros((8, 3)), np.zeros((8, 2))
    with pytest.raises(ValueError, match=r"recurrent_activation: expected .*got 'relu'"):
        F.lstm_forward(x, None, None, *w, recurrent_activation="relu")
    with pytest.raises(ValueError, match=r"nonlinearity: expected .*got 'elu'"):
        F.rnn_forward(x, None, np.zeros((2, 3)), np.zeros((2, 2)), nonlinearity="elu")
    with pytest.raises(ValueError, match=r"activation: expected .*got 'swish'"):
        streaming.GRUStream(np.zeros((6, 3), np.float32), np.zeros((6, 2), np.float32), activation="swish")
    # the compiled layer refuses on its own too
    with pytest.raises(ValueError, match=r"activation: expected 'tanh', 'relu' or 'linear', got 'elu'"):
        rnnkit._core.gru_forward(np.zeros((1, 1, 3)), None, np.zeros((6, 3)), np.zeros((6, 2)), None, None,
                                 None, None, False, False, "elu", "sigmoid")


def test_config_round_trip_keeps_activations():
    layer = LSTM(3, activation="relu", recurrent_activation="hard_sigmoid")
    cfg = layer.get_config()
    assert cfg["activation"] == "relu" and cfg["recurrent_activation"] == "hard_sigmoid"
    again = LSTM.from_config(cfg)
    assert again.activation.name == "relu" and again.recurrent_activation.name == "hard_sigmoid"
    assert SimpleRNN(2, activation=None).activation.name == "linear"


# ---------------------------------------------------------------------------------------------
# the GRU with the reset gate before the product (reset_after=False), in the fused kernel
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("plan", ["serial", "rows", "columns"])
def test_gru_v1_recurrent_dropout_gradients_on_each_plan(plan, restore_threads):
    """Finite differences with a fixed recurrent dropout mask, masks with holes and reverse, on
    each way of sharing the time loop (H = 32, N = 8: both parallel plans split it)."""
    rnnkit.set_num_threads(2)
    rnnkit._core._set_loop_plan(plan)
    try:
        rng = np.random.default_rng(5)
        T, N, C, H = 4, 8, 3, 32
        x = rng.standard_normal((T, N, C))
        h0 = rng.standard_normal((N, H)) * 0.5
        p = _params(rng, "gru_v1", C, H, 0.3)
        rd = (rng.random((N, H)) < 0.7) / 0.7
        kw = dict(mask=mask_with_holes(T, N), reverse=True, zero_output=True, rd=rd)
        wy, wh = rng.standard_normal((T, N, H)), rng.standard_normal((N, H))
        run = _recurrent.forward("gru_v1", x, p, [h0], **kw)
        dx, (dh0,), grads = _recurrent.backward("gru_v1", run.cache, wy, [wh])

        def loss():
            r = _recurrent.forward("gru_v1", x, p, [h0], **kw)
            return float(np.sum(r.y * wy) + np.sum(r.finals[0] * wh))

        for name, arr, g in (("x", x, dx), ("h0", h0, dh0), ("w_ih", p["w_ih"], grads["w_ih"]),
                             ("w_hh", p["w_hh"], grads["w_hh"]), ("b_ih", p["b_ih"], grads["b_ih"])):
            err = rel_err(g, numerical_grad(loss, arr, 1e-6))
            assert err < GRAD_TOL, f"{plan}: d{name} relative error {err:.2e}"
        assert "b_hh" not in grads
    finally:
        rnnkit._core._set_loop_plan("auto")


def test_gru_v1_stream_matches_whole_sequence_and_refuses_b_hh():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 2, 3)).astype(np.float32)
    p = {k: (None if v is None else v.astype(np.float32)) for k, v in _params(rng, "gru_v1", 3, 9, 0.5).items()}
    y, _, _ = _forward("gru_v1", x, None, None, p, "tanh", "sigmoid")
    s = streaming.GRUStream(p["w_ih"], p["w_hh"], p["b_ih"], batch_size=2, reset_after=False)
    got = np.stack([s.step(x[t]) for t in range(2)] + list(s.run(x[2:])))
    np.testing.assert_allclose(got, y, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="b_hh: the GRU with reset_after=False has no recurrent bias"):
        streaming.GRUStream(p["w_ih"], p["w_hh"], p["b_ih"], p["b_ih"], reset_after=False)
    with pytest.raises(ValueError, match="b_hh: the GRU with reset_after=False has no recurrent bias"):
        F.gru_forward(x, None, p["w_ih"], p["w_hh"], p["b_ih"], p["b_ih"], reset_after=False)


def test_gru_v1_runs_without_python_per_step():
    """The whole sequence is one kernel call: the number of Python function calls of a forward
    and backward does not grow with T (the NumPy loop it replaces made ~3 per step)."""
    import sys

    def calls(T):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((T, 4, 3)).astype(np.float32)
        p = {k: (None if v is None else v.astype(np.float32)) for k, v in _params(rng, "gru_v1", 3, 8, 0.5).items()}
        n = 0

        def prof(frame, event, arg):
            nonlocal n
            if event == "call":
                n += 1
        sys.setprofile(prof)
        try:
            run = _recurrent.forward("gru_v1", x, p, [None])
            _recurrent.backward("gru_v1", run.cache, np.ones_like(run.y))
        finally:
            sys.setprofile(None)
        return n

    assert calls(400) == calls(50)
