"""PyTorch-style cells (``rnnkit.nn.RNNCell``/``LSTMCell``/``GRUCell``): one step of the fused
kernels with ``torch.nn``'s signatures, parameters and conventions.

- parity with ``torch.nn.*Cell`` on the same weights: outputs, input/state gradients and every
  parameter gradient (float32 1e-5, float64 1e-10), batched and unbatched, with and without
  bias and initial state;
- a Python loop of cells over T steps equals the whole-sequence module (``nn.LSTM``/``GRU``/
  ``RNN``), forward and backpropagation through time (``last_step`` / ``backward(step=...)``);
- float64 central finite differences of every gradient (relative error < 1e-7);
- PyTorch's initialization, names, ``state_dict`` keys and repr; per-thread forwards; errors.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from rnnkit import nn

from helpers import numerical_grad, rel_err

# (rnnkit class, torch class name, constructor kwargs)
CELLS = {
    "rnn_tanh": (nn.RNNCell, "RNNCell", {}),
    "rnn_relu": (nn.RNNCell, "RNNCell", {"nonlinearity": "relu"}),
    "lstm": (nn.LSTMCell, "LSTMCell", {}),
    "gru": (nn.GRUCell, "GRUCell", {}),
}
TOL = {np.float32: 1e-5, np.float64: 1e-10}
FD_TOL = 1e-7
C, H, N = 3, 5, 4


def _is_lstm(kind: str) -> bool:
    return kind == "lstm"


def _make(kind, dtype=np.float64, bias=True, seed=0):
    cls, _, kw = CELLS[kind]
    return cls(C, H, bias=bias, dtype=dtype, seed=seed, **kw)


def _states(rng, kind, shape, dtype):
    h = rng.standard_normal(shape).astype(dtype)
    if _is_lstm(kind):
        return (h, rng.standard_normal(shape).astype(dtype))
    return h


# ---------------------------------------------------------------------------------------------
# parity with torch.nn.*Cell
# ---------------------------------------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batched,bias,with_hx", [(True, True, True), (True, False, False),
                                                  (False, True, True), (False, True, False)])
def test_matches_torch(kind, dtype, batched, bias, with_hx):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    mine = _make(kind, dtype, bias, seed=3)
    cls, tname, kw = CELLS[kind]
    theirs = getattr(torch.nn, tname)(C, H, bias=bias, dtype=getattr(torch, np.dtype(dtype).name), **kw)
    assert list(mine.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.tensor(v) for k, v in mine.state_dict().items()})

    shape = (N, H) if batched else (H,)
    x = rng.standard_normal((N, C) if batched else (C,)).astype(dtype)
    hx = _states(rng, kind, shape, dtype) if with_hx else None
    xt = torch.tensor(x, requires_grad=True)
    if hx is None:
        hxt = None
    elif _is_lstm(kind):
        hxt = tuple(torch.tensor(s, requires_grad=True) for s in hx)
    else:
        hxt = torch.tensor(hx, requires_grad=True)

    out = mine(x, hx)
    want = theirs(xt, hxt)
    tol = TOL[dtype]
    outs = out if _is_lstm(kind) else (out,)
    wants = want if _is_lstm(kind) else (want,)
    ws = [rng.standard_normal(shape).astype(dtype) for _ in outs]
    for o, w in zip(outs, wants):
        assert o.shape == tuple(w.shape) and o.dtype == dtype
        assert rel_err(o, w.detach().numpy()) < tol
    sum((w * torch.tensor(g)).sum() for w, g in zip(wants, ws)).backward()

    if _is_lstm(kind):
        dx, (dh, dc) = mine.backward(*ws)
        d_states = (dh, dc)
    else:
        dx, dh = mine.backward(ws[0])
        d_states = (dh,)
    assert dx.shape == x.shape and all(d.shape == shape for d in d_states)
    assert rel_err(dx, xt.grad.numpy()) < tol
    if hx is not None:
        for d, t in zip(d_states, hxt if _is_lstm(kind) else (hxt,)):
            assert rel_err(d, t.grad.numpy()) < tol
    for (name, p), (tn, tp) in zip(mine.named_parameters(), theirs.named_parameters()):
        assert name == tn
        assert p.grad.dtype == dtype
        assert rel_err(p.grad, tp.grad.numpy()) < tol, name


@pytest.mark.torch
@pytest.mark.parametrize("kind", list(CELLS))
def test_initialization_names_and_repr_match_torch(kind):
    torch = pytest.importorskip("torch")
    cls, tname, kw = CELLS[kind]
    for bias in (True, False):
        mine = cls(C, H, bias=bias, **kw)
        theirs = getattr(torch.nn, tname)(C, H, bias=bias, **kw)
        assert [(n, p.shape) for n, p in mine.named_parameters()] == \
            [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
        assert list(mine.state_dict()) == list(theirs.state_dict())
        assert repr(mine) == repr(theirs)
        assert mine.dtype == np.float32
    big = cls(C, 400, seed=0, **kw)
    k = 1 / np.sqrt(400)
    for p in big.parameters():
        assert p.data.dtype == np.float32
        assert -k <= p.data.min() and p.data.max() <= k and p.data.max() > 0.9 * k


def test_seed_dtype_and_bias_options():
    a, b = nn.LSTMCell(C, H, seed=5), nn.LSTMCell(C, H, seed=5)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    assert not np.array_equal(a.weight_ih.data, nn.LSTMCell(C, H, seed=6).weight_ih.data)
    assert nn.GRUCell(C, H, dtype=None).dtype == np.float32      # PyTorch's default dtype
    assert nn.GRUCell(C, H, dtype="float64").weight_hh.dtype == np.float64
    c = nn.RNNCell(C, H, bias=False)
    assert c.bias_ih is None and c.bias_hh is None
    assert list(c.state_dict()) == ["weight_ih", "weight_hh"]
    assert nn.RNNCell(C, H, True, "relu").nonlinearity == "relu"   # PyTorch's positional order
    assert {"RNNCell", "LSTMCell", "GRUCell"} <= set(nn.__all__)


# ---------------------------------------------------------------------------------------------
# a loop of cells is the sequence module
# ---------------------------------------------------------------------------------------------

SEQ = {"rnn_tanh": nn.RNN, "rnn_relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loop_of_cells_equals_sequence_module(kind, dtype):
    T = 6
    rng = np.random.default_rng(2)
    cell = _make(kind, dtype, seed=1)
    kw = CELLS[kind][2]
    seq = SEQ[kind](C, H, dtype=dtype, seed=0, **kw)
    seq.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    x = rng.standard_normal((T, N, C)).astype(dtype)
    h0 = _states(rng, kind, (N, H), dtype)
    want, fin = seq(x, (h0[0][None], h0[1][None]) if _is_lstm(kind) else h0[None])

    state, steps, ys = h0, [], []
    for t in range(T):
        state = cell(x[t], state)
        steps.append(cell.last_step)
        ys.append(state[0] if _is_lstm(kind) else state)
    tol = TOL[dtype]
    assert rel_err(np.stack(ys), want) < tol
    if _is_lstm(kind):
        assert rel_err(state[1], fin[1][0]) < tol

    dy = rng.standard_normal((T, N, H)).astype(dtype)
    d_hn = rng.standard_normal((N, H)).astype(dtype)
    if _is_lstm(kind):
        d_cn = rng.standard_normal((N, H)).astype(dtype)
        dx_want, (dh0_want, dc0_want) = seq.backward(dy, d_hn[None], d_cn[None])
    else:
        dx_want, dh0_want = seq.backward(dy, d_hn[None])
    dh = d_hn
    dc = d_cn if _is_lstm(kind) else None
    dx = np.empty_like(x)
    for t in reversed(range(T)):
        if _is_lstm(kind):
            dx[t], (dh, dc) = cell.backward(dh + dy[t], dc, step=steps[t])
        else:
            dx[t], dh = cell.backward(dh + dy[t], step=steps[t])
    assert rel_err(dx, dx_want) < tol
    assert rel_err(dh, dh0_want[0]) < tol
    if _is_lstm(kind):
        assert rel_err(dc, dc0_want[0]) < tol
    for name, p in cell.named_parameters():
        assert rel_err(p.grad, getattr(seq, name + "_l0").grad) < tol, name


# ---------------------------------------------------------------------------------------------
# finite differences
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("batched", [True, False])
def test_gradients_match_finite_differences(kind, batched):
    rng = np.random.default_rng(5)
    cell = _make(kind, np.float64, seed=2)
    shape = (N, H) if batched else (H,)
    x = rng.standard_normal((N, C) if batched else (C,))
    hx = _states(rng, kind, shape, np.float64)
    ws = [rng.standard_normal(shape) for _ in range(2 if _is_lstm(kind) else 1)]
    if kind == "rnn_relu":  # keep every pre-activation away from the kink at 0
        pre = x @ cell.weight_ih.data.T + cell.bias_ih.data + hx @ cell.weight_hh.data.T + cell.bias_hh.data
        assert np.min(np.abs(pre)) > 1e-3

    def loss() -> float:
        out = cell(x, hx)
        outs = out if _is_lstm(kind) else (out,)
        return float(sum((o * w).sum() for o, w in zip(outs, ws)))

    loss()
    if _is_lstm(kind):
        dx, d_states = cell.backward(*ws)
    else:
        dx, dh = cell.backward(ws[0])
        d_states = (dh,)
    assert rel_err(dx, numerical_grad(loss, x)) < FD_TOL
    for d, s in zip(d_states, hx if _is_lstm(kind) else (hx,)):
        assert rel_err(d, numerical_grad(loss, s)) < FD_TOL
    for name, p in cell.named_parameters():
        assert rel_err(p.grad, numerical_grad(loss, p.data)) < FD_TOL, name


def test_gradient_without_initial_state_is_wrt_zeros_and_accumulates():
    rng = np.random.default_rng(8)
    cell = nn.LSTMCell(C, H, dtype=np.float64, seed=0)
    x = rng.standard_normal((N, C))
    zeros = (np.zeros((N, H)), np.zeros((N, H)))
    dh = rng.standard_normal((N, H))
    cell(x, zeros)
    _, (want_h, want_c) = cell.backward(dh)
    g1 = cell.weight_hh.grad.copy()
    cell(x)
    dx, (got_h, got_c) = cell.backward(dh)        # d_c None = zeros
    np.testing.assert_allclose(got_h, want_h, rtol=0, atol=1e-14)
    np.testing.assert_allclose(got_c, want_c, rtol=0, atol=1e-14)
    np.testing.assert_allclose(cell.weight_hh.grad, 2 * g1, rtol=1e-14, atol=0)   # +=
    _, (_, dc_only) = cell.backward(None, dh)       # only d_c: through c' alone
    assert dc_only.shape == (N, H)


# ---------------------------------------------------------------------------------------------
# threads, dtype changes, errors
# ---------------------------------------------------------------------------------------------

def test_each_thread_backpropagates_its_own_forward():
    rng = np.random.default_rng(9)
    cell = nn.GRUCell(C, H, dtype=np.float64, seed=0)
    xs = [rng.standard_normal((N, C)) for _ in range(4)]
    want = []
    for x in xs:
        cell(x)
        want.append(cell.backward(np.ones((N, H)))[0])
    got = [None] * len(xs)
    barrier = threading.Barrier(len(xs))

    def work(i):
        cell(xs[i])
        barrier.wait()
        got[i] = cell.backward(np.ones((N, H)))[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):   # another thread's forward would be O(1) off; the kernels' loop plan may vary
        assert rel_err(g, w) < 1e-12


def test_to_forgets_the_last_forward():
    cell = nn.RNNCell(C, H)
    cell(np.zeros((N, C), np.float32))
    assert cell.last_step is not None
    cell.double()
    assert cell.last_step is None and cell.weight_ih.dtype == np.float64
    with pytest.raises(RuntimeError, match=r"RNNCell.backward: call forward first"):
        cell.backward(np.zeros((N, H)))


def test_errors_name_the_argument():
    cell = nn.LSTMCell(C, H)
    x = np.zeros((N, C), np.float32)
    with pytest.raises(ValueError, match=r"input: expected 1 dimension \[input_size\] \(unbatched\) or 2 "
                                         r"dimensions \[N, input_size\], got shape \(1, 4, 3\)"):
        cell(x[None])
    with pytest.raises(ValueError, match=r"input: expected 3 features \(input_size\) .*got shape \(4, 2\)"):
        cell(np.zeros((N, 2), np.float32))
    with pytest.raises(TypeError, match=r"input: expected dtype float32 \(the module's dtype\), got float64"):
        cell(np.zeros((N, C)))
    with pytest.raises(TypeError, match=r"hx: expected a tuple \(h, c\) for LSTMCell, got ndarray"):
        cell(x, np.zeros((N, H), np.float32))
    with pytest.raises(ValueError, match=r"c_0: expected shape \(4, 5\) = \(N, hidden_size\), got \(4, 6\)"):
        cell(x, (None, np.zeros((N, 6), np.float32)))
    with pytest.raises(ValueError, match=r"hx: expected shape \(5,\) = \(hidden_size,\) for unbatched input, "
                                         r"got \(4, 5\)"):
        nn.GRUCell(C, H)(np.zeros(C, np.float32), np.zeros((N, H), np.float32))
    with pytest.raises(RuntimeError, match=r"LSTMCell.backward: call forward first"):
        nn.LSTMCell(C, H).backward(np.zeros((N, H), np.float32))
    cell(x)
    with pytest.raises(ValueError, match=r"d_h, d_c: pass at least one gradient"):
        cell.backward()
    with pytest.raises(ValueError, match=r"d_h: expected shape \(4, 5\) = \(N, hidden_size\), got \(5,\)"):
        cell.backward(np.zeros(H, np.float32))
    with pytest.raises(TypeError, match=r"step: expected the CellStep of a forward \(cell.last_step\), got dict"):
        cell.backward(np.zeros((N, H), np.float32), step={})
    with pytest.raises(ValueError, match=r"nonlinearity: expected 'tanh' or 'relu', got 'gelu'"):
        nn.RNNCell(C, H, nonlinearity="gelu")
    with pytest.raises(ValueError, match=r"hidden_size"):
        nn.GRUCell(C, 0)
    with pytest.raises(TypeError, match=r"bias: expected a bool, got int"):
        nn.GRUCell(C, H, bias=1)
