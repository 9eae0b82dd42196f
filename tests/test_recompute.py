"""Gradient checkpointing along time (``recompute``): the forward keeps only the segments'
starting states, the backward reruns each segment. Outputs, final states and every gradient must
equal the full-cache run's (float64: 1e-12, the weight gradients differ only by the order in which
segments are summed), for every cell and option that changes the recurrence (reverse, masks,
initial states, recurrent dropout, zoneout, a projection, activations), and the training memory
must shrink as O(sqrt(T)).
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from rnnkit import _recurrent, nn
from rnnkit.layers import LSTM, Dense, GRU
from rnnkit.models import Sequential

CELLS = {"rnn": 1, "lstm": 4, "gru": 3, "gru_v1": 3, "lstm_ln": 4, "gru_ln": 3}
RTOL, ATOL = 1e-12, 1e-13  # float64; only summation order differs


def _weights(rng, cell, C, H, P=0):
    G = CELLS[cell]
    Hs = P or H
    w = {"w_ih": rng.uniform(-0.5, 0.5, (G * H, C)), "w_hh": rng.uniform(-0.5, 0.5, (G * H, Hs)),
         "b_ih": rng.uniform(-0.3, 0.3, G * H), "b_hh": None if cell == "gru_v1" else rng.uniform(-0.3, 0.3, G * H)}
    if P:
        w["w_hr"] = rng.uniform(-0.5, 0.5, (P, H))
    if cell.endswith("_ln"):
        w["gamma_x"], w["gamma_h"] = rng.uniform(0.5, 1.5, G * H), rng.uniform(0.5, 1.5, G * H)
        if cell == "lstm_ln":
            w["gamma_c"], w["beta_c"] = rng.uniform(0.5, 1.5, H), rng.uniform(-0.3, 0.3, H)
    return w


def _run(cell, x, w, init, dy, dfin, recompute, **kw):
    run = _recurrent.forward(cell, x, w, init, recompute=recompute, **kw)
    norms = np.empty(x.shape[:2])
    dx, dinit, grads = _recurrent.backward(cell, run.cache, dy, dfin, dh_norms=norms)
    return run, dx, dinit, grads, norms


def _assert_same(a, b):
    run_a, dx_a, di_a, g_a, n_a = a
    run_b, dx_b, di_b, g_b, n_b = b
    np.testing.assert_allclose(run_b.y, run_a.y, rtol=RTOL, atol=ATOL)
    for fa, fb in zip(run_a.finals, run_b.finals):
        np.testing.assert_allclose(fb, fa, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dx_b, dx_a, rtol=RTOL, atol=ATOL)
    for da, db in zip(di_a, di_b):
        np.testing.assert_allclose(db, da, rtol=RTOL, atol=ATOL)
    assert set(g_a) == set(g_b)
    for k in g_a:
        np.testing.assert_allclose(g_b[k], g_a[k], rtol=RTOL, atol=ATOL, err_msg=k)
    np.testing.assert_allclose(n_b, n_a, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("recompute", [1, 3, 7, "sqrt"])
def test_segments_equal_the_full_cache(cell, reverse, recompute):
    rng = np.random.default_rng(0)
    T, N, C, H = 17, 3, 4, 5
    x = rng.standard_normal((T, N, C))
    w = _weights(rng, cell, C, H)
    ns = _recurrent.n_states(cell)
    init = [rng.standard_normal((N, H)) for _ in range(ns)]
    dfin = [rng.standard_normal((N, H)) for _ in range(ns)]
    dy = rng.standard_normal((T, N, H))
    mask = rng.random((T, N)) > 0.3
    kw = dict(mask=mask, reverse=reverse, zero_output=bool(rng.integers(2)),
              rd=rng.uniform(0.5, 1.5, (N, H)))
    if cell in ("lstm", "gru", "gru_v1"):
        kw["zoneout_h"] = (rng.random((T, N, H)) < 0.3).astype(np.float64)
    if cell == "lstm":
        kw["zoneout_c"] = (rng.random((T, N, H)) < 0.3).astype(np.float64)
    _assert_same(_run(cell, x, w, init, dy, dfin, None, **kw), _run(cell, x, w, init, dy, dfin, recompute, **kw))


@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_projection_and_activations(activation):
    rng = np.random.default_rng(1)
    T, N, C, H, P = 12, 2, 3, 6, 4
    x = rng.standard_normal((T, N, C))
    w = _weights(rng, "lstm", C, H, P)
    dy = rng.standard_normal((T, N, P))
    kw = dict(activation=activation, recurrent_activation="hard_sigmoid")
    _assert_same(_run("lstm", x, w, None, dy, None, None, **kw), _run("lstm", x, w, None, dy, None, 5, **kw))


def test_one_segment_is_the_plain_run():
    assert _recurrent.segment_length(None, 100) is None
    assert _recurrent.segment_length(100, 100) is None
    assert _recurrent.segment_length("sqrt", 100) == 10
    assert _recurrent.segment_length("sqrt", 101) == 11
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 2, 3))
    run = _recurrent.forward("gru", x, _weights(rng, "gru", 3, 5), recompute=8)
    assert not isinstance(run.cache, _recurrent.SegmentedCache)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "log", True, [4]])
def test_bad_recompute_raises(bad):
    with pytest.raises(ValueError, match="recompute"):
        _recurrent.segment_length(bad, 10)
    with pytest.raises(ValueError, match="recompute"):
        LSTM(4, recompute=bad)
    with pytest.raises(ValueError, match="recompute"):
        nn.GRU(3, 4, recompute=bad)


def _train_once(recompute, layer_cls):
    np.random.seed(3)
    model = Sequential([layer_cls(8, return_sequences=True, input_shape=(40, 3), dtype="float64",
                                  recompute=recompute),
                        layer_cls(6, go_backwards=True, dtype="float64", recompute=recompute),
                        Dense(2, dtype="float64")])
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((10, 40, 3)), rng.standard_normal((10, 2))
    model.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0)
    return model


@pytest.mark.parametrize("layer_cls", [LSTM, GRU])
def test_keras_layers_train_identically(layer_cls):
    full, ckpt = _train_once(None, layer_cls), _train_once("sqrt", layer_cls)
    for a, b in zip(full.get_weights(), ckpt.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    assert ckpt.layers[0].get_config()["recompute"] == "sqrt"
    assert "recompute" not in full.layers[0].get_config()  # Keras's config stays Keras's
    restored = LSTM.from_config(ckpt.layers[0].get_config()) if layer_cls is LSTM else None
    assert restored is None or restored.recompute == "sqrt"


def test_nn_module_gradients_equal():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30, 2, 3))
    grads = []
    for recompute in (None, 4):
        m = nn.LSTM(3, 5, num_layers=2, bidirectional=True, dtype=np.float64, seed=0, recompute=recompute)
        out, _ = m(x)
        m.zero_grad()
        m.backward(np.ones_like(out))
        grads.append({k: p.grad.copy() for k, p in m.named_parameters()})
    for k in grads[0]:
        np.testing.assert_allclose(grads[1][k], grads[0][k], rtol=1e-12, atol=1e-13, err_msg=k)


_PEAK_SCRIPT = """
import sys
import numpy as np
from rnnkit import _recurrent

def status(key):  # kB -> bytes, from /proc/self/status (VmHWM is this process's peak resident set)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

T, N, C, H = 3000, 4, 16, 128
recompute = None if sys.argv[1] == "none" else sys.argv[1]
rng = np.random.default_rng(6)
x = rng.standard_normal((T, N, C))
w = {"w_ih": rng.uniform(-0.5, 0.5, (4 * H, C)), "w_hh": rng.uniform(-0.5, 0.5, (4 * H, H)),
     "b_ih": np.zeros(4 * H), "b_hh": np.zeros(4 * H)}
dy = rng.standard_normal((T, N, H))
_recurrent.backward("lstm", _recurrent.forward("lstm", x[:4], w).cache, dy[:4])  # warm-up
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current resident set
before = status("VmRSS")
run = _recurrent.forward("lstm", x, w, recompute=recompute)
dx, _, _ = _recurrent.backward("lstm", run.cache, dy)
print(status("VmHWM") - before)
"""


def _peak_bytes(recompute: str) -> int:
    """Peak resident memory that one LSTM forward + backward (float64, T = 3000, N = 4,
    H = 128) adds to a fresh process: the kernels' outputs and caches are allocated in C++.
    (VmHWM after resetting it, not ru_maxrss, which a child inherits from its parent.)"""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, recompute], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc")
def test_memory_grows_as_sqrt_t():
    full, ckpt = _peak_bytes("none"), _peak_bytes("sqrt")
    # full: y, the h and c states, 4 gates, then dgates and dx: ~12 T N H doubles (~37 MB);
    # checkpointed: y and dx plus one segment's work: ~2 T N H + O(sqrt(T) N H)
    assert ckpt < 0.3 * full, (ckpt, full)


def test_exports_leave_recompute_out(tmp_path):
    """recompute changes how training keeps its caches, never an output: ONNX and .keras files
    are written without it."""
    np.random.seed(7)
    model = Sequential([LSTM(8, input_shape=(5, 3), recompute="sqrt"), Dense(2)])
    x = np.random.default_rng(8).random((4, 5, 3)).astype(np.float32)
    want = model.predict(x, verbose=0)
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from rnnkit import onnx as rnnkit_onnx

    rnnkit_onnx.export(model, str(tmp_path / "m.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    pytest.importorskip("h5py")
    model.save(str(tmp_path / "m.keras"))
    from rnnkit.models import load_model

    back = load_model(str(tmp_path / "m.keras"))
    assert back.layers[0].recompute is None
    np.testing.assert_allclose(back.predict(x, verbose=0), want, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_segmented_backward_matches_finite_differences(cell):
    """float64 central differences of L = <W, y> + <W_h, h_T> through the segmented path
    directly (x, the initial state and every weight), segments of 3 over T = 8."""
    from helpers import numerical_grad

    rng = np.random.default_rng(9)
    T, N, C, H = 8, 2, 3, 4
    x = rng.standard_normal((T, N, C))
    w = _weights(rng, cell, C, H)
    h0 = [rng.standard_normal((N, H)) for _ in range(_recurrent.n_states(cell))]
    W, Wh = rng.standard_normal((T, N, H)), rng.standard_normal((N, H))
    kw = dict(mask=rng.random((T, N)) > 0.2, reverse=True)

    def loss() -> float:
        run = _recurrent.forward(cell, x, w, h0, recompute=3, **kw)
        return float(np.sum(W * run.y) + np.sum(Wh * run.finals[0]))

    run = _recurrent.forward(cell, x, w, h0, recompute=3, **kw)
    assert isinstance(run.cache, _recurrent.SegmentedCache)
    dfin = [Wh] + [None] * (len(h0) - 1)
    dx, dinit, grads = _recurrent.backward(cell, run.cache, W, dfin)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dinit[0], numerical_grad(loss, h0[0]), rtol=1e-6, atol=1e-8)
    for k, g in grads.items():
        np.testing.assert_allclose(g, numerical_grad(loss, w[k]), rtol=1e-6, atol=1e-8, err_msg=k)
