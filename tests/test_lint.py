"""Strict tooling: the package, tests and examples pass ruff (lint and format)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]])
def test_ruff(args):
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is part of the test extras: pip install '.[test]'")
    out = subprocess.run([ruff, *args, "bayesglmm", "tests", "examples"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
