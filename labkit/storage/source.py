"""What an upload reads: a tarball from step 02 (described by its manifest) or the tar of a cached
snapshot streamed without touching the disk, cut into parts of a fixed size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.errors import StorageError
from labkit.util.fs import atomic_write_json, sha256_file
from labkit.util.names import COMMIT, SHA256


@dataclass
class _Source:
    label: str
    size: int
    sha256: str
    repo_id: str
    revision: str
    compression: str | None
    streamed: bool
    chunks: Callable[[], Iterator[bytes]] | None = None  # a stream (the tar of a snapshot)
    path: Path | None = None  # or a file

    def parts(self, part_size: int) -> Iterator[bytes]:
        """The source as consecutive parts of ``part_size`` bytes (the last one shorter)."""
        if self.path is None:
            assert self.chunks is not None
            yield from _parts(self.chunks(), part_size)
            return
        with open(self.path, "rb", buffering=0) as fh:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while part := _read_exactly(fh, part_size):
                yield part


def _read_exactly(fh: Any, n: int) -> bytes:
    data = fh.read(n)
    if data and len(data) < n:  # an unbuffered read may return less than asked
        rest = [data]
        have = len(data)
        while have < n and (more := fh.read(n - have)):
            rest.append(more)
            have += len(more)
        data = b"".join(rest)
    return data


def _read_manifest(tar: Path) -> dict[str, Any] | None:
    manifest = tar.with_name(tar.name + ".manifest.json")
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StorageError(
            f"{manifest} is not readable JSON ({exc})",
            "write the tarball again with `labkit download --tar`",
        ) from None
    if not isinstance(data, dict) or not all(
        k in data for k in ("repo_id", "revision", "sha256", "size")
    ):
        raise StorageError(
            f"{manifest} is not a labkit tarball manifest",
            "write the tarball again with `labkit download --tar`",
        )
    return data


def _describe_tar(tar: Path) -> tuple[str, str]:
    """Repo id and commit of a plain model tar without a manifest, from its first headers."""
    hint = "keep the .manifest.json that `labkit download --tar` writes beside the tar"
    try:
        with tarfile.open(tar, "r:") as tf:
            for ti in tf:
                parts = ti.name.removeprefix("./").split("/")
                if (
                    len(parts) >= 3
                    and parts[0].startswith("models--")
                    and parts[1] == "snapshots"
                    and COMMIT.fullmatch(parts[2])
                ):
                    return parts[0].removeprefix("models--").replace("--", "/"), parts[2]
    except (tarfile.TarError, OSError) as exc:
        raise StorageError(f"{tar} is not a readable plain tar ({exc})", hint) from None
    raise StorageError(f"{tar} holds no models--<org>--<name>/snapshots/<commit>/", hint)


def _file_source(tar: Path, *, progress: bool) -> _Source:
    tar = Path(tar).expanduser()
    if not tar.is_file():
        raise StorageError(
            f"{tar} does not exist", "write it with `labkit download REPO --tar PATH` first"
        )
    size = tar.stat().st_size
    manifest = _read_manifest(tar)
    if manifest is not None:
        if manifest["size"] != size:
            raise StorageError(
                f"{tar} has {size} bytes, its manifest says {manifest['size']}",
                "the tar is incomplete or changed: write it again with `labkit download --tar`",
            )
        repo_id, revision, sha = manifest["repo_id"], manifest["revision"], manifest["sha256"]
        compression = manifest.get("compression")
    else:
        if tar.name.endswith((".gz", ".tgz")):
            raise StorageError(
                f"{tar} has no manifest beside it ({tar.name}.manifest.json)",
                "keep the manifest that `labkit download --tar` writes beside the tar",
            )
        repo_id, revision = _describe_tar(tar)
        sha, compression = sha256_file(tar, progress=progress), None
    if not isinstance(sha, str) or not SHA256.fullmatch(sha):
        raise StorageError(f"the manifest of {tar} has no valid sha256", "write the tar again")
    return _Source(str(tar), size, sha, repo_id, revision, compression, False, path=tar)


def resolve_snapshot(path: str | Path, revision: str | None = None) -> tuple[Path, str, str]:
    """(cache dir, repo id, revision) of ``<cache>/models--org--name/snapshots/<commit>`` (or the repo folder)."""
    path = Path(path).expanduser().absolute()
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        if revision and revision != path.name:
            raise StorageError(
                f"{path} is the snapshot {path.name}, not {revision}",
                "pass the snapshot folder of that revision, or leave --revision out",
            )
        repo_folder, revision = path.parent.parent, path.name
    elif path.name.startswith("models--"):
        repo_folder, revision = path, revision or "main"
    else:
        raise StorageError(
            f"{path} is no snapshot of a Hugging Face cache",
            "pass the snapshot_dir that `labkit download --json` prints "
            "(<cache>/models--<org>--<name>/snapshots/<commit>)",
        )
    repo_id = repo_folder.name.removeprefix("models--").replace("--", "/")
    return repo_folder.parent, repo_id, revision


def _snapshot_source(
    snapshot: str | Path, revision: str | None, records_dir: Path, *, progress: bool
) -> _Source:
    from labkit import package

    cache_dir, repo_id, rev = resolve_snapshot(snapshot, revision)
    plan = package.plan_tarball(cache_dir, repo_id, rev)

    def chunks() -> Iterator[bytes]:
        return package.iter_tar_bytes(plan)

    sha = _planned_sha256(plan, chunks, records_dir, progress=progress)
    label = f"{plan.repo_id}@{plan.revision[:7]} (streamed)"
    return _Source(label, plan.size, sha, plan.repo_id, plan.revision, None, True, chunks)


def _planned_sha256(
    plan: Any, chunks: Callable[[], Iterator[bytes]], records_dir: Path, *, progress: bool
) -> str:
    """The sha256 of the planned tar, hashed once and remembered while the cache is unchanged.

    The object's metadata must carry the sha256 before the upload starts, and streaming writes
    no tar to hash, so the stream is read once more, without writing anything, to hash it.
    """
    from tqdm.auto import tqdm

    identity = [plan.repo_id, plan.revision, plan.size, sorted(plan.refs.items())]
    for m in plan.members:
        item: list[Any] = [m.name, m.kind, m.size, m.linkname]
        if m.source is not None:
            st = os.stat(m.source)
            item += [st.st_ino, st.st_mtime_ns]
        identity.append(item)
    fingerprint = hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()
    memo = records_dir / "tar-sha256" / f"{fingerprint}.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        data = json.loads(memo.read_text())
        if data["size"] == plan.size and SHA256.fullmatch(data["sha256"]):
            return str(data["sha256"])
    digest = hashlib.sha256()
    with tqdm(
        total=plan.size,
        unit="B",
        unit_scale=True,
        desc="sha256 of the tar",
        disable=not progress,
        leave=False,
    ) as bar:
        for chunk in chunks():
            digest.update(chunk)
            bar.update(len(chunk))
    sha = digest.hexdigest()
    atomic_write_json(memo, {"repo_id": plan.repo_id, "size": plan.size, "sha256": sha})
    return sha


def _forget_planned_sha256(records_dir: Path, sha: str) -> None:
    for memo in (records_dir / "tar-sha256").glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            if json.loads(memo.read_text()).get("sha256") == sha:
                memo.unlink()


def _parts(chunks: Iterator[bytes], part_size: int) -> Iterator[bytes]:
    """Regroup a byte stream into parts of exactly ``part_size`` (the last one shorter)."""
    pending: list[bytes] = []
    have = 0
    for chunk in chunks:
        while chunk:
            take = min(len(chunk), part_size - have)
            pending.append(chunk[:take] if take < len(chunk) else chunk)
            chunk = chunk[take:] if take < len(chunk) else b""
            have += take
            if have == part_size:
                yield pending[0] if len(pending) == 1 else b"".join(pending)
                pending, have = [], 0
    if have:
        yield b"".join(pending)


class _SourceChanged(StorageError):
    """The bytes read differ from the sha256 the upload was started for."""


def _content_type(source: _Source) -> str:
    return "application/gzip" if source.compression == "gz" else "application/x-tar"
