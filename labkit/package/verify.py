"""Checking an archive: its layout as a one-snapshot Hugging Face cache, every blob against the
checksum it is named by, and the archive against its manifest and sha256 sidecar.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.errors import ModelError
from labkit.package.manifest import _load_manifest
from labkit.package.plan import VERSION_TXT
from labkit.package.writer import CHUNK_SIZE
from labkit.util.fs import human_bytes
from labkit.util.html import esc
from labkit.util.names import COMMIT, SHA256


@dataclass
class VerifyReport:
    """The outcome of `verify_tarball`: errors make it fail, warnings do not."""

    path: Path
    ok: bool
    errors: list[str]
    warnings: list[str]
    sha256: str
    size: int
    members: int

    def _repr_html_(self) -> str:
        color, label = ("#1a7f37", "verified") if self.ok else ("#cf222e", "FAILED")
        items = "".join(f"<li>{esc(e)}</li>" for e in self.errors)
        items += "".join(f"<li style='color:#9a6700'>warning: {esc(w)}</li>" for w in self.warnings)
        return (
            f"<div><span style='background:{color};color:white;padding:1px 6px;"
            f"border-radius:3px'>{label}</span> <b>{esc(self.path.name)}</b> — "
            f"{self.members} entries, {human_bytes(self.size)}, sha256 <code>{self.sha256}</code>"
            f"{f'<ul>{items}</ul>' if items else ''}</div>"
        )


def verify_tarball(
    path: str | os.PathLike[str], manifest: str | os.PathLike[str] | dict[str, Any] | None = None
) -> VerifyReport:
    """Check an archive's layout and checksums (and its manifest, by default the one beside it)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"{path} does not exist", "package the model first (write_tarball)")
    errors: list[str] = []
    warnings: list[str] = []
    data = _load_manifest(path, manifest, errors, warnings)

    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    sha256 = digest.hexdigest()

    check = _Checker(errors, warnings)
    try:
        with tarfile.open(path, "r:*") as tf:
            for ti in tf:
                check.member(tf, ti)
    except (tarfile.TarError, EOFError, OSError) as exc:
        errors.append(f"{path.name}: not a readable tar archive ({exc})")
    check.finish()

    if data is not None:
        check.against_manifest(data, path.name, sha256, size)
    _check_sidecar(path, sha256, errors)
    return VerifyReport(path, not errors, errors, warnings, sha256, size, check.count)


def _check_sidecar(path: Path, sha256: str, errors: list[str]) -> None:
    """The ``.sha256`` file beside the archive (``sha256sum``'s line), if there is one."""
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        return
    try:
        recorded = sidecar.read_bytes().decode("ascii").split()
    except OSError as exc:
        errors.append(f"{sidecar.name}: cannot be read ({exc.strerror})")
        return
    except UnicodeDecodeError:
        errors.append(f"{sidecar.name}: not a sha256sum line (holds non-ASCII bytes)")
        return
    said = recorded[0].lower() if recorded else ""
    if said != sha256:
        shown = said[:64] + ("…" if len(said) > 64 else "") if said else "nothing"
        errors.append(f"{path.name}: sha256 is {sha256}, {sidecar.name} says {shown}")


def _shown(value: Any, limit: int = 80) -> str:
    """A manifest value for an error line: one line, at most ``limit`` characters (text as it
    is, anything else as its repr)."""
    text = " ".join((value if isinstance(value, str) else repr(value)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _same(value: Any, expected: Any) -> bool:
    """Equal and of the same type (so that ``true`` is not the size 1, nor ``1.0``)."""
    return type(value) is type(expected) and value == expected


class _Checker:
    """Collects what `verify_tarball` finds while it reads the archive once, member by member."""

    def __init__(self, errors: list[str], warnings: list[str]) -> None:
        self.errors = errors
        self.warnings = warnings
        self.count = 0
        self.repo: set[str] = set()
        self.regular: dict[str, tuple[int, str]] = {}  # name -> (size, sha256)
        self.links: dict[str, str] = {}  # snapshot entry -> resolved target
        self.refs: dict[str, str] = {}
        self.snapshots: set[str] = set()
        self.version_txt = False
        self._seen: set[str] = set()

    def member(self, tf: tarfile.TarFile, ti: tarfile.TarInfo) -> None:
        self.count += 1
        raw = ti.name
        name = raw.removeprefix("./").rstrip("/")
        if name in ("", "."):
            return
        if raw.startswith("/") or re.match(r"[A-Za-z]:[\\/]", raw):
            self.errors.append(f"{raw}: absolute path in the archive")
            return
        if name in self._seen:
            self.errors.append(f"{name}: appears twice; the later entry would win on unpacking")
            return
        self._seen.add(name)
        parts = name.split("/")
        if ".." in parts or "\\" in name:
            self.errors.append(f"{raw}: '..' or a backslash in the path leaves the tree")
            return
        if not (ti.isreg() or ti.isdir() or ti.issym() or ti.islnk()):
            self.errors.append(f"{name}: {_kind(ti)} entries are not allowed in a model archive")
            return
        if ti.issym() or ti.islnk():
            target = self._link_target(name, ti)
            if target is None:
                return
        else:
            target = ""

        if parts[0] == "version.txt" and len(parts) == 1:
            if not ti.isreg():
                self.errors.append("version.txt: not a regular file")
                return
            self.version_txt = True
            content = _read(tf, ti).strip()
            if content != VERSION_TXT:
                self.warnings.append(f"version.txt: holds {content[:20]!r}, expected b'1'")
            return
        if not parts[0].startswith("models--"):
            self.errors.append(
                f"{name}: unexpected top-level entry (only models--* and version.txt)"
            )
            return
        self.repo.add(parts[0])
        if len(parts) == 1:
            if not ti.isdir():
                self.errors.append(f"{name}: not a directory")
            return
        area, rest = parts[1], parts[2:]
        if area == "blobs":
            self._blob(tf, ti, name, rest)
        elif area == "refs":
            if ti.isreg():
                self._ref(tf, ti, name)
            elif not ti.isdir():
                self.errors.append(f"{name}: refs must be regular files")
        elif area == "snapshots":
            self._snapshot(ti, name, rest, target)
        elif len(parts) == 2:
            self.warnings.append(f"{name}: not part of the cache layout (blobs, refs, snapshots)")

    def _link_target(self, name: str, ti: tarfile.TarInfo) -> str | None:
        link = ti.linkname
        if link.startswith("/") or re.match(r"[A-Za-z]:[\\/]", link):
            self.errors.append(f"{name}: link to the absolute path {link}")
            return None
        base = os.path.dirname(name) if ti.issym() else ""
        target = os.path.normpath(os.path.join(base, link.removeprefix("./")))
        kind = "symlink" if ti.issym() else "hard link"
        if target == ".." or target.startswith("../") or target == ".":
            self.errors.append(f"{name}: {kind} to {link} points outside the archive")
            return None
        if ti.islnk() and target not in self.regular:
            self.errors.append(f"{name}: hard link to {link}, which is not a file in the archive")
            return None
        return target

    def _blob(self, tf: tarfile.TarFile, ti: tarfile.TarInfo, name: str, rest: list[str]) -> None:
        if not rest:
            if not ti.isdir():
                self.errors.append(f"{name}: not a directory")
            return
        if len(rest) != 1 or not ti.isreg():
            self.errors.append(f"{name}: blobs/ must hold regular files only")
            return
        etag = rest[0]
        sha256, gitsha1 = _hash_member(tf, ti, git=bool(COMMIT.fullmatch(etag)))
        self.regular[name] = (ti.size, sha256)
        if SHA256.fullmatch(etag) and sha256 != etag:
            self.errors.append(f"{name}: content sha256 is {sha256}, not the sha256 it is named by")
        elif COMMIT.fullmatch(etag) and gitsha1 != etag:
            self.errors.append(
                f"{name}: content git sha1 is {gitsha1}, not the sha1 it is named by"
            )
        elif not (SHA256.fullmatch(etag) or COMMIT.fullmatch(etag)):
            self.warnings.append(f"{name}: blob name is no sha256 or git sha1; content unchecked")

    def _ref(self, tf: tarfile.TarFile, ti: tarfile.TarInfo, name: str) -> None:
        content = _read(tf, ti)
        text = content.decode("ascii", "replace")
        if not COMMIT.fullmatch(text):
            self.errors.append(
                f"{name}: holds {text[:50]!r}, not exactly a 40-hex commit (no newline)"
            )
            return
        self.refs[name] = text

    def _snapshot(self, ti: tarfile.TarInfo, name: str, rest: list[str], target: str) -> None:
        if not rest:
            if not ti.isdir():
                self.errors.append(f"{name}: not a directory")
            return
        if not COMMIT.fullmatch(rest[0]):
            self.errors.append(f"{name}: snapshot folder {rest[0]} is not a 40-hex commit")
            return
        if len(rest) == 1:
            if ti.isdir():
                self.snapshots.add(rest[0])
            else:
                self.errors.append(f"{name}: not a directory")
            return
        if ti.isdir():
            return
        if not ti.issym():
            self.errors.append(f"{name}: a regular file, not a relative symlink into blobs/")
            return
        self.links[name] = target

    def finish(self) -> None:
        if not self.version_txt:
            self.errors.append("version.txt: missing at the archive root")
        if len(self.repo) != 1:
            found = ", ".join(sorted(self.repo)) or "none"
            self.errors.append(f"expected exactly one models--<org>--<name>/ folder, found {found}")
            return
        repo = next(iter(self.repo))
        if not self.snapshots:
            self.errors.append(f"{repo}/snapshots: no snapshot in the archive")
        elif len(self.snapshots) > 1:
            self.warnings.append(f"{repo}/snapshots: {len(self.snapshots)} snapshots, expected one")
        for name, commit in self.refs.items():
            if commit not in self.snapshots:
                self.errors.append(f"{name}: points to {commit}, which has no snapshot here")
        used = set()
        for name, target in self.links.items():
            if not target.startswith(f"{repo}/blobs/") or target.count("/") != 2:
                self.errors.append(f"{name}: link to {target}, not to a blob in {repo}/blobs/")
            elif target not in self.regular:
                self.errors.append(f"{name}: points to {target}, which is not in the archive")
            used.add(target)
        for name in sorted(set(self.regular) - used):
            if name.startswith(f"{repo}/blobs/"):
                self.warnings.append(f"{name}: no snapshot file links to this blob")

    def against_manifest(self, data: dict[str, Any], tar_name: str, sha256: str, size: int) -> None:
        if not _same(data.get("format", 1), 1):
            self.errors.append(
                f"manifest: format {_shown(data.get('format'))}, this labkit reads format 1"
            )
        if not _same(data.get("sha256"), sha256):
            self.errors.append(
                f"{tar_name}: sha256 is {sha256}, the manifest says {_shown(data.get('sha256'))}"
            )
        if not _same(data.get("size"), size):
            self.errors.append(
                f"{tar_name}: {size} bytes, the manifest says {_shown(data.get('size'))}"
            )
        repo_id = data.get("repo_id")
        if not isinstance(repo_id, str):
            self.errors.append(f"manifest: repo_id {_shown(repo_id)} is not a repo id")
        elif self.repo and self.repo != {"models--" + repo_id.replace("/", "--")}:
            self.errors.append(
                f"{tar_name}: holds {', '.join(self.repo)}, the manifest says {_shown(repo_id)}"
            )
        revision = data.get("revision")
        if not isinstance(revision, str) or revision not in self.snapshots:
            self.errors.append(
                f"{tar_name}: no snapshot of the manifest's revision {_shown(revision)}"
            )
        listed = set()
        for entry in data["files"]:
            name = entry.get("path") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                self.errors.append(f"manifest: malformed file entry {_shown(entry)}")
                continue
            if name in listed:
                self.errors.append(f"{_shown(name)}: listed twice in the manifest")
                continue
            listed.add(name)
            self._manifest_entry(name, entry)
        for name in sorted(set(self.links) - listed):
            self.errors.append(f"{name}: in the archive but not listed in the manifest")

    def _manifest_entry(self, name: str, entry: dict[str, Any]) -> None:
        target = self.links.get(name)
        if target is None:
            self.errors.append(
                f"{_shown(name)}: listed in the manifest but not a link in the archive"
            )
            return
        blob = entry.get("blob")
        if blob is not None and not _same(blob, target):
            self.errors.append(f"{name}: links to {target}, the manifest says {_shown(blob)}")
        etag = entry.get("etag")
        if etag is not None and not _same(etag, target.rsplit("/", 1)[-1]):
            self.errors.append(
                f"{name}: blob {target.rsplit('/', 1)[-1]}, the manifest's etag is {_shown(etag)}"
            )
        if target not in self.regular:
            return
        blob_size, blob_sha = self.regular[target]
        if not _same(entry.get("sha256"), blob_sha):
            self.errors.append(
                f"{name}: sha256 is {blob_sha}, the manifest says {_shown(entry.get('sha256'))}"
            )
        if not _same(entry.get("size"), blob_size):
            self.errors.append(
                f"{name}: {blob_size} bytes, the manifest says {_shown(entry.get('size'))}"
            )


def _hash_member(tf: tarfile.TarFile, ti: tarfile.TarInfo, *, git: bool) -> tuple[str, str]:
    """sha256 and (if asked) git blob sha1 of a member's content: the two ways the Hub names blobs."""
    sha256 = hashlib.sha256()
    gitsha1 = hashlib.sha1(b"blob %d\0" % ti.size) if git else None
    fh = tf.extractfile(ti)
    assert fh is not None
    while chunk := fh.read(CHUNK_SIZE):
        sha256.update(chunk)
        if gitsha1 is not None:
            gitsha1.update(chunk)
    return sha256.hexdigest(), gitsha1.hexdigest() if gitsha1 is not None else ""


def _read(tf: tarfile.TarFile, ti: tarfile.TarInfo, limit: int = 4096) -> bytes:
    fh = tf.extractfile(ti)
    return fh.read(limit) if fh is not None else b""


def _kind(ti: tarfile.TarInfo) -> str:
    if ti.ischr() or ti.isblk():
        return "device"
    if ti.isfifo():
        return "fifo"
    return f"type {ti.type!r}"
