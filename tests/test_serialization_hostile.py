"""Loading damaged or hostile model files, and saves killed midway (issue 8, items 4-6).

A file must never make the loader block, read without bound, allocate more than the file holds,
or fail with anything but a ValueError that names the file and what is wrong.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load, save

from rnnkit.layers import LSTM, Dense
from rnnkit.models import Sequential, load_model
from rnnkit.serialization import _checksum, remove_stale_temporaries


@pytest.fixture
def model_file(tmp_path):
    np.random.seed(3)
    m = Sequential([LSTM(4, return_sequences=True, input_shape=(5, 3)), Dense(2, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 5, 3)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, (8, 5))]
    m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "m.rnnkit"
    m.save(str(path))
    return path


def _parts(path):
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    return data, n, json.loads(data[8:8 + n])


def _write_header(path, header, body):
    raw = json.dumps(header).encode()
    Path(path).write_bytes(len(raw).to_bytes(8, "little") + raw + body)


def _edit_config(path, edit):
    """Edits the model config and recomputes the checksum, as a deliberate tamperer would."""
    data, n, header = _parts(path)
    meta = header["__metadata__"]
    cfg = json.loads(meta["model_config"])
    edit(cfg)
    meta["model_config"] = json.dumps(cfg)
    tensors = load(data)
    meta["checksum"] = _checksum(tensors, meta)
    Path(path).write_bytes(save(tensors, metadata=meta))


def _load_fast_and_small(path, match):
    """load_model(path) must raise ValueError matching ``match`` within 2 s, allocating < 20 MB."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match):
            load_model(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t < 2.0
    assert peak < 20 << 20, f"the loader allocated {peak / 2**20:.1f} MiB"


# ---- 4. the architecture cannot ask for more than the file holds ----------------------------------

def test_huge_dense_in_an_edited_config_fails_before_allocating(model_file):
    def edit(cfg):
        cfg["config"]["layers"][1]["config"]["units"] = 30_000_000
    _edit_config(model_file, edit)
    _load_fast_and_small(model_file, r"m\.rnnkit: invalid model_config .*needs \d+ bytes, more than the file holds")


def test_huge_lstm_in_an_edited_config_fails_before_allocating(model_file):
    def edit(cfg):
        cfg["config"]["layers"][0]["config"]["units"] = 6000
    _edit_config(model_file, edit)
    _load_fast_and_small(model_file, r"more than the file holds")


def test_loading_runs_no_initializer(model_file, monkeypatch):
    from rnnkit import initializers

    def boom(*a, **k):
        raise AssertionError("an initializer ran while loading")

    for cls in (initializers.GlorotUniform, initializers.Orthogonal, initializers.Zeros):
        monkeypatch.setattr(cls, "__call__", boom)
    load_model(str(model_file))


def test_checksum_is_checked_before_the_config_is_read(model_file):
    data, n, header = _parts(model_file)
    cfg = json.loads(header["__metadata__"]["model_config"])
    cfg["config"]["layers"][1]["config"]["units"] = 30_000_000
    header["__metadata__"]["model_config"] = json.dumps(cfg)
    _write_header(model_file, header, data[8 + n:])
    _load_fast_and_small(model_file, "checksum mismatch")


# ---- 5. special and malformed files ---------------------------------------------------------------

@pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files")
def test_symlink_to_a_device_is_refused(tmp_path):
    link = tmp_path / "zero.rnnkit"
    os.symlink("/dev/zero", link)
    with pytest.raises(ValueError, match=r"zero\.rnnkit: not a regular file \(a character device\)"):
        load_model(str(link))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.rnnkit"
    os.mkfifo(fifo)
    result = []

    def run():
        try:
            load_model(str(fifo))
        except ValueError as e:
            result.append(str(e))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=5)
    assert not t.is_alive(), "load_model blocked on a FIFO"
    assert result and "not a regular file (a FIFO)" in result[0]


def test_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a regular file"):
        load_model(str(tmp_path))


def test_deeply_nested_header_is_a_value_error(tmp_path):
    p = tmp_path / "deep.rnnkit"
    raw = b"[" * 100_000 + b"]" * 100_000
    p.write_bytes(len(raw).to_bytes(8, "little") + raw)
    with pytest.raises(ValueError, match=r"deep\.rnnkit: .*nests deeper than"):
        load_model(str(p))


def test_deeply_nested_metadata_value_is_a_value_error(model_file):
    def edit(cfg):
        cfg["config"]["layers"][1]["config"]["extra"] = json.loads("[" * 500 + "]" * 500)
    _edit_config(model_file, edit)
    with pytest.raises(ValueError, match="nests deeper than"):
        load_model(str(model_file))


@pytest.mark.parametrize("shape", [[2**70], [2**40, 2**40], [-1, 3], [1.5], ["3"], [True]])
def test_absurd_tensor_shapes_are_value_errors(model_file, shape):
    data, n, header = _parts(model_file)
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = shape
    _write_header(model_file, header, data[8 + n:])
    with pytest.raises(ValueError, match=rf"m\.rnnkit: (tensor|corrupted)"):
        load_model(str(model_file))


@pytest.mark.parametrize("value", [[1], {"a": 1}, None, 1, "1.0", "-1", "9" * 40, ""])
def test_malformed_format_version_names_the_file(model_file, value):
    data, n, header = _parts(model_file)
    header["__metadata__"]["format_version"] = value
    _write_header(model_file, header, data[8 + n:])
    with pytest.raises(ValueError, match=r"m\.rnnkit: (invalid format_version|metadata 'format_version')"):
        load_model(str(model_file))


@pytest.mark.parametrize("value", [str(2**70), "-3", "1e5", "x"])
def test_malformed_optimizer_iterations(model_file, value):
    data, n, header = _parts(model_file)
    meta = header["__metadata__"]
    meta["optimizer_iterations"] = value
    tensors = load(data)
    meta["checksum"] = _checksum(tensors, meta)
    Path(model_file).write_bytes(save(tensors, metadata=meta))
    with pytest.raises(ValueError, match=r"m\.rnnkit: invalid optimizer_iterations"):
        load_model(str(model_file))


def test_overlapping_tensors_are_refused(model_file):
    data, n, header = _parts(model_file)
    names = [k for k in header if k != "__metadata__"]
    a, b = names[0], names[1]
    header[b]["data_offsets"] = list(header[a]["data_offsets"])
    header[b]["shape"] = list(header[a]["shape"])
    header[b]["dtype"] = header[a]["dtype"]
    _write_header(model_file, header, data[8 + n:])
    with pytest.raises(ValueError, match="m.rnnkit: corrupted"):
        load_model(str(model_file))


# ---- 6. temporary files of killed saves -------------------------------------------------------------

def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_are_removed_and_live_ones_kept(model_file, tmp_path):
    base = model_file.name
    dead = tmp_path / f".{base}.rnnkit-{_dead_pid()}-abc123.tmp"
    dead.write_bytes(b"x" * 1000)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as live_proc:
        try:
            live = tmp_path / f".{base}.rnnkit-{live_proc.pid}-def456.tmp"
            live.write_bytes(b"y")
            other = tmp_path / f".other.rnnkit.rnnkit-{_dead_pid()}-zzz.tmp"
            other.write_bytes(b"z")
            m = load_model(str(model_file))
            m.save(str(model_file))
            assert not dead.exists()
            assert live.exists(), "a save in progress in a live process was removed"
            assert other.exists(), "another target's temporary was removed"
        finally:
            live_proc.kill()
    assert remove_stale_temporaries(str(model_file)) == [live.name]


_SAVER = textwrap.dedent("""
    import sys, numpy as np
    from rnnkit.layers import Dense
    from rnnkit.models import Sequential
    from rnnkit import serialization
    np.random.seed(0)
    m = Sequential([Dense(2048, input_shape=(4096,))])        # 32 MiB of weights
    slow = serialization._write_all
    def write_slowly(f, data):                                 # a save that takes a while
        import time
        mv = memoryview(data)
        for i in range(0, len(mv), 1 << 20):
            f.write(mv[i:i + (1 << 20)])
            time.sleep(0.02)
    serialization._write_all = write_slowly
    print("go", flush=True)
    while True:
        m.save(sys.argv[1])
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_kill_9_during_saves_leaves_no_temporaries_after_the_next_save(tmp_path):
    target = tmp_path / "big.rnnkit"
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    for _ in range(3):
        with subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE,
                              text=True) as p:
            assert p.stdout.readline().strip() == "go"
            time.sleep(0.3)  # inside the first save (32 chunks x 20 ms)
            p.send_signal(signal.SIGKILL)
            p.wait()
    left = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert left, "the kills should have interrupted a save midway"
    old = load_model(str(target)) if target.exists() else None
    if old is not None:  # the last complete save stays loadable
        assert old.layers[0].params["kernel"].shape == (4096, 2048)
    m = Sequential([Dense(3, input_shape=(2,))])
    m.save(str(target))
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
    load_model(str(target))
