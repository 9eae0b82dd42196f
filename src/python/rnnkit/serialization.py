"""Saving and loading models: one self-contained safetensors file, no pickle.

File format (``format_version`` 1)
----------------------------------
A standard `safetensors <https://github.com/huggingface/safetensors>`_ file:

- tensors ``"<layer name>/<param key>"``: every layer's parameters as stored in ``layer.params``
  (e.g. ``"lstm/w_ih"``, ``"dense/kernel"``, ``"bidirectional/forward/w_hh"``), in their dtype;
- tensors ``"optimizer/<i>/<slot>"``: the optimizer's slots for the ``i``-th trainable parameter
  (full model files, when the optimizer has taken steps);
- string metadata (``__metadata__``): ``format`` = ``"rnnkit"``, ``format_version``, ``kind``
  (``"model"`` or ``"weights"``), ``layers`` (JSON: per layer its name, class and parameter
  shapes/dtypes, in model order), ``model_config`` (JSON architecture), ``compile_config``
  (JSON: loss, optimizer config, metrics), ``optimizer_iterations`` and ``checksum`` (SHA-256
  over the tensors' names, dtypes, shapes and bytes and over the other metadata).

Loading parses the header itself first, so a truncated, padded, tampered or foreign file raises
a ``ValueError`` that says what is wrong; weights are matched to layers by position and checked
for class, keys, shapes and dtypes before anything is assigned.

Writes go to a temporary file in the target's directory that is flushed, fsync'ed and then
``os.replace``'d onto the target: a crash or an error mid-write never leaves a partial file under
the target name (the previous file, if any, stays intact).

Shapes
------
Tensors keep the shapes of ``layer.params`` (the kernels' layout, e.g. LSTM ``w_ih [4U, C]``).
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import threading
import time
from typing import Any, Dict, List, Tuple

import numpy as np

# A model here is anything with the Model protocol (layers, get_config, get_compile_config,
# optimizer, trainable_variables): this module imports no model class.
Model = Any

__all__ = ["save_model", "load_model", "save_weights", "load_weights", "FORMAT", "FORMAT_VERSION"]

FORMAT = "rnnkit"
FORMAT_VERSION = 1
_CHUNK = 1 << 20

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "F16": np.float16,
           "U8": np.uint8, "I8": np.int8, "BOOL": np.bool_, "I16": np.int16, "U16": np.uint16,
           "U32": np.uint32, "U64": np.uint64}


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"config: value of type {type(o).__name__} is not JSON-serialisable")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, sort_keys=True)


def _checksum(tensors: Dict[str, np.ndarray], metadata: Dict[str, str]) -> str:
    h = hashlib.sha256()
    for k in sorted(metadata):
        if k != "checksum":
            h.update(f"meta\0{k}\0{metadata[k]}\0".encode())
    for name in sorted(tensors):
        a = np.asarray(tensors[name], order="C")
        h.update(f"tensor\0{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


# ---- writing -----------------------------------------------------------------------------------

def _write_all(f: Any, data: bytes) -> None:
    """Writes ``data`` in chunks (kept separate so tests can make a write fail midway)."""
    mv = memoryview(data)
    for i in range(0, len(mv), _CHUNK):
        f.write(mv[i:i + _CHUNK])


def _file_mode(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


# Temporary files of a save: ".<target name>.rnnkit-<pid>-<random>.tmp" beside the target.
_TMP_TAG = ".rnnkit-"
_IN_FLIGHT: set = set()          # temporary files this process is writing now
_IN_FLIGHT_LOCK = threading.Lock()
_LEGACY_TMP_AGE = 3600.0         # seconds: older unnamed temporaries of an earlier rnnkit are stale


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (conservatively True where that cannot be told)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, AttributeError):
        return True
    return True


def remove_stale_temporaries(path: str) -> List[str]:
    """Deletes the temporary files that earlier saves to ``path`` left behind when they were
    killed (``kill -9``, power loss): those of this naming pattern whose process is gone (or, from
    this process, that no save is writing now), and unnamed ones of an earlier rnnkit that are
    over an hour old. Returns the names removed. A save in progress in another live process is
    never touched."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    prefix = "." + base + "."
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        full = os.path.join(directory, name)
        middle = name[len(prefix) - 1:-len(".tmp")]
        if middle.startswith(_TMP_TAG):
            pid_part = middle[len(_TMP_TAG):].split("-", 1)[0]
            if not pid_part.isdigit():
                continue
            pid = int(pid_part)
            if pid == os.getpid():
                with _IN_FLIGHT_LOCK:
                    stale = full not in _IN_FLIGHT
            else:
                stale = not _pid_alive(pid)
        else:
            # mkstemp's ".<name>.XXXXXXXX.tmp" from rnnkit 0.1.0 (no pid to ask)
            if len(middle) != 9 or not middle[1:].replace("_", "").isalnum():
                continue
            try:
                stale = now - os.stat(full).st_mtime > _LEGACY_TMP_AGE
            except OSError:
                continue
        if stale:
            try:
                os.unlink(full)
                removed.append(name)
            except OSError:
                pass
    return removed


def atomic_write(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically: a temporary file in the same directory, flushed
    and fsync'ed, then ``os.replace``'d onto ``path``. On any error the temporary file is removed
    and ``path`` is untouched; temporaries that killed saves left behind are removed first
    (:func:`remove_stale_temporaries`)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"filepath: directory {directory!r} does not exist")
    remove_stale_temporaries(path)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{_TMP_TAG}{os.getpid()}-",
                               suffix=".tmp", dir=directory)
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT.add(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_all(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        with _IN_FLIGHT_LOCK:
            _IN_FLIGHT.discard(tmp)
    try:  # make the rename itself durable where the platform allows it
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def check_filename(filepath: Any, keras_archive: bool = False) -> None:
    """Refuses names that promise a format rnnkit does not write there: Keras's legacy HDF5
    ``.h5``/``.hdf5`` always, and Keras's ``.keras`` archive unless ``keras_archive`` (what
    ``Model.save`` passes: it writes ``.keras`` names with :mod:`rnnkit.keras_format`). Raises
    ValueError naming the file."""
    name = os.fspath(filepath)
    ext = os.path.splitext(str(name))[1].lower()
    if ext in (".h5", ".hdf5"):
        raise ValueError(f"filepath: {name!r} names a legacy Keras HDF5 {ext} file, which rnnkit does not write; "
                         "use a name ending in .keras for a Keras 3 archive (Model.save), or .rnnkit / "
                         ".safetensors for rnnkit's own format")
    if ext == ".keras" and not keras_archive:
        raise ValueError(f"filepath: {name!r} names a Keras .keras archive, which holds a whole model: use "
                         "model.save() for it; weights alone are saved as safetensors (a name ending in "
                         ".rnnkit or .safetensors)")


def _layer_tensors(model: Model) -> Tuple[Dict[str, np.ndarray], List[Dict[str, Any]]]:
    if not model.built:
        raise ValueError(f"model: {model.name!r} is not built; give the first layer an input_shape, "
                         "call build(input_shape) or fit it before saving")
    tensors: Dict[str, np.ndarray] = {}
    layers: List[Dict[str, Any]] = []
    for layer in model.layers:
        entry = {"name": layer.name, "class_name": type(layer).__name__, "params": {}}
        for k, p in layer.params.items():
            tensors[f"{layer.name}/{k}"] = np.array(p, order="C")
            entry["params"][k] = {"shape": list(p.shape), "dtype": p.dtype.name}
        layers.append(entry)
    return tensors, layers


def _serialize(tensors: Dict[str, np.ndarray], metadata: Dict[str, str]) -> bytes:
    from safetensors.numpy import save

    metadata = dict(metadata)
    metadata["checksum"] = _checksum(tensors, metadata)
    return save(tensors, metadata=metadata)


def _base_metadata(kind: str, layers: List[Dict[str, Any]]) -> Dict[str, str]:
    from rnnkit import __version__

    return {"format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": kind,
            "rnnkit_version": __version__, "layers": _dumps(layers)}


def save_model(model: Model, filepath: str, include_optimizer: bool = True) -> None:
    """Saves the architecture, weights, compile config and (``include_optimizer``) the optimizer
    state of ``model`` to ``filepath`` (one safetensors file, written atomically).

    Shapes
    ------
    Tensors keep the shapes of ``layer.params``.
    """
    tensors, layers = _layer_tensors(model)
    meta = _base_metadata("model", layers)
    meta["model_config"] = _dumps({"class_name": type(model).__name__, "config": model.get_config()})
    cc = model.get_compile_config()
    if cc is not None:
        meta["compile_config"] = _dumps(cc)
        opt = model.optimizer
        if include_optimizer and opt is not None and opt.iterations > 0:
            params, _ = model.trainable_variables()
            state = opt.get_state(params)
            meta["optimizer_iterations"] = str(int(state.pop("iterations")))
            for k, v in state.items():
                tensors[f"optimizer/{k}"] = np.array(v, order="C")
    atomic_write(filepath, _serialize(tensors, meta))


def save_weights(model: Model, filepath: str) -> None:
    """Saves only the weights of ``model`` (safetensors, written atomically).

    Shapes
    ------
    Tensors keep the shapes of ``layer.params``.
    """
    tensors, layers = _layer_tensors(model)
    atomic_write(filepath, _serialize(tensors, _base_metadata("weights", layers)))


# ---- reading -----------------------------------------------------------------------------------

# What a file may make the loader do, besides what its own size already bounds.
MAX_HEADER_BYTES = 100 << 20   # the safetensors JSON header
MAX_JSON_DEPTH = 64            # nesting of any JSON value (header, metadata entries)
MAX_TENSORS = 100_000          # tensors in one file


def json_depth_ok(obj: Any, limit: int) -> bool:
    """Whether ``obj`` (parsed JSON) nests at most ``limit`` levels (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return False
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return True


def read_regular_file(path: str) -> bytes:
    """The bytes of ``path``, which must be a regular file (a FIFO, a device, a directory or a
    socket raises ValueError without blocking or reading). Reads at most the size the file had
    when opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except IsADirectoryError:
        raise ValueError(f"{path}: not a regular file (a directory)") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a character device" if stat.S_ISCHR(st.st_mode)
                    else "a block device" if stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                    else "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file")
            raise ValueError(f"{path}: not a regular file ({kind}); rnnkit reads models only from "
                             "regular files")
        size = st.st_size
        chunks = []
        left = size
        while left > 0:
            b = os.read(fd, min(left, _CHUNK * 16))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


class _File:
    """A parsed and verified rnnkit safetensors file.

    Order of the checks, so that a damaged or hostile file costs no more than its own size: the
    file must be a regular file; the header is read within bounds (length, nesting depth, tensor
    count, every shape and offset inside the file); the tensors must tile the data exactly; the
    checksum must match. Only then does anyone look at the architecture, and a model is built from
    it only under :func:`rnnkit.layers.base.restoring_weights`, which lets its layers create no
    more parameter bytes than the file holds (and runs no initializer).
    """

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        if not isinstance(self.path, str):
            self.path = os.fsdecode(self.path)
        data = read_regular_file(self.path)
        self.metadata, self.tensors = self._parse(data)
        self.tensor_bytes = sum(int(t.nbytes) for t in self.tensors.values())

    def fail(self, msg: str) -> ValueError:
        return ValueError(f"{self.path}: {msg}")

    def _header(self, data: bytes) -> Tuple[Dict[str, Any], int]:
        if len(data) < 8:
            raise self.fail(f"not an rnnkit model file: {len(data)} bytes is too short for a "
                            "safetensors header (truncated?)")
        n = int.from_bytes(data[:8], "little")
        if n > len(data) - 8:
            raise self.fail(f"truncated or not a safetensors file: the header claims {n} bytes but "
                            f"only {len(data) - 8} follow")
        if n > MAX_HEADER_BYTES:
            raise self.fail(f"the header claims {n} bytes, more than the {MAX_HEADER_BYTES} rnnkit reads")
        try:
            header = json.loads(data[8:8 + n].decode("utf-8"))
        except RecursionError:
            raise self.fail(f"the safetensors header nests deeper than {MAX_JSON_DEPTH} levels") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self.fail(f"not an rnnkit model file: the safetensors header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise self.fail("not an rnnkit model file: the safetensors header is not a JSON object")
        if not json_depth_ok(header, MAX_JSON_DEPTH):
            raise self.fail(f"the safetensors header nests deeper than {MAX_JSON_DEPTH} levels")
        return header, n

    def _parse(self, data: bytes) -> Tuple[Dict[str, str], Dict[str, np.ndarray]]:
        header, n = self._header(data)
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else None
            raise self.fail(f"not an rnnkit model file: expected metadata format {FORMAT!r}, got {got!r:.80}")
        bad = [k for k, v in meta.items() if not isinstance(v, str)]
        if bad:
            raise self.fail(f"metadata {bad[0]!r}: expected a string, got {type(meta[bad[0]]).__name__}")
        fv = meta.get("format_version", "")
        if not (fv.isdigit() and len(fv) < 10):
            raise self.fail(f"invalid format_version {fv!r:.80}: expected a positive integer")
        version = int(fv)
        if version > FORMAT_VERSION or version < 1:
            raise self.fail(f"format version {version} is not supported (this rnnkit reads versions "
                            f"1 to {FORMAT_VERSION}); upgrade rnnkit")
        if len(header) > MAX_TENSORS:
            raise self.fail(f"the header lists {len(header)} tensors, more than the {MAX_TENSORS} rnnkit reads")
        base = 8 + n
        data_len = len(data) - base
        spans: List[Tuple[int, int, str]] = []
        tensors: Dict[str, np.ndarray] = {}
        for name, info in header.items():
            try:
                dt = np.dtype(_DTYPES[info["dtype"]])
                shape = [s for s in info["shape"]]
                lo, hi = info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise self.fail(f"corrupted header entry for tensor {name!r:.80}: {info!r:.200}") from None
            ints = [v for v in shape + [lo, hi] if isinstance(v, int) and not isinstance(v, bool)]
            if len(ints) != len(shape) + 2 or min(ints) < 0 or max(ints) > data_len:
                raise self.fail(f"tensor {name!r:.80}: shape {shape!r:.80} or offsets {[lo, hi]!r:.80} "
                                f"are not integers within the file's {data_len} bytes of data")
            count = 1
            for d in shape:
                count *= d  # Python ints: no overflow
            if hi < lo or hi - lo != count * dt.itemsize:
                raise self.fail(f"tensor {name!r:.80}: shape {shape} ({info['dtype']}) does not match "
                                f"its {hi - lo} bytes of data (tampered or corrupted header)")
            spans.append((lo, hi, name))
            tensors[name] = np.frombuffer(data, dtype=dt.newbyteorder("<"), count=count,
                                          offset=base + lo).reshape(shape)
        spans.sort()
        at = 0
        for lo, hi, name in spans:
            if lo != at:
                raise self.fail(f"corrupted: tensor {name!r:.80} starts at byte {lo} of the data, "
                                f"expected {at} (overlapping or gapped tensors)")
            at = hi
        if at < data_len:
            raise self.fail(f"corrupted: {data_len - at} unexpected bytes after the tensor data")
        if meta.get("checksum") != _checksum(tensors, meta):
            raise self.fail("checksum mismatch: the file was modified or corrupted after saving")
        # native byte order, writable copies only once verified (the file's own size bounds them)
        tensors = {k: np.array(v, dtype=v.dtype.newbyteorder("=")) for k, v in tensors.items()}
        return meta, tensors

    def json(self, key: str) -> Any:
        raw = self.metadata.get(key)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except RecursionError:
            raise self.fail(f"metadata {key!r} nests deeper than {MAX_JSON_DEPTH} levels") from None
        except json.JSONDecodeError as e:
            raise self.fail(f"metadata {key!r} is not valid JSON ({e})") from None
        if not json_depth_ok(value, MAX_JSON_DEPTH):
            raise self.fail(f"metadata {key!r} nests deeper than {MAX_JSON_DEPTH} levels")
        return value

    def assign_weights(self, model: Model) -> None:
        """Checks every saved layer against ``model`` (position, class, keys, shapes, dtypes),
        then copies the weights in place."""
        saved = self.json("layers")
        if not isinstance(saved, list):
            raise self.fail("metadata 'layers' is missing or malformed")
        if len(saved) != len(model.layers):
            raise self.fail(f"the file holds weights for {len(saved)} layers, the model has "
                            f"{len(model.layers)}")
        plan: List[Tuple[np.ndarray, np.ndarray]] = []
        for i, (entry, layer) in enumerate(zip(saved, model.layers)):
            try:
                sname, scls, sparams = entry["name"], entry["class_name"], entry["params"]
            except (KeyError, TypeError):
                raise self.fail(f"metadata 'layers'[{i}] is malformed") from None
            if scls != type(layer).__name__:
                raise self.fail(f"layer {i}: saved as {str(scls)[:80]} {str(sname)[:80]!r}, the model has "
                                f"{type(layer).__name__} {layer.name!r}")
            if not isinstance(sparams, dict) or set(sparams) != set(layer.params):
                raise self.fail(f"layer {i} ({layer.name!r}): saved parameters "
                                f"{sorted(map(str, sparams)) if isinstance(sparams, dict) else sparams!r:.200}, "
                                f"the layer has {sorted(layer.params)}")
            for k, p in layer.params.items():
                tname = f"{sname}/{k}"
                t = self.tensors.get(tname)
                if t is None:
                    raise self.fail(f"missing tensor {tname!r:.120}")
                if t.shape != p.shape:
                    raise self.fail(f"tensor {tname!r}: expected shape {p.shape} for layer "
                                    f"{layer.name!r}, got {t.shape} (tampered or incompatible file)")
                if t.dtype != p.dtype:
                    raise self.fail(f"tensor {tname!r}: expected dtype {p.dtype} for layer "
                                    f"{layer.name!r}, got {t.dtype}")
                plan.append((p, t))
        for p, t in plan:
            p[...] = t


def load_model(filepath: str, classes: Dict[str, Any], compile: bool = True,
               custom_objects: Any = None) -> Model:
    """Rebuilds the model saved by :func:`save_model`: architecture, weights and, when
    ``compile``, the compile config and the optimizer state. ``classes`` maps the saved
    ``class_name`` to the model class (``rnnkit.models.load_model`` passes ``Sequential`` and
    ``Model``; this module imports no model class).

    Shapes
    ------
    The model is built for the saved input shapes.
    """
    from rnnkit.layers.base import restoring_weights

    f = _File(filepath)
    if f.metadata.get("kind") != "model":
        raise f.fail(f"holds only weights (kind {f.metadata.get('kind')!r}); build the model and "
                     "call model.load_weights() instead")
    cfg = f.json("model_config")
    if not isinstance(cfg, dict) or cfg.get("class_name") not in classes or not isinstance(cfg.get("config"), dict):
        raise f.fail(f"metadata 'model_config' is missing or is not a config of {sorted(classes)}")
    try:
        # the architecture may create no more parameter bytes than the file holds
        with restoring_weights(f.tensor_bytes):
            model = classes[cfg["class_name"]].from_config(cfg["config"], custom_objects=custom_objects)
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError, IndexError, AttributeError) as e:
        raise f.fail(f"invalid model_config ({type(e).__name__}: {e})") from None
    if not model.built:
        raise f.fail("model_config has no build_input_shape")
    f.assign_weights(model)
    cc = f.json("compile_config")
    if compile and cc is not None:
        try:
            model.compile_from_config(cc)
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise f.fail(f"invalid compile_config ({type(e).__name__}: {e})") from None
        iters = f.metadata.get("optimizer_iterations")
        if iters is not None:
            if not (iters.isdigit() and int(iters) < 2**63):
                raise f.fail(f"invalid optimizer_iterations {iters!r:.80}: expected an integer "
                             "in [0, 2**63)")
            state: Dict[str, np.ndarray] = {k[len("optimizer/"):]: v for k, v in f.tensors.items()
                                            if k.startswith("optimizer/")}
            state["iterations"] = np.asarray(int(iters), dtype=np.int64)
            params, _ = model.trainable_variables()
            assert model.optimizer is not None
            try:
                model.optimizer.set_state(params, state)
            except ValueError as e:
                raise f.fail(f"invalid optimizer state ({e})") from None
    return model


def load_weights(model: Model, filepath: str) -> None:
    """Loads weights from a file written by :func:`save_weights` or :func:`save_model` into the
    built ``model`` (matched by layer position; nothing is assigned unless everything fits).

    Shapes
    ------
    Each tensor must have its layer parameter's shape.
    """
    if not model.built:
        raise ValueError(f"model: {model.name!r} is not built; build it (input_shape, build() or a "
                         "call on data) before load_weights")
    _File(filepath).assign_weights(model)
