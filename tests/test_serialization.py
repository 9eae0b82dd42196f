"""Saving/loading: safetensors + JSON metadata, round trips, corrupted/tampered/foreign files and
atomic writes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import rnnkit
from rnnkit import optimizers as O
from rnnkit import serialization
from rnnkit.layers import GRU, LSTM, Bidirectional, Dense, Dropout, Embedding
from rnnkit.models import Sequential, load_model

pytestmark = [pytest.mark.threads, pytest.mark.usefixtures("one_thread")]



def _seq_model(dtype="float32"):
    np.random.seed(0)
    return Sequential([LSTM(6, return_sequences=True, input_shape=(5, 3), dtype=dtype),
                       Dropout(0.2, dtype=dtype), GRU(4, return_sequences=True, dtype=dtype),
                       Dense(3, activation="softmax", dtype=dtype)], name="seq")


def _data(rng, n=24):
    x = rng.normal(size=(n, 5, 3)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=(n, 5))]
    return x, y


@pytest.fixture
def saved(rng, tmp_path):
    x, y = _data(rng)
    model = _seq_model()
    model.compile(optimizer=O.Adam(0.01, clipnorm=1.0), loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=0)
    path = str(tmp_path / "model.rnnkit")
    model.save(path)
    return model, path, x, y


def _header(path):
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    return data, n, json.loads(data[8:8 + n])


def _rewrite_header(path, header, data, n):
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + data[8 + n:])


def _rechecksum(path):
    """Recomputes the checksum of an edited file (what a deliberate tamperer would do)."""
    from safetensors.numpy import load, save

    from rnnkit.serialization import _checksum

    data, n, header = _header(path)
    meta = header["__metadata__"]
    tensors = load(data)
    meta["checksum"] = _checksum(tensors, meta)
    Path(path).write_bytes(save(tensors, metadata=meta))


# ---- round trips ----------------------------------------------------------------------------------

def test_round_trip_gives_identical_predictions_and_training(saved):
    model, path, x, y = saved
    loaded = load_model(path)
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers] and loaded.name == "seq"
    p_saved = loaded.predict(x)
    np.testing.assert_array_equal(p_saved, model.predict(x))
    # compile config and optimizer state come back
    assert type(loaded.loss) is type(model.loss) and [m.name for m in loaded.compiled_metrics] == ["accuracy"]
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.optimizer.iterations == model.optimizer.iterations == 6
    h1 = model.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=1)
    h2 = loaded.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=1)
    assert h1.history["loss"] == pytest.approx(h2.history["loss"], rel=1e-5)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    # without compile
    bare = load_model(path, compile=False)
    assert bare.optimizer is None
    np.testing.assert_array_equal(bare.predict(x), p_saved)


def test_round_trip_embedding_bidirectional_float64(rng, tmp_path):
    np.random.seed(1)
    model = Sequential([Embedding(12, 4, mask_zero=True, input_shape=(6,), dtype="float64"),
                        Bidirectional(LSTM(3, return_sequences=True, dtype="float64"), dtype="float64"),
                        Dense(2, dtype="float64")])
    x = rng.integers(0, 12, size=(5, 6))
    path = str(tmp_path / "bi.safetensors")
    model.save(path)  # not compiled: architecture and weights only
    loaded = load_model(path)
    assert loaded.optimizer is None and loaded.layers[0].dtype == np.float64
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_file_is_plain_safetensors(saved):
    model, path, _, _ = saved
    from safetensors import safe_open
    from safetensors.numpy import load_file

    tensors = load_file(path)
    for layer in model.layers:
        for k, p in layer.params.items():
            np.testing.assert_array_equal(tensors[f"{layer.name}/{k}"], p)
    assert any(k.startswith("optimizer/") for k in tensors)
    with safe_open(path, framework="np") as f:
        meta = f.metadata()
    assert meta["format"] == "rnnkit" and meta["format_version"] == "1" and meta["kind"] == "model"
    assert json.loads(meta["model_config"])["class_name"] == "Sequential"
    assert json.loads(meta["compile_config"])["loss"] == "categorical_crossentropy"


def test_save_and_load_weights(saved, tmp_path, rng):
    model, _, x, _ = saved
    path = str(tmp_path / "w.safetensors")
    model.save_weights(path)
    fresh = _seq_model()  # same architecture, other layer names, other weights
    assert [l.name for l in fresh.layers] != [l.name for l in model.layers]
    fresh.load_weights(path)
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))
    with pytest.raises(ValueError, match="holds only weights"):
        load_model(path)
    other = Sequential([LSTM(7, return_sequences=True, input_shape=(5, 3)), Dropout(0.2),
                        GRU(4, return_sequences=True), Dense(3)])
    before = other.get_weights()
    with pytest.raises(ValueError, match=r"tensor '.*/w_ih': expected shape \(28, 3\) .* got \(24, 3\)"):
        other.load_weights(path)
    for a, b in zip(other.get_weights(), before):  # nothing assigned
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="layer 0: saved as LSTM .* the model has GRU"):
        Sequential([GRU(6, return_sequences=True, input_shape=(5, 3)), Dropout(0.2),
                    GRU(4, return_sequences=True), Dense(3)]).load_weights(path)
    with pytest.raises(ValueError, match="the file holds weights for 4 layers, the model has 1"):
        Sequential([Dense(3, input_shape=(4,))]).load_weights(path)
    with pytest.raises(ValueError, match="is not built"):
        Sequential([Dense(3)]).load_weights(path)


def test_unbuilt_model_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="model: 'unbuilt' is not built"):
        Sequential([Dense(2)], name="unbuilt").save(str(tmp_path / "m.rnnkit"))


# ---- corrupted, tampered, foreign files -----------------------------------------------------------

@pytest.mark.parametrize("keep", [0, 5, 100, -1])
def test_truncated_file(saved, tmp_path, keep):
    _, path, _, _ = saved
    data = Path(path).read_bytes()
    cut = str(tmp_path / "cut.rnnkit")
    with open(cut, "wb") as f:
        f.write(data[:keep] if keep >= 0 else data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        load_model(cut)


def test_tampered_shape_same_size(saved):
    _, path, _, _ = saved
    data, n, header = _header(path)
    name = next(k for k in header if k.startswith("lstm") and k.endswith("/w_ih"))
    assert header[name]["shape"] == [24, 3]
    header[name]["shape"] = [3, 24]  # same byte count, transposed
    _rewrite_header(path, header, data, n)
    # the checksum covers the shapes: it is verified before the architecture is even read
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_model(path)
    # a tamperer who also recomputes the (unkeyed) checksum meets the shape check
    _rechecksum(path)
    with pytest.raises(ValueError, match=rf"tensor '{name}': expected shape \(24, 3\) .* got \(3, 24\)"):
        load_model(path)


def test_tampered_shape_other_size(saved):
    _, path, _, _ = saved
    data, n, header = _header(path)
    name = next(k for k in header if k.endswith("/kernel"))
    header[name]["shape"][0] += 1
    _rewrite_header(path, header, data, n)
    with pytest.raises(ValueError, match=rf"tensor '{name}': shape .* does not match its .* bytes"):
        load_model(path)


def test_tampered_weight_values_fail_checksum(saved):
    _, path, _, _ = saved
    data, n, header = _header(path)
    name = next(k for k in header if k.endswith("/kernel"))
    lo = 8 + n + header[name]["data_offsets"][0]
    buf = bytearray(data)
    buf[lo] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(buf))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_model(path)


def test_foreign_and_future_files(tmp_path):
    from safetensors.numpy import save_file

    plain = str(tmp_path / "plain.safetensors")
    save_file({"a": np.zeros(3, np.float32)}, plain)
    with pytest.raises(ValueError, match="not an rnnkit model file: expected metadata format 'rnnkit', got None"):
        load_model(plain)
    future = str(tmp_path / "future.rnnkit")
    save_file({"a": np.zeros(3, np.float32)}, future, metadata={"format": "rnnkit", "format_version": "2"})
    with pytest.raises(ValueError, match="format version 2 is not supported"):
        load_model(future)
    junk = tmp_path / "junk.rnnkit"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00this is no json!")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(str(junk))
    text = tmp_path / "model.json"
    text.write_text('{"class_name": "Sequential"}')
    with pytest.raises(ValueError, match="truncated or not a safetensors file"):
        load_model(str(text))
    with pytest.raises(FileNotFoundError):
        load_model(str(tmp_path / "missing.rnnkit"))


# ---- atomic writes --------------------------------------------------------------------------------

def test_failed_save_leaves_previous_file_intact(saved, monkeypatch, rng):
    model, path, x, _ = saved
    original = Path(path).read_bytes()
    expected = model.predict(x)
    model.set_weights([w + 1.0 for w in model.get_weights()])

    def half_then_fail(f, data):
        f.write(data[: len(data) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(serialization, "_write_all", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        model.save(path)
    with pytest.raises(OSError, match="No space left"):
        model.save_weights(path)
    assert Path(path).read_bytes() == original
    assert os.listdir(os.path.dirname(path)) == ["model.rnnkit"]  # no temporary file left behind
    np.testing.assert_array_equal(load_model(path).predict(x), expected)
    monkeypatch.undo()
    model.save(path)  # a successful save replaces the file
    np.testing.assert_array_equal(load_model(path).predict(x), model.predict(x))
    assert os.listdir(os.path.dirname(path)) == ["model.rnnkit"]


def test_save_into_missing_directory(saved, tmp_path):
    model = saved[0]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.save(str(tmp_path / "nope" / "m.rnnkit"))


def test_no_pickle_in_rnnkit_training_modules():
    import inspect

    from rnnkit import callbacks, losses, metrics, models, optimizers, schedules, training

    for mod in (callbacks, losses, metrics, models, optimizers, schedules, serialization, training):
        src = inspect.getsource(mod)
        assert "import pickle" not in src and "allow_pickle=True" not in src, mod.__name__
