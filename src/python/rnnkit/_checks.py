"""Argument validation shared by the public API: every error names the argument, the expected and
the actual shape or dtype."""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Tuple

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES


def shape_str(shape: Sequence[Any]) -> str:
    """``(2, 3)``, ``(5,)``, ``()``; ``None`` sizes print as ``?``: the one shape formatter."""
    parts = ["?" if s is None else str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def as_float_array(name: str, a: Any, dtype: Optional[np.dtype] = None,
                   contiguous: bool = True) -> np.ndarray:
    """Returns `a` as a C-contiguous float32/float64 array, without a copy when it already is one.

    Non-contiguous (unless ``contiguous=False``), misaligned (data not at a multiple of the item
    size, e.g. a view at an odd byte offset) or non-native-byte-order float arrays are copied
    (the one documented copy);
    integer, boolean, complex, object and float16 inputs raise TypeError, as does a dtype that
    differs from `dtype` (the dtype of `x`, which decides the precision of a call).
    """
    if type(a) is np.ndarray:
        # fast path: the common case of a well-formed array costs a few attribute reads
        dt = a.dtype
        flags = a.flags
        if (dt is _F32 or dt is _F64 or dt in FLOAT_DTYPES) and \
                (flags.c_contiguous or not contiguous) and flags.aligned and dt.isnative and \
                (dtype is None or dt == dtype):
            return a
    if isinstance(a, np.ndarray):
        arr = a
    else:
        try:
            arr = np.asarray(a)
        except Exception as e:  # pragma: no cover - numpy's own message is kept
            raise TypeError(f"{name}: expected a float32 or float64 array, got {type(a).__name__}") from e
    if arr.dtype.kind != "f" or arr.dtype.newbyteorder("=") not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}")
    if dtype is not None and arr.dtype.newbyteorder("=") != dtype:
        raise TypeError(
            f"{name}: expected dtype {dtype} (the dtype of x), got {arr.dtype}; "
            f"convert with .astype(np.{dtype})"
        )
    if not arr.dtype.isnative or not arr.flags.aligned:
        arr = arr.astype(arr.dtype.newbyteorder("="), order="C" if contiguous else "K")
    if contiguous and not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr


def check_shape(name: str, a: np.ndarray, expected: Sequence[Optional[int]], what: str = "") -> None:
    """Raises ValueError unless `a.shape` matches `expected` (None matches any size)."""
    ok = a.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, a.shape))
    if not ok:
        hint = f" {what}" if what else ""
        raise ValueError(f"{name}: expected shape {shape_str(expected)}{hint}, got {shape_str(a.shape)}")


def recurrent_weights(gates: int, cell: str, w_ih: Any, w_hh: Any, b_ih: Any = None, b_hh: Any = None, *,
                      dtype: Optional[np.dtype] = None, C: Optional[int] = None, prefix: str = "",
                      contiguous: bool = True, w_hr: Any = None
                      ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """One layer-direction's weights in rnnkit's (PyTorch's) layout, checked: ``w_hh [G*H, H]``
    decides ``H``; ``w_ih [G*H, C]`` (``C`` checked when given); biases ``[G*H]`` or None. With an
    LSTM projection ``w_hr [P, H]`` (checked here too; convert it with :func:`as_float_array`),
    ``H`` comes from ``w_hr`` and ``w_hh`` is ``[G*H, P]``. All of one float dtype (``dtype``,
    else ``w_hh``'s); errors name ``prefix + argument``. The one weight check of the package
    (functional API, streams, interop).

    Shapes
    ------
    w_ih: [G*H, C], w_hh: [G*H, H] (or [G*H, P]), b_ih, b_hh: [G*H], w_hr: [P, H]
    """
    w_hh = as_float_array(prefix + "w_hh", w_hh, dtype, contiguous)
    if w_hr is not None:
        w_hr = as_float_array(prefix + "w_hr", w_hr, w_hh.dtype, contiguous)
        if w_hr.ndim != 2 or 0 in w_hr.shape:
            raise ValueError(f"{prefix}w_hr: expected shape (P, H) with P, H >= 1, got {shape_str(w_hr.shape)}")
        P, H = w_hr.shape
        if w_hh.shape != (gates * H, P):
            raise ValueError(f"{prefix}w_hh: expected shape ({gates * H}, {P}) = ({gates}*H, P) with "
                             f"(P, H) = {shape_str(w_hr.shape)} from w_hr, got {shape_str(w_hh.shape)}")
    else:
        if w_hh.ndim != 2 or w_hh.shape[1] == 0 or w_hh.shape[0] != gates * w_hh.shape[1]:
            raise ValueError(f"{prefix}w_hh: expected shape ({gates}*H, H) for {cell} (G={gates}), got "
                             f"{shape_str(w_hh.shape)}")
        H = w_hh.shape[1]
    w_ih = as_float_array(prefix + "w_ih", w_ih, w_hh.dtype, contiguous)
    if w_ih.ndim != 2 or w_ih.shape[0] != gates * H or (C is not None and w_ih.shape[1] != C):
        want = f"({gates * H}, {'C' if C is None else C})"
        raise ValueError(f"{prefix}w_ih: expected shape {want} = ({gates}*H, C) with H={H} from "
                         f"{'w_hh' if w_hr is None else 'w_hr'}"
                         f"{'' if C is None else f', C={C} from x'}, got {shape_str(w_ih.shape)}")
    out = []
    for nm, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None:
            b = as_float_array(prefix + nm, b, w_hh.dtype, contiguous)
            check_shape(prefix + nm, b, (gates * H,), f"= ({gates}*H,) with H={H}")
        out.append(b)
    return w_ih, w_hh, out[0], out[1]


# The activations the fused recurrent kernels take (src/cpp/core.h, namespace acts): a cell's
# activation φ and its gates' recurrent activation σ, by Keras's names.
CELL_ACTIVATIONS = ("tanh", "relu", "linear")
GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid")


def check_cell_activations(activation: Any, recurrent_activation: Any = None, *,
                           names: Tuple[str, str] = ("activation", "recurrent_activation")) -> None:
    """Raises ValueError naming the argument unless ``activation`` is one of
    :data:`CELL_ACTIVATIONS` and ``recurrent_activation`` (unless None) one of
    :data:`GATE_ACTIVATIONS`."""
    if not (isinstance(activation, str) and activation in CELL_ACTIVATIONS):
        raise ValueError(f"{names[0]}: expected one of {', '.join(map(repr, CELL_ACTIVATIONS))} "
                         f"(what the fused recurrent kernels compute), got {activation!r:.80}")
    if recurrent_activation is not None and not (
            isinstance(recurrent_activation, str) and recurrent_activation in GATE_ACTIVATIONS):
        raise ValueError(f"{names[1]}: expected one of {', '.join(map(repr, GATE_ACTIVATIONS))} "
                         f"(what the fused recurrent kernels compute), got {recurrent_activation!r:.80}")


def as_mask(name: str, mask: Any, expected: Sequence[int]) -> np.ndarray:
    """Returns a C-contiguous bool mask of shape `expected`. Bool arrays are used as they are;
    integer arrays are read as `mask != 0`; anything else raises TypeError."""
    m = mask if isinstance(mask, np.ndarray) else np.asarray(mask)
    if m.dtype.kind == "b":
        pass
    elif m.dtype.kind in "iu":
        m = m != 0
    else:
        raise TypeError(f"{name}: expected a boolean array, got dtype {m.dtype}")
    check_shape(name, m, expected)
    return np.ascontiguousarray(m)


def check_finite(name: str, a: np.ndarray) -> None:
    """Raises ValueError if `a` holds NaN or infinity."""
    if not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"{name}: holds {bad} NaN or infinite value(s)")


def check_int_or_single(name: str, v: Any) -> int:
    """A positive int given as an int or a tuple/list of one int (Keras's ``standardize_tuple``
    for rank 1: ``kernel_size``, ``strides``, ``pool_size``)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 1:
            raise ValueError(f"{name}: expected an int or a tuple of 1 int, got {tuple(v)!r}")
        v = v[0]
    return check_positive_int(name, v)


DATA_FORMATS = ("channels_last", "channels_first")


def check_data_format(v: Any) -> str:
    """Keras's ``standardize_data_format``: ``'channels_last'`` (None means it, Keras's default
    ``image_data_format``) or ``'channels_first'``."""
    if v is None:
        return "channels_last"
    if not isinstance(v, str) or v.lower() not in DATA_FORMATS:
        raise ValueError(f"data_format: expected one of {list(DATA_FORMATS)} or None, got {v!r}")
    return v.lower()


def check_bool(name: str, v: Any) -> bool:
    """``v`` as a bool; TypeError for anything but bool / numpy bool."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(v).__name__}")
    return bool(v)


def check_rate(name: str, v: Any) -> float:
    """A probability in ``[0, 1)`` (dropout rates): TypeError for non-numbers and bools,
    ValueError outside the range."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a float in [0, 1), got {type(v).__name__}")
    v = float(v)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name}: expected a float in [0, 1), got {v}")
    return v


def check_seed(name: str, seed: Any) -> Optional[int]:
    """None or a non-negative int (a random seed)."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name}: expected None or an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {seed}")
    return int(seed)


def physical_memory_bytes() -> int:
    """The machine's physical memory (``2**40`` where the platform does not tell)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return 1 << 40


def check_fits_memory(name: str, value: int, nbytes: float, what: str) -> None:
    """Raises ValueError naming ``name`` when ``nbytes`` (what ``value`` would make rnnkit
    allocate for ``what``) exceeds the machine's physical memory, before anything is allocated."""
    limit = physical_memory_bytes()
    if nbytes > limit:
        raise ValueError(f"{name}: {value} needs about {nbytes / 2**30:.3g} GiB for {what}, more "
                         f"than this machine's {limit / 2**30:.3g} GiB of memory")


def check_positive_int(name: str, v: Any, minimum: int = 1) -> int:
    """Returns `v` as an int, raising TypeError for non-integers and ValueError below `minimum`."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {v}")
    return int(v)


# ---- memory order of 3-D sequences ---------------------------------------------------------------
# Inside a model, sequences stay time-major between layers: a recurrent layer hands on a batch-major
# view [N, T, C] of time-major memory [T, N, C]. A layer that works along the last axis (Dense,
# activations, normalization) computes on the memory as it lies and hands on a view of the same
# order, so no layer in between copies.

def memory_perm(a: np.ndarray) -> Tuple[int, ...]:
    """The axis order in which ``a``'s data is C-contiguous with the last axis last: the identity
    for a C-contiguous array, ``(1, 0, 2)`` for a batch-major view of time-major memory; the
    identity (a copy will be made) for anything else."""
    ident = tuple(range(a.ndim))
    if a.flags.c_contiguous or a.ndim != 3:
        return ident
    if a.transpose(1, 0, 2).flags.c_contiguous:
        return (1, 0, 2)
    return ident


def to_rows(a: np.ndarray, perm: Sequence[int]) -> np.ndarray:
    """``a`` laid out in ``perm`` order as a 2-D ``[rows, last]`` array (a view when it already
    lies that way, else one copy).

    Shapes
    ------
    a: [..., K] -> [prod(...), K]
    """
    m = a.transpose(perm) if tuple(perm) != tuple(range(a.ndim)) else a
    return np.ascontiguousarray(m).reshape(-1, a.shape[-1])


def from_rows(rows: np.ndarray, lead_shape: Sequence[int], perm: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`to_rows`: ``rows`` ``[prod(lead), K]`` (memory in ``perm`` order) as an
    array of logical shape ``lead_shape + (K,)`` (a view).

    Shapes
    ------
    rows: [prod(lead_shape), K] -> [*lead_shape, K]
    """
    k = rows.shape[-1]
    full = tuple(lead_shape) + (k,)
    if len(full) == 3 and tuple(perm) == _TIME_MAJOR:
        # memory [T, N, K] seen as [N, T, K]
        return rows.reshape(full[1], full[0], k).transpose(_TIME_MAJOR)
    if tuple(perm) == tuple(range(len(full))):
        return rows.reshape(full)
    mem_shape = tuple(full[p] for p in perm)
    inv = tuple(int(i) for i in np.argsort(perm))
    return rows.reshape(mem_shape).transpose(inv)


_TIME_MAJOR = (1, 0, 2)
