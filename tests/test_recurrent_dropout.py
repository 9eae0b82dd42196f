"""Recurrent dropout (a per-sequence mask on h_{t-1} in the recurrent product): forward against a
NumPy reference and every gradient against float64 finite differences."""
import numpy as np
import pytest

from rnnkit import functional as F

G = {"rnn": 1, "lstm": 4, "gru": 3}


def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def reference(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, rd, reverse):
    """Step-by-step NumPy reference in PyTorch's gate order; rd multiplies h only inside W_hh."""
    T = x.shape[0]
    ys = [None] * T
    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        gx = x[t] @ w_ih.T + b_ih
        gh = (h * rd) @ w_hh.T + b_hh
        if cell == "rnn":
            h = np.tanh(gx + gh)
        elif cell == "lstm":
            i, f, g, o = np.split(gx + gh, 4, axis=1)
            c = _sig(f) * c + _sig(i) * np.tanh(g)
            h = _sig(o) * np.tanh(c)
        else:
            H = h.shape[1]
            r = _sig(gx[:, :H] + gh[:, :H])
            z = _sig(gx[:, H:2 * H] + gh[:, H:2 * H])
            n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
            h = (1 - z) * n + z * h
        ys[t] = h
    return np.stack(ys), h, c


def _run(cell, x, h0, c0, w, rd, mask=None, reverse=False):
    if cell == "lstm":
        return F.lstm_forward(x, h0, c0, *w, recurrent_dropout_mask=rd, mask=mask, reverse=reverse)
    fn = F.rnn_forward if cell == "rnn" else F.gru_forward
    return fn(x, h0, *w, recurrent_dropout_mask=rd, mask=mask, reverse=reverse)


def _problem(cell, seed=0, T=4, N=3, C=2, H=5):
    rng = np.random.default_rng(seed)
    g = G[cell]
    x = rng.standard_normal((T, N, C))
    h0 = rng.standard_normal((N, H)) * 0.5
    c0 = rng.standard_normal((N, H)) * 0.5
    w = [rng.standard_normal(s) * 0.5 for s in ((g * H, C), (g * H, H), (g * H,), (g * H,))]
    rd = (rng.random((N, H)) > 0.3) / 0.7
    return x, h0, c0, w, rd


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_forward_matches_reference(cell, reverse):
    x, h0, c0, w, rd = _problem(cell)
    out = _run(cell, x, h0, c0, w, rd, reverse=reverse)
    y_ref, h_ref, _ = reference(cell, x, h0, c0, *w, rd, reverse)
    np.testing.assert_allclose(out.y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.h_n, h_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("masked", [False, True])
def test_gradients_finite_differences(cell, masked):
    x, h0, c0, w, rd = _problem(cell, seed=1)
    T, N = x.shape[:2]
    mask = None
    if masked:
        mask = np.ones((T, N), bool)
        mask[1, 0] = mask[0, 2] = mask[3, 1] = False
    rng = np.random.default_rng(5)
    wy = rng.standard_normal((T, N, h0.shape[1]))
    wh = rng.standard_normal(h0.shape)

    def loss(x_, h0_, c0_, w_):
        o = _run(cell, x_, h0_, c0_, w_, rd, mask=mask)
        return float(np.sum(o.y * wy) + np.sum(o.h_n * wh))

    out = _run(cell, x, h0, c0, w, rd, mask=mask)
    if cell == "lstm":
        gr = F.lstm_backward(out.cache, wy, wh)
    else:
        gr = (F.rnn_backward if cell == "rnn" else F.gru_backward)(out.cache, wy, wh)
    params = {"dx": x, "dh0": h0, "dw_ih": w[0], "dw_hh": w[1], "db_ih": w[2], "db_hh": w[3]}
    eps = 1e-6
    for name, arr in params.items():
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            lp = loss(x, h0, c0, w)
            arr[idx] = old - eps
            lm = loss(x, h0, c0, w)
            arr[idx] = old
            num[idx] = (lp - lm) / (2 * eps)
        got = getattr(gr, name)
        rel = np.max(np.abs(got - num)) / max(np.max(np.abs(num)), 1e-8)
        assert rel < 1e-6, f"{cell} {name}: relative error {rel:.2e}"


def test_mask_shape_and_dtype_are_checked():
    x, h0, c0, w, rd = _problem("lstm")
    with pytest.raises(ValueError, match="recurrent_dropout_mask"):
        F.lstm_forward(x, h0, c0, *w, recurrent_dropout_mask=rd[:, :2])
    with pytest.raises(TypeError, match="recurrent_dropout_mask"):
        F.lstm_forward(x, h0, c0, *w, recurrent_dropout_mask=rd.astype(np.float32))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_threads_and_float32_agree_with_the_reference_on_a_threaded_shape(cell, restore_threads):
    # large enough for the time loop to run on two threads (each owning part of the columns)
    import rnnkit

    x, h0, c0, w, rd = _problem(cell, seed=3, T=6, N=37, C=20, H=70)
    y_ref, h_ref, _ = reference(cell, x, h0, c0, *w, rd, False)
    for threads in (1, 2):
        rnnkit.set_num_threads(threads)
        out = _run(cell, x, h0, c0, w, rd)
        np.testing.assert_allclose(out.y, y_ref, rtol=0, atol=1e-12)
        f32 = [a.astype(np.float32) for a in w]
        out32 = _run(cell, x.astype(np.float32), h0.astype(np.float32),
                     c0.astype(np.float32), f32, rd.astype(np.float32))
        np.testing.assert_allclose(out32.y, y_ref, rtol=0, atol=1e-4)
