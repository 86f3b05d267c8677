"""What goes into the archive of one cached snapshot: its members in order and its exact size.

Planning reads the cache's folders and links, never the blobs' contents.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import ModelError
from labkit.package.tarformat import TarMember, _header, _padded, _total
from labkit.util.names import COMMIT

# transformers 4.22-4.x reads <cache>/version.txt at import; if it is missing or below 1 in a
# non-empty cache it warns (offline) or migrates the cache and writes the file (online), which the
# read-only /mnt/models refuses. transformers 5 no longer reads it; one block keeps 4.x quiet.
VERSION_TXT = b"1"
_REPO_ID = re.compile(r"(?:[\w.-]+/)?[\w.-]+")


@dataclass(frozen=True)
class PlannedFile:
    """A snapshot file: its symlink in the archive and the blob it points to."""

    path: str
    blob: str
    etag: str
    size: int


@dataclass(frozen=True)
class TarPlan:
    """Everything that decides the archive's bytes, and the archive's exact size."""

    repo_id: str
    revision: str
    cache_dir: Path
    members: tuple[TarMember, ...]
    refs: dict[str, str]
    size: int

    @property
    def files(self) -> list[PlannedFile]:
        """The snapshot's files, in archive order."""
        blobs = {m.name: m for m in self.members if m.kind == "file"}
        return [
            PlannedFile(m.name, m.blob, m.etag or "", blobs[m.blob].size)
            for m in self.members
            if m.kind == "symlink" and m.blob
        ]

    @property
    def data_size(self) -> int:
        """Bytes of file content (blobs and generated files) in the archive."""
        return sum(m.size for m in self.members if m.kind == "file")


def _folder_name(repo_id: str) -> str:
    """The cache folder name of a model repo: ``models--<org>--<name>``, as huggingface_hub names it."""
    if not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id:
        raise ModelError(
            f"'{repo_id}' is not a Hub model repo id",
            "use 'org/name', e.g. HuggingFaceTB/SmolLM2-135M-Instruct",
        )
    return "models--" + repo_id.replace("/", "--")


def tarball_path(folder: str | os.PathLike[str], repo_id: str, revision: str) -> Path:
    """Where the lab keeps a model's tarball: ``<folder>/<revision[:7]>/<org>--<name>.tar``."""
    _folder_name(repo_id)  # validates the repo id
    return Path(folder) / revision[:7] / (repo_id.replace("/", "--") + ".tar")


def plan_tarball(
    cache_dir: str | os.PathLike[str], repo_id: str, revision: str, *, ref: str | None = "main"
) -> TarPlan:
    """Plan the archive of one cached snapshot (members in order, exact size) without reading blobs."""
    cache = Path(cache_dir).expanduser().absolute()
    folder = _folder_name(repo_id)
    repo = cache / folder
    if not repo.is_dir():
        raise ModelError(
            f"{repo_id} is not in the Hugging Face cache {cache} (no {folder}/ there)",
            "download it first (notebooks/02_download_model.ipynb) or pass the cache_dir it went to",
        )
    commit = _resolve_commit(repo, repo_id, revision)
    snapshot = repo / "snapshots" / commit
    if not snapshot.is_dir():
        present = sorted(p.name for p in (repo / "snapshots").glob("*")) or ["none"]
        raise ModelError(
            f"the cache holds no snapshot {commit} of {repo_id} (snapshots: {', '.join(present)})",
            "download that revision first, or pass the revision the download step pinned",
        )

    members: list[TarMember] = [
        TarMember("version.txt", "file", len(VERSION_TXT), data=VERSION_TXT),
        TarMember(folder, "dir"),
        TarMember(f"{folder}/blobs", "dir"),
        TarMember(f"{folder}/snapshots", "dir"),
        TarMember(f"{folder}/snapshots/{commit}", "dir"),
    ]
    members.extend(_snapshot_members(repo, folder, commit, repo_id))

    refs = _refs_to(repo, commit)
    if not refs and ref is not None:
        # A download pinned to a commit writes no ref, but vLLM and transformers resolve
        # revision=None (and a tokenizer without its own revision) through refs/main. The archive
        # holds nothing but this snapshot, so main can only mean this commit.
        _check_ref_name(ref)
        refs = {ref: commit}
    members.extend(_ref_members(folder, refs))

    members.sort(key=lambda m: m.name.split("/"))
    body = sum(len(_header(m)) + _padded(m.size) for m in members)
    return TarPlan(repo_id, commit, cache, tuple(members), dict(sorted(refs.items())), _total(body))


def _snapshot_members(repo: Path, folder: str, commit: str, repo_id: str) -> list[TarMember]:
    """The snapshot's folders and links (in walk order), then the blobs they link to."""
    members: list[TarMember] = []
    blobs: dict[str, TarMember] = {}
    blobs_dir = os.path.join(repo, "blobs")
    blobs_real = os.path.realpath(blobs_dir)
    n_files = 0
    for rel, entry in _walk(repo / "snapshots" / commit):
        name = f"{folder}/snapshots/{commit}/{rel}"
        if not entry.is_symlink():
            if entry.is_dir(follow_symlinks=False):
                members.append(TarMember(name, "dir"))
                continue
            raise ModelError(
                f"{entry.path} is a regular file, not a link into blobs/: the cache was written "
                "without symlinks",
                "download again on a filesystem with symlinks (Linux or macOS), then package",
            )
        etag = _link_etag(entry, folder, blobs_dir, blobs_real)
        if etag not in blobs:
            blobs[etag] = _blob_member(entry, folder, blobs_dir, etag)
        depth = 2 + rel.count("/")
        members.append(
            TarMember(
                name,
                "symlink",
                linkname="../" * depth + f"blobs/{etag}",
                etag=etag,
                blob=blobs[etag].name,
            )
        )
        n_files += 1
    if not n_files:
        raise ModelError(
            f"the snapshot {commit} of {repo_id} holds no files",
            "run the download again; it was interrupted before any file arrived",
        )
    return [*members, *blobs.values()]


def _link_etag(entry: os.DirEntry[str], folder: str, blobs_dir: str, blobs_real: str) -> str:
    """The blob a snapshot link points to; ModelError for a link outside blobs/ or unfinished."""
    target = os.path.normpath(os.path.join(os.path.dirname(entry.path), os.readlink(entry.path)))
    parent, etag = os.path.split(target)
    if parent != blobs_dir and os.path.realpath(parent) != blobs_real:
        raise ModelError(
            f"{entry.path} points to {target}, outside {folder}/blobs",
            "download the snapshot again with huggingface_hub so every file links into blobs/",
        )
    if etag.startswith(".") or etag.endswith(".incomplete"):
        raise ModelError(
            f"{entry.path} points to an unfinished blob {etag}",
            "run the download again to finish it",
        )
    return etag


def _blob_member(entry: os.DirEntry[str], folder: str, blobs_dir: str, etag: str) -> TarMember:
    """The archive entry of a blob: a regular file (a shared-store blob followed to its file)."""
    source = Path(blobs_dir, etag)
    try:
        st = os.stat(source)  # follows a shared-store blob to its file
    except FileNotFoundError:
        raise ModelError(
            f"{entry.path} points to the missing blob {etag}: the download did not finish",
            "run the download again to complete the snapshot",
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"blob {source} is not a regular file", "delete it and download again")
    return TarMember(f"{folder}/blobs/{etag}", "file", st.st_size, source=source, etag=etag)


def _ref_members(folder: str, refs: dict[str, str]) -> list[TarMember]:
    """The refs/ folders and files (each the commit, no newline); none without refs."""
    if not refs:
        return []
    dirs = {f"{folder}/refs"}
    for name in refs:
        parts = name.split("/")[:-1]
        dirs.update(f"{folder}/refs/{'/'.join(parts[: i + 1])}" for i in range(len(parts)))
    return [
        *(TarMember(d, "dir") for d in dirs),
        *(
            TarMember(f"{folder}/refs/{name}", "file", len(c), data=c.encode())
            for name, c in refs.items()
        ),
    ]


def _resolve_commit(repo: Path, repo_id: str, revision: str) -> str:
    if COMMIT.fullmatch(revision):
        return revision
    _check_ref_name(revision)
    ref = repo / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
        if COMMIT.fullmatch(commit):
            return commit
    raise ModelError(
        f"'{revision}' is neither a 40-hex commit nor a ref in the cache of {repo_id}",
        "pass the full commit the download step pinned (Snapshot.revision)",
    )


def _check_ref_name(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ModelError(f"'{name}' is not a valid ref name", "use a branch or tag name like main")


def _refs_to(repo: Path, commit: str) -> dict[str, str]:
    refs_dir = repo / "refs"
    found: dict[str, str] = {}
    if not refs_dir.is_dir():
        return found
    for p in sorted(refs_dir.rglob("*")):
        if p.is_file() and not p.is_symlink() and not p.name.endswith(".tmp"):
            try:
                text = p.read_text().strip()
            except (OSError, UnicodeDecodeError):
                continue
            if text == commit:
                found[p.relative_to(refs_dir).as_posix()] = commit
    return found


def _walk(root: Path, rel: str = "") -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Entries under ``root`` (parents before children), never following symlinks."""
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        name = rel + entry.name
        yield name, entry
        if not entry.is_symlink() and entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), name + "/")
