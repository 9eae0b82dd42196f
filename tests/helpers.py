"""Shared test utilities for the functional kernel tests.

- ``CELLS``: the four cell kinds under test (``rnn_tanh``, ``rnn_relu``, ``lstm``, ``gru``) and
  their gate counts.
- ``make_params``: seeded random weights/biases in PyTorch layout.
- ``run_forward`` / ``run_backward``: one calling convention for every cell.
- ``ref_forward``: an independent, slow pure-NumPy forward (masks, reverse, zero outputs), used
  to find kinks of ReLU and as a torch-free cross check.
- ``numerical_grad``: central finite differences of a scalar function w.r.t. an array, in place.
- ``rel_err``: the error measure every gradient check asserts on,
  ``max|a - b| / max(max|b|, 1e-8)``.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from rnnkit import functional as F

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def has_cell_state(cell: str) -> bool:
    return cell == "lstm"


def rel_err(a, b) -> float:
    """max|a - b| / max(max|b|, 1e-8): the relative error of `a` against the reference `b`."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-8))


def assert_close_rel(a, b, tol: float, what: str = "") -> None:
    """Asserts rel_err(a, b) < tol with a readable message."""
    e = rel_err(a, b)
    assert e < tol, f"{what}: relative error {e:.3e} >= {tol:.1e}"


def make_params(rng: np.random.Generator, cell: str, C: int, H: int, *, bias=(True, True),
                dtype=np.float64, scale: Optional[float] = None) -> Dict[str, Optional[np.ndarray]]:
    """Random weights in PyTorch layout, uniform(-k, k) with k = scale or 1/sqrt(H) (torch's init)."""
    G = GATES[cell]
    k = scale if scale is not None else 1.0 / np.sqrt(H)

    def u(*shape):
        return rng.uniform(-k, k, size=shape).astype(dtype)

    return {
        "w_ih": u(G * H, C),
        "w_hh": u(G * H, H),
        "b_ih": u(G * H) if bias[0] else None,
        "b_hh": u(G * H) if bias[1] else None,
    }


def run_forward(cell: str, x, h0, c0, p, **kw):
    """Calls the right forward; returns (y, h_n, c_n or None, cache)."""
    if cell == "lstm":
        out = F.lstm_forward(x, h0, c0, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], **kw)
        return out.y, out.h_n, out.c_n, out.cache
    if cell == "gru":
        out = F.gru_forward(x, h0, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], **kw)
        return out.y, out.h_n, None, out.cache
    act = cell.split("_")[1]
    out = F.rnn_forward(x, h0, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], nonlinearity=act, **kw)
    return out.y, out.h_n, None, out.cache


def run_backward(cell: str, cache, dy, dh_n=None, dc_n=None) -> Dict[str, Optional[np.ndarray]]:
    """Calls the right backward; returns a dict dx, dh0, [dc0,] dw_ih, dw_hh, db_ih, db_hh."""
    if cell == "lstm":
        g = F.lstm_backward(cache, dy, dh_n, dc_n)
        assert g.dw_hr is None  # no projection here
        g = g[:7]
        names = ("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh")
    elif cell == "gru":
        g = F.gru_backward(cache, dy, dh_n)
        names = ("dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh")
    else:
        g = F.rnn_backward(cache, dy, dh_n)
        names = ("dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh")
    assert len(g) == len(names)
    return dict(zip(names, g))


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def ref_forward(cell: str, x, h0, c0, p, *, mask=None, reverse=False, zero_output_for_mask=False,
                recurrent_dropout_mask=None):
    """Pure NumPy float64 reference. Returns (y, h_n, c_n or None, preacts) where preacts[t] is
    the [N, G*H] pre-activation of step t (what the ReLU kink check needs).
    ``recurrent_dropout_mask`` [N, H] multiplies h_{t-1} inside the recurrent product only."""
    x = np.asarray(x, np.float64)
    T, N, _ = x.shape
    w_ih = np.asarray(p["w_ih"], np.float64)
    w_hh = np.asarray(p["w_hh"], np.float64)
    H = w_hh.shape[1]
    GH = w_hh.shape[0]
    b_ih = np.zeros(GH) if p["b_ih"] is None else np.asarray(p["b_ih"], np.float64)
    b_hh = np.zeros(GH) if p["b_hh"] is None else np.asarray(p["b_hh"], np.float64)
    h = np.zeros((N, H)) if h0 is None else np.array(h0, np.float64)
    c = np.zeros((N, H)) if c0 is None else np.array(c0, np.float64)
    y = np.zeros((T, N, H))
    pre = np.zeros((T, N, GH))
    rd = None if recurrent_dropout_mask is None else np.asarray(recurrent_dropout_mask, np.float64)
    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        gi = x[t] @ w_ih.T + b_ih
        gh = (h if rd is None else h * rd) @ w_hh.T + b_hh
        if cell == "lstm":
            a = gi + gh
            pre[t] = a
            i, f, g, o = (a[:, k * H:(k + 1) * H] for k in range(4))
            c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h_new = _sigmoid(o) * np.tanh(c_new)
        elif cell == "gru":
            r = _sigmoid(gi[:, :H] + gh[:, :H])
            z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
            pre[t] = gi + np.concatenate([gh[:, :2 * H], r * gh[:, 2 * H:]], axis=1)
            n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
            h_new = (1 - z) * n + z * h
            c_new = c
        else:
            a = gi + gh
            pre[t] = a
            h_new = np.tanh(a) if cell == "rnn_tanh" else np.maximum(a, 0.0)
            c_new = c
        if mask is not None:
            m = np.asarray(mask[t], bool)[:, None]
            h = np.where(m, h_new, h)
            c = np.where(m, c_new, c)
            y[t] = np.where(m, h, 0.0) if zero_output_for_mask else h
        else:
            h, c = h_new, c_new
            y[t] = h
    return y, h, (c if cell == "lstm" else None), pre


def relu_margin(x, h0, p, mask=None, reverse=False, recurrent_dropout_mask=None) -> float:
    """Smallest |pre-activation| over the valid steps of an Elman ReLU RNN (distance to the kink)."""
    _, _, _, pre = ref_forward("rnn_relu", x, h0, None, p, mask=mask, reverse=reverse,
                               recurrent_dropout_mask=recurrent_dropout_mask)
    if mask is not None:
        pre = pre[np.asarray(mask, bool)]
    return float(np.min(np.abs(pre))) if pre.size else np.inf


def numerical_grad(f: Callable[[], float], a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences (f(a + eps e_i) - f(a - eps e_i)) / (2 eps) for every entry of `a`,
    perturbing `a` in place (and restoring it). `f` takes no arguments and reads `a`."""
    assert a.dtype == np.float64 and a.flags.c_contiguous
    g = np.zeros_like(a)
    flat = a.reshape(-1)
    gflat = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2.0 * eps)
    return g


def mask_with_holes(T: int, N: int) -> np.ndarray:
    """A [T, N] mask with holes: sample 0 has gaps in the middle, sample 1 starts with masked
    steps, sample 2 (when N >= 3) is fully masked; further samples are random."""
    rng = np.random.default_rng(1234 + 31 * T + N)
    m = rng.random((T, N)) < 0.7
    if N >= 1:
        m[:, 0] = True
        if T >= 3:
            m[1, 0] = False
            m[T - 2, 0] = False
    if N >= 2:
        m[:, 1] = True
        m[: min(2, T - 1) if T > 1 else 1, 1] = False
    if N >= 3:
        m[:, 2] = False
    return m


def right_padded_mask(lengths, T: int) -> np.ndarray:
    """[T, N] mask with mask[t, n] = t < lengths[n]."""
    return np.arange(T)[:, None] < np.asarray(lengths)[None, :]


# ---------------------------------------------------------------------------------------------
# PyTorch reference (imports torch lazily: helpers must import without torch)
# ---------------------------------------------------------------------------------------------

def torch_reference(cell: str, x, h0, c0, p, dy, dh_n=None, dc_n=None, *, lengths=None,
                    reverse: bool = False) -> Dict[str, Optional[np.ndarray]]:
    """Runs torch.nn.RNN/LSTM/GRU on the same data and returns outputs and gradients of
    L = sum(y * dy) + sum(h_n * dh_n) [+ sum(c_n * dc_n)] as NumPy arrays (dtype of x):
    keys y, h_n, c_n, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh (None where not applicable).

    - ``lengths``: right-padded batch through pack_padded_sequence (outputs padded with zeros by
      pad_packed_sequence, h_n the state after each sample's last valid step);
    - ``reverse``: without lengths, torch runs on the time-flipped input and its output is
      flipped back; with lengths, the reverse half of a bidirectional packed module is used
      (it runs each sample from its last valid step down to 0).
    A bias that is None in `p` is a zero bias in torch and its gradient is returned as None.
    """
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    to_torch = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
    dtype = to_torch[np.asarray(x).dtype]
    T, N, C = x.shape
    H = p["w_hh"].shape[1]
    bias = p["b_ih"] is not None or p["b_hh"] is not None
    bidir = reverse and lengths is not None
    if cell == "lstm":
        mod = torch.nn.LSTM(C, H, bias=bias, bidirectional=bidir)
    elif cell == "gru":
        mod = torch.nn.GRU(C, H, bias=bias, bidirectional=bidir)
    else:
        mod = torch.nn.RNN(C, H, nonlinearity=cell.split("_")[1], bias=bias, bidirectional=bidir)
    mod = mod.to(dtype)
    sfx = "_l0_reverse" if bidir else "_l0"
    GH = p["w_hh"].shape[0]
    with torch.no_grad():
        for param in mod.parameters():
            param.zero_()
        getattr(mod, "weight_ih" + sfx).copy_(torch.from_numpy(np.asarray(p["w_ih"])))
        getattr(mod, "weight_hh" + sfx).copy_(torch.from_numpy(np.asarray(p["w_hh"])))
        if bias:
            for nm in ("b_ih", "b_hh"):
                b = p[nm] if p[nm] is not None else np.zeros(GH, dtype=np.asarray(x).dtype)
                getattr(mod, "bias_" + nm[2:] + sfx).copy_(torch.from_numpy(np.asarray(b)))
    D = 2 if bidir else 1
    slot = 1 if bidir else 0
    xt = torch.tensor(np.asarray(x), requires_grad=True)

    def state(s):
        full = torch.zeros(D, N, H, dtype=dtype)
        if s is not None:
            full[slot] = torch.from_numpy(np.asarray(s))
        return full.requires_grad_(True)

    h0t = state(h0)
    c0t = state(c0) if cell == "lstm" else None
    hx = (h0t, c0t) if cell == "lstm" else h0t

    if lengths is not None:
        packed = pack_padded_sequence(xt, torch.as_tensor(np.asarray(lengths), dtype=torch.int64),
                                      enforce_sorted=False)
        out, hn = mod(packed, hx)
        y, _ = pad_packed_sequence(out, total_length=T)
    elif reverse:
        y, hn = mod(xt.flip(0), hx)
        y = y.flip(0)
    else:
        y, hn = mod(xt, hx)
    if cell == "lstm":
        hn, cn = hn
    else:
        cn = None
    if bidir:
        y = y[..., H:]
    y_ = y
    hn_, cn_ = hn[slot], (cn[slot] if cn is not None else None)

    loss = (y_ * torch.from_numpy(np.asarray(dy))).sum()
    if dh_n is not None:
        loss = loss + (hn_ * torch.from_numpy(np.asarray(dh_n))).sum()
    if dc_n is not None and cn_ is not None:
        loss = loss + (cn_ * torch.from_numpy(np.asarray(dc_n))).sum()
    loss.backward()

    def np_(t):
        return None if t is None else t.detach().numpy().copy()

    res = {
        "y": np_(y_), "h_n": np_(hn_), "c_n": np_(cn_),
        "dx": np_(xt.grad), "dh0": np_(h0t.grad[slot]),
        "dc0": np_(c0t.grad[slot]) if c0t is not None else None,
        "dw_ih": np_(getattr(mod, "weight_ih" + sfx).grad),
        "dw_hh": np_(getattr(mod, "weight_hh" + sfx).grad),
        "db_ih": None, "db_hh": None,
    }
    if bias:
        for nm in ("b_ih", "b_hh"):
            if p[nm] is not None:
                res["d" + nm] = np_(getattr(mod, "bias_" + nm[2:] + sfx).grad)
    return res
