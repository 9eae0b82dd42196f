"""How long OpenMP's idle workers spin: set once, just before the kernels' library loads.

After a parallel kernel returns, libgomp's worker threads spin for ``GOMP_SPINCOUNT`` iterations
(300,000 by default, about a millisecond) before they sleep. On a machine with few cores those
spinning threads take the cores from whatever the program calls next. ``bench/neighbours.py``
(2 threads, AMD EPYC Zen 4, a 1024^3 sgemm timed right after an rnnkit LSTM forward, against
the same sgemm back to back): NumPy's OpenBLAS **1.69x** slower and ONNX Runtime **1.65x**
slower with the default; with ``GOMP_SPINCOUNT=1000`` 1.02x and 1.06x (torch.mm 1.01x / 0.99x:
it shares the same OpenMP runtime).

rnnkit's own speed does not depend on it (``bench/ab_builds.py``, 2 threads, default against
1000, ratio of medians over interleaved processes): LSTM forward (50, 32, 128, 128) 0.99, GRU
train (200, 16, 64, 128) 0.99, LSTM forward (100, 64, 256, 256) 1.28, LSTM train
(100, 64, 512, 512) 1.02, the seed model's ``fit`` epoch 1.05 (above 1: 1000 faster). The time
loops' barriers come every few microseconds, well inside 1000 spins.

:func:`set_spin_before_load` sets ``GOMP_SPINCOUNT=1000`` for the runtime's start-up only when
the user has set neither ``GOMP_SPINCOUNT`` nor ``OMP_WAIT_POLICY``, and restores the
environment after the load, so child processes and later libraries see what the user set. If the
OpenMP runtime was loaded before rnnkit (e.g. by another library), it keeps its settings.
"""
from __future__ import annotations

import os
from typing import Callable, TypeVar

__all__ = ["SPIN_COUNT", "set_spin_before_load"]

#: libgomp's spin count before an idle worker sleeps (see the module's measurements).
SPIN_COUNT = "1000"

T = TypeVar("T")


def set_spin_before_load(load: Callable[[], T]) -> T:
    """Runs ``load`` (the import of the compiled module) with ``GOMP_SPINCOUNT`` set, unless the
    user chose a wait policy or spin count; the environment is restored after."""
    if "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return load()
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    try:
        return load()
    finally:
        del os.environ["GOMP_SPINCOUNT"]
