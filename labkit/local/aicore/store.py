"""The local AI Core's persisted state, which every area shares under one lock.

State lives under ``--state-dir``: ``state.json`` (no secrets) and ``secrets.json`` (0600), both
rewritten atomically (and fsynced) on every change, plus each deployment's log and models dir
(``deployments/<id>``). A state file that cannot be read stops the server rather than start
over empty.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from labkit.local.aicore.common import missing
from labkit.util.fs import atomic_write_json

STATE_FORMAT = 1


def write_json_atomic(path: Path, data: Any, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, never half."""
    atomic_write_json(path, data, indent=1, sort_keys=True, mode=mode, fsync=True)


def _empty_state() -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "resourceGroups": {},
        "repositories": {},
        "applications": {},
        "scenarios": {},
        "executables": {},
        "templates": {},
        "objectStoreSecrets": {},
        "dockerRegistrySecrets": {},
        "artifacts": {},
        "configurations": {},
        "deployments": {},
    }


class Store:
    """The AI Core's objects on disk: ``state.json`` (no secrets) and ``secrets.json`` (0600)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        self.lock = threading.RLock()
        self.data = _empty_state()
        self.data.update(self._load("state.json"))
        self.secrets: dict[str, Any] = {"objectStore": {}, "dockerRegistry": {}}
        self.secrets.update(self._load("secrets.json"))

    def _load(self, name: str) -> dict[str, Any]:
        path = self.root / name
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            # Never start over silently: the objects (and deployments) would vanish.
            raise SystemExit(
                f"aicore: cannot read {path} ({exc}); move it away to start empty"
            ) from None
        return data if isinstance(data, dict) else {}

    def save(self) -> None:
        with self.lock:
            write_json_atomic(self.root / "state.json", self.data)

    def save_secrets(self) -> None:
        with self.lock:
            write_json_atomic(self.root / "secrets.json", self.secrets, 0o600)

    def in_group(self, kind: str, group: str) -> dict[str, Any]:
        """The objects of one kind in one resource group (created on first use)."""
        return self.data[kind].setdefault(group, {})

    def copies(self, kind: str) -> list[dict[str, Any]]:
        """Copies of all objects of one kind (keyed by name or id, not by resource group)."""
        with self.lock:
            return [dict(o) for o in self.data[kind].values()]

    def copy_of(self, kind: str, key: str, what: str) -> dict[str, Any]:
        """A copy of one object of one kind, or the 404 that names ``what``."""
        with self.lock:
            found = self.data[kind].get(key)
            if found is None:
                raise missing(what)
            return dict(found)

    def work_dir(self, dep_id: str) -> Path:
        """A deployment's files: its log, its models dir and the storage phase's download."""
        return self.root / "deployments" / dep_id
