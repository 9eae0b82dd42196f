"""The README's runnable examples (the ```python blocks after a ``<!-- readme-test -->`` line)
run as they are, each in a fresh namespace."""
from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"<!-- readme-test -->\n```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_runnable_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_example_runs(i, capsys):
    # an example of an optional extra (rnnkit.torch, ONNX, .keras files) skips without it
    imported = set(re.findall(r"^\s*(?:import|from)\s+(\w+)", BLOCKS[i], re.M))
    missing = sorted(m for m in imported & {"torch", "onnx", "onnxruntime", "h5py", "keras"}
                     if importlib.util.find_spec(m) is None)
    if missing:
        pytest.skip(f"README example {i} needs {', '.join(missing)}")
    exec(compile(BLOCKS[i], f"README.md example {i}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip()  # every example prints its result
