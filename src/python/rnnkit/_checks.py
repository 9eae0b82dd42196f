"""Argument validation shared by the public API: every error names the argument, the expected and
the actual shape or dtype."""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

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
