"""The resumable multipart upload: parts sent by a pool of threads, each with its SHA-256
checksum, each finished part recorded, and parts confirmed by the store skipped on a resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.errors import StorageError
from labkit.storage.client import Store, _code
from labkit.storage.naming import s3_uri
from labkit.storage.records import _Record
from labkit.storage.source import _content_type, _Source, _SourceChanged
from labkit.storage.verify import _b64, _verify, composite_sha256

if TYPE_CHECKING:
    from labkit.storage.upload import StoredModel

MiB = 1 << 20
DEFAULT_PART_SIZE = 16 * MiB


def part_size_for(size: int, requested: int = DEFAULT_PART_SIZE) -> int:
    """A part size close to ``requested`` within S3's limits (5 MiB-5 GiB, at most 10,000 parts)."""
    from s3transfer.utils import ChunksizeAdjuster

    return int(ChunksizeAdjuster().adjust_chunksize(requested, size))


def _multipart(
    store: Store,
    key: str,
    source: _Source,
    metadata: dict[str, str],
    record_path: Path,
    part_size: int,
    concurrency: int,
    result: StoredModel,
    progress: bool,
) -> None:
    """Upload ``source`` in parts, resuming the upload recorded at ``record_path`` if any."""
    record, done = _resume(store, key, record_path)
    if record is not None:
        part_size = record.part_size  # part boundaries must match the parts already there
        record.claim()
    else:
        record = _start(store, key, source, metadata, record_path, part_size)
    count = -(-source.size // part_size)
    sent = _send_parts(store, key, source, record, done, part_size, concurrency, progress)
    _check_sent(store, key, source, record, sent, count)
    answer = _complete(store, key, record, count)
    record.delete()
    result.etag = str(answer.get("ETag", "")).strip('"')
    result.parts, result.part_size = count, part_size
    result.resumed_parts = len(done)
    result.uploaded_parts = count - len(done)
    digests = sent.digests
    _verify(store, key, source, composite_sha256([digests[n] for n in range(1, count + 1)]), result)


def _resume(
    store: Store, key: str, record_path: Path
) -> tuple[_Record | None, dict[int, dict[str, Any]]]:
    """The recorded upload to continue and its parts the store still has; (None, {}) if none."""
    record = _Record.load(record_path)
    if record is None:
        return None, {}
    if pid := record.active_elsewhere():
        raise StorageError(
            f"another labkit process (pid {pid}) is uploading {s3_uri(store.bucket, key)} right now",
            "wait for it to finish, or stop it and run again to resume",
        )
    confirmed = _confirmed_parts(store, key, record)
    if confirmed is None:  # the upload is gone (aborted, or expired by a lifecycle rule)
        record.delete()
        return None, {}
    return record, confirmed


def _start(
    store: Store,
    key: str,
    source: _Source,
    metadata: dict[str, str],
    record_path: Path,
    part_size: int,
) -> _Record:
    """A new multipart upload in the store, and its record."""
    try:
        created = store.client.create_multipart_upload(
            Bucket=store.bucket,
            Key=key,
            Metadata=metadata,
            ChecksumAlgorithm="SHA256",
            ContentType=_content_type(source),
        )
    except Exception as exc:
        raise store.translate(exc, key=key) from None
    return _Record.create(
        record_path,
        {
            "endpoint": store.endpoint,
            "bucket": store.bucket,
            "key": key,
            "sha256": source.sha256,
            "size": source.size,
            "part_size": part_size,
            "upload_id": created["UploadId"],
            "source": source.label,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "pid": os.getpid(),
            "host": socket.gethostname(),
        },
    )


class _Sent:
    """What was read and sent: each part's SHA-256 digest, the whole's sha256, the byte count,
    and the futures of the parts' uploads."""

    def __init__(self) -> None:
        self.digests: dict[int, bytes] = {}
        self.whole = hashlib.sha256()
        self.total = 0
        self.futures: list[Future[None]] = []


class _PartSender:
    """Sends one part from a pool thread: a part recorded before is checked, not sent again;
    after a failure no further part goes out. ``slots`` bounds the parts held in memory."""

    def __init__(
        self,
        store: Store,
        key: str,
        source: _Source,
        record: _Record,
        done: dict[int, dict[str, Any]],
        sent: _Sent,
        concurrency: int,
    ) -> None:
        self.store, self.key, self.source = store, key, source
        self.record, self.done, self.sent = record, done, sent
        self.slots = threading.BoundedSemaphore(concurrency)
        self.failed = threading.Event()

    def __call__(self, number: int, data: bytes, bar: Any) -> None:
        try:
            digest = hashlib.sha256(data).digest()
            self.sent.digests[number] = digest
            recorded = self.done.get(number)
            if recorded is not None:
                if recorded["sha256"] != _b64(digest) or recorded["size"] != len(data):
                    raise _SourceChanged(
                        f"part {number} of {self.source.label} differs from the part uploaded before",
                        "the source changed since the interrupted upload: run the upload again "
                        "(it starts afresh)",
                    )
                bar.update(len(data))
                return
            if self.failed.is_set():
                return
            checksum = _b64(digest)
            store, upload_id = self.store, self.record.upload_id
            answer = _put_part(
                store.client, store.bucket, self.key, upload_id, number, data, checksum
            )
            self.record.add(number, str(answer["ETag"]), len(data), checksum)
            bar.update(len(data))
        except BaseException:
            self.failed.set()
            raise
        finally:
            self.slots.release()


def _send_parts(
    store: Store,
    key: str,
    source: _Source,
    record: _Record,
    done: dict[int, dict[str, Any]],
    part_size: int,
    concurrency: int,
    progress: bool,
) -> _Sent:
    """Read the source part by part and send each from a pool of ``concurrency`` threads."""
    from tqdm.auto import tqdm

    sent = _Sent()
    send = _PartSender(store, key, source, record, done, sent, concurrency)
    with (
        tqdm(
            total=source.size,
            unit="B",
            unit_scale=True,
            desc=Path(key).name,
            disable=not progress,
            leave=False,
        ) as bar,
        ThreadPoolExecutor(concurrency, thread_name_prefix="labkit-upload") as pool,
    ):
        try:
            for number, data in enumerate(source.parts(part_size), start=1):
                send.slots.acquire()
                if send.failed.is_set():
                    send.slots.release()
                    break
                sent.whole.update(data)
                sent.total += len(data)
                sent.futures.append(pool.submit(send, number, data, bar))
                del data
            wait(sent.futures)
        except BaseException:
            send.failed.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return sent


def _check_sent(
    store: Store, key: str, source: _Source, record: _Record, sent: _Sent, count: int
) -> None:
    """Raise the first part's error (saying how far a resume gets), or _SourceChanged when the
    bytes read are not the ones the upload was started for (the upload is then abandoned)."""
    errors = [f.exception() for f in sent.futures if f.exception() is not None]
    if errors:
        exc = errors[0]
        if isinstance(exc, _SourceChanged):
            _abandon(store, key, record)
            raise exc
        error = store.translate(exc, key=key)
        if isinstance(error, StorageError):
            done_now = len(record.parts)
            raise StorageError(
                error.message,
                f"{error.hint}; {done_now} of {count} parts are stored, the next run resumes there",
            ) from None
        raise error
    whole = sent.whole.hexdigest()
    if sent.total != source.size or len(sent.digests) != count or whole != source.sha256:
        _abandon(store, key, record)
        raise _SourceChanged(
            f"{source.label} read as {sent.total} bytes with sha256 {whole[:12]}…, "
            f"expected {source.size} bytes with sha256 {source.sha256[:12]}…",
            "the tar or the cache changed since it was packaged: package it again, then upload",
        )


def _complete(store: Store, key: str, record: _Record, count: int) -> dict[str, Any]:
    """Complete the upload from the recorded parts (ETag and checksum of each)."""
    parts = record.parts
    try:
        return store.client.complete_multipart_upload(
            Bucket=store.bucket,
            Key=key,
            UploadId=record.upload_id,
            MultipartUpload={
                "Parts": [
                    {
                        "PartNumber": n,
                        "ETag": parts[n]["etag"],
                        "ChecksumSHA256": parts[n]["sha256"],
                    }
                    for n in range(1, count + 1)
                ]
            },
        )
    except Exception as exc:
        raise store.translate(exc, key=key) from None


def _put_part(
    client: Any, bucket: str, key: str, upload_id: str, number: int, data: bytes, checksum: str
) -> dict[str, Any]:
    return dict(
        client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumSHA256=checksum,
        )
    )


def _confirmed_parts(store: Store, key: str, record: _Record) -> dict[int, dict[str, Any]] | None:
    """The recorded parts that the store still has with the same size and ETag; None if the
    upload is gone. Stores may not return part checksums (moto does not), so sizes and ETags
    decide, and each kept part's sha256 is checked again against the source as it is read."""
    from botocore.exceptions import ClientError

    listed: dict[int, dict[str, Any]] = {}
    marker = 0
    try:
        while True:
            page = store.client.list_parts(
                Bucket=store.bucket, Key=key, UploadId=record.upload_id, PartNumberMarker=marker
            )
            for p in page.get("Parts", []):
                listed[int(p["PartNumber"])] = p
            if not page.get("IsTruncated"):
                break
            marker = int(page["NextPartNumberMarker"])
    except ClientError as exc:
        if _code(exc) in ("NoSuchUpload", "404"):
            return None
        raise store.translate(exc, key=key) from None
    except Exception as exc:
        raise store.translate(exc, key=key) from None
    confirmed, stale = {}, set()
    for n, part in record.parts.items():
        there = listed.get(n)
        if there is not None and there["Size"] == part["size"] and there["ETag"] == part["etag"]:
            confirmed[n] = part
        else:
            stale.add(n)
    if stale:
        record.drop(stale)
    return confirmed


def _abandon(store: Store, key: str, record: _Record) -> None:
    with contextlib.suppress(Exception):
        store.client.abort_multipart_upload(Bucket=store.bucket, Key=key, UploadId=record.upload_id)
    record.delete()
