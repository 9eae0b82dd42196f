"""LSTM with projection (LSTMP, ``torch.nn.LSTM(proj_size=P)``) in the fused kernels.

- ``rnnkit.functional.lstm_forward(..., w_hr=)``: float64 finite differences of every gradient
  (dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr) with masks with holes, reverse, recurrent dropout and
  both ways of sharing the time loop on 2 threads (relative error < 1e-6);
- ``rnnkit.nn.LSTM(proj_size=P)`` against ``torch.nn.LSTM(proj_size=P)`` on the same weights:
  multi-layer, bidirectional, batch_first, ``lengths`` (packed sequences), float64 (1e-10) and
  float32 (1e-5): outputs, final states, input/state gradients and every parameter gradient;
  ``state_dict`` keys; ``interop`` both ways;
- streams with a projection equal the whole-sequence kernel;
- errors name the argument.
"""
from __future__ import annotations

import numpy as np
import pytest

import rnnkit
from rnnkit import functional as F
from rnnkit import interop, nn, streaming

from helpers import mask_with_holes, numerical_grad, rel_err

# torch warns that oneDNN has no LSTMP and it uses its own implementation (the reference here)
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")


def _weights(rng, C, H, P, scale=0.5):
    u = lambda *s: rng.uniform(-scale, scale, s)  # noqa: E731
    return {"w_ih": u(4 * H, C), "w_hh": u(4 * H, P), "b_ih": u(4 * H), "b_hh": u(4 * H), "w_hr": u(P, H)}


@pytest.mark.parametrize("plan", ["serial", "rows", "columns"])
@pytest.mark.parametrize("variant", ["plain", "holes_reverse_rdrop"])
def test_gradients_match_finite_differences(plan, variant, restore_threads):
    rnnkit.set_num_threads(2)
    rnnkit._core._set_loop_plan(plan)
    try:
        rng = np.random.default_rng(3)
        # H = 32 and P = 20 so that both parallel plans split the products on 2 threads
        T, N, C, H, P = 4, 8, 3, 32, 20
        x = rng.standard_normal((T, N, C))
        h0, c0 = rng.standard_normal((N, P)) * 0.5, rng.standard_normal((N, H)) * 0.5
        w = _weights(rng, C, H, P, 0.3)
        kw = {}
        if variant != "plain":
            kw = dict(mask=mask_with_holes(T, N), reverse=True, zero_output_for_mask=True,
                      recurrent_dropout_mask=(rng.random((N, P)) < 0.7) / 0.7)
        wy, wh, wc = rng.standard_normal((T, N, P)), rng.standard_normal((N, P)), rng.standard_normal((N, H))
        o = F.lstm_forward(x, h0, c0, **w, **kw)
        assert o.y.shape == (T, N, P) and o.h_n.shape == (N, P) and o.c_n.shape == (N, H)
        g = F.lstm_backward(o.cache, wy, wh, wc)

        def loss():
            r = F.lstm_forward(x, h0, c0, **w, **kw)
            return float(np.sum(r.y * wy) + np.sum(r.h_n * wh) + np.sum(r.c_n * wc))

        pairs = {"dx": x, "dh0": h0, "dc0": c0, "dw_ih": w["w_ih"], "dw_hh": w["w_hh"],
                 "db_ih": w["b_ih"], "db_hh": w["b_hh"], "dw_hr": w["w_hr"]}
        for name, arr in pairs.items():
            err = rel_err(getattr(g, name), numerical_grad(loss, arr, 1e-6))
            assert err < 1e-6, f"{plan}/{variant}: {name} relative error {err:.2e}"
    finally:
        rnnkit._core._set_loop_plan("auto")


def test_without_projection_dw_hr_is_none():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 4))
    o = F.lstm_forward(x, None, None, rng.standard_normal((8, 4)), rng.standard_normal((8, 2)))
    assert F.lstm_backward(o.cache, np.ones_like(o.y)).dw_hr is None


@pytest.mark.torch
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("use_lengths", [False, True])
def test_matches_torch(dtype, tol, bidirectional, use_lengths):
    torch = pytest.importorskip("torch")
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    torch.manual_seed(0)
    N, T, C, H, P, L = 4, 6, 5, 9, 4, 2
    D = 2 if bidirectional else 1
    theirs = torch.nn.LSTM(C, H, num_layers=L, proj_size=P, bidirectional=bidirectional,
                           batch_first=True, dtype=tdt)
    mine = interop.from_torch_module(theirs)
    assert list(mine.state_dict()) == list(theirs.state_dict())
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, T, C)).astype(dtype)
    h0 = rng.standard_normal((L * D, N, P)).astype(dtype)
    c0 = rng.standard_normal((L * D, N, H)).astype(dtype)
    lengths = np.array([6, 3, 5, 1]) if use_lengths else None

    xt = torch.tensor(x, requires_grad=True)
    h0t, c0t = torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True)
    if use_lengths:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True,
                                                         enforce_sorted=False)
        yp, (hn, cn) = theirs(packed, (h0t, c0t))
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(yp, batch_first=True, total_length=T)
    else:
        y, (hn, cn) = theirs(xt, (h0t, c0t))
    gy = rng.standard_normal(tuple(y.shape)).astype(dtype)
    gh = rng.standard_normal(tuple(hn.shape)).astype(dtype)
    gc = rng.standard_normal(tuple(cn.shape)).astype(dtype)
    ((y * torch.tensor(gy)).sum() + (hn * torch.tensor(gh)).sum() + (cn * torch.tensor(gc)).sum()).backward()

    my, (mh, mc) = mine(x, (h0, c0), lengths=lengths)
    assert my.shape == (N, T, D * P) and mh.shape == (L * D, N, P) and mc.shape == (L * D, N, H)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=tol, atol=tol)  # noqa: E731
    close(my, y.detach().numpy())
    close(mh, hn.detach().numpy())
    close(mc, cn.detach().numpy())
    dx, (dh0, dc0) = mine.backward(gy, gh, gc)
    close(dx, xt.grad.numpy())
    close(dh0, h0t.grad.numpy())
    close(dc0, c0t.grad.numpy())
    for name, p in theirs.named_parameters():
        close(getattr(mine, name).grad, p.grad.numpy())


@pytest.mark.torch
def test_interop_round_trip():
    torch = pytest.importorskip("torch")
    mine = nn.LSTM(3, 6, num_layers=2, proj_size=2, bidirectional=True, seed=0)
    theirs = interop.to_torch_module(mine)
    assert theirs.proj_size == 2
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(mine(x)[0], theirs(torch.tensor(x))[0].detach().numpy(), rtol=1e-5, atol=1e-6)
    back = interop.from_torch_module(theirs)
    for k, v in mine.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v)


def test_stream_matches_whole_sequence():
    rng = np.random.default_rng(4)
    w = {k: v.astype(np.float32) for k, v in _weights(rng, 3, 10, 4).items()}
    x = rng.standard_normal((9, 2, 3)).astype(np.float32)
    y = F.lstm_forward(x, None, None, **w).y
    s = streaming.LSTMStream(**w, batch_size=2)
    assert s.state_size == 4 and s.hidden_size == 10
    got = np.stack([s.step(x[t]) for t in range(4)] + list(s.run(x[4:])))
    np.testing.assert_allclose(got, y, rtol=1e-6, atol=1e-6)
    assert s.h.shape == (2, 4) and s.c.shape == (2, 10)
    # a two-layer module's stream
    m = nn.LSTM(3, 10, num_layers=2, proj_size=4, seed=0)
    st = m.stream(batch_size=2)
    np.testing.assert_allclose(st.run(x), m(x)[0], rtol=1e-5, atol=1e-6)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"proj_size: expected an int in \[0, hidden_size\) = \[0, 4\), got 4"):
        nn.LSTM(3, 4, proj_size=4)
    m = nn.LSTM(3, 8, proj_size=2)
    x = np.zeros((5, 2, 3), np.float32)
    with pytest.raises(ValueError, match=r"h_0: expected shape \(1, 2, 2\) = \(D\*num_layers, N, proj_size\)"):
        m(x, (np.zeros((1, 2, 8), np.float32), np.zeros((1, 2, 8), np.float32)))
    w = _weights(np.random.default_rng(0), 3, 8, 2)
    with pytest.raises(ValueError, match=r"w_hh: expected shape \(32, 2\) = \(4\*H, P\) with \(P, H\) = \(2, 8\)"):
        F.lstm_forward(x.astype(np.float64), None, None, w["w_ih"], w["w_hh"][:, :1], w_hr=w["w_hr"])
    with pytest.raises(ValueError, match=r"c0: expected shape \(2, 8\)"):
        F.lstm_forward(x.astype(np.float64), None, np.zeros((2, 2)), w["w_ih"], w["w_hh"], w_hr=w["w_hr"])
    with pytest.raises(ValueError, match="w_hr: only an LSTM has a projection"):
        rnnkit._core.StreamF64("GRU", np.zeros((6, 3)), np.zeros((6, 2)), None, None, 1, "tanh", "sigmoid",
                               np.zeros((2, 2)))
