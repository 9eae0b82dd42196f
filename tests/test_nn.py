"""rnnkit.nn: PyTorch-style modules, checked against torch.nn (outputs and every gradient)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Optional

import numpy as np
import pytest

from rnnkit import functional as F
from rnnkit import nn

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}
C, H = 5, 6


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def _tdtype(torch, dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


def _pair(kind: str, dtype, seed: int = 0, **kw):
    """A torch.nn module and the rnnkit.nn module loaded from its state dict."""
    torch = _torch()
    torch.manual_seed(seed)
    tm = getattr(torch.nn, kind)(C, H, dtype=_tdtype(torch, dtype), **kw)
    m = getattr(nn, kind)(C, H, dtype=dtype, seed=seed + 1, **kw)
    res = m.load_state_dict(tm.state_dict())
    assert res.missing_keys == [] and res.unexpected_keys == []
    return torch, tm, m


def _check_against_torch(kind: str, dtype, *, num_layers=1, bidirectional=False, batch_first=False,
                         bias=True, nonlinearity: Optional[str] = None, unbatched=False,
                         give_hx=True, T=5, N=3) -> None:
    kw: Dict[str, Any] = dict(num_layers=num_layers, bidirectional=bidirectional,
                              batch_first=batch_first, bias=bias)
    if nonlinearity is not None:
        kw["nonlinearity"] = nonlinearity
    torch, tm, m = _pair(kind, dtype, **kw)
    assert list(m.state_dict()) == list(tm.state_dict())
    tol = TOL[dtype]
    rng = np.random.default_rng(7)
    D = 2 if bidirectional else 1
    if unbatched:
        xshape, sshape = (T, C), (D * num_layers, H)
    else:
        xshape = (N, T, C) if batch_first else (T, N, C)
        sshape = (D * num_layers, N, H)
    x = rng.standard_normal(xshape).astype(dtype)
    n_states = 2 if kind == "LSTM" else 1
    states = [(0.5 * rng.standard_normal(sshape)).astype(dtype) if give_hx else np.zeros(sshape, dtype)
              for _ in range(n_states)]

    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    thx = (st[0], st[1]) if kind == "LSTM" else st[0]
    hx = (tuple(states) if kind == "LSTM" else states[0]) if give_hx else None

    yt, t_fin = tm(xt, thx)
    y, fin = m(x, hx)
    t_fin = list(t_fin) if kind == "LSTM" else [t_fin]
    fin = list(fin) if kind == "LSTM" else [fin]
    assert y.shape == tuple(yt.shape) and y.dtype == dtype
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    for a, b in zip(fin, t_fin):
        assert a.shape == tuple(b.shape)
        np.testing.assert_allclose(a, b.detach().numpy(), **tol)

    dy = rng.standard_normal(y.shape).astype(dtype)
    dfin = [rng.standard_normal(sshape).astype(dtype) for _ in range(n_states)]
    loss = (yt * torch.tensor(dy)).sum() + sum((f * torch.tensor(g)).sum() for f, g in zip(t_fin, dfin))
    loss.backward()
    dx, dinit = m.backward(dy, *dfin)
    dinit = list(dinit) if kind == "LSTM" else [dinit]
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)
    for a, b in zip(dinit, st):
        assert a.shape == sshape
        np.testing.assert_allclose(a, b.grad.numpy(), **tol)
    tparams = dict(tm.named_parameters())
    names = [n for n, _ in m.named_parameters()]
    assert names == list(tparams)
    for n, p in m.named_parameters():
        assert p.grad is not None and p.grad.dtype == dtype, n
        np.testing.assert_allclose(p.grad, tparams[n].grad.numpy(), err_msg=n, **tol)


DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_two_layer_bidirectional_batch_first_matches_torch(dtype):
    _check_against_torch("LSTM", dtype, num_layers=2, bidirectional=True, batch_first=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", [
    dict(num_layers=1),
    dict(num_layers=3, bias=False, batch_first=True),
    dict(num_layers=2, bidirectional=True, unbatched=True),
    dict(num_layers=1, bidirectional=True, give_hx=False),
])
def test_lstm_configs_match_torch(dtype, cfg):
    _check_against_torch("LSTM", dtype, **cfg)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(num_layers=3, bias=False),
    dict(num_layers=2, bidirectional=True, unbatched=True),
    dict(num_layers=2, batch_first=True, give_hx=False),
])
def test_gru_configs_match_torch(dtype, cfg):
    _check_against_torch("GRU", dtype, **cfg)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("cfg", [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(num_layers=3, bias=False, give_hx=False),
    dict(num_layers=1, bidirectional=True, unbatched=True),
])
def test_rnn_configs_match_torch(dtype, nonlinearity, cfg):
    _check_against_torch("RNN", dtype, nonlinearity=nonlinearity, **cfg)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_lengths_match_torch_packed_sequences(kind):
    dtype = np.float64
    torch, tm, m = _pair(kind, dtype, num_layers=2, bidirectional=True, batch_first=True)
    rng = np.random.default_rng(3)
    T, N = 6, 4
    lengths = np.array([6, 3, 1, 4])
    x = rng.standard_normal((N, T, C))
    xt = torch.tensor(x, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True,
                                                     enforce_sorted=False)
    pout, t_fin = tm(packed)
    yt, _ = torch.nn.utils.rnn.pad_packed_sequence(pout, batch_first=True, total_length=T)
    t_fin = list(t_fin) if kind == "LSTM" else [t_fin]
    y, fin = m(x, lengths=lengths)
    fin = list(fin) if kind == "LSTM" else [fin]
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    assert np.all(y[1, 3:] == 0.0) and np.all(y[2, 1:] == 0.0)
    for a, b in zip(fin, t_fin):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-10)

    dy = rng.standard_normal(y.shape)
    dfin = [rng.standard_normal(a.shape) for a in fin]
    loss = (yt * torch.tensor(dy)).sum() + sum((f * torch.tensor(g)).sum() for f, g in zip(t_fin, dfin))
    loss.backward()
    dx, _ = m.backward(dy, *dfin)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    tparams = dict(tm.named_parameters())
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[n].grad.numpy(), rtol=1e-10, atol=1e-10, err_msg=n)

    # the same valid steps given as a mask give the same results
    mask = np.arange(T)[None, :] < lengths[:, None]
    y2, fin2 = m(x, mask=mask)
    np.testing.assert_allclose(y2, y, rtol=1e-13, atol=1e-13)


def test_zero_length_sample_keeps_initial_state():
    m = nn.GRU(C, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, C))
    h0 = rng.standard_normal((4, 2, H))
    y, h_n = m(x, h0, lengths=[0, 4])
    np.testing.assert_allclose(y[:, 0], 0.0, rtol=0, atol=0)
    np.testing.assert_allclose(h_n[:, 0], h0[:, 0], rtol=0, atol=0)
    y_full, h_full = m(x[:, 1:], h0[:, 1:])
    np.testing.assert_allclose(y[:, 1:], y_full, rtol=1e-12, atol=1e-12)


def test_state_dict_keys_identical_to_torch_and_copies():
    torch = _torch()
    for kind, kw in [("LSTM", dict(num_layers=3, bidirectional=True)), ("GRU", dict(bias=False, num_layers=2)),
                     ("RNN", dict(nonlinearity="relu", bidirectional=True))]:
        tm = getattr(torch.nn, kind)(C, H, **kw)
        m = getattr(nn, kind)(C, H, seed=0, **kw)
        sd = m.state_dict()
        assert list(sd) == list(tm.state_dict())
        for k, v in tm.state_dict().items():
            assert sd[k].shape == tuple(v.shape) and sd[k].dtype == np.float32
        sd["weight_ih_l0"][...] = 123.0
        assert not np.any(m.weight_ih_l0.data == 123.0)
        # and torch loads rnnkit's state dict
        tm.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
        np.testing.assert_array_equal(tm.weight_hh_l0.detach().numpy(), m.weight_hh_l0.data)


def test_default_init_is_uniform_in_pytorch_range():
    m = nn.LSTM(3, 16, num_layers=2, seed=0)
    k = 1.0 / np.sqrt(16)
    allv = np.concatenate([p.data.ravel() for p in m.parameters()])
    assert allv.min() >= -k and allv.max() <= k
    assert allv.min() < -0.9 * k and allv.max() > 0.9 * k
    assert abs(allv.mean()) < 0.02
    same = nn.LSTM(3, 16, num_layers=2, seed=0)
    for a, b in zip(m.parameters(), same.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_gradient_accumulation_and_zero_grad():
    m = nn.LSTM(C, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2, C))
    dy = rng.standard_normal((4, 2, 2 * H))
    assert all(p.grad is None for p in m.parameters()) and m.last_caches is None
    m(x)
    caches = m.last_caches
    assert len(caches) == 2 and all(len(c) == 2 for c in caches)
    assert all(isinstance(c, F.LSTMCache) for layer in caches for c in layer)
    assert [c.reverse for c in caches[1]] == [False, True]
    m.backward(dy)
    once = {n: p.grad.copy() for n, p in m.named_parameters()}
    # a second forward/backward pair adds the same gradient again
    m(x)
    m.backward(dy)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[n], rtol=1e-12, atol=1e-12, err_msg=n)
    # backward twice for one forward also accumulates
    m.backward(dy)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, 3 * once[n], rtol=1e-12, atol=1e-12, err_msg=n)
    m.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not np.any(p.grad) for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    # frozen parameters get no gradient
    m.weight_ih_l0.requires_grad = False
    m(x)
    m.backward(dy)
    assert m.weight_ih_l0.grad is None and m.weight_hh_l0.grad is not None


def test_backward_with_only_final_state_gradient():
    torch, tm, m = _pair("GRU", np.float64, num_layers=2)
    x = np.random.default_rng(0).standard_normal((5, 2, C))
    xt = torch.tensor(x, requires_grad=True)
    _, hn_t = tm(xt)
    hn_t[-1].sum().backward()
    _, h_n = m(x)
    dh = np.zeros_like(h_n)
    dh[-1] = 1.0
    dx, dh0 = m.backward(None, dh)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    assert dh0.shape == (2, 2, H)


@pytest.mark.parametrize("shape", [(2, 3, C), (C,), (4, 1, 2, C)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(shape, bias):
    torch = _torch()
    torch.manual_seed(0)
    tl = torch.nn.Linear(C, 4, bias=bias, dtype=torch.float64)
    lin = nn.Linear(C, 4, bias=bias, dtype=np.float64)
    lin.load_state_dict(tl.state_dict())
    assert list(lin.state_dict()) == list(tl.state_dict())
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = tl(xt)
    y = lin(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    (yt * torch.tensor(dy)).sum().backward()
    dx = lin.backward(dy)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lin.weight.grad, tl.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
    if bias:
        np.testing.assert_allclose(lin.bias.grad, tl.bias.grad.numpy(), rtol=1e-12, atol=1e-12)
    else:
        assert lin.bias is None


def test_linear_init_range_and_errors():
    lin = nn.Linear(9, 3, seed=0)
    k = 1 / 3.0
    assert lin.weight.shape == (3, 9) and lin.bias.shape == (3,)
    assert np.all(np.abs(lin.weight.data) <= k) and np.all(np.abs(lin.bias.data) <= k)
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 9\) \(last axis = in_features\), got \(2, 8\)"):
        lin(np.zeros((2, 8), np.float32))
    with pytest.raises(RuntimeError, match="call forward first"):
        nn.Linear(2, 2).backward(np.zeros((1, 2), np.float32))
    lin(np.zeros((2, 9), np.float32))
    with pytest.raises(ValueError, match=r"d_output: expected shape \(2, 3\) = the output's shape, got \(2, 4\)"):
        lin.backward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="out_features: expected an int >= 1, got 0"):
        nn.Linear(2, 0)
    with pytest.raises(TypeError, match="bias: expected a bool, got str"):
        nn.Linear(2, 2, bias="yes")


def test_dropout_only_in_training_and_backward_through_mask():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, C))
    m = nn.GRU(C, H, num_layers=2, dropout=0.5, dtype=np.float64, seed=4)
    ref = nn.GRU(C, H, num_layers=2, dtype=np.float64)
    ref.load_state_dict(m.state_dict())
    assert m.training
    y_train, _ = m(x)
    y_train2, _ = m(x)
    assert not np.allclose(y_train, y_train2, rtol=1e-6, atol=1e-6)  # fresh masks each call
    m.eval()
    assert not m.training
    y_eval, h_eval = m(x)
    y_ref, h_ref = ref(x)
    np.testing.assert_allclose(y_eval, y_ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(h_eval, h_ref, rtol=1e-13, atol=1e-13)

    # training-mode backward equals the chain layer 0 -> mask -> layer 1
    m.train()
    y, h_n = m(x)
    dm = m._last.cache.drop[0]
    assert set(np.unique(dm)) <= {0.0, 2.0}
    assert 0.3 < np.mean(dm == 0) < 0.7
    l0 = nn.GRU(C, H, dtype=np.float64)
    l1 = nn.GRU(H, H, dtype=np.float64)
    sd = m.state_dict()
    l0.load_state_dict({k.replace("_l0", "_l0"): v for k, v in sd.items() if k.endswith("_l0")})
    l1.load_state_dict({k.replace("_l1", "_l0"): v for k, v in sd.items() if k.endswith("_l1")})
    y0, _ = l0(x)
    y1, _ = l1(y0 * dm)
    np.testing.assert_allclose(y, y1, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, _ = m.backward(dy)
    d_mid, _ = l1.backward(dy)
    dx_chain, _ = l0.backward(d_mid * dm)
    np.testing.assert_allclose(dx, dx_chain, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.weight_ih_l0.grad, l0.weight_ih_l0.grad, rtol=1e-12, atol=1e-12)


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        nn.LSTM(C, H, dropout=0.2)


def test_to_dtype_converts_parameters_and_grads():
    m = nn.RNN(C, H, num_layers=2, seed=0)
    assert m.dtype == np.float32
    x32 = np.random.default_rng(0).standard_normal((3, 2, C)).astype(np.float32)
    y32, _ = m(x32)
    m.backward(np.ones_like(y32))
    assert m.last_caches is not None
    assert m.to(np.float64) is m
    assert m.last_caches is None
    assert m.dtype == np.float64
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in m.parameters())
    y64, _ = m(x32.astype(np.float64))
    np.testing.assert_allclose(y64, y32, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match=r"x: expected dtype float64 \(the module's dtype\), got float32"):
        m(x32)
    m.float()
    assert m.weight_ih_l0.dtype == np.float32
    with pytest.raises(TypeError, match="dtype: expected float32 or float64, got int32"):
        m.to(np.int32)


def test_load_state_dict_errors_and_non_strict():
    m = nn.LSTM(C, H, seed=0)
    good = m.state_dict()
    before = m.state_dict()
    bad = OrderedDict(good)
    del bad["bias_hh_l0"]
    bad["extra"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"missing key\(s\): 'bias_hh_l0'; unexpected key\(s\): 'extra'"):
        m.load_state_dict(bad)
    res = m.load_state_dict(bad, strict=False)
    assert res.missing_keys == ["bias_hh_l0"] and res.unexpected_keys == ["extra"]
    wrong = OrderedDict(good)
    wrong["weight_ih_l0"] = np.ones((4 * H, C + 1), np.float32)
    wrong["weight_hh_l0"] = np.ones((4 * H, H), np.float32)
    with pytest.raises(ValueError, match=r"size mismatch for 'weight_ih_l0': expected \(24, 5\) \(this module\), "
                                         r"got \(24, 6\) \(state_dict\)"):
        m.load_state_dict(wrong)
    for k, v in m.state_dict().items():  # nothing was copied
        np.testing.assert_array_equal(v, before[k])
    ints = OrderedDict(good)
    ints["weight_hh_l0"] = np.ones((4 * H, H), np.int64)
    with pytest.raises(TypeError, match=r"state_dict\['weight_hh_l0'\]: expected a float array, got dtype int64"):
        m.load_state_dict(ints)
    with pytest.raises(TypeError, match="state_dict: expected a mapping"):
        m.load_state_dict([1, 2])
    # float64 values are cast to the module's float32
    m.load_state_dict({k: v.astype(np.float64) * 0.5 for k, v in good.items()})
    assert m.weight_ih_l0.dtype == np.float32
    np.testing.assert_allclose(m.weight_ih_l0.data, good["weight_ih_l0"] * 0.5, rtol=1e-7, atol=0)


@pytest.mark.parametrize("make, match, exc", [
    (lambda: nn.LSTM(0, 4), "input_size: expected an int >= 1, got 0", ValueError),
    (lambda: nn.LSTM(4.0, 4), "input_size: expected an int, got float", TypeError),
    (lambda: nn.GRU(4, -1), "hidden_size: expected an int >= 1, got -1", ValueError),
    (lambda: nn.GRU(4, 4, num_layers=0), "num_layers: expected an int >= 1, got 0", ValueError),
    (lambda: nn.RNN(4, 4, nonlinearity="sigmoid"), "nonlinearity: expected 'tanh' or 'relu', got 'sigmoid'",
     ValueError),
    (lambda: nn.LSTM(4, 4, num_layers=2, dropout=1.0), r"dropout: expected a float in \[0, 1\), got 1.0",
     ValueError),
    (lambda: nn.LSTM(4, 4, num_layers=2, dropout=-0.1), r"dropout: expected a float in \[0, 1\), got -0.1",
     ValueError),
    (lambda: nn.LSTM(4, 4, dropout="0.1"), r"dropout: expected a float in \[0, 1\), got str", TypeError),
    (lambda: nn.LSTM(4, 4, bidirectional=1), "bidirectional: expected a bool, got int", TypeError),
    (lambda: nn.LSTM(4, 4, batch_first=None), "batch_first: expected a bool, got NoneType", TypeError),
    (lambda: nn.LSTM(4, 4, bias="no"), "bias: expected a bool, got str", TypeError),
    (lambda: nn.GRU(4, 4, dtype=np.float16), "dtype: expected float32 or float64, got float16", TypeError),
    (lambda: nn.GRU(4, 4, dtype="complex"), "dtype: expected float32 or float64", TypeError),
    (lambda: nn.GRU(4, 4, seed="a"), "seed: expected None, an int or a numpy.random.Generator, got str",
     TypeError),
    (lambda: nn.GRU(4, 4, seed=-1), "seed: expected a non-negative int, got -1", ValueError),
])
def test_constructor_errors(make, match, exc):
    with pytest.raises(exc, match=match):
        make()


def test_forward_and_backward_input_errors():
    m = nn.LSTM(C, H, num_layers=2, bidirectional=True, seed=0)
    x = np.zeros((4, 3, C), np.float32)
    with pytest.raises(ValueError, match=r"x: expected 3 dimensions \[T, N, C\] or 2 dimensions \[T, C\] "
                                         r"\(unbatched\), got shape \(1, 4, 3, 5\)"):
        m(x[None])
    with pytest.raises(ValueError, match=r"x: expected 5 features \(input_size\) in the last dimension, "
                                         r"got shape \(4, 3, 4\)"):
        m(x[:, :, :4])
    with pytest.raises(ValueError, match=r"x: every dimension must be at least 1, got shape \(0, 3, 5\)"):
        m(x[:0])
    with pytest.raises(TypeError, match=r"x: expected dtype float32 \(the module's dtype\), got float64"):
        m(x.astype(np.float64))
    with pytest.raises(TypeError, match="x: expected a float32 or float64 array, got dtype int64"):
        m(np.zeros((4, 3, C), np.int64))
    h = np.zeros((4, 3, H), np.float32)
    with pytest.raises(TypeError, match=r"hx: expected a tuple \(h_0, c_0\) for LSTM, got ndarray"):
        m(x, h)
    with pytest.raises(ValueError, match=r"h_0: expected shape \(4, 3, 6\) = \(D\*num_layers, N, hidden_size\), "
                                         r"got \(2, 3, 6\)"):
        m(x, (h[:2], h))
    with pytest.raises(ValueError, match=r"c_0: expected shape \(4, 3, 6\)"):
        m(x, (h, h[:, :2]))
    with pytest.raises(ValueError, match=r"h_0: expected shape \(4, 6\) = \(D\*num_layers, hidden_size\) "
                                         r"for unbatched input, got \(4, 3, 6\)"):
        m(x[:, 0], (h, h))
    g = nn.GRU(C, H, batch_first=True)
    with pytest.raises(TypeError, match="hx: expected an array h_0 for GRU, got a tuple"):
        g(x, (h[:1], h[:1]))
    with pytest.raises(ValueError, match=r"x: expected 3 dimensions \[N, T, C\] \(batch_first\)"):
        g(x[0, 0])
    with pytest.raises(RuntimeError, match="GRU.backward: call forward first"):
        g.backward(np.zeros((3, 4, H), np.float32))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, T\] = \[0, 3\], got min 1, max 4"):
        g(x, lengths=[1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"lengths: expected shape \(N,\) = \(4,\), got \(2,\)"):
        g(x, lengths=[1, 2])
    with pytest.raises(TypeError, match="lengths: expected integers, got dtype float64"):
        g(x, lengths=[1.0, 2.0, 3.0, 3.0])
    with pytest.raises(ValueError, match="lengths, mask: pass at most one of them"):
        g(x, lengths=[1, 2, 3, 3], mask=np.ones((4, 3), bool))
    with pytest.raises(ValueError, match=r"mask: expected shape \(4, 3\), got \(3, 4\)"):
        g(x, mask=np.ones((3, 4), bool))

    y, (h_n, c_n) = m(x)
    with pytest.raises(ValueError, match=r"d_output: expected shape \(4, 3, 12\) = the output's shape, got \(4, 3, 6\)"):
        m.backward(np.zeros((4, 3, H), np.float32))
    with pytest.raises(ValueError, match=r"d_cn: expected shape \(4, 3, 6\) = the shape of c_n, got \(4, 6\)"):
        m.backward(y, None, np.zeros((4, H), np.float32))
    with pytest.raises(TypeError, match=r"d_output: expected dtype float32 \(the module's dtype\), got float64"):
        m.backward(y.astype(np.float64))
    with pytest.raises(ValueError, match="d_output, d_hn, d_cn: pass at least one gradient"):
        m.backward(None)
    with pytest.raises(ValueError, match=r"layer: expected an int in \[0, 1\] \(num_layers=2\), got 2"):
        m.direction_weights(2)
    with pytest.raises(ValueError, match="reverse: this module is not bidirectional"):
        g.direction_weights(0, reverse=True)


def test_unbatched_ignores_batch_first_and_matches_batched():
    m = nn.LSTM(C, H, num_layers=2, batch_first=True, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((7, C))
    y, (h, c) = m(x)
    assert y.shape == (7, H) and h.shape == (2, H) and c.shape == (2, H)
    yb, (hb, cb) = m(x[None])
    np.testing.assert_allclose(y, yb[0], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(h, hb[:, 0], rtol=1e-13, atol=1e-13)
    dxb, (dh0b, dc0b) = m.backward(np.ones_like(yb), np.ones_like(hb))
    m(x)
    dx, (dh0, dc0) = m.backward(np.ones_like(y), np.ones_like(h))
    assert dx.shape == (7, C) and dh0.shape == (2, H) and dc0.shape == (2, H)
    np.testing.assert_allclose(dx, dxb[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dc0, dc0b[:, 0], rtol=1e-12, atol=1e-12)


class _Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(C, H, batch_first=True, bidirectional=True, seed=0)
        self.fc = nn.Linear(2 * H, 3, seed=1)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y)

    def backward(self, d_out):
        dx, _ = self.rnn.backward(self.fc.backward(d_out))
        return dx


def test_composite_module_names_modes_and_torch_state_dict():
    torch = _torch()
    model = _Tagger()
    names = [n for n, _ in model.named_parameters()]
    assert names[:2] == ["rnn.weight_ih_l0", "rnn.weight_hh_l0"] and names[-2:] == ["fc.weight", "fc.bias"]
    assert [n for n, _ in model.named_children()] == ["rnn", "fc"]
    model.eval()
    assert not model.rnn.training and not model.fc.training
    model.train()
    assert model.rnn.training

    class TTagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(C, H, batch_first=True, bidirectional=True)
            self.fc = torch.nn.Linear(2 * H, 3)

        def forward(self, x):
            return self.fc(self.rnn(x)[0])

    tmodel = TTagger()
    assert list(model.state_dict()) == list(tmodel.state_dict())
    model.load_state_dict(tmodel.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 4, C)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    yt = tmodel(xt)
    y = model(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    yt.sum().backward()
    dx = model.backward(np.ones_like(y))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-5, atol=1e-5)
    tgrads = {n: p.grad.numpy() for n, p in tmodel.named_parameters()}
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, tgrads[n], rtol=1e-5, atol=1e-5, err_msg=n)
    assert "(rnn): GRU(5, 6, batch_first=True, bidirectional=True)" in repr(model)


def test_repr_matches_torch():
    torch = _torch()
    for kind, kw in [("LSTM", dict(num_layers=2, batch_first=True, bidirectional=True)),
                     ("GRU", dict(bias=False, dropout=0.5, num_layers=3)), ("RNN", {})]:
        assert repr(getattr(nn, kind)(C, H, **kw)) == repr(getattr(torch.nn, kind)(C, H, **kw))
    assert repr(nn.Linear(3, 2)) == repr(torch.nn.Linear(3, 2))
    assert repr(nn.RNN(3, 2, nonlinearity="relu", dtype=np.float64)) == \
        "RNN(3, 2, nonlinearity='relu', dtype=float64)"


def test_parameter_and_module_registration():
    p = nn.Parameter(np.arange(6, dtype=np.float64).reshape(2, 3))
    assert p.shape == (2, 3) and p.dtype == np.float64 and p.grad is None and p.numel() == 6
    np.testing.assert_array_equal(np.asarray(p), p.data)
    with pytest.raises(TypeError, match="data: expected a float32 or float64 array, got dtype int64"):
        nn.Parameter(np.arange(3))
    lin = nn.Linear(3, 2, bias=False)
    assert [n for n, _ in lin.named_parameters()] == ["weight"] and lin.bias is None
    with pytest.raises(TypeError, match="bias: expected a Parameter or None for a registered parameter, got ndarray"):
        lin.bias = np.zeros(2, np.float32)
    lin.bias = nn.Parameter(np.zeros(2, np.float32))
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    shared = nn.Module()
    shared.a = lin
    shared.b = lin
    assert len(list(shared.parameters())) == 2  # shared parameters listed once
    assert list(shared.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]  # as torch
    del shared.b
    assert list(shared.state_dict()) == ["a.weight", "a.bias"]
    lstm = nn.LSTM(C, H, num_layers=2, bidirectional=True)
    assert len(lstm.all_weights) == 4 and all(len(w) == 4 for w in lstm.all_weights)
    w = lstm.direction_weights(1, reverse=True)
    assert w["w_ih"] is lstm.weight_ih_l1_reverse.data and w["w_ih"].shape == (4 * H, 2 * H)
