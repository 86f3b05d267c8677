"""A packaged snapshot's description: the manifest and sha256 sidecars beside the archive.

The manifest lists every snapshot file with its size, sha256, etag and blob; `verify_tarball`
checks an archive against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.package.plan import TarPlan
from labkit.util.fs import atomic_write_text, human_bytes
from labkit.util.html import esc, table


@dataclass
class PackedFile:
    """A snapshot file as packed: path in the archive, size, sha256, etag and blob path."""

    path: str
    size: int
    sha256: str
    etag: str
    blob: str


@dataclass
class Tarball:
    """A packaged snapshot: the archive, its checksum, manifest and file list."""

    path: Path
    sha256: str
    size: int
    manifest: Path
    sha256_file: Path
    repo_id: str
    revision: str
    compression: str | None
    files: list[PackedFile] = field(default_factory=list)

    def _repr_html_(self) -> str:
        rows = (
            (
                f"<code>{esc(_snapshot_path(f.path))}</code>",
                human_bytes(f.size),
                f"<code>{f.sha256[:12]}…</code>",
            )
            for f in self.files
        )
        files = table(("file", "size", "sha256"), rows, align=("", "right", ""))
        return (
            f"<div><b>{esc(self.path.name)}</b> — {human_bytes(self.size)}, "
            f"sha256 <code>{self.sha256}</code><br>"
            f"{esc(self.repo_id)} @ <code>{self.revision}</code>, "
            f"manifest <code>{esc(self.manifest.name)}</code>"
            f"{files}</div>"
        )


def _manifest(tarball: Tarball, plan: TarPlan) -> dict[str, Any]:
    return {
        "format": 1,
        "repo_id": tarball.repo_id,
        "revision": tarball.revision,
        "tar": tarball.path.name,
        "compression": tarball.compression,
        "sha256": tarball.sha256,
        "size": tarball.size,
        "tar_size": plan.size,
        "refs": plan.refs,
        "files": [
            {"path": f.path, "size": f.size, "sha256": f.sha256, "etag": f.etag, "blob": f.blob}
            for f in tarball.files
        ],
    }


def write_sidecars(tarball: Tarball, plan: TarPlan) -> None:
    """The manifest and the ``.sha256`` file beside the archive, each replaced atomically."""
    atomic_write_text(tarball.manifest, json.dumps(_manifest(tarball, plan), indent=2) + "\n")
    atomic_write_text(tarball.sha256_file, f"{tarball.sha256}  {tarball.path.name}\n")


def _load_manifest(
    path: Path, manifest: Any, errors: list[str], warnings: list[str]
) -> dict[str, Any] | None:
    """The manifest to check against (given, or the one beside the archive); a broken one is an
    error in the report, never an exception."""
    if isinstance(manifest, dict):
        name, data = "manifest", manifest
    else:
        source = (
            Path(manifest) if manifest is not None else path.with_name(path.name + ".manifest.json")
        )
        name = source.name
        try:
            found = source.is_file()
        except (OSError, ValueError):  # a NUL byte or an unreadable folder in the path
            found = False
        if not found:
            if manifest is not None:
                errors.append(f"{name}: manifest not found")
            else:
                warnings.append(f"no {name} beside the archive: per-file checksums not checked")
            return None
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except OSError as exc:
            errors.append(f"{name}: cannot be read ({exc.strerror})")
            return None
        except UnicodeDecodeError:
            errors.append(f"{name}: not UTF-8 text")
            return None
        except json.JSONDecodeError as exc:
            errors.append(f"{name}: not valid JSON ({exc})")
            return None
        except (ValueError, RecursionError):  # integers past Python's digit limit, deep nesting
            errors.append(f"{name}: not valid JSON (too large a number or too deeply nested)")
            return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        errors.append(f"{name}: not a labkit manifest (no 'files' list)")
        return None
    return data


def _snapshot_path(path: str) -> str:
    """The repo path of a snapshot entry (what follows snapshots/<commit>/)."""
    parts = path.split("/")
    return "/".join(parts[3:]) if len(parts) > 3 and parts[1] == "snapshots" else path
