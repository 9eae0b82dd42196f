"""Shapes large enough to exercise every blocking path of the float32 GEMM micro-kernels (depth
beyond one cache block, more rows than one row block, partial column panels, several threads)
against the same computation in float64."""
import numpy as np
import pytest

import rnnkit
from rnnkit import functional as F

CELLS = {"rnn": 1, "lstm": 4, "gru": 3}


def _call(cell, x, w, mask, reverse):
    if cell == "lstm":
        o = F.lstm_forward(x, None, None, *w, mask=mask, reverse=reverse)
        return o, F.lstm_backward(o.cache, np.ones_like(o.y), o.h_n, o.c_n)
    fwd, bwd = (F.rnn_forward, F.rnn_backward) if cell == "rnn" else (F.gru_forward, F.gru_backward)
    o = fwd(x, None, *w, mask=mask, reverse=reverse)
    return o, bwd(o.cache, np.ones_like(o.y), o.h_n)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(30, 21, 300, 70), (12, 1, 40, 300)])
def test_float32_matches_float64_on_blocked_shapes(cell, threads, shape, restore_threads):
    T, N, C, H = shape
    G = CELLS[cell]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((T, N, C))
    k = 1 / np.sqrt(H)
    w = [rng.uniform(-k, k, s) for s in ((G * H, C), (G * H, H), (G * H,), (G * H,))]
    mask = rng.random((T, N)) > 0.2
    rnnkit.set_num_threads(threads)
    for reverse in (False, True):
        o64, g64 = _call(cell, x, w, mask, reverse)
        o32, g32 = _call(cell, x.astype(np.float32), [a.astype(np.float32) for a in w], mask,
                         reverse)
        pairs = [("y", o32.y, o64.y)] + [(f, getattr(g32, f), getattr(g64, f)) for f in g64._fields
                                         if getattr(g64, f) is not None]
        for name, a, b in pairs:
            rel = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)
            assert rel < 2e-5, f"{cell} {name} reverse={reverse}: relative error {rel:.2e}"
