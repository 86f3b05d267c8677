"""Uploads of a model tarball (a file or a streamed snapshot) under the key convention: an
identical object is kept, a small one goes in one request, a larger one in resumable parts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labkit.errors import StorageError
from labkit.storage.client import DEFAULT_CONCURRENCY, Store, _head
from labkit.storage.multipart import DEFAULT_PART_SIZE, _multipart, part_size_for
from labkit.storage.naming import (
    META_REPO,
    META_REVISION,
    META_SHA256,
    artifact_url,
    model_family,
    object_key,
    s3_uri,
    validate_key,
)
from labkit.storage.records import _Record
from labkit.storage.source import (
    _content_type,
    _file_source,
    _forget_planned_sha256,
    _snapshot_source,
    _Source,
    _SourceChanged,
)
from labkit.storage.verify import _b64, _verify
from labkit.util.fs import human_bytes
from labkit.util.html import esc


@dataclass
class StoredModel:
    """A model tarball in the object store: where, what, and how AI Core reaches it."""

    bucket: str
    key: str
    sha256: str
    size: int
    repo_id: str
    revision: str
    family: str
    endpoint: str
    region: str
    artifact_url: str
    secret_name: str
    path_prefix: str
    etag: str = ""
    checksum_sha256: str | None = None
    parts: int = 1
    part_size: int = 0
    uploaded_parts: int = 0
    resumed_parts: int = 0
    skipped: bool = False
    replaced: bool = False
    streamed: bool = False
    source: str = ""
    seconds: float = 0.0

    @property
    def s3_uri(self) -> str:
        """``s3://bucket/key``."""
        return s3_uri(self.bucket, self.key)

    @property
    def outcome(self) -> str:
        """One word: skipped (identical object there), resumed, replaced or uploaded."""
        if self.skipped:
            return "skipped"
        if self.resumed_parts:
            return "resumed"
        return "replaced" if self.replaced else "uploaded"

    def to_dict(self) -> dict[str, Any]:
        return {"s3_uri": self.s3_uri, "outcome": self.outcome, **asdict(self)}

    def to_text(self) -> str:
        if self.skipped:
            how = "identical object already there, nothing uploaded"
        else:
            how = f"{self.uploaded_parts} of {self.parts} parts sent"
            if self.resumed_parts:
                how += f", {self.resumed_parts} resumed from an earlier run"
            if self.streamed:
                how += ", streamed from the cache"
            how += f", {self.seconds:.1f} s"
        return (
            f"{self.s3_uri}  ({human_bytes(self.size)}, sha256 {self.sha256}): {how}\n"
            f"artifact url: {self.artifact_url}"
        )

    def _repr_html_(self) -> str:
        badge = {"skipped": "#6e7781", "resumed": "#9a6700"}.get(self.outcome, "#1a7f37")
        return (
            f"<div><span style='background:{badge};color:white;padding:1px 6px;border-radius:3px'>"
            f"{self.outcome}</span> <code>{esc(self.s3_uri)}</code><br>"
            f"{esc(self.repo_id)} @ <code>{self.revision[:7]}</code>, {human_bytes(self.size)}, "
            f"sha256 <code>{self.sha256}</code><br>"
            f"artifact url <code>{esc(self.artifact_url)}</code><br>"
            f"{self.parts} parts of {human_bytes(self.part_size)}: {self.uploaded_parts} sent, "
            f"{self.resumed_parts} resumed, {self.seconds:.1f} s</div>"
        )


def upload_tarball(
    store: Store,
    tar: str | Path,
    *,
    family: str | None = None,
    key: str | None = None,
    overwrite: bool = False,
    part_size: int = DEFAULT_PART_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    secret_name: str | None = None,
    path_prefix: str | None = None,
    progress: bool = True,
) -> StoredModel:
    """Upload a model tarball from step 02 (its manifest beside it) under the key convention."""
    source = _file_source(Path(tar), progress=progress)
    return _upload(
        store,
        source,
        family=family,
        key=key,
        overwrite=overwrite,
        part_size=part_size,
        concurrency=concurrency,
        secret_name=secret_name,
        path_prefix=path_prefix,
        progress=progress,
    )


def upload_snapshot(
    store: Store,
    snapshot: str | Path,
    *,
    revision: str | None = None,
    family: str | None = None,
    key: str | None = None,
    overwrite: bool = False,
    part_size: int = DEFAULT_PART_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    secret_name: str | None = None,
    path_prefix: str | None = None,
    progress: bool = True,
) -> StoredModel:
    """Stream the tar that ``package.write_tarball`` would write straight into the store, no disk."""
    source = _snapshot_source(snapshot, revision, store.records_dir, progress=progress)
    try:
        return _upload(
            store,
            source,
            family=family,
            key=key,
            overwrite=overwrite,
            part_size=part_size,
            concurrency=concurrency,
            secret_name=secret_name,
            path_prefix=path_prefix,
            progress=progress,
        )
    except _SourceChanged:
        _forget_planned_sha256(store.records_dir, source.sha256)
        raise


def _upload(
    store: Store,
    source: _Source,
    *,
    family: str | None,
    key: str | None,
    overwrite: bool,
    part_size: int,
    concurrency: int,
    secret_name: str | None,
    path_prefix: str | None,
    progress: bool,
) -> StoredModel:
    started = time.monotonic()
    secret_name = store.secret_name if secret_name is None else secret_name
    path_prefix = store.path_prefix if path_prefix is None else path_prefix
    if concurrency < 1:
        raise StorageError(f"concurrency {concurrency} is below 1", "pass 1 or more")
    key = (
        validate_key(key)
        if key
        else object_key(
            source.repo_id, source.revision, family=family, compression=source.compression
        )
    )
    family = family or model_family(source.repo_id)
    url = artifact_url(key, secret_name, path_prefix)
    result = StoredModel(
        bucket=store.bucket,
        key=key,
        sha256=source.sha256,
        size=source.size,
        repo_id=source.repo_id,
        revision=source.revision,
        family=family,
        endpoint=store.endpoint,
        region=store.region,
        artifact_url=url,
        secret_name=secret_name,
        path_prefix=path_prefix.strip("/"),
        streamed=source.streamed,
        source=source.label,
    )
    record_path = _Record.path_for(store, key, source.sha256)

    if _keep_existing(store, key, source, record_path, result, overwrite=overwrite):
        result.seconds = time.monotonic() - started
        return result

    size = source.size
    part_size = part_size_for(size, part_size)
    metadata = {
        META_SHA256: source.sha256,
        META_REPO: source.repo_id,
        META_REVISION: source.revision,
    }
    if size <= part_size and not record_path.exists():  # a recorded upload resumes in parts
        _put_single(store, key, source, metadata, result, progress=progress)
    else:
        _multipart(
            store, key, source, metadata, record_path, part_size, concurrency, result, progress
        )
    result.seconds = time.monotonic() - started
    return result


def _keep_existing(
    store: Store,
    key: str,
    source: _Source,
    record_path: Path,
    result: StoredModel,
    *,
    overwrite: bool,
) -> bool:
    """True when the identical object is there already (``result`` says so); a different one
    is an error unless ``overwrite`` (then ``result.replaced``)."""
    existing = _head(store, key)
    if existing is None:
        return False
    same = (
        existing.get("Metadata", {}).get(META_SHA256) == source.sha256
        and existing.get("ContentLength") == source.size
    )
    if same:
        _discard_record(store, key, record_path)
        result.skipped = True
        result.etag = str(existing.get("ETag", "")).strip('"')
        result.checksum_sha256 = existing.get("ChecksumSHA256")
        result.parts = existing.get("PartsCount") or _parts_in_etag(result.etag)
        return True
    if not overwrite:
        theirs = existing.get("Metadata", {}).get(META_SHA256)
        what = f"sha256 {theirs[:12]}…" if theirs else "no labkit sha256"
        raise StorageError(
            f"{s3_uri(store.bucket, key)} already holds a different object "
            f"({human_bytes(existing.get('ContentLength', 0))}, {what})",
            "pass --overwrite (overwrite=True) to replace it, or --family to store this one under another key",
        )
    result.replaced = True
    return False


def _parts_in_etag(etag: str) -> int:
    tail = etag.rpartition("-")[2]
    return int(tail) if "-" in etag and tail.isdigit() else 1


def _discard_record(store: Store, key: str, record_path: Path) -> None:
    rec = _Record.load(record_path)
    if rec is None:
        return
    with contextlib.suppress(Exception):
        store.client.abort_multipart_upload(Bucket=store.bucket, Key=key, UploadId=rec.upload_id)
    rec.delete()


def _put_single(
    store: Store,
    key: str,
    source: _Source,
    metadata: dict[str, str],
    result: StoredModel,
    *,
    progress: bool,
) -> None:
    """One request through boto3's transfer manager: a tar of one part needs no resume."""
    from boto3.s3.transfer import TransferConfig
    from tqdm.auto import tqdm

    data = b"".join(source.parts(source.size or 1))  # at most one part size: bounded
    if len(data) != source.size or hashlib.sha256(data).hexdigest() != source.sha256:
        raise _SourceChanged(
            f"{source.label} does not have the size and sha256 it was planned with",
            "the tar or the cache changed since it was packaged: package it again, then upload",
        )
    config = TransferConfig(multipart_threshold=source.size + 1, use_threads=False)
    extra = {
        "Metadata": metadata,
        "ChecksumAlgorithm": "SHA256",
        "ContentType": _content_type(source),
    }
    with tqdm(
        total=source.size,
        unit="B",
        unit_scale=True,
        desc=Path(key).name,
        disable=not progress,
        leave=False,
    ) as bar:
        try:
            store.client.upload_fileobj(
                io.BytesIO(data), store.bucket, key, ExtraArgs=extra, Config=config,
                Callback=bar.update,
            )  # fmt: skip
        except Exception as exc:
            raise store.translate(exc, key=key) from None
    result.parts, result.part_size, result.uploaded_parts = 1, source.size, 1
    # botocore hashed the bytes it sent; the store reports that checksum back.
    _verify(store, key, source, _b64(bytes.fromhex(source.sha256)), result)
