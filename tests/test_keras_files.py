"""Keras 3 ``.keras`` archives (:mod:`rnnkit.keras_format`): round trips in both directions with
real Keras 3 models (predictions equal at 1e-5 in float32), what the writer refuses, and hostile
archives (each must raise a ValueError naming the file, quickly, without allocating what the
file does not hold).

The Keras models are built once per module (importing Keras is slow); the hostile-file tests
need only h5py.
"""
from __future__ import annotations

import io
import json
import os
import struct
import sys
import time
import warnings
import zipfile

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from rnnkit import activations, keras_format  # noqa: E402
from rnnkit import layers as R  # noqa: E402
from rnnkit.layers.base import Layer  # noqa: E402
from rnnkit.models import Model, Sequential, load_model  # noqa: E402

TOL = 1e-5
V = 11  # vocabulary of the token models


def _as_list(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _max_diff(a, b) -> float:
    a, b = _as_list(a), _as_list(b)
    assert len(a) == len(b)
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(a, b))


def _kpredict(keras, model, x):
    """Keras's outputs for ``x`` in inference mode (a direct call: faster than ``predict``)."""
    out = model([np.asarray(v) for v in x] if isinstance(x, list) else np.asarray(x), training=False)
    if isinstance(out, (list, tuple)):
        return [keras.ops.convert_to_numpy(o) for o in out]
    return keras.ops.convert_to_numpy(out)


def _tokens(rng, n, t, pad_from=None):
    x = rng.integers(1, V, size=(n, t))
    if pad_from is not None:
        for i in range(n):  # ragged padding: sample i keeps pad_from + i % 3 steps
            x[i, min(t, pad_from + i % 3):] = 0
    return x


def _perturb(rng, layer_weights, batchnorm=False):
    out = [w + rng.normal(scale=0.3, size=np.shape(w)).astype(np.asarray(w).dtype) for w in layer_weights]
    if batchnorm:  # the moving variance stays positive
        out[-1] = np.abs(out[-1]) + 0.5
    return out


# ================================================================================================
# Keras models -> .keras -> rnnkit
# ================================================================================================

def _keras_cases(keras, rng):
    """name -> (keras model, inputs)."""
    L = keras.layers
    cases = {}

    m = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        L.Embedding(V, 8, mask_zero=True),
        L.LSTM(12, return_sequences=True, recurrent_activation="hard_sigmoid"),
        L.Dropout(0.2),
        L.GRU(10, return_sequences=True, reset_after=False, kernel_regularizer="l2"),
        L.TimeDistributed(L.Dense(V, activation="softmax")),
    ], name="tagger")
    m.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    cases["seq_tokens"] = (m, _tokens(rng, 6, 9, pad_from=4))

    m = keras.Sequential([
        keras.Input((7, 5)),
        L.Masking(mask_value=0.0),
        L.Bidirectional(L.LSTM(6, return_sequences=True), merge_mode="sum"),
        L.Bidirectional(L.GRU(5, return_sequences=True), merge_mode="mul"),
        L.Bidirectional(L.SimpleRNN(4, activation="relu", return_sequences=True), merge_mode="ave"),
        L.SimpleRNN(4, go_backwards=True),
        L.Dense(3, activation="tanh"),
    ])
    x = rng.normal(size=(5, 7, 5)).astype("float32")
    x[1, 5:] = 0.0
    x[3, 2] = 0.0  # a hole
    cases["seq_masking_bidi"] = (m, x)

    enc_in = keras.Input((None,), dtype="int32", name="enc")
    dec_in = keras.Input((None,), dtype="int32", name="dec")
    enc_seq, h, c = L.LSTM(16, return_sequences=True, return_state=True)(L.Embedding(V, 8, mask_zero=True)(enc_in))
    dec_seq = L.LSTM(16, return_sequences=True)(L.Embedding(V, 8)(dec_in), initial_state=[h, c])
    ctx = L.Attention(use_scale=True)([dec_seq, enc_seq])
    out = L.TimeDistributed(L.Dense(V, activation="softmax"))(L.Concatenate()([dec_seq, ctx]))
    m = keras.Model([enc_in, dec_in], [out, L.Dense(2, name="aux")(h)], name="seq2seq")
    m.compile(optimizer="rmsprop", loss=["sparse_categorical_crossentropy", "mse"])
    cases["seq2seq_attention"] = (m, [_tokens(rng, 4, 8, pad_from=5), _tokens(rng, 4, 6)])

    a = keras.Input((None,), dtype="int32")
    b = keras.Input((None,), dtype="int32")
    la = L.LSTM(8, return_sequences=True)(L.Embedding(V, 6, mask_zero=True)(a))
    lb = L.LSTM(8, return_sequences=True)(L.Dense(6)(L.Embedding(V, 6, mask_zero=True)(b)))
    z = L.Add()([L.Dense(8)(L.Concatenate()([la, lb])), la])
    z = L.GlobalAveragePooling1D()(z)
    m = keras.Model([a, b], L.Dense(3, activation="softmax")(z), name="twin")
    cases["twin_masked_branches"] = (m, [_tokens(rng, 5, 7, pad_from=3), _tokens(rng, 5, 7, pad_from=4)])

    x_in = keras.Input((8, 5))
    y = L.Conv1D(6, 3, padding="causal", activation="relu")(x_in)
    y = L.LayerNormalization()(y)
    r = L.RNN(L.LSTMCell(6), return_sequences=True)(y)
    g = L.RNN(L.GRUCell(6, reset_after=False), return_sequences=True, go_backwards=True)(y)
    s = L.RNN(L.SimpleRNNCell(6))(y)
    y = L.Multiply()([L.Average()([r, g]), L.Subtract()([r, g])])
    y = L.Maximum()([y, L.Minimum()([r, g])])
    p = L.MaxPooling1D(2)(y)
    q = L.AveragePooling1D(2, strides=1, padding="same")(p)
    att = L.AdditiveAttention()([q, p])
    flat = L.Flatten()(L.Permute((2, 1))(att))
    red = L.Reshape((4, 6))(flat)
    gap = L.GlobalMaxPooling1D()(red)
    dot = L.Dot(axes=1, normalize=True)([gap, s])
    rep = L.Flatten()(L.RepeatVector(2)(s))
    y = L.Concatenate()([gap, dot, rep])
    y = L.BatchNormalization()(y)
    y = L.Activation("swish")(L.Dense(4, kernel_constraint="non_neg")(y))
    m = keras.Model(x_in, y, name="zoo")
    cases["zoo"] = (m, rng.normal(size=(4, 8, 5)).astype("float32"))

    for model, _ in cases.values():
        for layer in model.layers:
            ws = layer.get_weights()
            if ws:
                layer.set_weights(_perturb(rng, ws, type(layer).__name__ == "BatchNormalization"))
    return cases


@pytest.fixture(scope="module")
def keras_files(keras, tmp_path_factory):
    """name -> (path of the .keras file Keras wrote, inputs, Keras's predictions)."""
    rng = np.random.default_rng(7)
    d = tmp_path_factory.mktemp("from_keras")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras's own (NumPy 2 __array__, masks dropped by Conv1D, ...)
        for name, (model, x) in _keras_cases(keras, rng).items():
            path = str(d / f"{name}.keras")
            model.save(path)
            out[name] = (path, x, _kpredict(keras, model, x))
    return out


def _load_quiet(path, **kw):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model = load_model(path, **kw)
    return model, [str(x.message) for x in w]


@pytest.mark.keras
@pytest.mark.parametrize("case", ["seq_tokens", "seq_masking_bidi", "seq2seq_attention", "twin_masked_branches", "zoo"])
def test_keras_file_loads_with_the_same_predictions(keras_files, case):
    path, x, expected = keras_files[case]
    model, _ = _load_quiet(path)
    assert isinstance(model, Sequential if case.startswith("seq_") else Model)
    got = model.predict(x, verbose=0)
    assert _max_diff(got, expected) < TOL


@pytest.mark.keras
def test_keras_compile_config_and_warnings(keras_files):
    model, msgs = _load_quiet(keras_files["seq_tokens"][0])
    assert type(model.optimizer).__name__ == "Adam"
    assert model.optimizer.get_config()["learning_rate"] == pytest.approx(0.01)
    assert type(model.loss).__name__ == "SparseCategoricalCrossentropy"
    assert [m.name for m in model.compiled_metrics] == ["accuracy"]
    assert any("kernel_regularizer ignored" in m for m in msgs), msgs
    assert [l.name for l in model.layers][0] == "embedding"
    # the rnnkit model trains and evaluates
    path, x, _ = keras_files["seq_tokens"]
    y = np.where(x > 0, x % 3, 0)
    assert np.isfinite(model.evaluate(x, y, verbose=0)[0])
    plain, _ = _load_quiet(path, compile=False)
    assert plain.optimizer is None

    model, msgs = _load_quiet(keras_files["seq2seq_attention"][0])
    assert type(model.optimizer).__name__ == "RMSprop" and len(model.output_losses) == 2
    assert not any("initial_state on a masked input" in m for m in msgs)  # the decoder is unmasked
    model, msgs = _load_quiet(keras_files["zoo"][0])
    assert model.optimizer is None
    assert any("kernel_constraint ignored" in m for m in msgs), msgs


# ================================================================================================
# rnnkit models -> .keras -> Keras
# ================================================================================================

def _rnnkit_cases(rng):
    cases = {}
    m = Sequential([
        R.Embedding(V, 8, mask_zero=True, input_shape=(None,)),
        R.Bidirectional(R.LSTM(7, return_sequences=True)),
        R.Dropout(0.1),
        R.GRU(6, return_sequences=True, reset_after=False, recurrent_activation="hard_sigmoid"),
        R.GRU(6, return_sequences=True),
        R.TimeDistributed(R.Dense(V, activation="softmax")),
    ], name="tagger")
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    cases["seq_tokens"] = (m, _tokens(rng, 5, 9, pad_from=4))

    m = Sequential([
        R.Masking(input_shape=(6, 4)),
        R.SimpleRNN(5, activation="relu", return_sequences=True, go_backwards=True),
        R.Bidirectional(R.LSTM(4), merge_mode="mul"),
        R.Dense(3, activation="gelu"),
    ])
    x = rng.normal(size=(5, 6, 4)).astype("float32")
    x[0, 4:] = 0.0
    x[2, 1] = 0.0
    cases["seq_masking"] = (m, x)

    enc_in = R.Input(shape=(None,), dtype="int64")
    enc_seq, h, c = R.LSTM(12, return_sequences=True, return_state=True)(R.Embedding(V, 6, mask_zero=True)(enc_in))
    dec_in = R.Input(shape=(None,), dtype="int64")
    dec_seq = R.LSTM(12, return_sequences=True)(R.Embedding(V, 6)(dec_in), initial_state=[h, c])
    ctx = R.Attention()([dec_seq, enc_seq])
    out = R.TimeDistributed(R.Dense(V, activation="softmax"))(R.Concatenate()([dec_seq, ctx]))
    m = Model([enc_in, dec_in], out)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    cases["seq2seq_attention"] = (m, [_tokens(rng, 4, 8, pad_from=5), _tokens(rng, 4, 6)])

    a = R.Input(shape=(None,), dtype="int64")
    b = R.Input(shape=(None,), dtype="int64")
    la = R.LSTM(8, return_sequences=True)(R.Embedding(V, 6, mask_zero=True)(a))
    lb = R.LSTM(8, return_sequences=True)(R.Dense(6)(R.Embedding(V, 6, mask_zero=True)(b)))
    z = R.Add()([R.Dense(8)(R.Concatenate()([la, lb])), la])
    gru_out = R.GRU(5)(R.Dense(8)(z))
    m = Model([a, b], [R.Dense(3, activation="softmax")(R.GlobalAveragePooling1D()(z)), gru_out])
    cases["twin_masked_branches"] = (m, [_tokens(rng, 5, 7, pad_from=3), _tokens(rng, 5, 7, pad_from=4)])

    x_in = R.Input(shape=(8, 5))
    y = R.LayerNormalization()(R.Conv1D(6, 3, padding="causal", activation="relu")(x_in))
    r = R.RNN(R.LSTMCell(6), return_sequences=True)(y)
    s = R.RNN(R.SimpleRNNCell(4))(y)
    p = R.MaxPooling1D(2)(R.Attention(score_mode="concat", use_scale=True)([r, y]))
    y = R.Concatenate()([R.Flatten()(R.Permute((2, 1))(p)), R.Flatten()(R.RepeatVector(2)(s))])
    y = R.Activation("softplus")(R.Dense(4)(R.BatchNormalization()(y)))
    m = Model(x_in, y)
    cases["zoo"] = (m, rng.normal(size=(4, 8, 5)).astype("float32"))

    for model, _ in cases.values():
        for layer in model.layers:
            ws = layer.get_weights()
            if ws:
                layer.set_weights(_perturb(rng, ws, type(layer).__name__ == "BatchNormalization"))
    return cases


@pytest.fixture(scope="module")
def rnnkit_files(tmp_path_factory):
    """name -> (rnnkit model, path of the .keras file rnnkit wrote, inputs)."""
    rng = np.random.default_rng(11)
    d = tmp_path_factory.mktemp("from_rnnkit")
    out = {}
    for name, (model, x) in _rnnkit_cases(rng).items():
        path = str(d / f"{name}.keras")
        model.save(path)
        out[name] = (model, path, x)
    return out


@pytest.mark.keras
@pytest.mark.parametrize("case", ["seq_tokens", "seq_masking", "seq2seq_attention", "twin_masked_branches", "zoo"])
def test_rnnkit_file_opens_in_keras_with_the_same_predictions(keras, rnnkit_files, case):
    model, path, x = rnnkit_files[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras: "Skipping variable loading for optimizer" (fresh slots)
        kmodel = keras.models.load_model(path)
        kpred = _kpredict(keras, kmodel, x)
    assert _max_diff(kpred, model.predict(x, verbose=0)) < TOL
    if model.optimizer is not None:
        assert type(kmodel.optimizer).__name__ == type(model.optimizer).__name__


def test_rnnkit_file_round_trips_in_rnnkit(rnnkit_files):
    for name, (model, path, x) in rnnkit_files.items():
        again, _ = _load_quiet(path)
        assert type(again) is type(model), name
        assert [l.name for l in again.layers] == [l.name for l in model.layers], name
        assert _max_diff(again.predict(x, verbose=0), model.predict(x, verbose=0)) == 0.0, name
        assert (again.optimizer is None) == (model.optimizer is None), name


@pytest.mark.keras
def test_keras_resave_of_an_rnnkit_file_reads_back(keras, rnnkit_files, tmp_path):
    model, path, x = rnnkit_files["seq2seq_attention"]
    p2 = str(tmp_path / "resaved.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keras.models.load_model(path).save(p2)
    again, _ = _load_quiet(p2)
    assert _max_diff(again.predict(x, verbose=0), model.predict(x, verbose=0)) < TOL


# ================================================================================================
# what the writer refuses, file names, h5py missing
# ================================================================================================

def test_writer_refuses_what_keras_cannot_hold(tmp_path):
    p = str(tmp_path / "m.keras")
    cases = [
        (R.LSTM(4, zoneout=0.1, input_shape=(5, 3)), "zoneout"),
        (R.Dense(2, activation=activations.make_leaky_relu(0.1), input_shape=(3,)), "leaky_relu(0.1)"),
    ]
    for layer, what in cases:
        m = Sequential([layer])
        with pytest.raises(ValueError, match=rf"layer '{layer.name}'.*{what.replace('(', '.').replace(')', '.')}"):
            m.save(p)
        assert not os.path.exists(p)

    class Doubler(Layer):
        def call(self, x, ctx, training=False, mask=None):
            return 2 * x

    m = Sequential([R.Dense(2, input_shape=(3,)), Doubler(name="doubler")])
    with pytest.raises(ValueError, match=r"doubler.*LSTM"):
        m.save(p)
    m = Model(*(lambda i: (i, R.LSTM(3, stateful=True)(i)))(R.Input((4, 2), batch_size=2)))
    with pytest.raises(ValueError, match="stateful"):
        m.save(p)
    # an rnnkit option that is off is not written
    m = Sequential([R.LSTM(4, zoneout=0.0, input_shape=(5, 3))])
    m.save(p)
    with zipfile.ZipFile(p) as zf:
        assert "zoneout" not in zf.read("config.json").decode()


def test_compile_config_keras_lacks_and_mask_differences_warn(tmp_path):
    p = str(tmp_path / "m.keras")
    m = Sequential([R.Embedding(V, 4, mask_zero=True, input_shape=(None,)), R.GlobalMaxPooling1D(), R.Dense(2)])
    m.compile(optimizer="adam", loss=__import__("rnnkit").losses.SparseCategoricalCrossentropy(label_smoothing=0.1))
    with pytest.warns(UserWarning) as rec:
        m.save(p)
    msgs = " | ".join(str(w.message) for w in rec)
    assert "compile config is not written" in msgs and "label_smoothing" in msgs
    assert "GlobalMaxPooling1D ignores the mask" in msgs
    with zipfile.ZipFile(p) as zf:
        assert "compile_config" not in json.loads(zf.read("config.json"))
    again, msgs = _load_quiet(p)
    assert again.optimizer is None and any("GlobalMaxPooling1D" in w for w in msgs)

    enc, dec = R.Input((None,), dtype="int64"), R.Input((None,), dtype="int64")
    _, h = R.GRU(3, return_state=True)(R.Embedding(V, 4)(enc))
    y = R.GRU(3, return_sequences=True)(R.Embedding(V, 4, mask_zero=True)(dec), initial_state=[h])
    m = Model([enc, dec], y)
    m.compile(optimizer="sgd", loss="mse", metrics=["mae"], check_finite=True)
    with pytest.warns(UserWarning, match=r"initial_state on a masked input|check_finite") as rec:
        m.save(p)
    msgs = " | ".join(str(w.message) for w in rec)
    assert "initial_state on a masked input" in msgs and "check_finite" in msgs
    again, _ = _load_quiet(p)
    assert type(again.optimizer).__name__ == "SGD" and [x.name for x in again.compiled_metrics] == ["mae"]


def test_file_names(tmp_path):
    m = Sequential([R.Dense(2, input_shape=(3,))])
    with pytest.raises(ValueError, match=r"legacy Keras HDF5.*\.keras"):
        m.save(str(tmp_path / "m.h5"))
    with pytest.raises(ValueError, match=r"\.keras.*model\.save"):
        m.save_weights(str(tmp_path / "w.keras"))
    for name in ("m.safetensors", "m"):
        m.save(str(tmp_path / name))
        with open(tmp_path / name, "rb") as f:
            assert f.read(2) != b"PK"  # rnnkit's own format, not a zip
        assert load_model(str(tmp_path / name)).get_weights()[0].shape == (3, 2)
    m.save(str(tmp_path / "M.KERAS"))
    assert zipfile.is_zipfile(tmp_path / "M.KERAS")
    with pytest.raises(ValueError, match="custom_objects"):
        load_model(str(tmp_path / "M.KERAS"), custom_objects={"X": R.Dense})


def test_without_h5py_the_error_names_the_extra(tmp_path, monkeypatch):
    m = Sequential([R.Dense(2, input_shape=(3,))])
    p = str(tmp_path / "m.keras")
    m.save(p)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r'rnnkit\[keras\]'):
        m.save(str(tmp_path / "other.keras"))
    with pytest.raises(ImportError, match=r'rnnkit\[keras\]'):
        load_model(p)


# ================================================================================================
# hostile archives
# ================================================================================================

@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """The members of a valid archive (an rnnkit functional model with an LSTM and a Dense)."""
    i = R.Input(shape=(None, 3))
    m = Model(i, R.Dense(2)(R.LSTM(4, return_sequences=True)(i)))
    p = str(tmp_path_factory.mktemp("good") / "good.keras")
    m.save(p)
    with zipfile.ZipFile(p) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with open(p, "rb") as f:
        return {"path": p, "bytes": f.read(), "members": members}


def _zip(members, compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _with(good, **changes):
    m = dict(good["members"])
    for k, v in changes.items():
        name = {"config": "config.json", "weights": "model.weights.h5", "metadata": "metadata.json"}[k]
        if v is None:
            del m[name]
        else:
            m[name] = v
    return m


def _config(good):
    return json.loads(good["members"]["config.json"])


def _h5_edit(good, edit):
    """The weights file after ``edit(h5py.File)``."""
    buf = io.BytesIO(good["members"]["model.weights.h5"])
    out = io.BytesIO()
    out.write(buf.getvalue())
    with h5py.File(out, "r+") as f:
        edit(f)
    return out.getvalue()


def _refused(tmp_path, data, match, name="bad.keras", seconds=2.0):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else _zip(data))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match) as e:
        load_model(str(p))
    assert str(p) in str(e.value)
    assert time.perf_counter() - t0 < seconds
    return str(e.value)


def test_good_archive_loads(good):
    m = load_model(good["path"])
    assert [type(l).__name__ for l in m.layers] == ["LSTM", "Dense"]


def test_truncated_and_foreign_files(tmp_path, good):
    data = good["bytes"]
    for cut in (10, len(data) // 2, len(data) - 30):
        _refused(tmp_path, data[:cut], r"zip|truncated|damaged")
    _refused(tmp_path, b"\x00" * 1000, "zip")
    # rnnkit's own format under a .keras name
    Sequential([R.Dense(2, input_shape=(3,))]).save(str(tmp_path / "own.safetensors"))
    _refused(tmp_path, (tmp_path / "own.safetensors").read_bytes(), "zip")
    # flipped bytes inside a member: the CRC check
    bad = bytearray(data)
    at = data.find(b"keras_history") if b"keras_history" in data else data.find(b"class_name")
    bad[at] ^= 0x55
    _refused(tmp_path, bytes(bad), r"damaged|CRC|JSON|truncated")


def test_zip_bomb_declared_sizes(tmp_path, good):
    # a stored member whose declared size is not its stored size (patched central directory)
    data = bytearray(_zip(good["members"]))
    pos = data.find(b"PK\x01\x02")  # central directory entries: name length at +28, name at +46
    while data[pos + 46:pos + 46 + 16] != b"model.weights.h5":
        pos = data.find(b"PK\x01\x02", pos + 1)
        assert pos > 0
    data[pos + 24:pos + 28] = struct.pack("<L", 0xFFFFFFF0)  # the declared (uncompressed) size
    _refused(tmp_path, bytes(data), r"model\.weights\.h5.*declares")
    # a deflated member expanding far beyond MAX_EXPANSION times its compressed size
    members = _with(good, config=b" " * (4 << 20))
    _refused(tmp_path, _zip(members, zipfile.ZIP_DEFLATED), "decompression bomb")
    # too many members
    _refused(tmp_path, {**good["members"], **{f"assets/{i}": b"" for i in range(300)}}, "members")


def test_path_traversal_and_odd_members(tmp_path, good):
    for name in ("../evil.txt", "/etc/passwd", "assets/../../x", "C:/x"):
        _refused(tmp_path, {**good["members"], name: b"x"}, "outside the archive")
    _refused(tmp_path, _with(good, weights=None), "model.weights.h5")
    _refused(tmp_path, _with(good, config=None), "config.json")


def test_huge_and_deep_config(tmp_path, good):
    _refused(tmp_path, _with(good, config=b" " * (keras_format.MAX_CONFIG_BYTES + 1)), r"config\.json.*declares")
    _refused(tmp_path, _with(good, config=b"[" * 200_000 + b"]" * 200_000), "nests deeper")
    _refused(tmp_path, _with(good, config=b"[" * 100 + b"]" * 100), "nests deeper")
    _refused(tmp_path, _with(good, config=b"{not json"), "not valid JSON")


def _edit_config(good, fn):
    cfg = _config(good)
    fn(cfg)
    return _with(good, config=json.dumps(cfg).encode())


def _layer(cfg, cls):
    return next(l for l in cfg["config"]["layers"] if l["class_name"] == cls)


def test_lambda_custom_and_unknown_layers(tmp_path, good):
    def lam(cfg):
        _layer(cfg, "Dense")["class_name"] = "Lambda"
    _refused(tmp_path, _edit_config(good, lam), "Lambda layer")

    def custom(cfg):
        d = _layer(cfg, "Dense")
        d["module"], d["registered_name"] = "my_package.layers", "MyPackage>Dense"
    _refused(tmp_path, _edit_config(good, custom), "custom object")

    def unknown(cfg):
        _layer(cfg, "Dense")["class_name"] = "Conv2D"
    msg = _refused(tmp_path, _edit_config(good, unknown), "unsupported Keras layer 'Conv2D'")
    assert "LSTM" in msg and "Bidirectional" in msg

    def subclassed(cfg):
        cfg["class_name"] = "MyModel"
    _refused(tmp_path, _edit_config(good, subclassed), "subclassed")

    def unsupported_option(cfg):
        _layer(cfg, "LSTM")["config"]["stateful"] = True
    _refused(tmp_path, _edit_config(good, unsupported_option), "stateful")

    def mixed_precision(cfg):
        _layer(cfg, "Dense")["config"]["dtype"]["config"]["name"] = "mixed_float16"
    _refused(tmp_path, _edit_config(good, mixed_precision), "mixed_float16")

    def keras2(cfg):
        _layer(cfg, "Dense")["inbound_nodes"] = [[["lstm", 0, 0, {}]]]
    _refused(tmp_path, _edit_config(good, keras2), "Keras 2")

    def dangling(cfg):
        cfg["config"]["output_layers"] = ["nowhere", 0, 0]
    _refused(tmp_path, _edit_config(good, dangling), "does not exist")

    def cycle(cfg):
        lstm = _layer(cfg, "LSTM")
        lstm["inbound_nodes"][0]["args"][0]["config"]["keras_history"] = [_layer(cfg, "Dense")["name"], 0, 0]
    _refused(tmp_path, _edit_config(good, cycle), "cycle")

    def as_data(cfg):
        cfg["config"]["layers"].insert(1, {"module": "keras.src.ops.numpy", "class_name": "Add",
                                           "config": {"name": "add_op"}, "registered_name": "Add", "name": "add_op",
                                           "inbound_nodes": []})
        _layer(cfg, "Dense")["inbound_nodes"][0]["args"][0]["config"]["keras_history"] = ["add_op", 0, 0]
    _refused(tmp_path, _edit_config(good, as_data), "Keras operation 'add_op'")

    meta = _with(good, metadata=json.dumps({"keras_version": "2.15.0"}).encode())
    _refused(tmp_path, meta, "Keras 2.15.0")


def test_weights_checked_before_use(tmp_path, good):
    groups = {}

    def find(f):
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                groups[name] = obj.shape
        f.visititems(visit)
    _h5_edit(good, find)
    dense = next(n for n in groups if "dense" in n and n.endswith("/0"))
    lstm = next(n for n in groups if "lstm" in n and n.endswith("/1"))

    def reshape(f):
        del f[dense]
        f[dense] = np.zeros((5, 2), np.float32)
    _refused(tmp_path, _with(good, weights=_h5_edit(good, reshape)), r"has shape \(5, 2\).*expects \(4, 2\)")

    def missing(f):
        del f[lstm]
    _refused(tmp_path, _with(good, weights=_h5_edit(good, missing)), "expected the 3 weights")

    def missing_group(f):
        del f[dense.rsplit("/", 2)[0]]
    _refused(tmp_path, _with(good, weights=_h5_edit(good, missing_group)), "missing weights")

    def float64(f):
        shape = f[dense].shape
        del f[dense]
        f[dense] = np.zeros(shape, np.float64)
    _refused(tmp_path, _with(good, weights=_h5_edit(good, float64)), "dtype float64")

    def compressed(f):
        shape = f[dense].shape
        del f[dense]
        f.create_dataset(dense, data=np.zeros(shape, np.float32), compression="gzip")
    _refused(tmp_path, _with(good, weights=_h5_edit(good, compressed)), "compressed or filtered")

    def empty(f):
        shape = f[dense].shape
        del f[dense]
        f.create_dataset(dense, shape=shape, dtype=np.float32)  # no data written: fill values only
    _refused(tmp_path, _with(good, weights=_h5_edit(good, empty)), "missing or incomplete")

    for link in (lambda: h5py.SoftLink("/" + lstm), lambda: h5py.ExternalLink("/etc/passwd", "/x")):
        def linked(f, link=link):
            del f[dense]
            f[dense] = link()
        _refused(tmp_path, _with(good, weights=_h5_edit(good, linked)), "hard links only")

    _refused(tmp_path, _with(good, weights=b"not hdf5 at all"), "not an HDF5 file")


def test_a_file_cannot_make_rnnkit_allocate_what_it_does_not_hold(tmp_path, good):
    def huge(cfg):
        _layer(cfg, "Dense")["config"]["units"] = 10 ** 10
    _refused(tmp_path, _edit_config(good, huge), "more than the file holds")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_non_regular_files(tmp_path):
    fifo = tmp_path / "pipe.keras"
    os.mkfifo(fifo)
    link = tmp_path / "zero.keras"
    link.symlink_to("/dev/zero")
    folder = tmp_path / "dir.keras"
    folder.mkdir()
    for p, kind in ((fifo, "FIFO"), (link, "character device"), (folder, "directory")):
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match=kind) as e:
            load_model(str(p))
        assert str(p) in str(e.value) and time.perf_counter() - t0 < 2.0


@pytest.mark.keras
def test_keras_lambda_ops_and_explicit_masks(keras, tmp_path):
    L = keras.layers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        i = keras.Input((4,))
        keras.Model(i, L.Dense(2)(L.Lambda(lambda x: x * 2)(i))).save(str(tmp_path / "lambda.keras"))
        a, b = keras.Input((4,)), keras.Input((4,))
        keras.Model([a, b], L.Dense(2)(keras.ops.add(a, b))).save(str(tmp_path / "ops.keras"))
        t, tok = keras.Input((None, 3)), keras.Input((None,), dtype="int32")
        keras.Model([t, tok], L.LSTM(4)(t, mask=keras.ops.not_equal(tok, 0))).save(str(tmp_path / "mask.keras"))
    with pytest.raises(ValueError, match="Lambda layer"):
        load_model(str(tmp_path / "lambda.keras"))
    with pytest.raises(ValueError, match="Keras operation"):
        load_model(str(tmp_path / "ops.keras"))
    with pytest.warns(UserWarning, match="explicit mask argument"):
        load_model(str(tmp_path / "mask.keras"))
