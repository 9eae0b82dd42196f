"""Property-based fuzzing of the public boundary (hypothesis).

Random shapes (including 0 and 1), dtypes, strides, misalignment, NaN/Inf and wrong types go into
the functional API, the ``nn`` modules, the Keras-style layers, the streams and ``load_model`` on
mutated files. The property: every outcome is a correct result or a ``ValueError``/``TypeError``,
never another exception and never a crash. A correct result is checked against the same call on
clean (contiguous, aligned, native) copies of the arguments.

The CI run is bounded and reproducible (``derandomize``, a fixed number of examples per test, about
a minute in all). For a longer hunt: ``RNNKIT_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py``.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit import functional as F  # noqa: E402
from rnnkit import nn  # noqa: E402
from rnnkit.layers import GRU, LSTM, Dense, SimpleRNN  # noqa: E402
from rnnkit.models import Sequential, load_model  # noqa: E402
from rnnkit.streaming import GRUStream, LSTMStream, RNNStream  # noqa: E402

EXAMPLES = int(os.environ.get("RNNKIT_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
ALLOWED = (ValueError, TypeError)

# ---- strategies -------------------------------------------------------------------------------------

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.bool_, np.complex64, object]


@st.composite
def arrays(draw, shape, *, float_bias=True):
    """An array for an argument whose right shape is ``shape``: usually right, sometimes another
    shape (sizes 0, 1, off by one, extra or missing axes), dtype, layout (strided, transposed,
    Fortran, misaligned, big-endian) or content (NaN, Inf), sometimes not an array at all."""
    kind = draw(st.sampled_from(["ok"] * 6 + ["shape", "dtype", "layout", "values", "type"]))
    shp = list(shape)
    if kind == "shape":
        how = draw(st.sampled_from(["zero", "one", "off", "extra", "drop"]))
        if how == "extra":
            shp = shp + [draw(st.integers(1, 3))]
        elif how == "drop" and shp:
            shp = shp[:-1]
        elif shp:
            i = draw(st.integers(0, len(shp) - 1))
            shp[i] = 0 if how == "zero" else 1 if how == "one" else shp[i] + draw(st.sampled_from([-1, 1]))
    dtype = np.float32
    if kind == "dtype":
        dtype = draw(st.sampled_from(DTYPES))
    if kind == "type":
        return draw(st.sampled_from([None, "x", 3, [1.0, 2.0], {"a": 1}]))
    shp = [max(0, s) for s in shp]
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    a = rng.standard_normal(shp) * 0.5
    a = a.astype(dtype) if dtype is not object else a.astype(object)
    if kind == "values" and a.size:
        flat = a.reshape(-1)
        flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))
    if kind == "layout" and a.ndim >= 1 and dtype is not object:
        how = draw(st.sampled_from(["strided", "fortran", "misaligned", "bigendian"]))
        if how == "strided":
            big = np.repeat(a, 2, axis=-1)
            a = big[..., ::2]
        elif how == "fortran":
            a = np.asfortranarray(a)
        elif how == "misaligned":
            buf = np.zeros(a.nbytes + 1, np.uint8)
            v = buf[1:].view(a.dtype).reshape(a.shape)
            v[...] = a
            a = v
        else:
            a = a.astype(a.dtype.newbyteorder(">"))
    return a


def _clean(a):
    """What a correct call means: the same values as a contiguous native float array."""
    if isinstance(a, np.ndarray) and a.dtype.kind == "f":
        return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))
    return a


def _outcome(fn, *args, **kwargs):
    """Runs fn; returns its result, or None for an allowed error. Anything else fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NaN/Inf arithmetic is allowed
            return fn(*args, **kwargs)
    except ALLOWED:
        return None


def _reference(fn, *args, **kwargs):
    """The same call on clean arguments (NaN/Inf arithmetic warnings are expected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def _same(a, b):
    if isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
    else:
        assert (a is None) == (b is None)


# ---- functional -------------------------------------------------------------------------------------

CELLS = {"rnn": 1, "lstm": 4, "gru": 3}


@FUZZ
@given(data=st.data(), cell=st.sampled_from(sorted(CELLS)), T=st.integers(1, 4), N=st.integers(1, 3),
       C=st.integers(1, 4), H=st.integers(1, 5), reverse=st.booleans(), zero=st.booleans())
def test_functional_forward_backward(data, cell, T, N, C, H, reverse, zero):
    G = CELLS[cell]
    x = data.draw(arrays((T, N, C)))
    w_ih = data.draw(arrays((G * H, C)))
    w_hh = data.draw(arrays((G * H, H)))
    b = data.draw(st.one_of(st.none(), arrays((G * H,))))
    h0 = data.draw(st.one_of(st.none(), arrays((N, H))))
    mask = data.draw(st.one_of(st.none(), st.builds(lambda s: np.random.default_rng(s).random((T, N)) > 0.3,
                                                    st.integers(0, 99)), arrays((T, N))))
    kw = dict(mask=mask, reverse=reverse, zero_output_for_mask=zero)
    fwd = getattr(F, f"{cell}_forward")
    states = (h0, None) if cell == "lstm" else (h0,)
    out = _outcome(fwd, x, *states, w_ih, w_hh, b, b, **kw)
    if out is None:
        return
    ref = _reference(fwd, *(_clean(a) for a in (x, *states, w_ih, w_hh, b, b)), mask=_clean(mask),
                     reverse=reverse, zero_output_for_mask=zero)
    _same(out.y, ref.y)
    dy = data.draw(arrays(out.y.shape))
    bwd = getattr(F, f"{cell}_backward")
    g = _outcome(bwd, out.cache, dy)
    if g is not None:
        _same(g, _reference(bwd, ref.cache, _clean(dy).astype(out.y.dtype)))


# ---- nn modules ------------------------------------------------------------------------------------

@FUZZ
@given(data=st.data(), cls=st.sampled_from([nn.RNN, nn.LSTM, nn.GRU]), T=st.integers(1, 4),
       N=st.integers(1, 3), C=st.integers(1, 4), H=st.integers(1, 4), layers=st.integers(1, 2),
       bidir=st.booleans(), batch_first=st.booleans())
def test_nn_modules(data, cls, T, N, C, H, layers, bidir, batch_first):
    m = cls(C, H, num_layers=layers, bidirectional=bidir, batch_first=batch_first, seed=0)
    shape = (N, T, C) if batch_first else (T, N, C)
    x = data.draw(arrays(shape))
    out = _outcome(m, x)
    if out is None:
        return
    ref = _reference(m, _clean(x))
    _same(out[0], ref[0])
    d = data.draw(arrays(out[0].shape))
    m(x)
    _outcome(m.backward, d)


# ---- Keras-style layers ----------------------------------------------------------------------------

@FUZZ
@given(data=st.data(), cls=st.sampled_from([SimpleRNN, LSTM, GRU]), T=st.integers(1, 4),
       N=st.integers(1, 3), C=st.integers(1, 4), U=st.integers(1, 4), seq=st.booleans(),
       back=st.booleans())
def test_keras_layers(data, cls, T, N, C, U, seq, back):
    np.random.seed(0)
    layer = cls(U, return_sequences=seq, go_backwards=back, input_shape=(T, C))
    layer.build((None, T, C))
    x = data.draw(arrays((N, T, C)))
    mask = data.draw(st.one_of(st.none(), arrays((N, T))))
    out = _outcome(layer, x, mask=mask)
    if out is None:
        return
    _same(out, _reference(layer, _clean(x).astype(np.float32), mask=mask))
    _outcome(layer.backward, data.draw(arrays(out.shape)))


@FUZZ
@given(data=st.data(), units=st.integers(1, 4), C=st.integers(1, 4), N=st.integers(1, 3))
def test_dense_and_sequential(data, units, C, N):
    np.random.seed(0)
    model = Sequential([Dense(units, activation="softmax", input_shape=(C,))])
    x = data.draw(arrays((N, C)))
    out = _outcome(model.predict, x)
    if out is not None:
        _same(out, _reference(model.predict, _clean(x).astype(np.float32)))


# ---- streams ---------------------------------------------------------------------------------------

@FUZZ
@given(data=st.data(), cls=st.sampled_from([RNNStream, LSTMStream, GRUStream]), C=st.integers(1, 4),
       H=st.integers(1, 5), batch=st.one_of(st.integers(-2, 3), st.sampled_from([2**40, 2**62, 1.5, "2"])))
def test_streams(data, cls, C, H, batch):
    G = {RNNStream: 1, LSTMStream: 4, GRUStream: 3}[cls]
    w_ih = data.draw(arrays((G * H, C)))
    w_hh = data.draw(arrays((G * H, H)))
    s = _outcome(cls, w_ih, w_hh, batch_size=batch)
    if s is None:
        return
    ref = cls(_clean(w_ih), _clean(w_hh), batch_size=batch)
    x = data.draw(arrays((batch, C)))
    y = _outcome(s.step, x)
    if y is not None:
        _same(y, _reference(ref.step, _clean(x)))
    chunk = data.draw(arrays((2, batch, C)))
    _outcome(s.run, chunk)
    _outcome(s.reset, data.draw(arrays((batch, H))))


# ---- load_model on mutated files ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    np.random.seed(1)
    m = Sequential([GRU(3, return_sequences=True, input_shape=(4, 2)), Dense(2, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).standard_normal((4, 4, 2)).astype(np.float32)
    m.fit(x, np.eye(2, dtype=np.float32)[np.zeros((4, 4), int)], epochs=1, verbose=0)
    p = tmp_path_factory.mktemp("fuzz") / "m.rnnkit"
    m.save(str(p))
    return p.read_bytes(), x


def _mutate_json(obj, rng):
    """Replaces one random value inside parsed JSON by a hostile one."""
    nodes = [obj]
    paths = []
    while nodes:
        o = nodes.pop()
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else []
        for k, v in items:
            paths.append((o, k))
            nodes.append(v)
    if not paths:
        return obj
    o, k = paths[rng.integers(len(paths))]
    o[k] = [None, -1, 0, 2**70, 1e308, "x" * 1000, [], {}, True, [[[[]]]], "float16", 30_000_000][
        rng.integers(12)]
    return obj


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), how=st.sampled_from(["flip", "truncate", "insert", "header",
                                                           "meta", "meta_checksummed"]))
def test_load_model_on_mutated_files(model_bytes, tmp_path_factory, seed, how):
    from safetensors.numpy import load, save

    from rnnkit.serialization import _checksum

    data, x = model_bytes
    rng = np.random.default_rng(seed)
    n = int.from_bytes(data[:8], "little")
    if how == "flip":
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 8))):
            b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        out = bytes(b)
    elif how == "truncate":
        out = data[:int(rng.integers(len(data)))]
    elif how == "insert":
        i = int(rng.integers(len(data)))
        out = data[:i] + bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8)) + data[i:]
    elif how == "header":
        header = _mutate_json(json.loads(data[8:8 + n]), rng)
        raw = json.dumps(header).encode()
        out = len(raw).to_bytes(8, "little") + raw + data[8 + n:]
    else:
        header = json.loads(data[8:8 + n])
        meta = header["__metadata__"]
        key = sorted(k for k in meta if k not in ("format", "checksum"))[int(rng.integers(len(meta) - 2))]
        try:
            meta[key] = json.dumps(_mutate_json(json.loads(meta[key]), rng))
        except json.JSONDecodeError:
            meta[key] = str(rng.integers(-5, 5))
        if how == "meta_checksummed":
            tensors = load(data)
            meta["checksum"] = _checksum(tensors, meta)
            out = save(tensors, metadata=meta)
        else:
            raw = json.dumps(header).encode()
            out = len(raw).to_bytes(8, "little") + raw + data[8 + n:]
    path = tmp_path_factory.mktemp("m") / "mutated.rnnkit"
    Path(path).write_bytes(out)
    try:
        m = load_model(str(path))
    except ValueError as e:
        assert str(path) in str(e)
        return
    # a file that loads is a model that runs (or refuses data that does not fit its saved shape)
    _outcome(m.predict, x, verbose=0)
