"""Resume records: the finished parts of each multipart upload, kept under ``<lab_dir>/uploads``
so that a killed upload continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

from labkit.storage.client import Store
from labkit.util.fs import atomic_write_text
from labkit.util.procs import pid_alive

RECORD_FORMAT = 1


class _Record:
    """Finished parts of one multipart upload: a header line, then one JSON line per part.

    A part's line is appended with a single write() to an O_APPEND file, so a killed process
    leaves the whole line or none of it (a torn last line, after a machine crash, is ignored on
    load), and each part costs one short write: rewriting a whole record after every part would
    write O(parts^2) bytes, gigabytes for a 140 GB model. Rewrites (claim, drop) are atomic
    replaces.
    """

    def __init__(self, path: Path, header: dict[str, Any], parts: dict[int, dict[str, Any]]):
        self.path = path
        self.header = header
        self._parts = parts
        self._lock = threading.Lock()

    @staticmethod
    def path_for(store: Store, key: str, sha: str) -> Path:
        ident = f"{store.endpoint}\n{store.bucket}\n{key}\n{sha}".encode()
        return store.records_dir / f"{hashlib.sha256(ident).hexdigest()[:24]}.jsonl"

    @classmethod
    def create(cls, path: Path, header: dict[str, Any]) -> _Record:
        rec = cls(path, {"format": RECORD_FORMAT, **header}, {})
        rec._rewrite()
        return rec

    @classmethod
    def load(cls, path: Path) -> _Record | None:
        try:
            lines = path.read_text().splitlines()
            header = json.loads(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        if not isinstance(header, dict) or header.get("format") != RECORD_FORMAT:
            return None
        parts: dict[int, dict[str, Any]] = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
                parts[int(entry["part"])] = {
                    "etag": str(entry["etag"]),
                    "size": int(entry["size"]),
                    "sha256": str(entry["sha256"]),
                }
            except (ValueError, KeyError, TypeError):
                continue  # a torn line: that part is simply sent again
        return cls(path, header, parts)

    @property
    def upload_id(self) -> str:
        return str(self.header["upload_id"])

    @property
    def key(self) -> str:
        return str(self.header["key"])

    @property
    def part_size(self) -> int:
        return int(self.header["part_size"])

    @property
    def parts(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return dict(self._parts)

    def active_elsewhere(self) -> int | None:
        """The pid of another live process on this host that owns the upload, else None."""
        pid = self.header.get("pid")
        if self.header.get("host") != socket.gethostname() or not isinstance(pid, int):
            return None
        return pid if pid != os.getpid() and pid_alive(pid) else None

    def claim(self) -> None:
        with self._lock:
            self.header.update(pid=os.getpid(), host=socket.gethostname())
            self._rewrite()

    def add(self, number: int, etag: str, size: int, sha256_b64: str) -> None:
        entry = {"part": number, "etag": etag, "size": size, "sha256": sha256_b64}
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            self._parts[number] = {"etag": etag, "size": size, "sha256": sha256_b64}

    def drop(self, numbers: set[int]) -> None:
        with self._lock:
            for n in numbers:
                self._parts.pop(n, None)
            self._rewrite()

    def _rewrite(self) -> None:
        lines = [json.dumps(self.header, separators=(",", ":"))]
        lines += [
            json.dumps({"part": n, **p}, separators=(",", ":"))
            for n, p in sorted(self._parts.items())
        ]
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


def _records(store: Store) -> list[_Record]:
    found = []
    for path in sorted(store.records_dir.glob("*.jsonl")):
        rec = _Record.load(path)
        if (
            rec is not None
            and rec.header.get("endpoint") == store.endpoint
            and rec.header.get("bucket") == store.bucket
        ):
            found.append(rec)
    return found
