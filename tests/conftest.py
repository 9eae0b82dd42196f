"""pytest configuration shared by the test suite.

Markers are registered here because the suite runs with --strict-markers.
The directory holding this file is on sys.path (rootdir-relative conftest), so test modules can
``import helpers``.
"""
from __future__ import annotations

import numpy as np
import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "torch: compares against PyTorch (skipped without torch)")
    config.addinivalue_line("markers", "threads: changes rnnkit's thread count (restored after)")


@pytest.fixture
def rng():
    """A fresh, seeded NumPy generator per test."""
    return np.random.default_rng(20240601)
