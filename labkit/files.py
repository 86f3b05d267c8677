"""Small helpers the steps share: file checksums, sizes for people, process liveness."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

HASH_CHUNK = 8 * 2**20


def sha256_file(path: Path, *, progress: bool = False) -> str:
    """The sha256 of a file, read in large chunks, with an optional progress bar."""
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    with (
        open(path, "rb", buffering=0) as fh,
        tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            desc=f"sha256 {path.name}",
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def human_bytes(n: float) -> str:
    """A byte count as people read it (decimal units, as disks and S3 consoles show them)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def pid_alive(pid: int) -> bool:
    """Whether a process runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True
