"""rnnkit.streaming: step-by-step and chunked runs equal one whole-sequence forward; state,
reset, dtype and shape errors; nn modules' stream()."""
import numpy as np
import pytest

from rnnkit import functional as F
from rnnkit import nn
from rnnkit.streaming import GRUStream, LSTMStream, RNNStream, StackedStream

CASES = [(LSTMStream, 4, "lstm"), (GRUStream, 3, "gru"), (RNNStream, 1, "rnn")]


def _weights(G, C, H, dtype, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(H)
    w = [rng.uniform(-k, k, s).astype(dtype) for s in ((G * H, C), (G * H, H), (G * H,), (G * H,))]
    return w if bias else w[:2] + [None, None]


def _reference(kind, x, w, h0=None, c0=None):
    if kind == "lstm":
        return F.lstm_forward(x, h0, c0, *w).y
    return (F.gru_forward if kind == "gru" else F.rnn_forward)(x, h0, *w).y


@pytest.mark.parametrize("cls,G,kind", CASES)
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("N", [1, 3])
def test_steps_and_chunks_match_the_sequence_kernel(cls, G, kind, dtype, tol, bias, N):
    T, C, H = 23, 5, 9
    w = _weights(G, C, H, dtype, bias)
    x = np.random.default_rng(1).standard_normal((T, N, C)).astype(dtype)
    ref = _reference(kind, x, w)
    s = cls(*w, batch_size=N)
    ys = [s.step(x[t]) for t in range(7)]
    ys.append(s.run(x[7:15]))
    ys.extend(s.step(x[t]) for t in range(15, 18))
    ys.append(s.run(x[18:]))
    got = np.concatenate([y if y.ndim == 3 else y[None] for y in ys])
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
    np.testing.assert_allclose(s.h, ref[-1], rtol=0, atol=tol)
    assert got.dtype == dtype


def test_reset_sets_and_zeroes_the_state():
    w = _weights(4, 3, 4, np.float64)
    x = np.random.default_rng(2).standard_normal((6, 2, 3))
    h0 = np.full((2, 4), 0.3)
    c0 = np.full((2, 4), -0.2)
    s = LSTMStream(*w, batch_size=2)
    s.run(x)
    s.reset(h0, c0)
    np.testing.assert_allclose(s.run(x), _reference("lstm", x, w, h0, c0), atol=1e-13)
    s.reset()
    assert np.all(s.h == 0) and np.all(s.c == 0)
    with pytest.raises(ValueError, match="c0"):
        GRUStream(*_weights(3, 3, 4, np.float64)).reset(c0=c0)


def test_bad_inputs_raise_clear_errors():
    w = _weights(4, 3, 4, np.float32)
    s = LSTMStream(*w, batch_size=2)
    with pytest.raises(TypeError, match="x: expected dtype float32"):
        s.step(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"x: expected shape \(N, C\) = \(2, 3\), got \(2, 4\)"):
        s.step(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"x: expected shape \(steps, N, C\)"):
        s.run(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        s.step(np.zeros((3, 2), np.float32).T)
    with pytest.raises(ValueError, match="w_hh"):
        LSTMStream(w[0], w[1][:, :3])
    with pytest.raises(TypeError, match="w_ih"):
        LSTMStream(w[0].astype(np.float64), w[1])
    with pytest.raises(ValueError, match="batch_size"):
        LSTMStream(*w, batch_size=0)
    with pytest.raises(ValueError, match="nonlinearity"):
        RNNStream(*_weights(1, 3, 4, np.float32), nonlinearity="sigmoid")


@pytest.mark.parametrize("module", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_nn_module_stream_matches_its_forward(module, num_layers):
    m = module(4, 6, num_layers=num_layers, seed=3)
    x = np.random.default_rng(4).standard_normal((10, 2, 4)).astype(np.float32)
    out = m(x)[0]
    s = m.stream(batch_size=2)
    assert isinstance(s, StackedStream) == (num_layers > 1)
    got = np.stack([s.step(x[t]) for t in range(10)])
    np.testing.assert_allclose(got, out, rtol=0, atol=2e-6)
    if num_layers > 1:
        assert s.h.shape == (num_layers, 2, 6)


def test_bidirectional_module_cannot_stream():
    with pytest.raises(ValueError, match="bidirectional"):
        nn.LSTM(3, 4, bidirectional=True).stream()
