"""How long OpenMP's idle workers spin: set once, just before the kernels' library loads.

After a parallel kernel returns, libgomp's worker threads spin for ``GOMP_SPINCOUNT`` iterations
(300,000 by default, about a millisecond; 30,000 is tens of microseconds) before they sleep. On a machine with few cores those
spinning threads take the cores from whatever the program calls next. ``bench/neighbours.py``
(2 threads, AMD EPYC Zen 4, a 1024^3 sgemm timed right after an rnnkit LSTM forward, against
the same sgemm back to back): NumPy's OpenBLAS **1.69x** slower and ONNX Runtime **1.65x**
slower with the default; with ``GOMP_SPINCOUNT=1000`` 1.02x and 1.06x (torch.mm 1.01x / 0.99x:
it shares the same OpenMP runtime).

rnnkit's own calls, back to back, do gain from spinning: a training step of a small layer starts
several parallel regions (the time loop, then the gradient GEMMs), and a worker that has gone to
sleep must be woken through the kernel (futex) for each. ``bench/ab_builds.py`` (2 threads, ratio
of medians over 4 rounds of alternating processes, above 1: the second setting faster), on the
seed model's shapes:

======================================  =================  =================
workload                                1000 -> 30,000     1000 -> 300,000
======================================  =================  =================
LSTM train (50, 32, 32, 64)             1.09               1.13
LSTM train (50, 32, 64, 32)             -                  1.09
seed model ``fit`` epoch                1.11               1.06
======================================  =================  =================

and the neighbour right after an rnnkit call (``bench/neighbours.py``, same session, ratio to the
neighbour alone): NumPy sgemm 1.01 / **1.05** / 1.58, torch.mm 1.02 / 1.03 / 1.03, ONNX Runtime
1.01 / 1.02 / 1.25 for 1000 / 30,000 / 300,000. **30,000** keeps the neighbours within 5% (the
target is 10%) and recovers most of the back-to-back speed, so that is the value.

:func:`set_spin_before_load` sets ``GOMP_SPINCOUNT=30000`` for the runtime's start-up only when
the user has set neither ``GOMP_SPINCOUNT`` nor ``OMP_WAIT_POLICY``, and restores the
environment after the load, so child processes and later libraries see what the user set. If the
OpenMP runtime was loaded before rnnkit (e.g. by another library), it keeps its settings.
"""
from __future__ import annotations

import os
from typing import Callable, TypeVar

__all__ = ["SPIN_COUNT", "set_spin_before_load"]

#: libgomp's spin count before an idle worker sleeps (see the module's measurements).
SPIN_COUNT = "30000"

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
