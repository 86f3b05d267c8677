"""The archive's bytes, streamed from a plan (`iter_tar_bytes`) or written to disk with its
checksums and sidecars (`write_tarball`), the blobs hashed in threads beside the writes.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import queue
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from labkit.errors import ModelError
from labkit.package.manifest import PackedFile, Tarball, write_sidecars
from labkit.package.plan import TarPlan, plan_tarball
from labkit.package.tarformat import TarMember, _header, _padded, _total
from labkit.util.fs import human_bytes
from labkit.util.names import SHA256

# 2 MiB: large enough that per-chunk Python work is noise, small enough that a chunk is still in
# the CPU cache when the second hash and the write read it (measured: 16 MiB is ~20% slower).
CHUNK_SIZE = 2 << 20
MIN_CHUNK_SIZE = 64 << 10
_QUEUE_DEPTH = 4


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

    # An LFS blob is named by the sha256 of its bytes, which the download step checked against the
    # Hub; hashing it again would double the CPU for nothing, and `verify_tarball` re-checks every
    # blob against its name. The archive's own sha256 still covers every byte.
    blob_hashes = {
        m.name: hashlib.sha256()
        for m in plan.members
        if m.source is not None and not SHA256.fullmatch(m.name.rsplit("/", 1)[-1])
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        digest, size = _write_archive(
            tmp, plan, path.name, compression, blob_hashes, chunk_size=chunk_size, progress=progress
        )
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
                for f in plan.files
            ],
        )
        # The sidecars first, the archive last: a tar under its final name is always complete.
        write_sidecars(tarball, plan)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tarball


def _write_archive(
    tmp: Path,
    plan: TarPlan,
    label: str,
    compression: str | None,
    blob_hashes: dict[str, Any],
    *,
    chunk_size: int,
    progress: bool,
) -> tuple[str, int]:
    """Write the archive to the new file ``tmp``, hashing it and the blobs in ``blob_hashes``
    on the way; the sha256 and size of what was written (the .gz file when compressed)."""
    from tqdm.auto import tqdm

    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(open(tmp, "xb", buffering=0))
        bar = stack.enter_context(
            tqdm(
                total=plan.size,
                unit="B",
                unit_scale=True,
                desc=label,
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
        return tar_hash.hexdigest(), plan.size
    return out.sha256.hexdigest(), out.size


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
