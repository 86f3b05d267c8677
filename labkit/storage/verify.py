"""Checking a stored object against its source: size, the sha256 metadata, and the checksum the
store reports (a multipart upload's composite SHA-256)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from typing import TYPE_CHECKING

from labkit.errors import StorageError
from labkit.storage.client import Store, _head
from labkit.storage.naming import META_SHA256, s3_uri
from labkit.storage.source import _Source

if TYPE_CHECKING:
    from labkit.storage.upload import StoredModel


def composite_sha256(part_digests: list[bytes]) -> str:
    """The checksum S3 reports for a multipart upload with SHA-256: base64(sha256(digests))-N."""
    digest = hashlib.sha256(b"".join(part_digests)).digest()
    return f"{base64.b64encode(digest).decode()}-{len(part_digests)}"


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _verify(store: Store, key: str, source: _Source, checksum: str, result: StoredModel) -> None:
    """Check the stored object against the source: size, sha256 metadata, the store's checksum."""
    head = _head(store, key)
    problems = []
    if head is None:
        problems.append("it is missing after the upload")
    else:
        if head.get("ContentLength") != source.size:
            problems.append(f"{head.get('ContentLength')} bytes, expected {source.size}")
        if head.get("Metadata", {}).get(META_SHA256) != source.sha256:
            problems.append("its sha256 metadata differs")
        reported = head.get("ChecksumSHA256")
        if reported is not None and not _same_checksum(reported, checksum):
            problems.append(f"checksum {reported}, expected {checksum}")
        result.checksum_sha256 = reported
        result.etag = str(head.get("ETag", result.etag)).strip('"')
    if problems:
        with contextlib.suppress(Exception):
            store.client.delete_object(Bucket=store.bucket, Key=key)
        raise StorageError(
            f"the stored {s3_uri(store.bucket, key)} does not match {source.label}: "
            + "; ".join(problems),
            "it was deleted; run the upload again",
        )


def _same_checksum(reported: str, expected: str) -> bool:
    # A composite checksum may come back with or without its "-<parts>" suffix.
    if reported == expected:
        return True
    return "-" in expected and "-" not in reported and reported == expected.rpartition("-")[0]
