"""rnnkit: fast recurrent neural networks (Elman RNN, LSTM, GRU) on the CPU.

The kernels live in the compiled ``rnnkit._core``; use them through :mod:`rnnkit.functional`
(time-major arrays in, arrays out), :mod:`rnnkit.layers` / :mod:`rnnkit.models` (Keras style)
or :mod:`rnnkit.nn` (PyTorch style).
"""
from __future__ import annotations

import importlib
from typing import Any, Dict

from rnnkit._openmp import set_spin_before_load

# the compiled kernels; OpenMP's idle workers spin briefly (see rnnkit._openmp)
_core = set_spin_before_load(lambda: importlib.import_module("rnnkit._core"))

from rnnkit._checks import check_positive_int  # noqa: E402

def _version() -> str:
    """The installed distribution's version (pyproject.toml is the one source)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rnnkit")
    except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return "0+unknown"


__version__ = _version()


def set_num_threads(n: int) -> None:
    """Sets the number of threads rnnkit's kernels use, for the whole process.

    The setting holds for kernels called from every Python thread, and kernels running at the
    same time from several threads share it (together they never use more than ``n`` threads).
    The default is OpenMP's: ``OMP_NUM_THREADS`` when set, else one per core.

    Parameters
    ----------
    n
        An int in ``[1, 4 * cores]`` (at least 4); anything else raises ``TypeError`` or
        ``ValueError``.
    """
    n = check_positive_int("n", n)
    hi = int(_core.max_threads())
    if n > hi:
        raise ValueError(f"n: expected an int in [1, {hi}] (4x the cores), got {n}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Returns the number of threads rnnkit's kernels use."""
    return int(_core.get_num_threads())


def build_info() -> Dict[str, Any]:
    """Describes the compiled kernels: ``simd`` (e.g. ``'AVX2+FMA'``), ``eigen_simd``,
    ``int8_kernel`` (``'vnni'``: int8 streams quantize each row and multiply with AVX512-VNNI;
    ``'widen'``: their weights are widened to float), ``openmp`` (bool), ``num_threads`` and
    ``eigen_version``."""
    return dict(_core.build_info())


from rnnkit import functional  # noqa: E402

_SUBMODULES = ("activations", "callbacks", "diagnostics", "initializers", "interop", "layers", "losses",
               "metrics", "models", "nn", "optim", "optimizers", "schedules", "serialization",
               "streaming", "training", "utils")


# loaded on first use but left out of __all__: ``from rnnkit import *`` must not shadow the
# ``onnx`` and ``torch`` packages
_LAZY_ONLY = ("onnx", "torch", "tbptt", "distributed", "keras_format")


def __getattr__(name: str) -> Any:
    # the submodules load on first use (``rnnkit.nn``, ``rnnkit.models``, ...)
    if name in _SUBMODULES or name in _LAZY_ONLY:
        import importlib

        return importlib.import_module(f"rnnkit.{name}")
    raise AttributeError(f"module 'rnnkit' has no attribute {name!r}")


__all__ = ["build_info", "get_num_threads", "set_num_threads", "functional", "__version__",
           *_SUBMODULES]
