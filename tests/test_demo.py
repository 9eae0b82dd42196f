"""The README's main job, examples/demo.py, runs (CI runs it too, before the tests)."""
from __future__ import annotations

import pathlib
import subprocess
import sys

DEMO = pathlib.Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def test_demo_runs():
    out = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LSTM gradients:" in out.stdout
