"""What pip is pointed at, for the installers that do not read pip's configuration (uv, pip inside
an image build): the local wheel folders (``find-links``)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path


def find_links() -> list[Path]:
    """The existing local folders pip takes wheels from: PIP_FIND_LINKS, then pip's
    configuration's ``find-links``, in that order, each once."""
    values = [os.environ.get("PIP_FIND_LINKS", "")]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
        values += re.findall(r"find-links='([^']*)'", out)
    folders = (Path(item.removeprefix("file://")) for value in values for item in value.split())
    return list(dict.fromkeys(p for p in folders if p.is_absolute() and p.is_dir()))
