"""Running the `labkit` command as a user does, for the tests of its contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def labkit(
    *args: str,
    input: str | None = None,
    env: dict[str, str | None] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run the venv's `labkit` command; ``env`` adds variables, or removes those it maps to None."""
    full = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(Path(sys.executable).with_name("labkit")), *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
        env={k: v for k, v in full.items() if v is not None},
    )
