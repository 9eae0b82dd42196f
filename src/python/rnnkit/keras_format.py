"""Keras 3 ``.keras`` archives: read one into the equivalent rnnkit model, write one that
``keras.models.load_model`` opens and that predicts the same.

``rnnkit.models.load_model("model.keras")`` and ``model.save("model.keras")`` come here (the
model classes pass themselves in: this module imports no model class). Reading and writing need
``h5py`` (``pip install "rnnkit[keras]"``); Keras itself is never imported.

The archive
-----------
A zip file (Keras writes its members uncompressed) holding

- ``config.json``: the model's architecture in Keras 3's serialization format: every object as
  ``{"module", "class_name", "config", "registered_name"}`` (plus ``build_config`` and, for the
  model, ``compile_config``); a functional model lists its layers, each with its
  ``inbound_nodes`` (``{"args": [...], "kwargs": {...}}`` whose tensors are
  ``{"class_name": "__keras_tensor__", "config": {"keras_history": [layer, node, index]}}``),
  and its ``input_layers`` / ``output_layers``;
- ``metadata.json``: ``keras_version`` and ``date_saved``;
- ``model.weights.h5``: HDF5 with one group per layer, ``layers/<name>/vars/0..n-1`` in Keras's
  ``get_weights()`` order, where ``<name>`` is the snake-cased class name made unique in the
  order of ``model.layers`` (``dense``, ``dense_1``, ...; a recurrent layer's weights are under
  ``cell/``, a ``Bidirectional``'s under ``forward_layer/`` and ``backward_layer/``, a
  ``TimeDistributed``'s under ``layer/``).

Layers
------
Keras's ``InputLayer``, ``SimpleRNN``, ``LSTM``, ``GRU`` (both ``reset_after`` forms),
``RNN`` of a ``SimpleRNNCell`` / ``LSTMCell`` / ``GRUCell``, ``Bidirectional`` (every merge
mode), ``TimeDistributed``, ``Dense``, ``Activation``, ``Embedding``, ``Masking``, ``Dropout``,
``Concatenate`` / ``Add`` / ``Subtract`` / ``Multiply`` / ``Average`` / ``Maximum`` /
``Minimum`` / ``Dot``, ``Attention``, ``AdditiveAttention``, ``LayerNormalization``,
``BatchNormalization``, ``Conv1D``, ``GlobalAveragePooling1D``, ``GlobalMaxPooling1D``,
``AveragePooling1D``, ``MaxPooling1D``, ``Flatten``, ``Reshape``, ``Permute`` and
``RepeatVector`` map one to one onto rnnkit's layers of the same name (same arguments, same
weights). Reading:

- dtype policies must be ``float32`` or ``float64``; regularizers and constraints (training
  only) are ignored with a warning; an option that changes predictions and that rnnkit lacks
  (``rms_scaling``, ``renorm``, quantization, ``stateful=True``, an activation rnnkit does not
  have, ...) raises ValueError naming the layer and the option;
- the Keras operations a functional model records to carry masks (``NotEqual``, ``Any``, ...)
  are dropped: rnnkit propagates masks itself, from ``Embedding(mask_zero=True)`` and
  ``Masking``. An operation whose result is used as data (``keras.ops`` on tensors, slicing) is
  refused, as are ``Lambda`` layers (Python code), custom and unknown classes, nested models and
  Keras 2 files;
- the compile config (optimizer, loss, metrics, loss weights) is restored where rnnkit has the
  same names, else skipped with a warning (the optimizer's slots are not restored).

Writing refuses, with a ValueError naming the layer and the option, what Keras could not rebuild:
rnnkit-only options (``zoneout``, ``layer_norm``, ...), activations Keras lacks, stateful
layers, custom layers and cells. The optimizer is written with its configuration (Keras starts
it from fresh slots).

Known differences with Keras's behaviour (a warning says when a model has them): Keras does not
mask a recurrent layer called with ``initial_state``, and its ``GlobalMaxPooling1D`` ignores
masks; rnnkit applies the mask in both cases.

Hostile files
-------------
Reading never evaluates or unpickles anything, and a damaged or hostile archive raises a
ValueError naming the file without hanging, and without allocating more than the file holds
(beyond the bounded expansion of a deflated member): the file must be a regular file; the zip's central directory, member count, member names (no
absolute or ``..`` paths, no duplicates), compression methods and declared sizes are checked
before any member is read (a member over 1 MiB may not claim more than :data:`MAX_EXPANSION`
times its compressed size, a stored one exactly its stored size, and none more than its own cap:
:data:`MAX_CONFIG_BYTES` for ``config.json``);
members are read with bounded reads and their CRCs checked; JSON nests at most
``serialization.MAX_JSON_DEPTH`` levels; the model is built under
:func:`rnnkit.layers.base.restoring_weights` (its layers may create no more parameter bytes than
the weights file holds); every HDF5 dataset is reached through hard links only and checked
(shape, dtype, no filters, no external or virtual storage, stored size) against the built
layer's weight before it is read into that weight's preallocated array.

Shapes
------
Weights keep Keras's ``get_weights()`` layouts (e.g. LSTM ``kernel [C, 4U]``,
``recurrent_kernel [U, 4U]``, ``bias [4U]``); the loaded model has the saved input shapes.
"""
from __future__ import annotations

import datetime
import heapq
import inspect
import io
import json
import os
import re
import struct
import warnings
import zipfile
import zlib
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

from rnnkit import activations, initializers, losses, metrics, optimizers, schedules, serialization
from rnnkit.layers.base import Layer, get as get_layer_class, restoring_weights
from rnnkit.layers.input_layer import InputLayer
from rnnkit.layers.symbolic import KerasTensor, flatten

__all__ = ["load_model", "save_model", "is_keras_archive_name", "SUPPORTED_LAYERS", "KERAS_VERSION",
           "MAX_MEMBERS", "MAX_CENTRAL_DIRECTORY_BYTES", "MAX_CONFIG_BYTES", "MAX_METADATA_BYTES",
           "MAX_WEIGHTS_BYTES", "MAX_EXPANSION", "MAX_LAYERS", "MAX_NODES", "EXTRA_HINT"]

Model = Any  # the Model protocol of rnnkit.models (this module imports no model class)

#: the Keras version whose archive layout this module writes (and checks against in its tests)
KERAS_VERSION = "3.15.1"

#: what to install for h5py
EXTRA_HINT = 'pip install "rnnkit[keras]"'

# ---- what a file may make the reader do ------------------------------------------------------
MAX_MEMBERS = 256                      # members of the zip archive
MAX_CENTRAL_DIRECTORY_BYTES = 1 << 20  # the zip's central directory
MAX_CONFIG_BYTES = 16 << 20            # config.json
MAX_METADATA_BYTES = 1 << 20           # metadata.json
MAX_WEIGHTS_BYTES = 1 << 34            # model.weights.h5 (16 GiB)
MAX_EXPANSION = 100                    # declared size / compressed size of a deflated member
MAX_LAYERS = 10_000                    # layers in config.json (nested ones included)
MAX_NODES = 50_000                     # calls of layers in a functional config
_MAX_VARS = 1_000                      # datasets in one layer's vars group
_MAX_ATTR_BYTES = 4096                 # a vars group's "name" attribute

_CONFIG = "config.json"
_METADATA = "metadata.json"
_WEIGHTS = "model.weights.h5"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

#: the Keras layer classes this module reads and writes
SUPPORTED_LAYERS: Tuple[str, ...] = (
    "InputLayer", "SimpleRNN", "LSTM", "GRU", "RNN", "SimpleRNNCell", "LSTMCell", "GRUCell",
    "Bidirectional", "TimeDistributed", "Dense", "Activation", "Embedding", "Masking", "Dropout",
    "Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Dot",
    "Attention", "AdditiveAttention", "LayerNormalization", "BatchNormalization", "Conv1D",
    "GlobalAveragePooling1D", "GlobalMaxPooling1D", "AveragePooling1D", "MaxPooling1D",
    "Flatten", "Reshape", "Permute", "RepeatVector")

_CELLS = ("SimpleRNNCell", "LSTMCell", "GRUCell")
_RECURRENT = ("SimpleRNN", "LSTM", "GRU")

# Keras's short aliases (Keras serializes the canonical names; older files may not)
_ALIASES = {"GlobalAvgPool1D": "GlobalAveragePooling1D", "GlobalMaxPool1D": "GlobalMaxPooling1D",
            "AvgPool1D": "AveragePooling1D", "MaxPool1D": "MaxPooling1D"}

# The options (config keys) of each class in Keras 3, besides name/trainable/dtype and the
# regularizers and constraints: what a written config may hold.
_KERAS_KEYS: Dict[str, Tuple[str, ...]] = {
    "LSTM": ("activation", "bias_initializer", "dropout", "go_backwards", "kernel_initializer",
             "recurrent_activation", "recurrent_dropout", "recurrent_initializer", "return_sequences",
             "return_state", "seed", "stateful", "unit_forget_bias", "units", "unroll", "use_bias",
             "zero_output_for_mask"),
    "GRU": ("activation", "bias_initializer", "dropout", "go_backwards", "kernel_initializer",
            "recurrent_activation", "recurrent_dropout", "recurrent_initializer", "reset_after",
            "return_sequences", "return_state", "seed", "stateful", "units", "unroll", "use_bias",
            "zero_output_for_mask"),
    "SimpleRNN": ("activation", "bias_initializer", "dropout", "go_backwards", "kernel_initializer",
                  "recurrent_dropout", "recurrent_initializer", "return_sequences", "return_state", "seed",
                  "stateful", "units", "unroll", "use_bias", "zero_output_for_mask"),
    "Dense": ("activation", "bias_initializer", "kernel_initializer", "units", "use_bias"),
    "Embedding": ("embeddings_initializer", "input_dim", "mask_zero", "output_dim"),
    "Masking": ("mask_value",),
    "Dropout": ("noise_shape", "rate", "seed"),
    "Activation": ("activation",),
    "Concatenate": ("axis",),
    "Add": (), "Subtract": (), "Multiply": (), "Average": (), "Maximum": (), "Minimum": (),
    "Dot": ("axes", "normalize"),
    "LayerNormalization": ("axis", "beta_initializer", "center", "epsilon", "gamma_initializer", "scale"),
    "BatchNormalization": ("axis", "beta_initializer", "center", "epsilon", "gamma_initializer", "momentum",
                           "moving_mean_initializer", "moving_variance_initializer", "scale"),
    "Conv1D": ("activation", "bias_initializer", "data_format", "dilation_rate", "filters", "groups",
               "kernel_initializer", "kernel_size", "padding", "strides", "use_bias"),
    "GlobalAveragePooling1D": ("data_format", "keepdims"),
    "GlobalMaxPooling1D": ("data_format", "keepdims"),
    "AveragePooling1D": ("data_format", "padding", "pool_size", "strides"),
    "MaxPooling1D": ("data_format", "padding", "pool_size", "strides"),
    "Reshape": ("target_shape",),
    "Flatten": ("data_format",),
    "RepeatVector": ("n",),
    "Permute": ("dims",),
    "Attention": ("dropout", "score_mode", "seed", "use_scale"),
    "AdditiveAttention": ("dropout", "seed", "use_scale"),
    "LSTMCell": ("activation", "bias_initializer", "dropout", "kernel_initializer", "recurrent_activation",
                 "recurrent_dropout", "recurrent_initializer", "seed", "unit_forget_bias", "units", "use_bias"),
    "GRUCell": ("activation", "bias_initializer", "dropout", "kernel_initializer", "recurrent_activation",
                "recurrent_dropout", "recurrent_initializer", "reset_after", "seed", "units", "use_bias"),
    "SimpleRNNCell": ("activation", "bias_initializer", "dropout", "kernel_initializer", "recurrent_dropout",
                      "recurrent_initializer", "seed", "units", "use_bias"),
    "RNN": ("cell", "go_backwards", "return_sequences", "return_state", "stateful", "unroll",
            "zero_output_for_mask"),
    "Bidirectional": ("backward_layer", "layer", "merge_mode"),
    "TimeDistributed": ("layer",),
}

#: Keras 3's activation names (what a written config may name)
_KERAS_ACTIVATIONS = frozenset((
    "linear", "relu", "relu6", "tanh", "sigmoid", "hard_sigmoid", "hard_silu", "hard_swish", "swish",
    "silu", "softplus", "softsign", "exponential", "selu", "mish", "hard_tanh", "leaky_relu", "elu",
    "gelu", "softmax", "log_softmax"))

# Options of losses/metrics rnnkit has and Keras's constructors do not take, with the value that
# means "as Keras" (dropped when written with that value).
_RNNKIT_ONLY_OPTIONS: Dict[str, Dict[str, Any]] = {
    "SparseCategoricalCrossentropy": {"axis": -1, "label_smoothing": 0.0},
    "SparseTopKCategoricalAccuracy": {"from_sorted_ids": False},
}


# rnnkit layer options that change how training runs (memory, time), never a result: a .keras
# file leaves them out.
_TRAINING_ONLY_OPTIONS = frozenset({"recompute"})


def is_keras_archive_name(filepath: Any) -> bool:
    """Whether ``filepath`` names a Keras 3 archive (ends in ``.keras``, any case)."""
    try:
        name = os.fspath(filepath)
    except TypeError:
        return False
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    return os.path.splitext(name)[1].lower() == ".keras"


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError("reading and writing Keras .keras files needs h5py, an optional dependency of "
                          f"rnnkit: {EXTRA_HINT}") from None
    return h5py


def _fmt(v: Any, n: int = 80) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n - 3] + "..."


# ================================================================================================
# the zip archive
# ================================================================================================

class _Archive:
    """A zip archive read from a regular file and checked before any member is read (see the
    module documentation, *Hostile files*)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data = serialization.read_regular_file(path)
        self._check_end_record()
        try:
            self.zf = zipfile.ZipFile(io.BytesIO(self.data))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error,
                NotImplementedError, UnicodeDecodeError) as e:
            raise self.fail(f"not a valid zip archive (truncated or damaged?): {e}") from None
        infos = self.zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise self.fail(f"the archive has {len(infos)} members, more than the {MAX_MEMBERS} rnnkit reads")
        self.members: Dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            self._check_member(info)
            self.members[info.filename] = info

    def fail(self, msg: str) -> ValueError:
        return ValueError(f"{self.path}: {msg}")

    def _check_end_record(self) -> None:
        """The end-of-central-directory record: one disk, a central directory inside the file
        and of bounded size."""
        data = self.data
        if len(data) < 22:
            raise self.fail(f"not a Keras .keras archive: {len(data)} bytes is too short for a zip file")
        pos = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 0xFFFF))
        if pos < 0 or pos + 22 > len(data):
            raise self.fail("not a Keras .keras archive: no zip end record (not a zip file, or truncated)")
        _, disk, disk_cd, n_disk, n_total, cd_size, cd_offset, _ = struct.unpack("<4s4H2LH", data[pos:pos + 22])
        if 0xFFFF in (n_total, n_disk) or 0xFFFFFFFF in (cd_size, cd_offset):  # zip64
            loc = pos - 20
            if loc < 0 or data[loc:loc + 4] != b"PK\x06\x07":
                raise self.fail("damaged zip archive: zip64 markers without a zip64 locator")
            _, _, z64_offset, n_disks = struct.unpack("<4sLQL", data[loc:loc + 20])
            if n_disks != 1 or z64_offset + 56 > loc or data[z64_offset:z64_offset + 4] != b"PK\x06\x06":
                raise self.fail("damaged zip archive: invalid zip64 end record")
            (_, _, _, _, disk, disk_cd, n_disk, n_total, cd_size,
             cd_offset) = struct.unpack("<4sQ2H2L4Q", data[z64_offset:z64_offset + 56])
            pos = z64_offset
        if disk != 0 or disk_cd != 0 or n_disk != n_total:
            raise self.fail("multi-disk zip archives are not supported")
        if n_total > MAX_MEMBERS:
            raise self.fail(f"the archive declares {n_total} members, more than the {MAX_MEMBERS} rnnkit reads")
        if cd_size > MAX_CENTRAL_DIRECTORY_BYTES:
            raise self.fail(f"the zip central directory declares {cd_size} bytes, more than the "
                            f"{MAX_CENTRAL_DIRECTORY_BYTES} rnnkit reads")
        if cd_size > pos:
            raise self.fail(f"truncated or damaged zip archive: a central directory of {cd_size} bytes does "
                            f"not fit before its end record at byte {pos}")

    def _check_member(self, info: zipfile.ZipInfo) -> None:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if (not name or name.startswith(("/", "\\")) or "\x00" in name or ".." in parts
                or re.match(r"^[A-Za-z]:", name)):
            raise self.fail(f"refusing archive member {name!r:.120}: an absolute path or a path outside "
                            "the archive")
        if name in self.members:
            raise self.fail(f"the archive holds member {name!r:.120} twice")
        if info.flag_bits & 0x1:
            raise self.fail(f"archive member {name!r:.120} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.fail(f"archive member {name!r:.120}: compression method {info.compress_type} is not "
                            "supported (Keras stores members uncompressed; deflate is also read)")
        if info.header_offset + info.compress_size > len(self.data):
            raise self.fail(f"truncated archive: member {name!r:.120} claims {info.compress_size} bytes at "
                            f"offset {info.header_offset}, beyond the file's {len(self.data)} bytes")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise self.fail(f"archive member {name!r:.120} is stored uncompressed but declares "
                            f"{info.file_size} bytes for {info.compress_size} stored bytes")
        if info.file_size > max(1 << 20, MAX_EXPANSION * info.compress_size):
            raise self.fail(f"archive member {name!r:.120} declares {info.file_size} bytes from "
                            f"{info.compress_size} compressed bytes (more than {MAX_EXPANSION}x): refusing "
                            "a possible decompression bomb")

    def read(self, name: str, cap: int) -> bytes:
        """Member ``name`` (ValueError when it is missing, declares more than ``cap`` bytes or
        does not decompress to its declared size and CRC)."""
        info = self.members.get(name)
        if info is None:
            raise self.fail(f"not a Keras 3 .keras archive: it has no {name!r} (members: "
                            f"{sorted(self.members)[:20]})")
        if info.file_size > cap:
            raise self.fail(f"{name}: declares {info.file_size} bytes, more than the {cap} rnnkit reads")
        try:
            with self.zf.open(info) as f:
                out = f.read(info.file_size + 1)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, struct.error,
                NotImplementedError) as e:
            raise self.fail(f"{name}: cannot be read from the archive (truncated or damaged): {e}") from None
        if len(out) != info.file_size:
            raise self.fail(f"{name}: {len(out)} bytes instead of the declared {info.file_size} "
                            "(truncated or damaged archive)")
        return out

    def json(self, name: str, cap: int) -> Any:
        raw = self.read(name, cap)
        try:
            value = json.loads(raw.decode("utf-8"))
        except RecursionError:
            raise self.fail(f"{name} nests deeper than {serialization.MAX_JSON_DEPTH} levels") from None
        except (UnicodeDecodeError, ValueError) as e:
            raise self.fail(f"{name} is not valid JSON ({e})") from None
        if not serialization.json_depth_ok(value, serialization.MAX_JSON_DEPTH):
            raise self.fail(f"{name} nests deeper than {serialization.MAX_JSON_DEPTH} levels")
        return value


# ================================================================================================
# Keras config -> rnnkit config
# ================================================================================================

def _snake(name: str) -> str:
    """Keras's ``to_snake_case`` (the names of the weight groups)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _unique_names(class_names: Iterable[str]) -> List[str]:
    """Keras's weight-group names: snake-cased class names, ``_1``, ``_2``... on repeats."""
    used: Dict[str, int] = {}
    out = []
    for cn in class_names:
        s = _snake(cn)
        if s in used:
            used[s] += 1
            out.append(f"{s}_{used[s]}")
        else:
            used[s] = 0
            out.append(s)
    return out


def _is_op(entry: Dict[str, Any]) -> bool:
    """Whether a functional config entry is a Keras operation (``keras.ops``), not a layer."""
    module = entry.get("module")
    return isinstance(module, str) and (module.startswith("keras.src.ops") or module.startswith("keras.ops"))


def _init_params(cls: type) -> Set[str]:
    """The keyword arguments the constructors of ``cls`` take (up its MRO)."""
    out: Set[str] = set()
    for c in cls.__mro__:
        init = c.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self":
                out.add(p.name)
    return out


class _Reader:
    """Converts a Keras 3 model config into rnnkit's (:meth:`model_config`), collecting the
    Keras layer order for the weights file and the warnings to give."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        self.notes: List[str] = []
        self.masked_calls: Set[Tuple[str, int]] = set()  # (layer, call) given a mask in the file

    def fail(self, msg: str) -> ValueError:
        return ValueError(f"{self.path}: config.json: {msg}")

    # ---- one object --------------------------------------------------------------------------
    def class_of(self, kc: Any, where: str) -> str:
        """The Keras class name of serialized object ``kc`` (ValueError for what rnnkit cannot or
        will not build: Lambda layers, custom objects, unknown classes)."""
        if not isinstance(kc, dict) or not isinstance(kc.get("class_name"), str):
            raise self.fail(f"{where}: expected a serialized Keras object (a dict with 'class_name'), got "
                            f"{_fmt(kc)}")
        cn = kc["class_name"]
        module, registered = kc.get("module"), kc.get("registered_name")
        if cn == "Lambda":
            raise self.fail(f"{where}: a Keras Lambda layer ({_fmt((kc.get('config') or {}).get('name'))}) holds "
                            "Python code, which rnnkit never runs; rebuild the model without Lambda layers")
        if cn in ("Functional", "Sequential", "Model"):
            raise self.fail(f"{where}: a nested model ({cn}) is not supported; flatten it into one model")
        custom = (module is not None and not (isinstance(module, str) and (module == "keras" or
                                                                          module.startswith("keras."))))
        if custom or (registered is not None and registered != cn):
            raise self.fail(f"{where}: {_fmt(registered or cn)} (module {_fmt(module)}) is a custom object; "
                            "rnnkit reads only Keras's built-in layers: "
                            f"{', '.join(SUPPORTED_LAYERS)}")
        cn = _ALIASES.get(cn, cn)
        if cn not in SUPPORTED_LAYERS:
            raise self.fail(f"{where}: unsupported Keras layer {cn!r}; rnnkit reads "
                            f"{', '.join(SUPPORTED_LAYERS)}")
        return cn

    def dtype(self, value: Any, where: str) -> Optional[str]:
        if value is None:
            return None
        name = value
        if isinstance(value, dict):
            cn = value.get("class_name")
            cfg = value.get("config")
            if not (isinstance(cn, str) and cn.endswith("DTypePolicy") and not cn.startswith("Quantized")
                    and isinstance(cfg, dict)):
                raise self.fail(f"{where}: dtype policy {_fmt(cn)} is not supported (rnnkit computes in "
                                "float32 or float64)")
            name = cfg.get("name")
        if name not in ("float32", "float64"):
            raise self.fail(f"{where}: dtype {_fmt(name)} is not supported (rnnkit computes in float32 or "
                            "float64; mixed precision is not)")
        return str(name)

    def activation(self, value: Any, where: str, key: str) -> Any:
        if value is None:
            return None
        if isinstance(value, dict) and value.get("class_name") == "function" and isinstance(value.get("config"), str):
            value = value["config"]  # a built-in activation serialized as a function
        if not isinstance(value, str):
            raise self.fail(f"{where}: {key}={_fmt(value)} is a custom activation; rnnkit reads Keras's "
                            "built-in activations by name")
        try:
            activations.get(value)
        except ValueError:
            raise self.fail(f"{where}: {key}={value!r:.80} is an activation rnnkit does not have") from None
        return value

    def initializer(self, value: Any, where: str, key: str) -> Any:
        """An rnnkit initializer identifier, or None (dropped: initializers do not change a
        loaded model, whose weights come from the file)."""
        if value is None:
            return None
        try:
            if isinstance(value, str):
                return initializers.serialize(initializers.get(value))
            if isinstance(value, dict) and isinstance(value.get("class_name"), str):
                cfg = value.get("config") or {}
                if not isinstance(cfg, dict):
                    raise ValueError("config is not a dict")
                cls = type(initializers.get(value["class_name"]))
                keep = {k: v for k, v in cfg.items() if k in _init_params(cls)}
                return initializers.serialize(initializers.get({"class_name": value["class_name"], "config": keep}))
        except (ValueError, TypeError, KeyError, OverflowError):
            pass
        self.notes.append(f"{where}: {key} {_fmt(value, 120)} is not an rnnkit initializer; the layer keeps its "
                          "default (the weights come from the file)")
        return None

    def layer(self, kc: Any, where: str) -> Dict[str, Any]:
        """A Keras layer config as rnnkit's ``{"class_name", "config"}``."""
        self.count += 1
        if self.count > MAX_LAYERS:
            raise self.fail(f"more than {MAX_LAYERS} layers")
        cn = self.class_of(kc, where)
        cfg = kc.get("config")
        if not isinstance(cfg, dict):
            raise self.fail(f"{where}: 'config' must be a dict, got {_fmt(cfg)}")
        name = cfg.get("name")
        if not (isinstance(name, str) and 0 < len(name) <= 256 and "/" not in name):
            raise self.fail(f"{where}: invalid layer name {_fmt(name)}")
        where = f"layer {name!r} ({cn})"
        if cn == "InputLayer":
            return self.input_layer(cfg, where)
        if cfg.get("stateful"):
            raise self.fail(f"{where}: stateful=True is not supported in .keras files")
        params = _init_params(get_layer_class(cn))
        out: Dict[str, Any] = {}
        for key, value in cfg.items():
            if key in ("name", "trainable"):
                out[key] = value
            elif key == "dtype":
                dt = self.dtype(value, where)
                if dt is not None:
                    out["dtype"] = dt
            elif key.endswith("_regularizer") or key.endswith("_constraint"):
                if value is not None:
                    self.notes.append(f"{where}: {key} ignored (rnnkit has no regularizers or constraints; "
                                      "they only act in training)")
            elif key in ("layer", "backward_layer", "cell") and cn in ("Bidirectional", "TimeDistributed", "RNN"):
                if value is None and key == "backward_layer":
                    continue
                if cn == "RNN":
                    inner = self.class_of(value, f"{where}: cell")
                    if inner not in _CELLS:
                        raise self.fail(f"{where}: RNN of a {inner} is not supported; rnnkit reads RNN of "
                                        f"{', '.join(_CELLS)}")
                out[key] = self.layer(value, f"{where}: {key}")
            elif key.endswith("_initializer"):
                init = self.initializer(value, where, key)
                if init is not None:
                    out[key] = init
            elif key in ("activation", "recurrent_activation"):
                out[key] = self.activation(value, where, key)
            elif key in params:
                out[key] = value
            elif (key == "data_format" and value == "channels_last") or key in ("synchronized", "implementation"):
                pass  # the default layout / training-only / a performance switch
            elif key in ("renorm_clipping", "renorm_momentum") and not cfg.get("renorm"):
                pass  # options of batch renormalization, which is off
            elif key == "lora_alpha" and not cfg.get("lora_rank"):
                pass  # an option of LoRA, which is off
            elif value is None or value is False:
                pass  # a disabled option this rnnkit does not know
            else:
                raise self.fail(f"{where}: option {key}={_fmt(value)} has no rnnkit equivalent")
        return {"class_name": cn, "config": out}

    def shape(self, value: Any, where: str, what: str) -> List[Optional[int]]:
        if not (isinstance(value, list) and 1 <= len(value) <= 16 and all(
                v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**62) for v in value)):
            raise self.fail(f"{where}: {what} must be a list of positive ints or null, got {_fmt(value)}")
        return list(value)

    def input_layer(self, cfg: Dict[str, Any], where: str) -> Dict[str, Any]:
        for key in ("sparse", "ragged", "optional"):
            if cfg.get(key):
                raise self.fail(f"{where}: {key}=True inputs are not supported")
        if "batch_shape" in cfg or "batch_input_shape" in cfg:
            batch_shape = self.shape(cfg.get("batch_shape", cfg.get("batch_input_shape")), where, "batch_shape")
        else:
            batch_shape = [cfg.get("batch_size")] + self.shape(cfg.get("shape"), where, "shape")
        dtype = cfg.get("dtype", "float32")
        if isinstance(dtype, dict):
            dtype = (dtype.get("config") or {}).get("name")
        if dtype not in ("float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                         "uint64"):
            raise self.fail(f"{where}: input dtype {_fmt(dtype)} is not supported (float32, float64 or an "
                            "integer dtype)")
        return {"class_name": "InputLayer", "config": {"name": cfg["name"], "shape": batch_shape[1:],
                                                       "dtype": dtype, "batch_shape": batch_shape}}

    # ---- whole models ------------------------------------------------------------------------
    def model_config(self, top: Any) -> Tuple[str, Dict[str, Any], List[Tuple[str, str]]]:
        """``(rnnkit model class name, rnnkit config, [(layer name, weight group name)])`` for
        Keras's config.json (the pairs in the order of Keras's ``model.layers``)."""
        if not isinstance(top, dict) or not isinstance(top.get("config"), dict):
            raise self.fail("not a Keras 3 model config (expected a dict with 'class_name' and 'config')")
        cn = top.get("class_name")
        cfg = top["config"]
        if cn == "Sequential":
            return self.sequential(top, cfg)
        if cn in ("Functional", "Model") and "layers" in cfg and "input_layers" in cfg:
            return self.functional(cfg)
        raise self.fail(f"model class {_fmt(cn)} is not supported: rnnkit reads Sequential and functional "
                        "models (subclassed models hold Python code)")

    def _layers_list(self, cfg: Dict[str, Any]) -> List[Any]:
        layers = cfg.get("layers")
        if not isinstance(layers, list):
            raise self.fail(f"'layers' must be a list, got {_fmt(layers)}")
        if len(layers) > MAX_LAYERS:
            raise self.fail(f"{len(layers)} layers, more than the {MAX_LAYERS} rnnkit reads")
        return layers

    def sequential(self, top: Dict[str, Any], cfg: Dict[str, Any]) -> Tuple[str, Dict[str, Any], List[Tuple[str, str]]]:
        layers = self._layers_list(cfg)
        shape = None
        out = []
        for i, lc in enumerate(layers):
            converted = self.layer(lc, f"layers[{i}]")
            if converted["class_name"] == "InputLayer":
                if i != 0:
                    raise self.fail(f"layers[{i}]: an InputLayer must come first in a Sequential model")
                shape = converted["config"]["batch_shape"]
                continue
            out.append(converted)
        if not out:
            raise self.fail("the Sequential model has no layers")
        if shape is None:
            bc = top.get("build_config") if isinstance(top.get("build_config"), dict) else {}
            raw = cfg.get("build_input_shape") or bc.get("input_shape")
            if raw is None:
                raise self.fail("the Sequential model was never built (no InputLayer and no build_input_shape)")
            shape = self.shape(raw, "model", "build_input_shape")
        if len(shape) < 2:
            raise self.fail(f"build_input_shape: expected (batch, ...) with at least 2 dimensions, got {shape}")
        names = [c["config"]["name"] for c in out]
        groups = _unique_names(c["class_name"] for c in out)
        return "Sequential", {"name": str(cfg.get("name") or "sequential"), "layers": out,
                              "build_input_shape": shape}, list(zip(names, groups))

    def functional(self, cfg: Dict[str, Any]) -> Tuple[str, Dict[str, Any], List[Tuple[str, str]]]:
        layers = self._layers_list(cfg)
        entries: Dict[str, Dict[str, Any]] = {}
        order: List[str] = []
        ops: Dict[str, str] = {}
        for i, lc in enumerate(layers):
            if not isinstance(lc, dict):
                raise self.fail(f"layers[{i}]: expected a dict, got {_fmt(lc)}")
            name = lc.get("name", (lc.get("config") or {}).get("name") if isinstance(lc.get("config"), dict) else None)
            if not isinstance(name, str) or not name:
                raise self.fail(f"layers[{i}]: missing layer name")
            if name in entries or name in ops:
                raise self.fail(f"layers[{i}]: two layers are named {name!r}")
            if _is_op(lc):
                ops[name] = str(lc.get("class_name"))
                continue
            entries[name] = lc
            order.append(name)
        converted: Dict[str, Dict[str, Any]] = {}
        n_nodes: Dict[str, int] = {}
        for name in order:
            lc = entries[name]
            c = self.layer(lc, f"layer {name!r}")
            if c["config"]["name"] != name:
                raise self.fail(f"layer {name!r}: its config names it {c['config']['name']!r}")
            converted[name] = c
            nodes = lc.get("inbound_nodes", [])
            if not isinstance(nodes, list) or len(nodes) > 1000:
                raise self.fail(f"layer {name!r}: 'inbound_nodes' must be a list (of at most 1000 calls)")
            n_nodes[name] = 1 if c["class_name"] == "InputLayer" else len(nodes)
        total = sum(n_nodes.values())
        if total > MAX_NODES:
            raise self.fail(f"{total} layer calls, more than the {MAX_NODES} rnnkit reads")

        def ref(v: Any, where: str) -> Optional[Tuple[str, int, int]]:
            if not (isinstance(v, dict) and v.get("class_name") == "__keras_tensor__"):
                return None
            h = (v.get("config") or {}).get("keras_history") if isinstance(v.get("config"), dict) else None
            if not (isinstance(h, list) and len(h) == 3 and isinstance(h[0], str)
                    and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**31 for x in h[1:])):
                raise self.fail(f"{where}: invalid tensor reference {_fmt(v, 200)}")
            return h[0], h[1], h[2]

        def check_ref(r: Tuple[str, int, int], where: str, as_data: bool) -> None:
            if r[0] in ops:
                if as_data:
                    raise self.fail(f"{where}: reads the result of the Keras operation {r[0]!r} ({ops[r[0]]}) "
                                    "as data; rnnkit models are made of layers only (express the computation "
                                    "as a layer)")
                return
            if r[0] not in converted or r[1] >= n_nodes[r[0]]:
                raise self.fail(f"{where}: refers to call {r[1]} of {r[0]!r}, which does not exist")

        def convert(v: Any, where: str, refs: List[Tuple[str, int]]) -> Any:
            r = ref(v, where)
            if r is not None:
                check_ref(r, where, True)
                refs.append((r[0], r[1]))
                return {"__tensor__": [r[0], r[1], r[2]]}
            if isinstance(v, list):
                return [convert(x, where, refs) for x in v]
            if isinstance(v, dict):
                if "class_name" in v:
                    raise self.fail(f"{where}: unsupported call argument {_fmt(v, 120)}")
                return {str(k): convert(x, where, refs) for k, x in v.items()}
            return v

        def mask_refs(v: Any, where: str) -> None:
            r = ref(v, where)
            if r is not None:
                if r[0] not in ops:
                    raise self.fail(f"{where}: an explicit mask tensor (from {r[0]!r}) is not supported; rnnkit "
                                    "propagates masks from Embedding(mask_zero=True) and Masking")
                return
            if isinstance(v, list):
                for x in v:
                    mask_refs(x, where)
            elif isinstance(v, dict):
                for x in v.values():
                    mask_refs(x, where)

        nodes: List[Tuple[str, int, Dict[str, Any], List[Tuple[str, int]]]] = []
        for name in order:
            if converted[name]["class_name"] == "InputLayer":
                continue
            for k, nd in enumerate(entries[name].get("inbound_nodes", [])):
                where = f"layer {name!r}, call {k}"
                if isinstance(nd, list):
                    raise self.fail(f"{where}: a Keras 2 node format; re-save the model with Keras 3")
                if not isinstance(nd, dict) or not isinstance(nd.get("args", []), list) \
                        or not isinstance(nd.get("kwargs", {}), dict):
                    raise self.fail(f"{where}: expected {{'args': [...], 'kwargs': {{...}}}}, got {_fmt(nd)}")
                args, kwargs = nd.get("args", []), nd.get("kwargs", {})
                if len(args) != 1:
                    raise self.fail(f"{where}: expected the inputs as the one positional argument, got "
                                    f"{len(args)} positional arguments")
                refs: List[Tuple[str, int]] = []
                inputs = convert(args[0], where, refs)
                if not refs:
                    raise self.fail(f"{where}: the call reads no tensor")
                kw: Dict[str, Any] = {}
                for key, value in kwargs.items():
                    if key == "mask":
                        mask_refs(value, where)
                        if value is not None:
                            self.masked_calls.add((name, k))
                    elif key == "training":
                        if value:
                            self.notes.append(f"{where}: training=True in the call ignored")
                    else:
                        kw[str(key)] = convert(value, f"{where}, argument {key!r}", refs)
                if k > 0:
                    refs.append((name, k - 1))  # a layer's calls in their order
                nodes.append((name, k, {"layer": name, "inputs": inputs, "kwargs": kw}, refs))
        # topological order (Kahn), the config's order among the ready calls
        done: Set[Tuple[str, int]] = {(n, 0) for n in order if converted[n]["class_name"] == "InputLayer"}
        waiting: Dict[Tuple[str, int], List[int]] = defaultdict(list)
        missing = []
        for i, (_, _, _, refs) in enumerate(nodes):
            need = {r for r in refs if r not in done}
            missing.append(len(need))
            for r in need:
                waiting[r].append(i)
        ready = [i for i, m in enumerate(missing) if m == 0]
        sorted_nodes = []
        heapq.heapify(ready)
        while ready:
            i = heapq.heappop(ready)
            name, k, nc, _ = nodes[i]
            sorted_nodes.append(nc)
            for j in waiting.pop((name, k), []):
                missing[j] -= 1
                if missing[j] == 0:
                    heapq.heappush(ready, j)
        if len(sorted_nodes) != len(nodes):
            stuck = [f"{nodes[i][0]}[{nodes[i][1]}]" for i, m in enumerate(missing) if m > 0][:5]
            raise self.fail(f"the layer graph has a cycle or reads a call that never happens (at {stuck})")

        def endpoints(v: Any, what: str) -> Tuple[List[List[Any]], bool]:
            single = isinstance(v, list) and len(v) == 3 and isinstance(v[0], str)
            items = [v] if single else v
            if not isinstance(items, list) or not items or len(items) > 1000:
                raise self.fail(f"{what}: expected [name, node, index] or a list of them, got {_fmt(v)}")
            out = []
            for it in items:
                if not (isinstance(it, list) and len(it) == 3 and isinstance(it[0], str)
                        and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**31 for x in it[1:])):
                    raise self.fail(f"{what}: expected [name, node, index] entries, got {_fmt(it)}")
                check_ref((it[0], it[1], it[2]), what, True)
                out.append(list(it))
            return out, single

        ins, single_in = endpoints(cfg.get("input_layers"), "input_layers")
        outs, single_out = endpoints(cfg.get("output_layers"), "output_layers")
        for it in ins:
            if converted[it[0]]["class_name"] != "InputLayer":
                raise self.fail(f"input_layers: {it[0]!r} is not an InputLayer")
        layers_cfg = []
        for name in order:
            c = converted[name]
            if c["class_name"] == "InputLayer":
                ic = dict(c["config"])
                ic.pop("batch_shape")
                layers_cfg.append({"class_name": "InputLayer", "config": ic})
            else:
                layers_cfg.append(c)
        groups = _unique_names(converted[n]["class_name"] for n in order)
        config = {"name": str(cfg.get("name") or "model"), "layers": layers_cfg, "nodes": sorted_nodes,
                  "inputs": ins, "outputs": outs, "single_input": single_in, "single_output": single_out}
        return "Model", config, list(zip(order, groups))


# ================================================================================================
# the weights file
# ================================================================================================

def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _weight_groups(layer: Layer) -> List[Tuple[str, Layer, List[np.ndarray]]]:
    """``[(path under the layer's group, the (sub)layer that owns the weights, its weights)]`` in
    Keras's ``get_weights()`` order: where Keras's h5 layout keeps a layer's weights."""
    cn = type(layer).__name__
    if cn == "Bidirectional":
        return ([(_join("forward_layer", p), l, w) for p, l, w in _weight_groups(layer.forward_layer)]
                + [(_join("backward_layer", p), l, w) for p, l, w in _weight_groups(layer.backward_layer)])
    if cn == "TimeDistributed":
        return [(_join("layer", p), l, w) for p, l, w in _weight_groups(layer.layer)]
    if cn in _RECURRENT:
        return [("cell", layer, layer.get_weights())]
    if cn == "RNN":
        return [("cell", layer.cell, layer.cell.get_weights())]
    return [("", layer, layer.get_weights())]


class _H5Reader:
    """The weights file, opened from memory; every object reached through hard links only."""

    def __init__(self, path: str, data: bytes) -> None:
        h5py = _h5py()
        self.h5py = h5py
        self.path = path
        if not data.startswith(_HDF5_SIGNATURE):
            raise self.fail("not an HDF5 file")
        try:
            self.file = h5py.File(io.BytesIO(data), "r")
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
            raise self.fail(f"cannot be opened as HDF5 (damaged?): {e}") from None

    def fail(self, msg: str) -> ValueError:
        return ValueError(f"{self.path}: {_WEIGHTS}: {msg}")

    def close(self) -> None:
        try:
            self.file.close()
        except Exception:  # closing a damaged file must not hide the first error
            pass

    def child(self, parent: Any, name: str, kind: type, where: str) -> Any:
        """``parent[name]`` when it is a hard link to a ``kind`` (None when absent)."""
        h5py = self.h5py
        try:
            link = parent.get(name, default=None, getlink=True)
        except (KeyError, OSError, RuntimeError, TypeError, ValueError) as e:
            raise self.fail(f"{where}: cannot be read ({e})") from None
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise self.fail(f"{where}: {type(link).__name__} objects are not allowed (hard links only)")
        try:
            obj = parent[name]
        except (KeyError, OSError, RuntimeError, TypeError, ValueError) as e:
            raise self.fail(f"{where}: cannot be read ({e})") from None
        if not isinstance(obj, kind):
            raise self.fail(f"{where}: expected an HDF5 {kind.__name__}, got {type(obj).__name__}")
        return obj

    def group(self, path: str) -> Any:
        g = self.file
        for part in path.split("/"):
            g = self.child(g, part, self.h5py.Group, path)
            if g is None:
                return None
        return g

    def name_attr(self, group: Any, where: str) -> Optional[str]:
        """The ``name`` attribute Keras writes on a vars group (None when absent or odd)."""
        try:
            if "name" not in group.attrs:
                return None
            size = group.attrs.get_id("name").get_storage_size()
        except (KeyError, OSError, RuntimeError, TypeError, ValueError) as e:
            raise self.fail(f"{where}: attribute 'name' cannot be read ({e})") from None
        if size > _MAX_ATTR_BYTES:
            raise self.fail(f"{where}: attribute 'name' is larger than {_MAX_ATTR_BYTES} bytes")
        try:
            v = group.attrs["name"]
        except (KeyError, OSError, RuntimeError, TypeError, ValueError) as e:
            raise self.fail(f"{where}: attribute 'name' cannot be read ({e})") from None
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        return v if isinstance(v, str) else None

    def read_vars(self, path: str, expected: Sequence[np.ndarray], where: str) -> List[np.ndarray]:
        """The datasets ``0..n-1`` of group ``path/vars``, each checked against the array in
        ``expected`` (shape, dtype, storage) before it is read into a new array like it."""
        h5py = self.h5py
        gpath = _join(path, "vars")
        group = self.group(gpath)
        if not expected:
            return []
        if group is None:
            raise self.fail(f"{where}: missing weights (expected {len(expected)} arrays in group {gpath!r})")
        try:
            n = len(group)
            names = sorted(group.keys()) if n <= _MAX_VARS else None
        except (OSError, RuntimeError, KeyError) as e:
            raise self.fail(f"{where}: group {gpath!r} cannot be listed ({e})") from None
        want = [str(i) for i in range(len(expected))]
        if names is None or sorted(names) != sorted(want):
            raise self.fail(f"{where}: group {gpath!r} holds {n} entries "
                            f"{(names or [])[:10]}, expected the {len(expected)} weights {want}")
        out = []
        for i, e in enumerate(expected):
            dpath = f"{gpath}/{i}"
            ds = self.child(group, str(i), h5py.Dataset, dpath)
            try:
                shape, dt = tuple(ds.shape), ds.dtype
                plist = ds.id.get_create_plist()
                layout = plist.get_layout()
                n_filters = plist.get_nfilters()
                n_external = plist.get_external_count()
                stored = ds.id.get_storage_size()
            except (OSError, RuntimeError, TypeError, ValueError) as err:
                raise self.fail(f"{where}: dataset {dpath!r} cannot be inspected ({err})") from None
            if shape != e.shape:
                raise self.fail(f"{where}: weight {i} ({dpath!r}) has shape {shape}, the layer expects {e.shape}")
            if dt.kind != e.dtype.kind or dt.itemsize != e.dtype.itemsize or dt.fields is not None:
                raise self.fail(f"{where}: weight {i} ({dpath!r}) has dtype {dt}, the layer expects {e.dtype}")
            if layout not in (h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED) or n_external:
                raise self.fail(f"{where}: weight {i} ({dpath!r}) uses external or virtual storage, which rnnkit "
                                "does not read")
            if n_filters:
                raise self.fail(f"{where}: weight {i} ({dpath!r}) is compressed or filtered, which rnnkit does "
                                "not read (Keras writes plain datasets)")
            if stored < e.nbytes:
                raise self.fail(f"{where}: weight {i} ({dpath!r}) stores {stored} bytes for {e.nbytes} bytes of "
                                "data (missing or incomplete data)")
            arr = np.empty(e.shape, dtype=e.dtype)
            try:
                if arr.size:
                    ds.read_direct(arr)
            except (OSError, RuntimeError, TypeError, ValueError) as err:
                raise self.fail(f"{where}: weight {i} ({dpath!r}) cannot be read ({err})") from None
            out.append(arr)
        return out


def _assign_weights(h5: _H5Reader, model: Model, pairs: List[Tuple[str, str]]) -> None:
    """Reads every layer's weights (checked) and only then sets them all."""
    plan: List[Tuple[Layer, List[np.ndarray]]] = []
    for layer_name, group in pairs:
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            continue  # an InputLayer: no weights
        where = f"layer {layer_name!r}"
        top = h5.group(_join("layers", group, "vars"))
        if top is not None:
            saved = h5.name_attr(top, f"layers/{group}/vars")
            if saved is not None and saved != layer_name:
                raise h5.fail(f"{where}: its weights group layers/{group} belongs to layer {saved!r:.80} (the "
                              "weights file does not match config.json)")
        weights: List[np.ndarray] = []
        for sub, _, expected in _weight_groups(layer):
            weights += h5.read_vars(_join("layers", group, sub), expected, where)
        plan.append((layer, weights))
    for layer, weights in plan:
        layer.set_weights(weights)


# ================================================================================================
# Keras's functional-graph bookkeeping (masks and the order of model.layers), emulated
# ================================================================================================

class _EOp:
    """One Keras operation: a layer (``layer`` set) or one ``keras.ops`` call Keras records to
    compute a mask."""
    __slots__ = ("layer",)

    def __init__(self, layer: Optional[Layer]) -> None:
        self.layer = layer


class _ENode:
    __slots__ = ("op", "inputs", "is_input")

    def __init__(self, op: _EOp, inputs: List["_ET"], is_input: bool = False) -> None:
        self.op, self.inputs, self.is_input = op, inputs, is_input


class _ET:
    __slots__ = ("node", "ndim", "mask")

    def __init__(self, node: _ENode, ndim: int, mask: Optional["_ET"] = None) -> None:
        self.node, self.ndim, self.mask = node, ndim, mask


# layers whose call takes ``mask`` (Keras passes the input's mask when the call has exactly one
# tensor argument), and layers that keep or compute masks (``supports_masking``)
_MASK_ARG = frozenset(("SimpleRNN", "LSTM", "GRU", "RNN", "Bidirectional", "TimeDistributed", "BatchNormalization",
                       "GlobalAveragePooling1D"))
_PASS_MASK = frozenset(("Dense", "Activation", "Dropout", "LayerNormalization", "BatchNormalization",
                        "TimeDistributed"))
_MERGE_OR = frozenset(("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"))
_MASKING = _PASS_MASK | _MERGE_OR | frozenset((
    "Embedding", "Masking", "GlobalAveragePooling1D", "SimpleRNN", "LSTM", "GRU", "RNN", "Bidirectional",
    "Concatenate", "Dot", "Attention", "AdditiveAttention"))


class _KerasGraph:
    """A functional rnnkit graph as Keras records it: its layer calls plus the mask operations
    Keras adds (``NotEqual``, ``LogicalOr``, ...). Gives Keras's ``model.layers`` order (which
    names the weight groups) and the places where Keras and rnnkit mask differently."""

    def __init__(self, graph: Any) -> None:
        self.notes: List[str] = []
        ops: Dict[int, _EOp] = {}

        def op_of(layer: Layer) -> _EOp:
            if id(layer) not in ops:
                ops[id(layer)] = _EOp(layer)
            return ops[id(layer)]

        tens: Dict[int, _ET] = {}
        self.tensors = tens
        self.masked_calls: Set[Tuple[str, int]] = set()  # (layer, call) Keras passes a mask to
        calls: Dict[int, int] = defaultdict(int)
        self.inputs = []
        for t in graph.inputs:
            node = _ENode(op_of(t.node.layer), [], True)
            tens[t.id] = _ET(node, t.ndim)
            self.inputs.append(tens[t.id])
        for n in graph.nodes:
            layer = n.layer
            cn = type(layer).__name__
            single = isinstance(n.inputs_structure, KerasTensor)
            first = [tens[t.id] for t in flatten(n.inputs_structure) if isinstance(t, KerasTensor)]
            kw_keys = [k for k in sorted(n.kwargs) if any(isinstance(v, KerasTensor) for v in flatten(n.kwargs[k]))]
            kw = [tens[v.id] for k in kw_keys for v in flatten(n.kwargs[k]) if isinstance(v, KerasTensor)]
            in_mask: Any = first[0].mask if single else [t.mask for t in first]
            mask_kw = in_mask if (cn in _MASK_ARG and single and not kw_keys and in_mask is not None) else None
            if mask_kw is not None:
                self.masked_calls.add((layer.name, calls[id(layer)]))
            calls[id(layer)] += 1
            node = _ENode(op_of(layer), first + kw + ([mask_kw] if mask_kw is not None else []))
            outs = [_ET(node, t.ndim) for t in n.outputs]
            for t, et in zip(n.outputs, outs):
                tens[t.id] = et
            has_mask = any(m is not None for m in (in_mask if isinstance(in_mask, list) else [in_mask]))
            if has_mask and kw_keys and cn in _RECURRENT + ("RNN", "Bidirectional"):
                self.notes.append(f"layer {layer.name!r}: called with initial_state on a masked input: Keras does "
                                  "not mask this call, rnnkit does (predictions differ after padded steps)")
            if has_mask and cn == "GlobalMaxPooling1D":
                self.notes.append(f"layer {layer.name!r}: Keras's GlobalMaxPooling1D ignores the mask, rnnkit's "
                                  "takes the maximum over valid steps (predictions differ for padded samples)")
            if cn in _MASKING:
                prev = mask_kw if mask_kw is not None else in_mask
                masks = self._compute_mask(layer, cn, first, prev, len(outs))
                for et, m in zip(outs, masks):
                    et.mask = m

    @staticmethod
    def _op(inputs: List[_ET], ndim: int) -> _ET:
        return _ET(_ENode(_EOp(None), inputs), ndim)

    def _compute_mask(self, layer: Layer, cn: str, first: List[_ET], prev: Any, n_out: int) -> List[Optional[_ET]]:
        """Keras's ``compute_mask`` of each class, as the operations it records."""
        none: List[Optional[_ET]] = [None] * n_out
        lst = prev if isinstance(prev, list) else [prev]
        if cn in _PASS_MASK:
            return [prev if not isinstance(prev, list) else None] + none[1:]
        if cn == "Embedding":
            return [self._op([first[0]], first[0].ndim) if layer.mask_zero else None] + none[1:]
        if cn == "Masking":
            ne = self._op([first[0]], first[0].ndim)
            return [self._op([ne], first[0].ndim - 1)] + none[1:]
        if cn in _RECURRENT or cn == "RNN":
            return [lst[0] if layer.return_sequences else None] + none[1:]
        if cn == "Bidirectional":
            m = lst[0] if layer.return_sequences else None
            k = 2 if layer.merge_mode is None else 1
            return [m] * k + none[k:]
        if cn in _MERGE_OR:
            if any(m is None for m in lst):
                return none
            out = lst[0]
            for m in lst[1:]:
                out = self._op([out, m], max(out.ndim, m.ndim))
            return [out] + none[1:]
        if cn == "Concatenate":
            if all(m is None for m in lst):
                return none
            parts = []
            for x, m in zip(first, lst):
                if m is None:
                    parts.append(self._op([x], x.ndim))                       # ones_like(x)
                elif m.ndim < x.ndim:
                    e = self._op([m], m.ndim + 1)                            # expand_dims(m)
                    parts.append(self._op([e, self._op([x], x.ndim)], x.ndim))  # or(e, zeros_like(x))
                else:
                    parts.append(m)
            cat = self._op(parts, parts[0].ndim)                              # concatenate
            return [self._op([cat], cat.ndim - 1)] + none[1:]                 # any(axis=-1)
        if cn in ("Attention", "AdditiveAttention"):
            if lst[0] is None:
                return none
            return [self._op([lst[0]], lst[0].ndim)] + none[1:]               # convert_to_tensor
        return none

    def layer_order(self, outputs: Sequence[_ET]) -> List[Layer]:
        """Keras's ``model.layers``: ``map_graph``'s operations by decreasing depth, ties in
        depth-first order from the outputs, keeping the layers (input layers included)."""
        finished: Set[int] = set()
        order: List[_ENode] = []
        index: Dict[int, int] = {}
        for out in outputs:
            stack: List[Tuple[_ENode, int]] = []
            node = out.node
            if id(node) in finished:
                continue
            index.setdefault(id(node.op), len(index))
            stack.append((node, 0))
            while stack:
                node, i = stack[-1]
                parents = [] if node.is_input else node.inputs
                if i < len(parents):
                    stack[-1] = (node, i + 1)
                    child = parents[i].node
                    if id(child) not in finished:
                        index.setdefault(id(child.op), len(index))
                        stack.append((child, 0))
                    continue
                stack.pop()
                if id(node) not in finished:
                    finished.add(id(node))
                    order.append(node)
        in_graph = {id(n) for n in order}
        node_depth: Dict[int, int] = {}
        op_depth: Dict[int, int] = {}
        op_by_id: Dict[int, _EOp] = {}
        for node in reversed(order):
            depth = node_depth.setdefault(id(node), 0)
            depth = max(depth, op_depth.get(id(node.op), 0))
            op_depth[id(node.op)] = depth
            op_by_id[id(node.op)] = node.op
            node_depth[id(node)] = depth
            for t in node.inputs:
                if id(t.node) in in_graph:
                    node_depth[id(t.node)] = max(depth + 1, node_depth.get(id(t.node), 0))
        for t in self.inputs:
            if id(t.node.op) not in op_depth:
                op_depth[id(t.node.op)] = 0
                index[id(t.node.op)] = -1
                op_by_id[id(t.node.op)] = t.node.op
        by_depth: Dict[int, List[int]] = defaultdict(list)
        for k, d in op_depth.items():
            by_depth[d].append(k)
        layers: List[Layer] = []
        for d in sorted(by_depth, reverse=True):
            for k in sorted(by_depth[d], key=lambda k: index[k]):
                if op_by_id[k].layer is not None:
                    layers.append(op_by_id[k].layer)
        return layers


def _warn(notes: Iterable[str], path: str) -> None:
    for note in notes:
        warnings.warn(f"{path}: {note}", UserWarning, stacklevel=3)


# ================================================================================================
# compile config
# ================================================================================================

def _filtered(cls: type, cfg: Dict[str, Any], what: str, skipped: List[str]) -> Dict[str, Any]:
    params = _init_params(cls)
    out = {}
    for k, v in cfg.items():
        if k in params:
            out[k] = v
        elif v not in (None, False) and k not in ("name", "dtype", "reduction"):
            skipped.append(f"{what} option {k}={_fmt(v, 40)}")
    return out


def _object_name(value: Any) -> Tuple[Optional[str], Dict[str, Any]]:
    """``(class name or function name, config)`` of a Keras-serialized loss/metric/optimizer."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and isinstance(value.get("class_name"), str):
        if value["class_name"] == "function" and isinstance(value.get("config"), str):
            return value["config"], {}
        cfg = value.get("config")
        return value["class_name"], cfg if isinstance(cfg, dict) else {}
    return None, {}


class _CompileReader:
    def __init__(self, output_names: List[str]) -> None:
        self.output_names = output_names
        self.skipped: List[str] = []

    def optimizer(self, value: Any) -> Any:
        name, cfg = _object_name(value)
        if name is None:
            raise ValueError(f"optimizer {_fmt(value)} is not a Keras optimizer config")
        cls = type(optimizers.get(name.lower()))
        cfg = dict(cfg)
        lr = cfg.get("learning_rate")
        if isinstance(lr, dict):
            sname, scfg = _object_name(lr)
            cfg["learning_rate"] = schedules.deserialize({"class_name": sname, "config": scfg})
        return cls(**_filtered(cls, cfg, f"optimizer {name}", self.skipped))

    def loss(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, list):
            return [self.loss(v) for v in value]
        if isinstance(value, dict) and "class_name" not in value:
            return {k: self.loss(v) for k, v in value.items()}
        name, cfg = _object_name(value)
        if name is None:
            raise ValueError(f"loss {_fmt(value)} is not a Keras loss")
        obj = losses.get(name)
        if not cfg:
            return name if isinstance(value, str) or value.get("class_name") == "function" else obj
        cls = type(obj)
        return cls(**_filtered(cls, cfg, f"loss {name}", self.skipped))

    def metric(self, value: Any) -> Any:
        name, cfg = _object_name(value)
        if name is None:
            self.skipped.append(f"metric {_fmt(value)}")
            return None
        try:
            obj = metrics.get(name)
            if not cfg or isinstance(value, str):
                return name
            cls = type(obj)
            return cls(**_filtered(cls, cfg, f"metric {name}", self.skipped))
        except (ValueError, TypeError):
            self.skipped.append(f"metric {name!r}")
            return None

    def metrics(self, value: Any) -> Any:
        if not value:
            return None
        if isinstance(value, dict):
            return {k: self.metric_list(v) for k, v in value.items()}
        if isinstance(value, list) and any(isinstance(v, list) or v is None for v in value):
            if len(value) != len(self.output_names):
                raise ValueError(f"metrics: {len(value)} per-output lists for {len(self.output_names)} outputs")
            return {n: self.metric_list(v) for n, v in zip(self.output_names, value) if v}
        return self.metric_list(value)

    def metric_list(self, value: Any) -> List[Any]:
        items = value if isinstance(value, list) else [value]
        return [m for m in (self.metric(v) for v in items) if m is not None]


def _restore_compile(model: Model, cc: Any, path: str) -> None:
    if not cc:
        return
    if not isinstance(cc, dict):
        warnings.warn(f"{path}: compile_config is not a dict; the model is not compiled", UserWarning, stacklevel=3)
        return
    r = _CompileReader(list(model.output_names))
    try:
        opt = r.optimizer(cc.get("optimizer", "rmsprop"))
        loss = r.loss(cc.get("loss"))
        if loss is None:
            raise ValueError("no loss")
        mets = r.metrics(cc.get("metrics"))
        if cc.get("weighted_metrics"):
            r.skipped.append("weighted_metrics")
        model.compile(optimizer=opt, loss=loss, metrics=mets, loss_weights=cc.get("loss_weights"))
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
        warnings.warn(f"{path}: the compile config was not restored (rnnkit has no equivalent: {e}); compile "
                      "the model yourself", UserWarning, stacklevel=3)
        return
    if r.skipped:
        warnings.warn(f"{path}: compile config partly restored; skipped: {', '.join(r.skipped)}",
                      UserWarning, stacklevel=3)


def _keras_object(module: str, d: Dict[str, Any]) -> Dict[str, Any]:
    return {"module": module, "class_name": d["class_name"], "config": d.get("config", {}), "registered_name": None}


_KERAS_OPTIMIZERS = frozenset(("SGD", "Adam", "AdamW", "Nadam", "Adamax", "Lion", "RMSprop", "Adagrad"))
_KERAS_SCHEDULES = frozenset(("ExponentialDecay", "InverseTimeDecay", "CosineDecay", "PiecewiseConstantDecay"))
_KERAS_LOSSES = frozenset((
    "BinaryCrossentropy", "CategoricalCrossentropy", "CosineSimilarity", "Huber", "KLDivergence", "LogCosh",
    "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanSquaredError", "MeanSquaredLogarithmicError",
    "Poisson", "SparseCategoricalCrossentropy"))
_KERAS_METRICS = frozenset((
    "AUC", "Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "F1Score", "FBetaScore", "MeanAbsoluteError",
    "MeanAbsolutePercentageError", "MeanSquaredError", "Precision", "Recall", "RootMeanSquaredError",
    "SparseCategoricalAccuracy", "SparseTopKCategoricalAccuracy", "TopKCategoricalAccuracy"))


def _compile_to_keras(model: Model) -> Optional[Dict[str, Any]]:
    """Keras's compile config for ``model``: None when it is not compiled, or (with a warning)
    when Keras could not rebuild its optimizer or loss; metrics and options Keras lacks are
    dropped with a warning."""
    try:
        cc = model.get_compile_config()
    except (TypeError, ValueError) as e:
        warnings.warn(f"the compile config is not written (it cannot be serialized: {e})", UserWarning, stacklevel=4)
        return None
    if cc is None:
        return None
    fatal: List[str] = []
    dropped: List[str] = []

    def obj(v: Any, module: str, known: frozenset, getter: Any, what: str, bad: List[str]) -> Any:
        if v is None:
            return None
        if isinstance(v, list):
            out = [obj(x, module, known, getter, what, bad) for x in v]
            return out if what == "loss" else [x for x in out if x is not None]
        if isinstance(v, dict) and "class_name" not in v:
            return {k: obj(x, module, known, getter, what, bad) for k, x in v.items()}
        if isinstance(v, str):
            try:
                ok = type(getter(v)).__name__ in known
            except (ValueError, TypeError):
                ok = False
            if not ok:
                bad.append(f"{what} {v!r:.60}")
                return None
            return v
        if not isinstance(v, dict) or v.get("class_name") not in known:
            bad.append(f"{what} {_fmt(v.get('class_name') if isinstance(v, dict) else v)}")
            return None
        cfg = dict(v.get("config") or {})
        for k, neutral in _RNNKIT_ONLY_OPTIONS.get(v["class_name"], {}).items():
            if k in cfg:
                if cfg[k] != neutral:
                    bad.append(f"{what} {v['class_name']} option {k}={_fmt(cfg[k], 40)} (Keras lacks it)")
                del cfg[k]
        return _keras_object(module, {"class_name": v["class_name"], "config": cfg})

    opt = cc.get("optimizer") or {}
    ocfg = dict(opt.get("config") or {})
    if opt.get("class_name") not in _KERAS_OPTIMIZERS:
        fatal.append(f"optimizer {_fmt(opt.get('class_name'))}")
    lr = ocfg.get("learning_rate")
    if isinstance(lr, dict):
        if lr.get("class_name") not in _KERAS_SCHEDULES:
            fatal.append(f"learning-rate schedule {_fmt(lr.get('class_name'))}")
        ocfg["learning_rate"] = _keras_object("keras.optimizers.schedules", lr)
    loss = obj(cc.get("loss"), "keras.losses", _KERAS_LOSSES, losses.get, "loss", fatal)
    mets = obj(cc.get("metrics"), "keras.metrics", _KERAS_METRICS, metrics.get, "metric", dropped)
    if cc.get("check_finite"):
        dropped.append("check_finite=True (rnnkit only)")
    if fatal:
        warnings.warn(f"the compile config is not written: Keras has no {', '.join(fatal)}; the Keras model "
                      "loads uncompiled", UserWarning, stacklevel=4)
        return None
    if dropped:
        warnings.warn(f"the compile config is written without {', '.join(dropped)} (Keras lacks them)",
                      UserWarning, stacklevel=4)
    return {"optimizer": _keras_object("keras.optimizers", {"class_name": opt["class_name"], "config": ocfg}),
            "loss": loss, "loss_weights": cc.get("loss_weights"), "metrics": mets,
            "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1, "jit_compile": False}


# ================================================================================================
# load
# ================================================================================================

def load_model(filepath: Any, classes: Dict[str, Any], compile: bool = True) -> Model:
    """Reads a Keras 3 ``.keras`` archive into the equivalent rnnkit model.

    Parameters
    ----------
    filepath
        The archive (a regular file).
    classes
        ``{"Sequential": ..., "Model": ...}``: the model classes to build
        (``rnnkit.models.load_model`` passes them; this module imports no model class).
    compile
        Restore the compile config (optimizer, loss, metrics) where rnnkit has the same names.

    Returns
    -------
    The rnnkit ``Sequential`` or ``Model`` with the archive's weights.

    Raises
    ------
    ValueError
        Naming the file, for anything that is not a well-formed Keras 3 archive of supported
        layers (see the module documentation); ImportError without h5py.

    Shapes
    ------
    The model is built for the saved input shapes; weights keep Keras's layouts.
    """
    path = os.fspath(filepath)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    _h5py()
    archive = _Archive(path)
    meta = archive.json(_METADATA, MAX_METADATA_BYTES) if _METADATA in archive.members else None
    if isinstance(meta, dict):
        ver = meta.get("keras_version")
        if isinstance(ver, str) and not ver.startswith("3."):
            raise archive.fail(f"written by Keras {ver:.40}; rnnkit reads Keras 3 archives")
    if _WEIGHTS not in archive.members:
        extra = " (sharded weights are not supported)" if any(n.endswith(".json") and n != _CONFIG and n != _METADATA
                                                              for n in archive.members) else ""
        raise archive.fail(f"not a Keras 3 .keras archive: it has no {_WEIGHTS!r}{extra}")
    top = archive.json(_CONFIG, MAX_CONFIG_BYTES)
    reader = _Reader(path)
    cls_name, config, pairs = reader.model_config(top)
    weights = archive.read(_WEIGHTS, MAX_WEIGHTS_BYTES)
    del archive
    h5 = _H5Reader(path, weights)
    try:
        try:
            # the architecture may create no more parameter bytes than the weights file holds
            with restoring_weights(len(weights)):
                model = classes[cls_name].from_config(config)
        except ValueError as e:
            raise reader.fail(f"cannot build the model: {e}") from None
        except (KeyError, TypeError, IndexError, AttributeError, OverflowError, RecursionError) as e:
            raise reader.fail(f"cannot build the model ({type(e).__name__}: {e})") from None
        if not model.built:
            raise reader.fail("the model has no input shape")
        _assign_weights(h5, model, pairs)
    finally:
        h5.close()
    kg = _KerasGraph(model.graph)
    explicit = sorted(reader.masked_calls - kg.masked_calls)
    notes = [f"layer {n!r}, call {k}: the file passes a mask that does not come from the layers' own mask "
             "propagation (an explicit mask argument); rnnkit propagates masks from Embedding(mask_zero=True) "
             "and Masking only, so predictions may differ" for n, k in explicit]
    _warn(reader.notes + kg.notes + notes, path)
    if compile and isinstance(top, dict):
        _restore_compile(model, top.get("compile_config"), path)
    return model


# ================================================================================================
# save
# ================================================================================================

def _dtype_policy(name: str) -> Dict[str, Any]:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": None}


class _Writer:
    """rnnkit layers -> Keras 3 configs (ValueError naming the layer and option for what Keras
    could not rebuild)."""

    def __init__(self) -> None:
        self.notes: List[str] = []

    def layer(self, layer: Layer) -> Dict[str, Any]:
        cn = type(layer).__name__
        where = f"layer {layer.name!r} ({cn})"
        if not type(layer).__module__.startswith("rnnkit.layers.") or cn not in _KERAS_KEYS:
            raise ValueError(f"{where}: Keras .keras files hold Keras's built-in layers; rnnkit writes "
                             f"{', '.join(k for k in SUPPORTED_LAYERS if k != 'InputLayer')}, not {cn}")
        if getattr(layer, "stateful", False):
            raise ValueError(f"{where}: stateful=True is not supported in .keras files")
        cfg = layer.get_config()
        allowed = set(_KERAS_KEYS[cn])
        out: Dict[str, Any] = {"name": layer.name, "trainable": bool(cfg.get("trainable", True)),
                               "dtype": _dtype_policy(layer.dtype.name)}
        for key, value in cfg.items():
            if key in ("name", "trainable", "dtype", "input_shape"):
                continue
            if key not in allowed:
                if value in (None, False, 0, 0.0) or key in _TRAINING_ONLY_OPTIONS:
                    continue  # an rnnkit option that is off, or changes how training runs only
                raise ValueError(f"{where}: option {key}={_fmt(value)} has no Keras equivalent; a .keras file "
                                 "cannot hold it")
            if key in ("layer", "backward_layer"):
                sub = layer.forward_layer if (cn == "Bidirectional" and key == "layer") else \
                    layer.backward_layer if key == "backward_layer" else layer.layer
                value = self.layer(sub)
            elif key == "cell":
                if type(layer.cell).__name__ not in _CELLS:
                    raise ValueError(f"{where}: RNN of a {type(layer.cell).__name__} cannot be written; Keras "
                                     f"files hold RNN of {', '.join(_CELLS)}")
                value = self.layer(layer.cell)
            elif key.endswith("_initializer"):
                if isinstance(value, dict) and "class_name" in value:
                    value = _keras_object("keras.initializers", value)
                elif not isinstance(value, str):
                    self.notes.append(f"{where}: {key} (a plain callable) is not written; Keras uses its default")
                    continue
            elif key in ("activation", "recurrent_activation"):
                if value not in _KERAS_ACTIVATIONS:
                    raise ValueError(f"{where}: {key}={_fmt(value)} is not a Keras 3 activation; a .keras file "
                                     "cannot hold it")
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return {"module": "keras.layers", "class_name": cn, "config": out, "registered_name": None}


def _keras_tensor(t: KerasTensor, node_index: Dict[int, Tuple[str, int]]) -> Dict[str, Any]:
    name, k = node_index[id(t.node)]
    return {"class_name": "__keras_tensor__",
            "config": {"shape": list(t.shape), "dtype": t.dtype, "keras_history": [name, k, t.index]}}


def _input_entry(t: KerasTensor, functional: bool) -> Dict[str, Any]:
    layer = t.node.layer
    cfg = {"batch_shape": list(t.shape), "dtype": layer.input_dtype, "sparse": False, "name": layer.name}
    entry = {"module": "keras.layers", "class_name": "InputLayer", "config": cfg, "registered_name": None}
    if functional:
        entry.update({"name": layer.name, "inbound_nodes": []})
    return entry


def _model_to_keras(model: Model) -> Tuple[Dict[str, Any], List[Tuple[str, Layer]], List[str]]:
    """``(config.json, [(weight group name, layer)], notes)``."""
    graph = model.graph
    if graph is None:
        raise ValueError(f"model: {model.name!r} is not built; give the first layer an input_shape, call "
                         "build(input_shape) or fit it before saving")
    w = _Writer()
    kg = _KerasGraph(graph)
    if hasattr(model, "build_input_shape") and hasattr(model, "add"):  # a Sequential
        layers = list(model.layers)
        config = {"name": model.name, "trainable": True,
                  "layers": [_input_entry(graph.inputs[0], False)] + [w.layer(l) for l in layers],
                  "build_input_shape": list(graph.inputs[0].shape)}
        top = {"module": "keras", "class_name": "Sequential", "config": config, "registered_name": None,
               "build_config": {"input_shape": list(graph.inputs[0].shape)}}
    else:
        ordered = kg.layer_order([kg.tensors[t.id] for t in graph.outputs])
        layers = [l for l in ordered if not isinstance(l, InputLayer)]
        node_index: Dict[int, Tuple[str, int]] = {}
        for t in graph.inputs:
            node_index[id(t.node)] = (t.node.layer.name, 0)
        calls: Dict[int, List[Any]] = defaultdict(list)
        for n in graph.nodes:
            node_index[id(n)] = (n.layer.name, len(calls[id(n.layer)]))
            calls[id(n.layer)].append(n)

        def enc(v: Any) -> Any:
            return _keras_tensor(v, node_index) if isinstance(v, KerasTensor) else v

        def encode(structure: Any) -> Any:
            if isinstance(structure, (list, tuple)):
                return [encode(v) for v in structure]
            if isinstance(structure, dict):
                return {k: encode(v) for k, v in structure.items()}
            return enc(structure)

        entries = []
        input_of = {id(t.node.layer): t for t in graph.inputs}
        for l in ordered:
            if isinstance(l, InputLayer):
                entries.append(_input_entry(input_of[id(l)], True))
                continue
            e = w.layer(l)
            e["name"] = l.name
            e["inbound_nodes"] = [{"args": [encode(n.inputs_structure)],
                                   "kwargs": {k: encode(v) for k, v in n.kwargs.items()}}
                                  for n in calls[id(l)]]
            entries.append(e)

        def ends(ts: Sequence[KerasTensor], single: bool) -> Any:
            refs = [[node_index[id(t.node)][0], node_index[id(t.node)][1], t.index] for t in ts]
            return refs[0] if single else refs

        # Model.input_shape / output_shape: one tuple for a one-input (-output) model, else a list
        config = {"name": model.name, "trainable": True, "layers": entries,
                  "input_layers": ends(graph.inputs, not isinstance(model.input_shape, list)),
                  "output_layers": ends(graph.outputs, not isinstance(model.output_shape, list))}
        top = {"module": "keras.src.models.functional", "class_name": "Functional", "config": config,
               "registered_name": "Functional", "build_config": {"input_shape": None}}
        layers = ordered
    names = _unique_names(type(l).__name__ for l in layers)
    pairs = [(g, l) for g, l in zip(names, layers) if not isinstance(l, InputLayer)]
    return top, pairs, w.notes + kg.notes


def _named_groups(layer: Layer) -> List[Tuple[str, str]]:
    """Every group Keras's saver makes for ``layer`` (path under the layer's group, and the
    ``name`` attribute of its ``vars``)."""
    cn = type(layer).__name__
    out = [("", layer.name)]
    if cn == "Bidirectional":
        out += [(_join("forward_layer", p), n) for p, n in _named_groups(layer.forward_layer)]
        out += [(_join("backward_layer", p), n) for p, n in _named_groups(layer.backward_layer)]
    elif cn == "TimeDistributed":
        out += [(_join("layer", p), n) for p, n in _named_groups(layer.layer)]
    elif cn in _RECURRENT:
        out.append(("cell", _snake(cn) + "_cell"))
    elif cn == "RNN":
        out.append(("cell", layer.cell.name))
    return out


def _write_h5(model: Model, pairs: List[Tuple[str, Layer]], optimizer: Optional[Dict[str, Any]]) -> bytes:
    """Keras's weights file for ``model`` (``pairs``: weight group name and layer, in Keras's
    ``model.layers`` order)."""
    h5py = _h5py()
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("vars").attrs["name"] = model.name
        for group, layer in pairs:
            base = _join("layers", group)
            for sub, name in _named_groups(layer):
                f.create_group(_join(base, sub, "vars")).attrs["name"] = name
            for sub, _, weights in _weight_groups(layer):
                g = f[_join(base, sub, "vars")]
                for i, wt in enumerate(weights):
                    g.create_dataset(str(i), data=np.array(wt, order="C"))
        if optimizer is not None:
            g = f.create_group("optimizer/vars")
            g.attrs["name"] = str(optimizer.get("config", {}).get("name", "optimizer"))
            g.create_dataset("0", data=np.asarray(0, dtype=np.int64))
            lr = optimizer.get("config", {}).get("learning_rate")
            if isinstance(lr, (int, float)) and not isinstance(lr, bool):
                g.create_dataset("1", data=np.asarray(lr, dtype=np.float32))
    return buf.getvalue()


def save_model(model: Model, filepath: Any, include_optimizer: bool = True) -> None:
    """Writes ``model`` as a Keras 3 ``.keras`` archive (atomically: a temporary file in the
    target's directory, then renamed).

    Parameters
    ----------
    model
        A built rnnkit ``Sequential`` or ``Model`` of the layers listed in the module
        documentation.
    filepath
        The target, a name ending in ``.keras``.
    include_optimizer
        Write the compile config (optimizer configuration, loss, metrics) of a compiled model;
        Keras rebuilds the optimizer with fresh slots.

    Raises
    ------
    ValueError
        Naming the layer and option, for what a Keras archive cannot hold; ImportError without
        h5py.

    Shapes
    ------
    Weights are written in Keras's ``get_weights()`` layouts.
    """
    from rnnkit import __version__

    _h5py()
    top, pairs, notes = _model_to_keras(model)
    cc = _compile_to_keras(model) if include_optimizer else None
    if cc is not None:
        top["compile_config"] = cc
    weights = _write_h5(model, pairs, cc["optimizer"] if cc is not None else None)
    meta = {"keras_version": KERAS_VERSION, "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
            "rnnkit_version": __version__}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(_METADATA, json.dumps(meta))
        zf.writestr(_CONFIG, json.dumps(top, default=_json_default))
        zf.writestr(_WEIGHTS, weights)
    serialization.atomic_write(os.fspath(filepath), buf.getvalue())
    _warn(notes, os.fspath(filepath))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"config: value of type {type(o).__name__} is not JSON-serialisable")
