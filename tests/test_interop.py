"""rnnkit.interop: Keras / ONNX / PyTorch weight conversions, checked by round trips and by
NumPy references of each framework's own equations."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import pytest

from rnnkit import functional as F
from rnnkit import interop, nn

G = {"rnn": 1, "lstm": 4, "gru": 3}
C, U, T, N = 4, 5, 6, 3
TOL64 = dict(rtol=1e-12, atol=1e-12)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def _keras_weights(cell: str, rng: np.random.Generator, dtype=np.float64, use_bias: bool = True) -> List[np.ndarray]:
    g = G[cell]
    w = [0.4 * rng.standard_normal((C, g * U)), 0.4 * rng.standard_normal((U, g * U))]
    if use_bias:
        w.append(0.3 * rng.standard_normal((2, g * U) if cell == "gru" else (g * U,)))
    return [a.astype(dtype) for a in w]


def _torch_weights(cell: str, rng: np.random.Generator, dtype=np.float64, Cin: int = C) -> dict:
    g = G[cell]
    return {"w_ih": (0.4 * rng.standard_normal((g * U, Cin))).astype(dtype),
            "w_hh": (0.4 * rng.standard_normal((g * U, U))).astype(dtype),
            "b_ih": (0.3 * rng.standard_normal(g * U)).astype(dtype),
            "b_hh": (0.3 * rng.standard_normal(g * U)).astype(dtype)}


# ---- NumPy references of the Keras equations (batch-major x: [N, T, C], x @ kernel) -------------

def _keras_run(cell: str, weights: List[np.ndarray], x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    kernel, rk = weights[0], weights[1]
    bias = weights[2] if len(weights) == 3 else None
    Nb, Tn, _ = x.shape
    h = np.zeros((Nb, U))
    c = np.zeros((Nb, U))
    ys = []
    for t in range(Tn):
        xt = x[:, t]
        if cell == "rnn":
            h = np.tanh(xt @ kernel + h @ rk + (0 if bias is None else bias))
        elif cell == "lstm":
            z = xt @ kernel + h @ rk + (0 if bias is None else bias)
            i, f, cc, o = np.split(z, 4, axis=1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(cc)
            h = _sigmoid(o) * np.tanh(c)
        else:  # GRU, reset_after=True
            mx = xt @ kernel + (0 if bias is None else bias[0])
            mi = h @ rk + (0 if bias is None else bias[1])
            x_z, x_r, x_h = np.split(mx, 3, axis=1)
            r_z, r_r, r_h = np.split(mi, 3, axis=1)
            z = _sigmoid(x_z + r_z)
            r = _sigmoid(x_r + r_r)
            hh = np.tanh(x_h + r * r_h)
            h = z * h + (1 - z) * hh
        ys.append(h)
    return np.stack(ys, axis=1), h


def _rnnkit_run(cell: str, w: dict, x_nt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x_nt.transpose(1, 0, 2))
    args = (w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
    if cell == "rnn":
        out = F.rnn_forward(x, None, *args)
    elif cell == "lstm":
        out = F.lstm_forward(x, None, None, *args)
    else:
        out = F.gru_forward(x, None, *args)
    return out.y.transpose(1, 0, 2), out.h_n


# ---- NumPy reference of the ONNX operators (layout 0: X [T, N, C], Y [T, D, N, H]) -------------

def _onnx_run(cell: str, W: np.ndarray, R: np.ndarray, B: Optional[np.ndarray], x: np.ndarray,
              h0: np.ndarray, c0: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    D, GH, _ = W.shape
    Hs = R.shape[2]
    Tn = x.shape[0]
    Y = np.zeros((Tn, D, x.shape[1], Hs))
    Y_h = np.zeros((D, x.shape[1], Hs))
    for d in range(D):
        Wb = np.zeros(GH) if B is None else B[d, :GH]
        Rb = np.zeros(GH) if B is None else B[d, GH:]
        h = h0[d]
        c = None if c0 is None else c0[d]
        steps = range(Tn) if d == 0 else range(Tn - 1, -1, -1)
        for t in steps:
            xt = x[t]
            if cell == "rnn":
                h = np.tanh(xt @ W[d].T + h @ R[d].T + Wb + Rb)
            elif cell == "lstm":
                gates = xt @ W[d].T + h @ R[d].T + Wb + Rb
                i, o, f, cc = np.split(gates, 4, axis=1)
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(cc)
                h = _sigmoid(o) * np.tanh(c)
            else:  # GRU, linear_before_reset = 1
                Wz, Wr, Wh = np.split(W[d], 3)
                Rz, Rr, Rh = np.split(R[d], 3)
                Wbz, Wbr, Wbh = np.split(Wb, 3)
                Rbz, Rbr, Rbh = np.split(Rb, 3)
                z = _sigmoid(xt @ Wz.T + h @ Rz.T + Wbz + Rbz)
                r = _sigmoid(xt @ Wr.T + h @ Rr.T + Wbr + Rbr)
                ht = np.tanh(xt @ Wh.T + r * (h @ Rh.T + Rbh) + Wbh)
                h = (1 - z) * ht + z * h
            Y[t, d] = h
        Y_h[d] = h
    return Y, Y_h


# ---------------------------------------------------------------------------------------------
# Keras
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keras_round_trip(cell, dtype):
    rng = np.random.default_rng(0)
    kw = _keras_weights(cell, rng, dtype)
    tw = interop.keras_to_torch(cell, kw)
    assert tw["w_ih"].shape == (G[cell] * U, C) and tw["w_hh"].shape == (G[cell] * U, U)
    assert all(a.dtype == dtype and a.flags.c_contiguous for a in tw.values())
    back = interop.torch_to_keras(cell, **tw)
    assert len(back) == 3
    for a, b in zip(back, kw):
        assert a.shape == b.shape and a.dtype == dtype
        np.testing.assert_array_equal(a, b)
    # use_bias=False layers have two arrays and no bias
    kw2 = _keras_weights(cell, rng, dtype, use_bias=False)
    tw2 = interop.keras_to_torch(cell, kw2)
    assert tw2["b_ih"] is None and tw2["b_hh"] is None
    back2 = interop.torch_to_keras(cell, **tw2)
    assert len(back2) == 2
    for a, b in zip(back2, kw2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_torch_to_keras_round_trip(cell):
    rng = np.random.default_rng(1)
    tw = _torch_weights(cell, rng)
    back = interop.keras_to_torch(cell, interop.torch_to_keras(cell, **tw))
    np.testing.assert_array_equal(back["w_ih"], tw["w_ih"])
    np.testing.assert_array_equal(back["w_hh"], tw["w_hh"])
    if cell == "gru":
        np.testing.assert_array_equal(back["b_ih"], tw["b_ih"])
        np.testing.assert_array_equal(back["b_hh"], tw["b_hh"])
    else:  # Keras keeps one bias: the sum goes to b_ih, b_hh becomes zeros
        np.testing.assert_allclose(back["b_ih"], tw["b_ih"] + tw["b_hh"], rtol=0, atol=0)
        np.testing.assert_array_equal(back["b_hh"], np.zeros(G[cell] * U))


def test_gate_block_orders_follow_the_documented_rules():
    # block k of the PyTorch rows is filled with k, so the converted blocks spell out the order
    def blocks(g: int, cols: int) -> np.ndarray:
        return np.repeat(np.arange(g, dtype=np.float64), U)[:, None] * np.ones((1, cols))

    # GRU: PyTorch r, z, n -> Keras z, r, h (columns)
    k = interop.torch_to_keras("gru", blocks(3, C), blocks(3, U))
    assert [k[0][0, j * U] for j in range(3)] == [1.0, 0.0, 2.0]
    # LSTM: PyTorch i, f, g, o -> Keras i, f, c, o; -> ONNX i, o, f, c
    k = interop.torch_to_keras("lstm", blocks(4, C), blocks(4, U))
    assert [k[1][0, j * U] for j in range(4)] == [0.0, 1.0, 2.0, 3.0]
    o = interop.to_onnx_weights("lstm", {"w_ih": blocks(4, C), "w_hh": blocks(4, U), "b_ih": blocks(4, 1)[:, 0]})
    assert [o["W"][0, j * U, 0] for j in range(4)] == [0.0, 3.0, 1.0, 2.0]
    assert [o["B"][0, j * U] for j in range(8)] == [0.0, 3.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0]
    # GRU: PyTorch r, z, n -> ONNX z, r, h
    o = interop.to_onnx_weights("gru", {"w_ih": blocks(3, C), "w_hh": blocks(3, U)})
    assert [o["R"][0, j * U, 0] for j in range(3)] == [1.0, 0.0, 2.0] and o["B"] is None


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_keras_weights_compute_the_keras_function(cell):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((N, T, C))
    kw = _keras_weights(cell, rng)
    y_ref, h_ref = _keras_run(cell, kw, x)
    y, h = _rnnkit_run(cell, interop.keras_to_torch(cell, kw), x)
    np.testing.assert_allclose(y, y_ref, **TOL64)
    np.testing.assert_allclose(h, h_ref, **TOL64)
    # and the other way: PyTorch weights exported to Keras compute the same function in Keras
    tw = _torch_weights(cell, rng)
    y_t, h_t = _rnnkit_run(cell, tw, x)
    y_k, h_k = _keras_run(cell, interop.torch_to_keras(cell, **tw), x)
    np.testing.assert_allclose(y_k, y_t, **TOL64)
    np.testing.assert_allclose(h_k, h_t, **TOL64)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_keras_weights_into_modules(kind):
    cell = kind.lower()
    rng = np.random.default_rng(3)
    m = getattr(nn, kind)(C, U, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    kw = _keras_weights(cell, rng)
    kw1 = [a.copy() for a in kw]
    kw1[0] = 0.4 * rng.standard_normal((2 * U, G[cell] * U))  # layer 1 takes D*H inputs
    interop.load_keras_weights(m, kw, layer=0, reverse=True)
    interop.load_keras_weights(m, kw1, layer=1)
    for got, want in zip(interop.module_to_keras(m, 0, reverse=True), kw):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(interop.module_to_keras(m, 1), kw1):
        np.testing.assert_array_equal(got, want)
    if cell != "gru":
        np.testing.assert_array_equal(m.direction_weights(0, True)["b_hh"], 0.0)

    nobias = getattr(nn, kind)(C, U, bias=False, seed=0)
    with pytest.raises(ValueError, match="b_ih: the module has bias=False but the weights have a nonzero bias"):
        interop.load_keras_weights(nobias, _keras_weights(cell, rng, np.float32))
    interop.load_keras_weights(nobias, _keras_weights(cell, rng, np.float32, use_bias=False))
    assert len(interop.module_to_keras(nobias)) == 2


def test_keras_errors():
    rng = np.random.default_rng(4)
    kw = _keras_weights("gru", rng)
    with pytest.raises(ValueError, match="reset_after: a Keras GRU with reset_after=False .* no PyTorch equivalent"):
        interop.keras_to_torch("gru", [kw[0], kw[1], kw[2][0]], reset_after=False)
    with pytest.raises(ValueError, match=r"bias: expected shape \(2, 15\) = \(2, 3\*U\) \(input bias row, "
                                         r"recurrent bias row\) with U=5, got \(15,\)"):
        interop.keras_to_torch("gru", [kw[0], kw[1], kw[2][0]])
    with pytest.raises(ValueError, match=r"kernel: expected shape \(C, 15\) = \(C, 3\*U\) with U=5 from "
                                         r"recurrent_kernel, got \(4, 12\)"):
        interop.keras_to_torch("gru", [kw[0][:, :12], kw[1]])
    with pytest.raises(ValueError, match=r"recurrent_kernel: expected shape \(U, 4\*U\) for LSTM, got \(5, 15\)"):
        interop.keras_to_torch("lstm", kw[:2])
    with pytest.raises(TypeError, match="recurrent_kernel: expected dtype float64 .*, got float32"):
        interop.keras_to_torch("gru", [kw[0], kw[1].astype(np.float32)])
    with pytest.raises(TypeError, match="kernel: expected a float32 or float64 array, got dtype int64"):
        interop.keras_to_torch("rnn", [np.zeros((2, 3), np.int64), np.zeros((3, 3))])
    with pytest.raises(ValueError, match=r"weights: expected 2 or 3 arrays \[kernel, recurrent_kernel\(, bias\)\], got 4"):
        interop.keras_to_torch("gru", kw + [kw[0]])
    with pytest.raises(ValueError, match="cell: expected one of 'rnn' \\('simplernn'\\), 'lstm', 'gru', got 'conv'"):
        interop.keras_to_torch("conv", kw)
    with pytest.raises(TypeError, match="cell: expected one of .*, got int"):
        interop.torch_to_keras(3, np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"w_ih: expected shape \(15, C\) = \(3\*H, C\) with H=5 from w_hh, got \(12, 4\)"):
        interop.torch_to_keras("gru", np.zeros((12, 4)), np.zeros((15, 5)))
    with pytest.raises(ValueError, match=r"b_hh: expected shape \(15,\) = \(3\*H,\) with H=5, got \(12,\)"):
        interop.torch_to_keras("gru", np.zeros((15, 4)), np.zeros((15, 5)), None, np.zeros(12))
    assert interop.keras_to_torch("SimpleRNN", _keras_weights("rnn", rng))["w_hh"].shape == (U, U)


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_onnx_weights_compute_the_onnx_function(kind, bidirectional):
    cell = kind.lower()
    rng = np.random.default_rng(5)
    m = getattr(nn, kind)(C, U, bidirectional=bidirectional, dtype=np.float64, seed=1)
    D = 2 if bidirectional else 1
    x = rng.standard_normal((T, N, C))
    h0 = 0.5 * rng.standard_normal((D, N, U))
    c0 = 0.5 * rng.standard_normal((D, N, U))
    onnx = interop.module_to_onnx_weights(m)
    assert onnx["W"].shape == (D, G[cell] * U, C) and onnx["R"].shape == (D, G[cell] * U, U)
    assert onnx["B"].shape == (D, 2 * G[cell] * U)
    Y, Y_h = _onnx_run(cell, onnx["W"], onnx["R"], onnx["B"], x, h0, c0 if cell == "lstm" else None)
    if cell == "lstm":
        y, (h_n, _) = m(x, (h0, c0))
    else:
        y, h_n = m(x, h0)
    np.testing.assert_allclose(y, Y.transpose(0, 2, 1, 3).reshape(T, N, D * U), **TOL64)
    np.testing.assert_allclose(h_n, Y_h, **TOL64)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_onnx_round_trip_and_load(cell):
    rng = np.random.default_rng(6)
    dirs = [_torch_weights(cell, rng, np.float32), _torch_weights(cell, rng, np.float32)]
    onnx = interop.to_onnx_weights(cell, dirs)
    assert onnx["W"].dtype == np.float32
    back = interop.from_onnx_weights(cell, onnx["W"], onnx["R"], onnx["B"])
    assert len(back) == 2
    for got, want in zip(back, dirs):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # one direction given as a mapping; no biases -> B omitted -> biases None
    nob = {"w_ih": dirs[0]["w_ih"], "w_hh": dirs[0]["w_hh"]}
    o1 = interop.to_onnx_weights(cell, nob)
    assert o1["W"].shape[0] == 1 and o1["B"] is None
    (b1,) = interop.from_onnx_weights(cell, o1["W"], o1["R"])
    assert b1["b_ih"] is None and b1["b_hh"] is None
    np.testing.assert_array_equal(b1["w_hh"], nob["w_hh"])
    # loading W, R, B into a module reproduces the module's weights
    kind = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    src = getattr(nn, kind)(C, U, num_layers=2, bidirectional=True, seed=0)
    dst = getattr(nn, kind)(C, U, num_layers=2, bidirectional=True, seed=1)
    for layer in range(2):
        o = interop.module_to_onnx_weights(src, layer)
        interop.load_onnx_weights(dst, o["W"], o["R"], o["B"], layer=layer)
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(dst.state_dict()[k], v, err_msg=k)


def test_onnx_errors():
    rng = np.random.default_rng(7)
    w = _torch_weights("gru", rng)
    o = interop.to_onnx_weights("gru", [w, w])
    with pytest.raises(ValueError, match="linear_before_reset: an ONNX GRU with linear_before_reset=0 .* "
                                         "no PyTorch equivalent"):
        interop.from_onnx_weights("gru", o["W"], o["R"], o["B"], linear_before_reset=0)
    with pytest.raises(ValueError, match=r"B: expected shape \(2, 30\) = \(D, 2\*3\*H\) with D, H from R, got \(2, 15\)"):
        interop.from_onnx_weights("gru", o["W"], o["R"], o["B"][:, :15])
    with pytest.raises(ValueError, match=r"W: expected shape \(2, 15, C\) = \(D, 3\*H, C\) with D, H from R, got \(1, 15, 4\)"):
        interop.from_onnx_weights("gru", o["W"][:1], o["R"])
    with pytest.raises(ValueError, match=r"R: expected shape \(D, 4\*H, H\) with D in \(1, 2\) for LSTM, got \(2, 15, 5\)"):
        interop.from_onnx_weights("lstm", o["W"], o["R"])
    with pytest.raises(ValueError, match="directions: expected 1 or 2 directions, got 3"):
        interop.to_onnx_weights("gru", [w, w, w])
    with pytest.raises(ValueError, match=r"directions\[0\]: expected keys w_ih, w_hh \(required\), b_ih, b_hh, got \['kernel'\]"):
        interop.to_onnx_weights("gru", [{"kernel": w["w_ih"]}])
    w2 = _torch_weights("gru", rng, Cin=C + 1)
    with pytest.raises(ValueError, match="directions: forward and reverse weights differ in shape"):
        interop.to_onnx_weights("gru", [w, w2])
    with pytest.raises(TypeError, match=r"directions\[1\].w_hh: expected dtype float64 .*, got float32"):
        interop.to_onnx_weights("gru", [w, {k: v.astype(np.float32) for k, v in w.items()}])
    m = nn.GRU(C, U)
    with pytest.raises(ValueError, match=r"W: expected D=1 direction\(s\) for this module \(bidirectional=False\), got 2"):
        interop.load_onnx_weights(m, o["W"], o["R"], o["B"])
    with pytest.raises(TypeError, match="module: expected an rnnkit.nn.RNN, LSTM or GRU, got Linear"):
        interop.module_to_onnx_weights(nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------------------------

def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def test_state_dict_conversions():
    torch = _torch()
    tm = torch.nn.GRU(C, U, num_layers=2, bidirectional=True)
    sd = interop.state_dict_from_torch(tm.state_dict())
    assert list(sd) == list(tm.state_dict())
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in sd.values())
    sd["weight_ih_l0"][...] = 0.0  # a copy: the torch module is unchanged
    assert torch.count_nonzero(tm.weight_ih_l0).item() > 0
    m = nn.GRU(C, U, num_layers=2, bidirectional=True, seed=0)
    m.load_state_dict(interop.state_dict_from_torch(tm.state_dict()))
    tsd = interop.state_dict_to_torch(m.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in tsd.values())
    tm2 = torch.nn.GRU(C, U, num_layers=2, bidirectional=True)
    tm2.load_state_dict(tsd)
    for k, v in tm.state_dict().items():
        assert torch.equal(tm2.state_dict()[k], v), k


@pytest.mark.parametrize("kind, kw", [
    ("LSTM", dict(num_layers=2, bidirectional=True, batch_first=True)),
    ("GRU", dict(bias=False, dropout=0.25, num_layers=2)),
    ("RNN", dict(nonlinearity="relu")),
])
def test_module_conversions(kind, kw):
    torch = _torch()
    tm = getattr(torch.nn, kind)(C, U, dtype=torch.float64, **kw).eval()
    m = interop.from_torch_module(tm)
    assert isinstance(m, getattr(nn, kind)) and m.dtype == np.float64 and not m.training
    assert (m.num_layers, m.bias, m.batch_first, m.bidirectional, m.dropout) == \
        (tm.num_layers, tm.bias, tm.batch_first, tm.bidirectional, tm.dropout)
    x = np.random.default_rng(0).standard_normal((2, 3, C))
    y, _ = m(x)
    yt, _ = tm(torch.from_numpy(x))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    back = interop.to_torch_module(m)
    assert type(back) is type(tm) and repr(back) == repr(tm) and back.weight_hh_l0.dtype == torch.float64
    for k, v in tm.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    if kind == "RNN":
        assert back.nonlinearity == "relu"


def test_from_torch_module_errors():
    torch = _torch()
    with pytest.raises(TypeError, match="module: expected a torch.nn.RNN, LSTM, GRU or one of their cells, got Linear"):
        interop.from_torch_module(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_round_trip_through_torch(kind):
    torch = _torch()
    theirs = getattr(torch.nn, kind)(3, 5, dtype=torch.float64)
    mine = interop.from_torch_module(theirs)
    assert type(mine).__name__ == kind and list(mine.state_dict()) == list(theirs.state_dict())
    x = np.random.default_rng(0).standard_normal((4, 3))
    a, b = theirs(torch.tensor(x)), mine(x)
    a = a[0] if isinstance(a, tuple) else a
    b = b[0] if isinstance(b, tuple) else b
    np.testing.assert_allclose(b, a.detach().numpy(), rtol=1e-12, atol=1e-12)
    back = interop.to_torch_module(mine)
    assert type(back) is type(theirs)
    for k, v in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
