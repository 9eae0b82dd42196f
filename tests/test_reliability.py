"""Reliability: shared objects under threads, the process-wide thread setting, Ctrl-C inside
kernels, misaligned arrays, oversized streams and edited caches.

Each case reproduces a defect of the audit in issue 8 and asserts the required behaviour:
a correct result or a clear ValueError/TypeError, never silent garbage, a hang or a crash.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import rnnkit
from rnnkit import _core, nn
from rnnkit import functional as F
from rnnkit.layers import LSTM, Dense
from rnnkit.models import Sequential
from rnnkit.streaming import GRUStream, LSTMStream

N_THREADS = 8


def _run_threads(fn, n=N_THREADS):
    """Runs fn(i) on n threads released together; re-raises the first error."""
    barrier = threading.Barrier(n)
    errors = []

    def work(i):
        try:
            barrier.wait()
            fn(i)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# ---- 1. forward/backward from several threads on one shared object ------------------------------

def test_nn_lstm_shared_by_threads_gives_each_thread_its_own_gradient(rng):
    m = nn.LSTM(8, 16, num_layers=2, batch_first=True, bidirectional=True, seed=0)
    xs = [rng.standard_normal((3, 20, 8)).astype(np.float32) for _ in range(N_THREADS)]
    dys = [rng.standard_normal((3, 20, 32)).astype(np.float32) for _ in range(N_THREADS)]
    ref_dx, ref_grads = [], {n: 0.0 for n, _ in m.named_parameters()}
    for x, dy in zip(xs, dys):
        m.zero_grad()
        m(x)
        ref_dx.append(m.backward(dy)[0])
        for n, p in m.named_parameters():
            ref_grads[n] = ref_grads[n] + p.grad
    m.zero_grad()
    got = [None] * N_THREADS

    def work(i):
        m(xs[i])
        time.sleep(0.01)  # let the other threads run their forward in between
        got[i] = m.backward(dys[i])[0]

    _run_threads(work)
    for i in range(N_THREADS):
        np.testing.assert_allclose(got[i], ref_dx[i], rtol=1e-5, atol=1e-6)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, ref_grads[n], rtol=1e-4, atol=1e-5)


def test_gradient_accumulation_loses_nothing_over_50_rounds(rng):
    m = nn.GRU(4, 8, seed=1)
    x = rng.standard_normal((6, 2, 4)).astype(np.float32)
    dy = rng.standard_normal((6, 2, 8)).astype(np.float32)
    m.zero_grad()
    m(x)
    m.backward(dy)
    one = {n: p.grad.copy() for n, p in m.named_parameters()}
    for _ in range(50):
        m.zero_grad()

        def work(i):
            m(x)
            m.backward(dy)

        _run_threads(work)
        for n, p in m.named_parameters():
            np.testing.assert_allclose(p.grad, N_THREADS * one[n], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: LSTM(6, return_sequences=True, dropout=0.0),
    lambda: Dense(5, activation="tanh"),
])
def test_keras_layer_shared_by_threads(rng, make):
    layer = make()
    xs = [rng.standard_normal((2, 7, 3)).astype(np.float32) for _ in range(N_THREADS)]
    layer(xs[0])
    dys = [rng.standard_normal(layer(x).shape).astype(np.float32) for x in xs]
    ref = []
    for x, dy in zip(xs, dys):
        layer(x)
        ref.append(layer.backward(dy))
    layer.zero_grad()
    totals = {k: np.zeros_like(g) for k, g in layer.grads.items()}
    for x, dy in zip(xs, dys):
        layer.zero_grad()
        layer(x)
        layer.backward(dy)
        for k in totals:
            totals[k] += layer.grads[k]
    layer.zero_grad()
    got = [None] * N_THREADS

    def work(i):
        layer(xs[i])
        time.sleep(0.01)
        got[i] = layer.backward(dys[i])

    _run_threads(work)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for k, g in layer.grads.items():
        np.testing.assert_allclose(g, totals[k], rtol=1e-4, atol=1e-5)


def test_predict_from_threads_matches_serial(rng):
    model = Sequential([LSTM(8, return_sequences=True, input_shape=(9, 3)), Dense(4, activation="softmax")])
    xs = [rng.standard_normal((5, 9, 3)).astype(np.float32) for _ in range(N_THREADS)]
    ref = [model.predict(x) for x in xs]
    got = [None] * N_THREADS

    def work(i):
        got[i] = model.predict(xs[i])

    _run_threads(work)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)


def test_stream_calls_from_threads_are_serialised(rng):
    H, C = 16, 4
    w_ih = (rng.standard_normal((4 * H, C)) * 0.3).astype(np.float32)
    w_hh = (rng.standard_normal((4 * H, H)) * 0.3).astype(np.float32)
    s = LSTMStream(w_ih, w_hh)
    x = rng.standard_normal((1, C)).astype(np.float32)
    ref = LSTMStream(w_ih, w_hh)
    for _ in range(N_THREADS * 10):
        ref.step(x)

    def work(i):
        for _ in range(10):
            s.step(x)

    _run_threads(work)
    np.testing.assert_allclose(s.h, ref.h, rtol=1e-6, atol=1e-7)


# ---- 2. set_num_threads holds for every thread ---------------------------------------------------

@pytest.mark.threads
def test_set_num_threads_applies_to_kernels_called_from_other_threads(restore_threads, rng):
    if not rnnkit.build_info()["openmp"] or (os.cpu_count() or 1) < 2:
        pytest.skip("needs OpenMP and 2 cores")
    x = rng.standard_normal((50, 64, 256)).astype(np.float32)
    w_ih = (rng.standard_normal((1024, 256)) * 0.05).astype(np.float32)
    w_hh = (rng.standard_normal((1024, 256)) * 0.05).astype(np.float32)
    for n in (1, 2):
        rnnkit.set_num_threads(n)
        used = []

        def work(i):
            F.lstm_forward(x, None, None, w_ih, w_hh)
            used.append(_core._threads_of_last_call())

        _run_threads(work, n=1)
        assert used == [n]


@pytest.mark.threads
@pytest.mark.parametrize("bad", [10**6, 2**31, 2**63])
def test_set_num_threads_rejects_absurd_counts(restore_threads, bad):
    before = rnnkit.get_num_threads()
    with pytest.raises(ValueError, match=r"^n: expected an int in \[1, \d+\]"):
        rnnkit.set_num_threads(bad)
    assert rnnkit.get_num_threads() == before


# ---- 3. Ctrl-C inside a kernel -------------------------------------------------------------------

_INTERRUPT_CHILD = textwrap.dedent("""
    import signal, sys, time
    # a child of a background job inherits SIGINT ignored (POSIX shells do that for `cmd &`), and
    # Python then keeps it ignored: give it Python's own handler, as in an interactive program
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import numpy as np
    import rnnkit
    from rnnkit import functional as F
    from rnnkit.streaming import GRUStream
    rnnkit.set_num_threads(int(sys.argv[2]))
    rng = np.random.default_rng(0)
    T, C = 100_000, 8
    x = rng.standard_normal((T, 1, C)).astype(np.float32)
    which = sys.argv[1]
    if which == "stream":
        H = 512
        s = GRUStream((rng.standard_normal((3 * H, C)) * 0.1).astype(np.float32),
                      (rng.standard_normal((3 * H, H)) * 0.02).astype(np.float32))
        before = s.h
        call = lambda: s.run(x)
    else:
        H = 1024
        w_ih = (rng.standard_normal((H, C)) * 0.1).astype(np.float32)
        w_hh = (rng.standard_normal((H, H)) * 0.02).astype(np.float32)
        if which == "forward":
            call = lambda: F.rnn_forward(x, None, w_ih, w_hh)
        else:
            S = (rng.standard_normal((T + 1, 1, H)) * 0.5).astype(np.float32)
            cache = F.RNNCache(x, w_ih, w_hh, (False, False), None, False, False, S, None)
            dy = np.ones((T, 1, H), np.float32)
            call = lambda: F.rnn_backward(cache, dy)
    print("ready", flush=True)
    t0 = time.perf_counter()
    try:
        call()
        print("completed", time.perf_counter() - t0, flush=True)
    except KeyboardInterrupt:
        print("interrupted", time.perf_counter(), flush=True)
        if which == "stream":
            assert np.array_equal(s.h, before), "an interrupted chunk must leave the state as it was"
            s.run(x[:10])
        else:
            call_small = F.rnn_forward(x[:10], None, w_ih, w_hh)
        print("usable", flush=True)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("which", ["forward", "backward", "stream"])
@pytest.mark.parametrize("threads", [1, 2])
def test_ctrl_c_interrupts_a_long_kernel_within_a_second(tmp_path, which, threads):
    script = tmp_path / "child.py"
    script.write_text(_INTERRUPT_CHILD)
    with subprocess.Popen([sys.executable, str(script), which, str(threads)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout.readline().strip() == "ready"
            time.sleep(0.5)
            sent = time.perf_counter()
            p.send_signal(signal.SIGINT)
            line = p.stdout.readline().split()
            reacted = time.perf_counter() - sent
            # read through the same buffered pipe (communicate() would bypass what readline buffered)
            rest = (p.stdout.read(), p.stderr.read())
            p.wait(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
    assert line and line[0] == "interrupted", (line, rest)
    # the full call takes 3.5-6 s; a step or a GEMM piece is well under 100 ms (measured: 0.09-0.3 s
    # from the signal to the exception, clean-up of the large buffers included; 2 s leaves room for a
    # loaded machine)
    assert reacted < 2.0, f"KeyboardInterrupt came {reacted:.2f} s after SIGINT"
    assert "usable" in rest[0], (rest, p.returncode)
    assert p.returncode == 0, rest


def test_custom_sigint_handler_keeps_the_kernel_running(rng):
    """A program with its own SIGINT handler (a graceful stop) is not cut mid-kernel."""
    if sys.platform == "win32":
        pytest.skip("POSIX signals")
    seen = []
    old = signal.signal(signal.SIGINT, lambda s, f: seen.append(s))
    try:
        x = rng.standard_normal((20000, 1, 8)).astype(np.float32)
        w_ih = (rng.standard_normal((256, 8)) * 0.1).astype(np.float32)
        w_hh = (rng.standard_normal((256, 256)) * 0.05).astype(np.float32)
        ref = F.rnn_forward(x, None, w_ih, w_hh).y
        threading.Timer(0.01, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        y = F.rnn_forward(x, None, w_ih, w_hh).y
        time.sleep(0.05)
    finally:
        signal.signal(signal.SIGINT, old)
    np.testing.assert_array_equal(y, ref)
    assert seen == [signal.SIGINT]


# ---- 7. misaligned arrays ---------------------------------------------------------------------------

def _misaligned(a):
    """A view of a copy of ``a`` whose data starts at an odd byte address."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    v = buf[1:].view(a.dtype).reshape(a.shape)
    v[...] = a
    assert not v.flags.aligned
    return v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_misaligned_inputs_are_copied_once_and_give_the_aligned_result(rng, dtype):
    T, N, C, H = 5, 3, 4, 6
    x = rng.standard_normal((T, N, C)).astype(dtype)
    w_ih = rng.standard_normal((4 * H, C)).astype(dtype)
    w_hh = rng.standard_normal((4 * H, H)).astype(dtype)
    b = rng.standard_normal(4 * H).astype(dtype)
    h0 = rng.standard_normal((N, H)).astype(dtype)
    ref = F.lstm_forward(x, h0, None, w_ih, w_hh, b, b)
    got = F.lstm_forward(_misaligned(x), _misaligned(h0), None,
                         _misaligned(w_ih), _misaligned(w_hh), _misaligned(b), _misaligned(b))
    # float32 runs rnnkit's own micro-kernels, whose order of summation does not depend on where
    # an array sits; Eigen's float64 products may peel a first element off an unaligned row
    tol = dict(rtol=0, atol=0) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(got.y, ref.y, **tol)
    gr = F.lstm_backward(ref.cache, np.ones_like(ref.y))
    gg = F.lstm_backward(got.cache, _misaligned(np.ones_like(ref.y)))
    for a, c in zip(gg, gr):
        if a is not None:
            np.testing.assert_allclose(a, c, **tol)


def test_core_refuses_misaligned_arrays(rng):
    x = _misaligned(rng.standard_normal((4, 2, 3)).astype(np.float32))
    w_ih = np.zeros((5, 3), np.float32)
    w_hh = np.zeros((5, 5), np.float32)
    with pytest.raises(ValueError, match="x: expected an array aligned"):
        _core.rnn_forward(x, None, w_ih, w_hh, None, None, "tanh", None, None, False, False)
    with pytest.raises(ValueError, match="aligned"):
        _core.softmax_rows(_misaligned(np.ones((3, 4), np.float32)))


# ---- 8. stream sizes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [2**62, 2**40, 2**33])
@pytest.mark.parametrize("cls", [LSTMStream, GRUStream])
def test_stream_batch_size_beyond_memory_is_a_value_error(rng, cls, batch_size):
    G = 4 if cls is LSTMStream else 3
    w_ih = np.zeros((G * 8, 3), np.float32)
    w_hh = np.zeros((G * 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"^batch_size: \d+ needs about .* GiB"):
        cls(w_ih, w_hh, batch_size=batch_size)


def test_core_stream_constructor_checks_sizes_before_allocating():
    w_ih = np.zeros((32, 3), np.float32)
    w_hh = np.zeros((32, 8), np.float32)
    for bs in (2**62, 2**40, 0, -5):
        with pytest.raises(ValueError, match="batch_size"):
            _core.StreamF32("LSTM", w_ih, w_hh, None, None, bs, "tanh")


# ---- 9. edited caches ---------------------------------------------------------------------------------

def _caches(rng):
    T, N, C, H = 4, 2, 3, 5
    x = rng.standard_normal((T, N, C))
    out = {}
    for cell, G in (("rnn", 1), ("lstm", 4), ("gru", 3)):
        w_ih = rng.standard_normal((G * H, C))
        w_hh = rng.standard_normal((G * H, H))
        if cell == "lstm":
            o = F.lstm_forward(x, None, None, w_ih, w_hh)
        else:
            o = getattr(F, f"{cell}_forward")(x, None, w_ih, w_hh)
        out[cell] = (o.cache, np.ones_like(o.y))
    return out


_EDITS = [
    ("x", lambda c: c.x[:, :1]), ("x", lambda c: c.x.astype(np.float32)), ("x", lambda c: None),
    ("w_ih", lambda c: c.w_ih[:, :-1]), ("w_hh", lambda c: c.w_hh[:-1]), ("w_hh", lambda c: "w"),
    ("S", lambda c: c.S[:-1]), ("S", lambda c: np.asfortranarray(c.S.transpose(0, 2, 1)).transpose(0, 2, 1)),
    ("mask", lambda c: np.ones((1, 1), bool)), ("rd", lambda c: np.ones((2, 2))),
    ("has_bias", lambda c: (1, 0)), ("reverse", lambda c: "yes"),
]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("field,edit", _EDITS)
def test_edited_cache_fields_give_value_errors_naming_the_field(rng, cell, field, edit):
    cache, dy = _caches(rng)[cell]
    bad = dataclasses.replace(cache, **{field: edit(cache)})
    # x decides the dtype: an x of another dtype than the weights shows as the weights' mismatch
    named = field if getattr(bad, field) is None or not isinstance(getattr(bad, field), np.ndarray) \
        or getattr(bad, field).dtype == cache.x.dtype or field != "x" else r"w_hh"
    with pytest.raises(ValueError, match=rf"^cache\.{named}: expected"):
        getattr(F, f"{cell}_backward")(bad, dy)


@pytest.mark.parametrize("cell,field", [("lstm", "c_states"), ("lstm", "gates"), ("gru", "gates"),
                                         ("gru", "hn")])
def test_edited_cell_specific_cache_fields(rng, cell, field):
    cache, dy = _caches(rng)[cell]
    for value in (None, getattr(cache, field)[:-1], getattr(cache, field).astype(np.float32)):
        with pytest.raises(ValueError, match=rf"^cache\.{field}: expected"):
            getattr(F, f"{cell}_backward")(dataclasses.replace(cache, **{field: value}), dy)
