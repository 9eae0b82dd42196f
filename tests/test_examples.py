"""The examples on real data (``examples/*.py``) run end to end and beat their baselines.

Each runs in its ``--quick`` mode in a subprocess (with a timeout), writes its figures into a
temporary directory, and prints one ``RESULT metric=value baseline=value ...`` line, parsed here.
An example is skipped, with the reason, when a package it needs (its data package, or
matplotlib for the figures) is not installed: ``pip install ".[examples]"`` brings them all.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT_S = 150  # each --quick run takes 15-40 s on a loaded 2-core machine


@dataclass(frozen=True)
class Case:
    script: str
    needs: Tuple[str, ...]       # importable modules (data packages and matplotlib)
    metric: str                  # the RESULT key compared with ``baseline``
    higher_is_better: bool
    figures: Tuple[str, ...]


CASES = [
    Case("forecasting.py", ("statsmodels", "matplotlib"), "test_rmse", False,
         ("forecasting.png", "forecasting_training.png")),
    Case("classification.py", ("aeon", "matplotlib"), "test_accuracy", True,
         ("classification_confusion.png", "classification_training.png")),
    Case("anomaly.py", ("aeon", "matplotlib"), "test_auc", True, ("anomaly.png", "anomaly_training.png")),
    Case("names.py", ("faker", "matplotlib"), "test_accuracy", True,
         ("names_confusion.png", "names_training.png")),
    # the seed's theory: the LSTM learns the adding problem at T = 50 (--quick) where the RNN
    # stays at the variance baseline; its figures are the curves, gradient flow and exploding demo
    Case("adding_problem.py", ("matplotlib",), "lstm_val_mse_T50", False,
         ("adding_curves.png", "adding_gradient_flow.png", "exploding_gradients.png")),
    Case("dates_seq2seq.py", ("babel", "dateutil", "matplotlib"), "exact_match", True,
         ("dates_attention.png", "dates_training.png")),
    Case("char_lm.py", ("matplotlib",), "test_bpc", False, ("char_lm_training.png", "char_lm_surprisal.png")),
]


def parse_result(stdout: str) -> Dict[str, float]:
    """The numeric ``key=value`` pairs of the last line starting with ``RESULT``."""
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line in the output:\n{stdout[-2000:]}"
    return {k: float(v) for k, v in re.findall(r"(\w+)=(-?[0-9.]+(?:e-?\d+)?)", lines[-1])}


def test_parse_result():
    got = parse_result("noise\nRESULT test_rmse=0.965 baseline=2.889 (seasonal naive) time=47.0s\n")
    assert got == {"test_rmse": 0.965, "baseline": 2.889, "time": 47.0}


@pytest.mark.parametrize("case", CASES, ids=[c.script for c in CASES])
def test_example_quick_beats_its_baseline(case: Case, tmp_path: Path):
    missing = [m for m in case.needs if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{case.script} needs {', '.join(missing)} (pip install \".[examples]\")")
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(EXAMPLES_DIR / case.script), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{case.script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    result = parse_result(proc.stdout)
    value, baseline = result[case.metric], result["baseline"]
    if case.higher_is_better:
        assert value > baseline, f"{case.script}: {case.metric}={value} does not beat baseline={baseline}"
    else:
        assert value < baseline, f"{case.script}: {case.metric}={value} does not beat baseline={baseline}"
    for name in case.figures:
        png = tmp_path / name
        assert png.is_file() and png.stat().st_size > 1000, f"{case.script} did not write {name}"
