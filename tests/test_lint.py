"""ruff (lint and format) over the library, the tests and the notebooks, as pre-commit runs it."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(args):
    ruff = Path(sys.executable).with_name("ruff")
    out = subprocess.run([str(ruff), *args, "."],
                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
