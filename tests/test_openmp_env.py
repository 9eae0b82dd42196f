"""rnnkit sets libgomp's spin count only for the OpenMP runtime's start-up, only when the user
chose none, and leaves the environment as it found it."""
from __future__ import annotations

import os

from rnnkit._openmp import SPIN_COUNT, set_spin_before_load


def test_sets_it_for_the_load_only(monkeypatch):
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    seen = set_spin_before_load(lambda: os.environ.get("GOMP_SPINCOUNT"))
    assert seen == SPIN_COUNT
    assert "GOMP_SPINCOUNT" not in os.environ


def test_the_users_choice_wins(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert set_spin_before_load(lambda: os.environ.get("GOMP_SPINCOUNT")) is None
    monkeypatch.setenv("GOMP_SPINCOUNT", "50")
    assert set_spin_before_load(lambda: os.environ.get("GOMP_SPINCOUNT")) == "50"
    assert os.environ["GOMP_SPINCOUNT"] == "50"


def test_restored_when_the_load_fails(monkeypatch):
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)

    def boom():
        raise ImportError("no kernels")

    try:
        set_spin_before_load(boom)
    except ImportError:
        pass
    assert "GOMP_SPINCOUNT" not in os.environ
