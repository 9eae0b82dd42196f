"""NumPy's BLAS thread pool while rnnkit's ``fit`` runs.

``fit`` alternates rnnkit's OpenMP kernels with NumPy work (``Dense``'s products, the loss, the
optimizer's updates). With NumPy's OpenBLAS at its default of one thread per core, its pool and
rnnkit's take turns on the same cores, each spinning after its call, and the small products of a
training step gain nothing from a second thread. ``bench/blas_threads.py`` (seed model, rnnkit
at 2 threads, the two settings interleaved in one process): with the machine loaded (load
average 2.1) the default BLAS pool made the epoch 7% slower (medians 0.281 s against 0.262 s);
on a quieter machine (load 1.9) the two were level (0.342 s against 0.344 s).
:func:`single_threaded_blas` limits the BLAS pools to one thread for the duration of a ``fit``
and restores them after, through ``threadpoolctl``; the cores stay rnnkit's.

The limit is process-wide (BLAS has no per-thread setting): NumPy called from another Python
thread during a ``fit`` also runs single-threaded. Concurrent ``fit`` calls share one limit,
which the last one to finish lifts. ``RNNKIT_FIT_BLAS_THREADS=default`` in the environment turns
the limit off.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator, Optional

__all__ = ["single_threaded_blas"]

_lock = threading.Lock()
_active = 0                   # fit calls inside the limit
_limiter: Optional[Any] = None  # threadpoolctl's limiter while _active > 0
_controller: Optional[Any] = None


def _blas_controller() -> Optional[Any]:
    """threadpoolctl's view of the loaded BLAS libraries (found once), or None without it."""
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - a dependency; tolerate a broken install
            return None
        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """NumPy's BLAS pools at one thread inside the block (see the module's documentation)."""
    global _active, _limiter
    if os.environ.get("RNNKIT_FIT_BLAS_THREADS", "") == "default":
        yield
        return
    with _lock:
        if _active == 0:
            controller = _blas_controller()
            if controller is not None and controller.lib_controllers:
                _limiter = controller.limit(limits=1)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None
