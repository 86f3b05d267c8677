"""Package one pinned snapshot of a Hugging Face cache as the tarball AI Core unpacks into /mnt/models.

The archive is a Hugging Face cache holding exactly one snapshot, so vLLM finds the model with
HF_HUB_CACHE=/mnt/models and HF_HUB_OFFLINE=1:

    models--<org>--<name>/blobs/<etag>            file contents, named as the Hub names them
    models--<org>--<name>/refs/<ref>              the 40-hex commit, no newline (as huggingface_hub writes it)
    models--<org>--<name>/snapshots/<commit>/...  relative symlinks into ../../blobs
    version.txt                                   "1", the transformers cache-format marker

The bytes are a pure function of the snapshot: one generator (`iter_tar_bytes`) produces them,
`write_tarball` writes them to disk, and a later step can stream the same bytes to S3.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import html
import json
import os
import queue
import re
import secrets
import shutil
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from labkit.errors import ModelError
from labkit.util.fs import human_bytes

# 2 MiB: large enough that per-chunk Python work is noise, small enough that a chunk is still in
# the CPU cache when the second hash and the write read it (measured: 16 MiB is ~20% slower).
CHUNK_SIZE = 2 << 20
MIN_CHUNK_SIZE = 64 << 10
# 1980-01-01T00:00:00Z, the floor reproducible builds use for wheels: fixed, and unlike 0 a time
# every archive format can hold (zip cannot store anything earlier).
MTIME = 315532800
# transformers 4.22-4.x reads <cache>/version.txt at import; if it is missing or below 1 in a
# non-empty cache it warns (offline) or migrates the cache and writes the file (online), which the
# read-only /mnt/models refuses. transformers 5 no longer reads it; one block keeps 4.x quiet.
VERSION_TXT = b"1"
BLOCK = 512
# GNU tar and Python's tarfile pad the archive to whole 10 KiB records; so do we.
RECORD = 20 * BLOCK
_QUEUE_DEPTH = 4

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REPO_ID = re.compile(r"(?:[\w.-]+/)?[\w.-]+")
_MODES = {"dir": 0o755, "file": 0o644, "symlink": 0o777}
_TYPEFLAGS = {"file": b"0", "symlink": b"2", "dir": b"5"}

Kind = Literal["dir", "file", "symlink"]


@dataclass(frozen=True)
class TarMember:
    """One archive entry: a directory, a file (a blob or generated text) or a symlink."""

    name: str
    kind: Kind
    size: int = 0
    linkname: str = ""
    source: Path | None = None
    data: bytes | None = None
    etag: str | None = None
    blob: str | None = None


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
        rows = "".join(
            f"<tr><td><code>{html.escape(_snapshot_path(f.path))}</code></td>"
            f"<td style='text-align:right'>{human_bytes(f.size)}</td>"
            f"<td><code>{f.sha256[:12]}…</code></td></tr>"
            for f in self.files
        )
        return (
            f"<div><b>{html.escape(self.path.name)}</b> — {human_bytes(self.size)}, "
            f"sha256 <code>{self.sha256}</code><br>"
            f"{html.escape(self.repo_id)} @ <code>{self.revision}</code>, "
            f"manifest <code>{html.escape(self.manifest.name)}</code>"
            f"<table><tr><th>file</th><th>size</th><th>sha256</th></tr>{rows}</table></div>"
        )


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
        items = "".join(f"<li>{html.escape(e)}</li>" for e in self.errors)
        items += "".join(
            f"<li style='color:#9a6700'>warning: {html.escape(w)}</li>" for w in self.warnings
        )
        return (
            f"<div><span style='background:{color};color:white;padding:1px 6px;"
            f"border-radius:3px'>{label}</span> <b>{html.escape(self.path.name)}</b> — "
            f"{self.members} entries, {human_bytes(self.size)}, sha256 <code>{self.sha256}</code>"
            f"{f'<ul>{items}</ul>' if items else ''}</div>"
        )


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
    blobs: dict[str, TarMember] = {}
    blobs_dir = os.path.join(repo, "blobs")
    blobs_real = os.path.realpath(blobs_dir)
    n_files = 0
    for rel, entry in _walk(snapshot):
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
        target = os.path.normpath(
            os.path.join(os.path.dirname(entry.path), os.readlink(entry.path))
        )
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
        if etag not in blobs:
            source = Path(blobs_dir, etag)
            try:
                st = os.stat(source)  # follows a shared-store blob to its file
            except FileNotFoundError:
                raise ModelError(
                    f"{entry.path} points to the missing blob {etag}: the download did not finish",
                    "run the download again to complete the snapshot",
                ) from None
            if not stat.S_ISREG(st.st_mode):
                raise ModelError(
                    f"blob {source} is not a regular file", "delete it and download again"
                )
            blobs[etag] = TarMember(
                f"{folder}/blobs/{etag}", "file", st.st_size, source=source, etag=etag
            )
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
    members.extend(blobs.values())

    refs = _refs_to(repo, commit)
    if not refs and ref is not None:
        # A download pinned to a commit writes no ref, but vLLM and transformers resolve
        # revision=None (and a tokenizer without its own revision) through refs/main. The archive
        # holds nothing but this snapshot, so main can only mean this commit.
        _check_ref_name(ref)
        refs = {ref: commit}
    if refs:
        dirs = {f"{folder}/refs"}
        for name in refs:
            parts = name.split("/")[:-1]
            dirs.update(f"{folder}/refs/{'/'.join(parts[: i + 1])}" for i in range(len(parts)))
        members.extend(TarMember(d, "dir") for d in dirs)
        members.extend(
            TarMember(f"{folder}/refs/{name}", "file", len(c), data=c.encode())
            for name, c in refs.items()
        )

    members.sort(key=lambda m: m.name.split("/"))
    body = sum(len(_header(m)) + _padded(m.size) for m in members)
    return TarPlan(repo_id, commit, cache, tuple(members), dict(sorted(refs.items())), _total(body))


def iter_tar_bytes(plan: TarPlan, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The archive's bytes in chunks of at most ``chunk_size`` (>= 64 KiB), ``plan.size`` in all."""
    for _member, chunk in _pieces(plan, chunk_size):
        yield chunk


def write_tarball(
    cache_dir: str | os.PathLike[str],
    repo_id: str,
    revision: str,
    dest: str | os.PathLike[str],
    *,
    compression: Literal["gz"] | None = None,
    progress: bool = True,
    ref: str | None = "main",
    chunk_size: int = CHUNK_SIZE,
) -> Tarball:
    """Write the snapshot's archive to ``dest`` (a file name, or a folder for the default name)."""
    if compression not in (None, "gz"):
        raise ModelError(
            f"unknown compression '{compression}'", "pass compression=None (plain .tar) or 'gz'"
        )
    plan = plan_tarball(cache_dir, repo_id, revision, ref=ref)
    path = destination(dest, repo_id, compression)
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if free < plan.size:
        raise ModelError(
            f"{path.parent} has {human_bytes(free)} free, the archive needs {human_bytes(plan.size)}",
            "free some space or choose another destination",
        )

    from tqdm.auto import tqdm

    # An LFS blob is named by the sha256 of its bytes, which the download step checked against the
    # Hub; hashing it again would double the CPU for nothing, and `verify_tarball` re-checks every
    # blob against its name. The archive's own sha256 still covers every byte.
    blob_hashes = {
        m.name: hashlib.sha256()
        for m in plan.members
        if m.source is not None and not _HEX64.fullmatch(m.name.rsplit("/", 1)[-1])
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        with contextlib.ExitStack() as stack:
            raw = stack.enter_context(open(tmp, "xb", buffering=0))
            bar = stack.enter_context(
                tqdm(
                    total=plan.size,
                    unit="B",
                    unit_scale=True,
                    desc=path.name,
                    disable=not progress,
                    leave=False,
                )
            )
            tar_hash = hashlib.sha256()
            out: _HashingWriter | None = None
            sink: Any = raw
            if compression is not None:
                out = _HashingWriter(raw)
                # No file name and mtime 0 in the gzip header, so the bytes depend on content
                # only. Entered last, so it is closed (trailer written) before the file.
                sink = stack.enter_context(
                    gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=6, mtime=0)
                )

            def hash_file(member: TarMember | None, chunk: bytes) -> None:
                if member is not None and member.name in blob_hashes:
                    blob_hashes[member.name].update(chunk)

            hashers = [_Hasher(hash_file)]
            if out is None:
                hashers.append(_Hasher(lambda _member, chunk: tar_hash.update(chunk)))
            try:
                for member, chunk in _pieces(plan, chunk_size):
                    for hasher in hashers:
                        hasher.put(member, chunk)
                    _write_all(sink, chunk)
                    bar.update(len(chunk))
            finally:
                for hasher in hashers:
                    hasher.close()
            if out is None and raw.tell() != plan.size:
                raise RuntimeError(f"wrote {raw.tell()} bytes, planned {plan.size}")
        if out is None:
            digest, size = tar_hash.hexdigest(), plan.size
        else:
            digest, size = out.sha256.hexdigest(), out.size

        links = plan.files
        tarball = Tarball(
            path=path,
            sha256=digest,
            size=size,
            manifest=path.with_name(path.name + ".manifest.json"),
            sha256_file=path.with_name(path.name + ".sha256"),
            repo_id=plan.repo_id,
            revision=plan.revision,
            compression=compression,
            files=[
                PackedFile(
                    f.path,
                    f.size,
                    blob_hashes[f.blob].hexdigest() if f.blob in blob_hashes else f.etag,
                    f.etag,
                    f.blob,
                )
                for f in links
            ],
        )
        manifest = _manifest(tarball, plan)
        # The sidecars first, the archive last: a tar under its final name is always complete.
        _write_atomic(tarball.manifest, json.dumps(manifest, indent=2) + "\n")
        _write_atomic(tarball.sha256_file, f"{digest}  {path.name}\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tarball


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
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        recorded = sidecar.read_text().split()
        if not recorded or recorded[0] != sha256:
            errors.append(
                f"{path.name}: sha256 is {sha256}, {sidecar.name} says "
                f"{recorded[0] if recorded else 'nothing'}"
            )
    return VerifyReport(path, not errors, errors, warnings, sha256, size, check.count)


def tar_tree(path: str | os.PathLike[str]) -> str:
    """A short tree listing of an archive: blobs summarised, each snapshot file with its size."""
    path = Path(path).expanduser()
    entries: dict[str, tarfile.TarInfo] = {}
    refs: dict[str, str] = {}
    with tarfile.open(path, "r:*") as tf:
        for ti in tf:
            name = ti.name.removeprefix("./").rstrip("/")
            entries[name] = ti
            if ti.isreg() and "/refs/" in name:
                refs[name] = _read(tf, ti, 64).decode("ascii", "replace")
    tree: dict[str, Any] = {}
    for name in sorted(entries, key=lambda n: n.split("/")):
        node = tree
        for part in name.split("/"):
            node = node.setdefault(part, {})

    def label(name: str, node: dict[str, Any]) -> str:
        ti = entries.get(name)
        base = name.rsplit("/", 1)[-1]
        if name.count("/") == 1 and base == "blobs" and node:
            total = sum(entries[f"{name}/{b}"].size for b in node if f"{name}/{b}" in entries)
            count = len(node)
            node.clear()  # one summary line instead of a line per blob
            return f"blobs/  ({count} files, {human_bytes(total)})"
        if ti is None or ti.isdir():
            return base + "/"
        if ti.issym():
            blob = entries.get(os.path.normpath(os.path.join(os.path.dirname(name), ti.linkname)))
            extra = f"({human_bytes(blob.size)})" if blob is not None else "(missing!)"
            return f"{base} -> {_short_link(ti.linkname)}  {extra}"
        if name in refs:
            return f"{base} = {refs[name]}"
        return f"{base}  ({human_bytes(ti.size)})"

    lines = [f"{path.name}  ({human_bytes(path.stat().st_size)}, {len(entries)} entries)"]

    def walk(node: dict[str, Any], prefix: str, parent: str) -> None:
        items = list(node.items())
        for i, (part, child) in enumerate(items):
            name = f"{parent}/{part}" if parent else part
            last = i == len(items) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{label(name, child)}")
            walk(child, prefix + ("    " if last else "│   "), name)

    walk(tree, "", "")
    return "\n".join(lines)


def _resolve_commit(repo: Path, repo_id: str, revision: str) -> str:
    if _HEX40.fullmatch(revision):
        return revision
    _check_ref_name(revision)
    ref = repo / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
        if _HEX40.fullmatch(commit):
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


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _total(body: int) -> int:
    """Archive size: the members, two zero blocks, padded to whole records."""
    return -(-(body + 2 * BLOCK) // RECORD) * RECORD


def _header(m: TarMember) -> bytes:
    """The member's header: a ustar block, after a pax block when a field does not fit ustar."""
    name = m.name + "/" if m.kind == "dir" else m.name
    pax: dict[str, str] = {}
    name_b = name.encode()
    if len(name_b) > 100 or not name.isascii():
        pax["path"] = name
        name_b = name.encode("ascii", "replace")[:100]
    link_b = m.linkname.encode()
    if len(link_b) > 100 or not m.linkname.isascii():
        pax["linkpath"] = m.linkname
        link_b = m.linkname.encode("ascii", "replace")[:100]
    size = m.size
    if size >= 8**11:  # 8 GiB: the ustar size field's limit
        pax["size"] = str(size)
        size = 0
    header = _ustar(name_b, _MODES[m.kind], MTIME, size, _TYPEFLAGS[m.kind], link_b)
    if not pax:
        return header
    records = b"".join(_pax_record(k, v) for k, v in pax.items())  # path, linkpath, size
    # Exactly the block Python's tarfile writes: a fixed name, mode and mtime 0 (GNU tar's
    # default name embeds the process id, which would make the bytes vary).
    ext = _ustar(b"././@PaxHeader", 0, 0, len(records), b"x", b"")
    return ext + records + bytes(_padded(len(records)) - len(records)) + header


def _ustar(
    name: bytes, mode: int, mtime: int, size: int, typeflag: bytes, linkname: bytes
) -> bytes:
    buf = b"".join(
        (
            name.ljust(100, b"\0"),
            b"%07o\0" % mode,
            b"%07o\0" % 0,  # uid
            b"%07o\0" % 0,  # gid
            b"%011o\0" % size,
            b"%011o\0" % mtime,
            b" " * 8,  # checksum, computed over the header with this field as spaces
            typeflag,
            linkname.ljust(100, b"\0"),
            b"ustar\x0000",
            bytes(32),  # uname: empty, so nothing of the packing machine leaks in
            bytes(32),  # gname
            bytes(16),  # devmajor, devminor: empty for anything but a device (as GNU tar does)
            bytes(155),  # prefix: unused, long names go to a pax record instead
            bytes(12),
        )
    )
    return buf[:148] + b"%06o\0 " % sum(buf) + buf[156:]


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _pieces(plan: TarPlan, chunk_size: int) -> Iterator[tuple[TarMember | None, bytes]]:
    """The archive as (member whose content this is, or None for headers and padding, bytes)."""
    # Headers (with pax records at most a few KiB) are yielded whole.
    if chunk_size < MIN_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be at least {MIN_CHUNK_SIZE} bytes")
    emitted = 0
    for m in plan.members:
        header = _header(m)
        emitted += len(header)
        yield None, header
        if m.kind != "file":
            continue
        if m.data is not None:
            yield m, m.data
        else:
            yield from _blob_chunks(m, chunk_size)
        emitted += m.size
        if pad := _padded(m.size) - m.size:
            emitted += pad
            yield None, bytes(pad)
    trailer = _total(emitted) - emitted
    if emitted + trailer != plan.size:
        raise RuntimeError(f"archive came to {emitted + trailer} bytes, planned {plan.size}")
    yield None, bytes(trailer)


def _blob_chunks(m: TarMember, chunk_size: int) -> Iterator[tuple[TarMember, bytes]]:
    assert m.source is not None
    with open(m.source, "rb", buffering=0) as fh:
        if os.fstat(fh.fileno()).st_size != m.size:
            raise ModelError(
                f"{m.source} changed size since the archive was planned",
                "make sure no download is writing to the cache, then package again",
            )
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        left = m.size
        while left:
            chunk = fh.read(min(chunk_size, left))
            if not chunk:
                raise ModelError(
                    f"{m.source} got shorter while it was being packed",
                    "make sure no download is writing to the cache, then package again",
                )
            left -= len(chunk)
            yield m, chunk


class _Hasher:
    """Hashes chunks in order in a thread of its own. hashlib releases the GIL, so with one
    thread for the archive's sha256 and one for the files' sha256s, both overlap with the main
    thread's reads and writes instead of adding to them."""

    def __init__(self, update: Callable[[TarMember | None, bytes], None]) -> None:
        self._update = update
        self._error: BaseException | None = None
        self._queue: queue.Queue[tuple[TarMember | None, bytes] | None] = queue.Queue(_QUEUE_DEPTH)
        self._thread = threading.Thread(target=self._run, name="labkit-package-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Keeps draining after a failure, so the writer never blocks on a full queue.
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._update(*item)
                except BaseException as exc:
                    self._error = exc

    def put(self, member: TarMember | None, chunk: bytes) -> None:
        self._queue.put((member, chunk))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through it (the .gz output)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        _write_all(self.raw, data)
        return len(data)

    def flush(self) -> None:
        pass


def _write_all(sink: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = sink.write(view)
        if n is None:  # a buffered writer takes everything
            return
        view = view[n:]


def destination(dest: str | os.PathLike[str], repo_id: str, compression: str | None = None) -> Path:
    """The tarball's file name for ``dest`` (a folder gets ``<org>--<name>.tar``); refuses a name that lies."""
    dest = Path(dest).expanduser()
    suffix = ".tar" if compression is None else ".tar.gz"
    if dest.is_dir():
        return dest / (repo_id.replace("/", "--") + suffix)
    name = dest.name
    is_gz = name.endswith((".tar.gz", ".tgz"))
    if compression is None and not name.endswith(".tar"):
        hint = (
            "pass compression='gz' to write a gzip archive"
            if is_gz
            else f"name it {name}.tar (an uncompressed tar)"
        )
        raise ModelError(f"'{name}' does not end in .tar, but the archive is a plain tar", hint)
    if compression == "gz" and not is_gz:
        raise ModelError(
            f"'{name}' does not end in .tar.gz or .tgz, but the archive is gzip-compressed",
            f"name it {name.removesuffix('.tar')}.tar.gz, or pass compression=None",
        )
    return dest


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


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load_manifest(
    path: Path, manifest: Any, errors: list[str], warnings: list[str]
) -> dict[str, Any] | None:
    if isinstance(manifest, dict):
        return manifest
    source = (
        Path(manifest) if manifest is not None else path.with_name(path.name + ".manifest.json")
    )
    if not source.is_file():
        if manifest is not None:
            errors.append(f"{source.name}: manifest not found")
        else:
            warnings.append(f"no {source.name} beside the archive: per-file checksums not checked")
        return None
    try:
        data = json.loads(source.read_text())
    except json.JSONDecodeError as exc:
        errors.append(f"{source.name}: not valid JSON ({exc})")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        errors.append(f"{source.name}: not a labkit manifest (no 'files' list)")
        return None
    return data


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
        sha256, gitsha1 = _hash_member(tf, ti, git=bool(_HEX40.fullmatch(etag)))
        self.regular[name] = (ti.size, sha256)
        if _HEX64.fullmatch(etag) and sha256 != etag:
            self.errors.append(f"{name}: content sha256 is {sha256}, not the sha256 it is named by")
        elif _HEX40.fullmatch(etag) and gitsha1 != etag:
            self.errors.append(
                f"{name}: content git sha1 is {gitsha1}, not the sha1 it is named by"
            )
        elif not (_HEX64.fullmatch(etag) or _HEX40.fullmatch(etag)):
            self.warnings.append(f"{name}: blob name is no sha256 or git sha1; content unchecked")

    def _ref(self, tf: tarfile.TarFile, ti: tarfile.TarInfo, name: str) -> None:
        content = _read(tf, ti)
        text = content.decode("ascii", "replace")
        if not _HEX40.fullmatch(text):
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
        if not _HEX40.fullmatch(rest[0]):
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
        if data.get("sha256") != sha256:
            self.errors.append(
                f"{tar_name}: sha256 is {sha256}, the manifest says {data.get('sha256')}"
            )
        if data.get("size") != size:
            self.errors.append(f"{tar_name}: {size} bytes, the manifest says {data.get('size')}")
        repo_id = data.get("repo_id")
        if (
            isinstance(repo_id, str)
            and self.repo
            and self.repo != {"models--" + repo_id.replace("/", "--")}
        ):
            self.errors.append(
                f"{tar_name}: holds {', '.join(self.repo)}, the manifest says {repo_id}"
            )
        if data.get("revision") not in self.snapshots:
            self.errors.append(
                f"{tar_name}: no snapshot of the manifest's revision {data.get('revision')}"
            )
        listed = set()
        for entry in data["files"]:
            name = entry.get("path") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                self.errors.append(f"manifest: malformed file entry {entry!r}")
                continue
            listed.add(name)
            target = self.links.get(name)
            if target is None:
                self.errors.append(f"{name}: listed in the manifest but not a link in the archive")
                continue
            if entry.get("blob") not in (None, target):
                self.errors.append(
                    f"{name}: links to {target}, the manifest says {entry.get('blob')}"
                )
            if target not in self.regular:
                continue
            blob_size, blob_sha = self.regular[target]
            if entry.get("sha256") != blob_sha:
                self.errors.append(
                    f"{name}: sha256 is {blob_sha}, the manifest says {entry.get('sha256')}"
                )
            if entry.get("size") != blob_size:
                self.errors.append(
                    f"{name}: {blob_size} bytes, the manifest says {entry.get('size')}"
                )
        for name in sorted(set(self.links) - listed):
            self.errors.append(f"{name}: in the archive but not listed in the manifest")


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


def _snapshot_path(path: str) -> str:
    """The repo path of a snapshot entry (what follows snapshots/<commit>/)."""
    parts = path.split("/")
    return "/".join(parts[3:]) if len(parts) > 3 and parts[1] == "snapshots" else path


def _short_link(link: str) -> str:
    head, _, etag = link.rpartition("/")
    return f"{head}/{etag[:12]}…" if len(etag) > 16 else link
