"""Step 03: put the model tarball into the object store AI Core reads, and say how AI Core finds it.

The key follows the team's convention ``models/<family>/<revision[:7]>/<org>--<name>.tar``. The
upload is a multipart upload of our own (boto3's transfer manager cannot resume), with a SHA-256
checksum on every part, the whole tar's sha256 in the object's metadata (``x-amz-meta-sha256``),
and a record of finished parts under ``<lab_dir>/uploads`` so that a killed upload continues
where it stopped. The same code talks to the local moto, to AWS S3 and to S3-compatible stores.

Modules: ``naming`` (key convention, names, artifact URL), ``client`` (the S3 client, the bucket,
errors), ``secret`` (AI Core's object store secret), ``source`` (what is uploaded), ``records``
(resume records), ``multipart`` (the resumable multipart upload), ``verify`` (the stored object
against its source), ``upload`` (the upload entry points), ``stale`` (uploads left open).
"""

from __future__ import annotations

from labkit.storage.client import (
    DEFAULT_CONCURRENCY,
    LOCAL_HOSTS,
    Store,
    check_bucket,
    ensure_bucket,
    open_store,
    s3_client,
)
from labkit.storage.multipart import DEFAULT_PART_SIZE, MiB, part_size_for
from labkit.storage.naming import (
    KEY_ROOT,
    META_REPO,
    META_REVISION,
    META_SHA256,
    artifact_url,
    model_family,
    object_key,
    s3_uri,
    tar_name,
    validate_bucket,
    validate_family,
    validate_key,
    validate_secret_name,
)
from labkit.storage.records import RECORD_FORMAT
from labkit.storage.secret import ObjectStoreSecret, object_store_secret
from labkit.storage.source import resolve_snapshot
from labkit.storage.stale import StaleUpload, abort_stale_uploads, list_stale_uploads
from labkit.storage.upload import StoredModel, upload_snapshot, upload_tarball
from labkit.storage.verify import composite_sha256

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_PART_SIZE",
    "KEY_ROOT",
    "LOCAL_HOSTS",
    "META_REPO",
    "META_REVISION",
    "META_SHA256",
    "RECORD_FORMAT",
    "MiB",
    "ObjectStoreSecret",
    "StaleUpload",
    "Store",
    "StoredModel",
    "abort_stale_uploads",
    "artifact_url",
    "check_bucket",
    "composite_sha256",
    "ensure_bucket",
    "list_stale_uploads",
    "model_family",
    "object_key",
    "object_store_secret",
    "open_store",
    "part_size_for",
    "resolve_snapshot",
    "s3_client",
    "s3_uri",
    "tar_name",
    "upload_snapshot",
    "upload_tarball",
    "validate_bucket",
    "validate_family",
    "validate_key",
    "validate_secret_name",
]
