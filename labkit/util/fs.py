"""Files: writes that leave the old or the new content, never half; checksums; sizes for people."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HASH_CHUNK = 8 * 2**20


def atomic_write_bytes(
    path: Path, data: bytes, *, mode: int | None = None, fsync: bool = False
) -> Path:
    """Replace ``path`` with ``data``: a crash leaves the old file or the new one, never half.

    The temporary file sits beside the target (same filesystem, so ``os.replace`` is atomic),
    is hidden (``.name.<random>.tmp``) and is removed on any failure. ``mode`` sets the
    permissions from the start (a secret is never readable by others, not even for a moment);
    ``fsync`` makes the content durable before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)  # the umask cannot widen it, but an old file's mode must not linger
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str, **kwargs: Any) -> Path:
    """``atomic_write_bytes`` for text (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"), **kwargs)


def atomic_write_json(
    path: Path,
    data: Any,
    *,
    indent: int | None = 1,
    sort_keys: bool = False,
    newline: bool = False,
    **kwargs: Any,
) -> Path:
    """``atomic_write_bytes`` for a JSON document."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys) + ("\n" if newline else "")
    return atomic_write_text(path, text, **kwargs)


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


@contextlib.contextmanager
def file_lock(path: Path, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block: one holder at a time
    across processes on this machine. ``on_wait`` is called once if another holder makes us wait.
    The kernel drops the lock when its holder dies, so a killed holder never leaves it stuck."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
