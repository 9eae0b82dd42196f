"""``fit`` limits NumPy's BLAS pool to one thread while it runs (rnnkit's kernels own the cores)
and restores it after, also after an error, with concurrent fits, and not with
``RNNKIT_FIT_BLAS_THREADS=default``."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController

from rnnkit import callbacks
from rnnkit._blas import single_threaded_blas
from rnnkit.layers import GRU, Dense
from rnnkit.models import Sequential

BLAS = ThreadpoolController().select(user_api="blas")
pytestmark = pytest.mark.skipif(not BLAS.lib_controllers, reason="no BLAS library that threadpoolctl controls")


def blas_threads() -> int:
    return max(c.num_threads for c in ThreadpoolController().select(user_api="blas").lib_controllers)


@pytest.fixture
def two_blas_threads():
    """NumPy's BLAS at 2 threads for the test (so that a limit to 1 shows), restored after."""
    with BLAS.limit(limits=2):
        yield


def _model():
    m = Sequential([GRU(4, input_shape=(5, 3)), Dense(2)])
    m.compile(optimizer="sgd", loss="mse")
    return m


def test_fit_runs_with_one_blas_thread_and_restores(two_blas_threads):
    seen = []
    m = _model()
    x, y = np.zeros((8, 5, 3), np.float32), np.zeros((8, 2), np.float32)
    m.fit(x, y, epochs=2, verbose=0,
          callbacks=[callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(blas_threads()))])
    assert seen == [1, 1]
    assert blas_threads() == 2


def test_restored_after_an_error(two_blas_threads):
    m = _model()
    with pytest.raises(ValueError):
        m.fit(np.zeros((8, 5, 3), np.float32), np.zeros((7, 2), np.float32), verbose=0)
    assert blas_threads() == 2


def test_concurrent_blocks_lift_the_limit_when_the_last_ends(monkeypatch):
    """The limit is process-wide: the first block sets it, the last one to end lifts it (checked
    on a recording stand-in for threadpoolctl's controller)."""
    from rnnkit import _blas

    events = []

    class Limiter:
        def restore_original_limits(self):
            events.append("restore")

    class Controller:
        lib_controllers = [object()]

        def limit(self, limits):
            events.append(f"limit {limits}")
            return Limiter()

    monkeypatch.setattr(_blas, "_controller", Controller())
    inside, release = threading.Event(), threading.Event()

    def hold():
        with single_threaded_blas():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert inside.wait(10)
    with single_threaded_blas():
        assert events == ["limit 1"]
    assert events == ["limit 1"]        # the other block still runs
    release.set()
    t.join()
    assert events == ["limit 1", "restore"]


def test_env_turns_it_off(two_blas_threads, monkeypatch):
    monkeypatch.setenv("RNNKIT_FIT_BLAS_THREADS", "default")
    with single_threaded_blas():
        assert blas_threads() == 2
