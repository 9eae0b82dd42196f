"""pytest configuration shared by the test suite.

Markers are registered here because the suite runs with --strict-markers.
The directory holding this file is on sys.path (rootdir-relative conftest), so test modules can
``import helpers``.
"""
from __future__ import annotations

import os

# Keras picks its backend when first imported: the parity tests use the torch backend (the CI
# installs torch anyway); KERAS_BACKEND in the environment still wins.
os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

import rnnkit


def pytest_configure(config):
    config.addinivalue_line("markers", "torch: compares against PyTorch (skipped without torch)")
    config.addinivalue_line("markers", "threads: changes rnnkit's thread count (restored after)")
    config.addinivalue_line("markers", "keras: compares against Keras 3 (skipped without keras)")
    config.addinivalue_line("markers", "slow: long-running (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "mpi: launches 2 MPI ranks with mpiexec (skipped without mpi4py)")


@pytest.fixture
def rng():
    """A fresh, seeded NumPy generator per test."""
    return np.random.default_rng(20240601)


@pytest.fixture
def restore_threads():
    """Restores rnnkit's thread count after a test that changes it."""
    old = rnnkit.get_num_threads()
    yield old
    rnnkit.set_num_threads(old)
    assert rnnkit.get_num_threads() == old


@pytest.fixture
def one_thread(restore_threads):
    """Runs a test on one thread (tiny problems: fastest, and immune to oversubscription on a
    shared machine)."""
    rnnkit.set_num_threads(1)


@pytest.fixture(scope="session")
def keras():
    """Keras 3 for parity tests (skipped when it, or its backend, is not installed)."""
    k = pytest.importorskip("keras")
    if not k.__version__.startswith("3"):
        pytest.skip(f"needs Keras 3, found {k.__version__}")
    return k
