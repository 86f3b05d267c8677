"""Step 03: put the model tarball into the object store AI Core reads, and say how AI Core finds it.

The key follows the team's convention ``models/<family>/<revision[:7]>/<org>--<name>.tar``. The
upload is a multipart upload of our own (boto3's transfer manager cannot resume), with a SHA-256
checksum on every part, the whole tar's sha256 in the object's metadata (``x-amz-meta-sha256``),
and a record of finished parts under ``<lab_dir>/uploads`` so that a killed upload continues
where it stopped. The same code talks to the local moto, to AWS S3 and to S3-compatible stores.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from labkit.config import Config
from labkit.errors import StorageError
from labkit.util.fs import human_bytes, sha256_file
from labkit.util.procs import pid_alive

KEY_ROOT = "models"
META_SHA256 = "sha256"  # stored as x-amz-meta-sha256
META_REPO = "repo-id"
META_REVISION = "revision"
MiB = 1 << 20
DEFAULT_PART_SIZE = 16 * MiB
DEFAULT_CONCURRENCY = 8
RECORD_FORMAT = 1
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FAMILY = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
_KEY_CHARS = re.compile(r"[A-Za-z0-9!_.*'()/-]+")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
# AI Core's pattern for object store secret names (AI_CORE_API.yaml, objectStoreSecrets).
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# Name parts that end a model family: sizes (135m, 7b, 8x7b, 1.5b), context lengths (4k) and
# variant words; what comes before them names the family (SmolLM2-135M-Instruct -> smollm2).
_SIZE_TOKEN = re.compile(r"(\d+x)?\d+(\.\d+)?[kmbt]")
_VARIANT_TOKENS = {
    "instruct", "chat", "it", "base", "hf", "sft", "dpo", "rlhf", "awq", "gptq", "gguf",
    "fp8", "fp16", "bf16", "int4", "int8", "mini", "tiny", "small", "medium", "large",
    "xl", "xxl", "uncased", "cased",
}  # fmt: skip
_AUTH_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "403",
    "Forbidden",
}


def model_family(repo_id: str) -> str:
    """The family part of the key, from a repo id: meta-llama/Llama-3.1-8B-Instruct -> llama-3.1."""
    name = repo_id.rsplit("/", 1)[-1].lower()
    tokens = [t for t in re.split(r"[-_\s]+", name) if t]
    kept: list[str] = []
    for token in tokens:
        if kept and (_SIZE_TOKEN.fullmatch(token) or token in _VARIANT_TOKENS):
            break
        kept.append(token)
    family = re.sub(r"[^a-z0-9.-]+", "-", "-".join(kept)).strip(".-")
    family = re.sub(r"-{2,}", "-", family)[:64].strip(".-")
    if not _FAMILY.fullmatch(family):
        raise StorageError(
            f"cannot derive a model family from '{repo_id}'",
            "pass one explicitly (family=..., --family), e.g. llama-3.1",
        )
    return family


def validate_family(family: str) -> str:
    """A model family as the key convention wants it: lowercase letters, digits, '.', '-', '_'."""
    if not _FAMILY.fullmatch(family) or ".." in family:
        raise StorageError(
            f"'{family}' is not a valid model family",
            "use 1-64 lowercase letters, digits, '.', '-' or '_', starting and ending with a letter or digit",
        )
    return family


def validate_bucket(bucket: str) -> str:
    """An S3 bucket name under AWS's rules (which S3-compatible stores accept as well)."""
    problem = None
    if not 3 <= len(bucket) <= 63:
        problem = "must be 3 to 63 characters long"
    elif not _BUCKET.fullmatch(bucket):
        problem = "may hold only lowercase letters, digits, '.' and '-', and must start and end with a letter or digit"
    elif ".." in bucket or ".-" in bucket or "-." in bucket:
        problem = "must not have '..', '.-' or '-.'"
    elif _IPV4.fullmatch(bucket):
        problem = "must not look like an IP address"
    elif bucket.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or bucket.endswith(
        ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
    ):
        problem = "uses a prefix or suffix that S3 reserves"
    if problem:
        raise StorageError(
            f"'{bucket}' is not a valid bucket name: it {problem}",
            "set --bucket or LABKIT_BUCKET to the bucket your AI Core object store secret names",
        )
    return bucket


def validate_key(key: str) -> str:
    """An object key that S3, KServe and ai:// URLs all take unchanged."""
    problem = None
    if not key or len(key.encode()) > 1024:
        problem = "must be 1 to 1024 bytes long"
    elif key.startswith("/") or key.endswith("/"):
        problem = "must not start or end with '/'"
    elif not _KEY_CHARS.fullmatch(key):
        problem = "may hold only letters, digits, '/' and !-_.*'()"
    elif any(part in ("", ".", "..") for part in key.split("/")):
        problem = "must not have empty, '.' or '..' path segments"
    if problem:
        raise StorageError(f"'{key}' is not a valid object key: it {problem}", "use another key")
    return key


def tar_name(repo_id: str, compression: str | None = None) -> str:
    """The tarball's file name: ``<org>--<name>.tar`` (``.tar.gz`` when compressed), as step 02 names it."""
    return repo_id.replace("/", "--") + (".tar.gz" if compression == "gz" else ".tar")


def object_key(
    repo_id: str, revision: str, *, family: str | None = None, compression: str | None = None
) -> str:
    """The key convention: ``models/<family>/<revision[:7]>/<org>--<name>.tar``."""
    if not _COMMIT.fullmatch(revision):
        raise StorageError(
            f"'{revision}' is not a pinned 40-hex commit",
            "upload what step 02 downloaded: its revision is the full commit",
        )
    family = validate_family(family) if family else model_family(repo_id)
    return validate_key(f"{KEY_ROOT}/{family}/{revision[:7]}/{tar_name(repo_id, compression)}")


def s3_uri(bucket: str, key: str) -> str:
    """``s3://bucket/key``."""
    return f"s3://{bucket}/{key}"


def validate_secret_name(name: str) -> str:
    """An AI Core object store secret name (lowercase DNS labels, at most 233 characters)."""
    if len(name) > 233 or not _SECRET_NAME.fullmatch(name):
        raise StorageError(
            f"'{name}' is not a valid object store secret name",
            "use lowercase letters, digits, '-' and '.', e.g. default (LABKIT_OBJECT_STORE_SECRET)",
        )
    return name


def artifact_url(key: str, secret_name: str = "default", path_prefix: str = "") -> str:
    """The AI Core artifact URL of ``key``: ``ai://<secret>/<key below the secret's pathPrefix>``."""
    validate_secret_name(secret_name)
    prefix = path_prefix.strip("/")
    rel = key
    if prefix:
        if not key.startswith(prefix + "/"):
            raise StorageError(
                f"the object {key} is not below the secret's pathPrefix '{prefix}', so "
                f"ai://{secret_name}/... cannot reach it",
                "set LABKIT_S3_PATH_PREFIX to the pathPrefix of a secret that covers the key "
                f"(e.g. '' or '{KEY_ROOT}')",
            )
        rel = key[len(prefix) + 1 :]
    return f"ai://{secret_name}/{rel.strip('/')}"


def composite_sha256(part_digests: list[bytes]) -> str:
    """The checksum S3 reports for a multipart upload with SHA-256: base64(sha256(digests))-N."""
    digest = hashlib.sha256(b"".join(part_digests)).digest()
    return f"{base64.b64encode(digest).decode()}-{len(part_digests)}"


def part_size_for(size: int, requested: int = DEFAULT_PART_SIZE) -> int:
    """A part size close to ``requested`` within S3's limits (5 MiB-5 GiB, at most 10,000 parts)."""
    from s3transfer.utils import ChunksizeAdjuster

    return int(ChunksizeAdjuster().adjust_chunksize(requested, size))


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@dataclass
class Store:
    """One bucket on one S3 endpoint: the client that reaches it and where resume records live."""

    client: Any
    bucket: str
    endpoint: str
    region: str
    records_dir: Path
    local: bool = False
    secret_name: str = "default"
    path_prefix: str = ""

    def translate(self, exc: BaseException, *, key: str | None = None) -> BaseException:
        """A botocore error as a one-line StorageError that says what to do (others unchanged)."""
        return _translate(exc, self, key)


def _region(cfg: Config) -> str:
    if cfg.aws_region:
        return cfg.aws_region
    import boto3

    return boto3.session.Session().region_name or "us-east-1"


def s3_client(cfg: Config, *, max_connections: int = DEFAULT_CONCURRENCY) -> Any:
    """A boto3 S3 client for the configured endpoint, region and credentials."""
    import boto3
    from botocore.config import Config as BotoConfig

    creds = cfg.s3_credentials()
    session = boto3.session.Session(
        aws_access_key_id=creds[0] if creds else None,
        aws_secret_access_key=creds[1] if creds else None,
        region_name=_region(cfg),
    )
    endpoint = cfg.s3_endpoint
    # Every part carries its own (signed) SHA-256 checksum header, so over https botocore does
    # not sign the payload. Over plain http it hashes every part once more for the signature,
    # as the SDKs do to protect an insecure transport; on loopback there is no transport to
    # protect, and the local moto shares the CPU with us.
    loopback = endpoint is not None and urlsplit(endpoint).hostname in LOCAL_HOSTS
    config = BotoConfig(
        connect_timeout=10,
        read_timeout=120,
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=max(10, max_connections + 2),
        s3={"payload_signing_enabled": False} if loopback else None,
    )
    return session.client("s3", endpoint_url=endpoint, config=config)


def open_store(
    cfg: Config,
    bucket: str | None = None,
    *,
    client: Any = None,
    check: bool = True,
    max_connections: int = DEFAULT_CONCURRENCY,
) -> Store:
    """The configured bucket on the configured endpoint; checks that it exists and answers."""
    bucket = validate_bucket(bucket or cfg.bucket)
    region = _region(cfg)
    endpoint = cfg.s3_endpoint or f"https://s3.{region}.amazonaws.com"
    store = Store(
        client=client or s3_client(cfg, max_connections=max_connections),
        bucket=bucket,
        endpoint=endpoint,
        region=region,
        records_dir=cfg.lab_dir / "uploads",
        local=urlsplit(endpoint).hostname in LOCAL_HOSTS,
        secret_name=validate_secret_name(cfg.object_store_secret),
        path_prefix=cfg.s3_path_prefix.strip("/"),
    )
    if check:
        check_bucket(store)
    return store


def check_bucket(store: Store) -> None:
    """Raise a one-line StorageError unless the bucket exists and the credentials may use it."""
    try:
        store.client.head_bucket(Bucket=store.bucket)
    except Exception as exc:
        raise store.translate(exc) from None


def ensure_bucket(store: Store) -> bool:
    """Create the bucket unless it exists (the local profile's `up`); True when it was created."""
    from botocore.exceptions import ClientError

    try:
        store.client.head_bucket(Bucket=store.bucket)
        return False
    except ClientError as exc:
        if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise store.translate(exc) from None
    except Exception as exc:
        raise store.translate(exc) from None
    kwargs: dict[str, Any] = {"Bucket": store.bucket}
    if store.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": store.region}
    try:
        store.client.create_bucket(**kwargs)
    except Exception as exc:
        if _code(exc) not in ("BucketAlreadyOwnedByYou",):
            raise store.translate(exc) from None
    return True


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _translate(exc: BaseException, store: Store, key: str | None) -> BaseException:
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, StorageError):
        return exc
    where = s3_uri(store.bucket, key) if key else f"s3://{store.bucket}"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StorageError(
            f"no S3 credentials found for {store.endpoint}",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or "
            "LABKIT_AWS_ACCESS_KEY_ID and LABKIT_AWS_SECRET_ACCESS_KEY in .env",
        )
    if isinstance(
        exc,
        EndpointConnectionError | ConnectTimeoutError | ConnectionClosedError | ReadTimeoutError,
    ):
        return StorageError(
            f"the S3 endpoint {store.endpoint} is unreachable ({type(exc).__name__})",
            "start the local services with `labkit local up`"
            if store.local
            else "check the network and LABKIT_S3_ENDPOINT_URL / LABKIT_AWS_REGION",
        )
    if isinstance(exc, ClientError):
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        op = getattr(exc, "operation_name", "")
        if code == "NoSuchBucket" or (op == "HeadBucket" and status == 404):
            return StorageError(
                f"the bucket {store.bucket} does not exist at {store.endpoint}",
                "`labkit local up` creates the bucket LABKIT_BUCKET names (moto forgets buckets "
                "when it restarts); pass that one or create this one"
                if store.local
                else "create it, or set --bucket / LABKIT_BUCKET to the bucket of your object store secret",
            )
        if code in _AUTH_CODES or status == 403:
            reason = {
                "InvalidAccessKeyId": "the access key is unknown there",
                "SignatureDoesNotMatch": "the secret access key does not match the key id",
                "ExpiredToken": "the session token has expired",
            }.get(code, code or "403")
            return StorageError(
                f"access denied to {where} at {store.endpoint} ({reason})",
                "use credentials whose policy allows s3:ListBucket, s3:GetObject, s3:PutObject, "
                "s3:ListBucketMultipartUploads and s3:AbortMultipartUpload on the bucket",
            )
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        return StorageError(
            f"{op or 'the S3 request'} on {where} failed ({code or status}: {message})",
            "run again with --debug for details",
        )
    return exc


@dataclass(repr=False)
class ObjectStoreSecret:
    """The body of POST /v2/admin/objectStoreSecrets for the bucket; the key pair stays masked."""

    name: str
    bucket: str
    endpoint: str
    region: str
    path_prefix: str
    usehttps: str
    access_key_id: SecretStr
    secret_access_key: SecretStr

    def body(self) -> dict[str, Any]:
        """The JSON AI Core expects, with the real key pair: send it, never print it."""
        return {**self._fields(), "data": self._data(reveal=True)}

    def public(self) -> dict[str, Any]:
        """The same JSON with the key pair masked: safe to print, log and store."""
        return {**self._fields(), "data": self._data(reveal=False)}

    to_dict = public

    def _fields(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": "S3",
            "bucket": self.bucket,
            "endpoint": self.endpoint,
            "pathPrefix": self.path_prefix,
            "region": self.region,
            "usehttps": self.usehttps,
        }

    def _data(self, *, reveal: bool) -> dict[str, str]:
        if reveal:
            return {
                "AWS_ACCESS_KEY_ID": self.access_key_id.get_secret_value(),
                "AWS_SECRET_ACCESS_KEY": self.secret_access_key.get_secret_value(),
            }
        return {"AWS_ACCESS_KEY_ID": "********", "AWS_SECRET_ACCESS_KEY": "********"}

    def __repr__(self) -> str:
        return f"ObjectStoreSecret({json.dumps(self.public())})"

    def _repr_html_(self) -> str:
        return f"<pre>{escape(json.dumps(self.public(), indent=2))}</pre>"


def object_store_secret(
    cfg: Config,
    *,
    name: str | None = None,
    bucket: str | None = None,
    path_prefix: str | None = None,
) -> ObjectStoreSecret:
    """The object store secret for the configured bucket, endpoint and credentials."""
    name = validate_secret_name(name or cfg.object_store_secret)
    bucket = validate_bucket(bucket or cfg.bucket)
    region = _region(cfg)
    if cfg.s3_endpoint:
        parts = urlsplit(cfg.s3_endpoint)
        endpoint, usehttps = parts.netloc, "1" if parts.scheme == "https" else "0"
    else:
        endpoint, usehttps = f"s3.{region}.amazonaws.com", "1"
    creds = cfg.s3_credentials()
    if creds is None:
        import boto3

        found = boto3.session.Session().get_credentials()
        frozen = found.get_frozen_credentials() if found else None
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            raise StorageError(
                "no S3 credentials found for the object store secret",
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or LABKIT_AWS_ACCESS_KEY_ID "
                "and LABKIT_AWS_SECRET_ACCESS_KEY in .env",
            )
        if frozen.token:
            # AI Core keeps the pair for as long as the secret lives; a session key expires.
            raise StorageError(
                "the S3 credentials are temporary (they carry a session token), so an AI Core "
                "secret made from them would stop working when they expire",
                "set LABKIT_AWS_ACCESS_KEY_ID and LABKIT_AWS_SECRET_ACCESS_KEY to a long-lived key",
            )
        creds = (frozen.access_key, frozen.secret_key)
    prefix = cfg.s3_path_prefix if path_prefix is None else path_prefix
    return ObjectStoreSecret(
        name=name,
        bucket=bucket,
        endpoint=endpoint,
        region=region,
        path_prefix=prefix.strip("/"),
        usehttps=usehttps,
        access_key_id=SecretStr(creds[0]),
        secret_access_key=SecretStr(creds[1]),
    )


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
            f"{self.outcome}</span> <code>{escape(self.s3_uri)}</code><br>"
            f"{escape(self.repo_id)} @ <code>{self.revision[:7]}</code>, {human_bytes(self.size)}, "
            f"sha256 <code>{self.sha256}</code><br>"
            f"artifact url <code>{escape(self.artifact_url)}</code><br>"
            f"{self.parts} parts of {human_bytes(self.part_size)}: {self.uploaded_parts} sent, "
            f"{self.resumed_parts} resumed, {self.seconds:.1f} s</div>"
        )


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
                    and _COMMIT.fullmatch(parts[2])
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
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
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
        if data["size"] == plan.size and _SHA256.fullmatch(data["sha256"]):
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
    _write_json_atomic(memo, {"repo_id": plan.repo_id, "size": plan.size, "sha256": sha})
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


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _Record:
    """Finished parts of one multipart upload: a header line, then one JSON line per part.

    A part's line is appended with a single write() to an O_APPEND file, so a killed process
    leaves the whole line or none of it (a torn last line, after a machine crash, is ignored on
    load), and each part costs one short write: rewriting a whole record after every part would
    write O(parts^2) bytes, gigabytes for a 140 GB model. Rewrites (claim, drop) are atomic
    replaces.
    """

    def __init__(self, path: Path, header: dict[str, Any], parts: dict[int, dict[str, Any]]):
        self.path = path
        self.header = header
        self._parts = parts
        self._lock = threading.Lock()

    @staticmethod
    def path_for(store: Store, key: str, sha: str) -> Path:
        ident = f"{store.endpoint}\n{store.bucket}\n{key}\n{sha}".encode()
        return store.records_dir / f"{hashlib.sha256(ident).hexdigest()[:24]}.jsonl"

    @classmethod
    def create(cls, path: Path, header: dict[str, Any]) -> _Record:
        rec = cls(path, {"format": RECORD_FORMAT, **header}, {})
        rec._rewrite()
        return rec

    @classmethod
    def load(cls, path: Path) -> _Record | None:
        try:
            lines = path.read_text().splitlines()
            header = json.loads(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        if not isinstance(header, dict) or header.get("format") != RECORD_FORMAT:
            return None
        parts: dict[int, dict[str, Any]] = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
                parts[int(entry["part"])] = {
                    "etag": str(entry["etag"]),
                    "size": int(entry["size"]),
                    "sha256": str(entry["sha256"]),
                }
            except (ValueError, KeyError, TypeError):
                continue  # a torn line: that part is simply sent again
        return cls(path, header, parts)

    @property
    def upload_id(self) -> str:
        return str(self.header["upload_id"])

    @property
    def key(self) -> str:
        return str(self.header["key"])

    @property
    def part_size(self) -> int:
        return int(self.header["part_size"])

    @property
    def parts(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return dict(self._parts)

    def active_elsewhere(self) -> int | None:
        """The pid of another live process on this host that owns the upload, else None."""
        pid = self.header.get("pid")
        if self.header.get("host") != socket.gethostname() or not isinstance(pid, int):
            return None
        return pid if pid != os.getpid() and pid_alive(pid) else None

    def claim(self) -> None:
        with self._lock:
            self.header.update(pid=os.getpid(), host=socket.gethostname())
            self._rewrite()

    def add(self, number: int, etag: str, size: int, sha256_b64: str) -> None:
        entry = {"part": number, "etag": etag, "size": size, "sha256": sha256_b64}
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            self._parts[number] = {"etag": etag, "size": size, "sha256": sha256_b64}

    def drop(self, numbers: set[int]) -> None:
        with self._lock:
            for n in numbers:
                self._parts.pop(n, None)
            self._rewrite()

    def _rewrite(self) -> None:
        lines = [json.dumps(self.header, separators=(",", ":"))]
        lines += [
            json.dumps({"part": n, **p}, separators=(",", ":"))
            for n, p in sorted(self._parts.items())
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_text("\n".join(lines) + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


def _records(store: Store) -> list[_Record]:
    found = []
    for path in sorted(store.records_dir.glob("*.jsonl")):
        rec = _Record.load(path)
        if (
            rec is not None
            and rec.header.get("endpoint") == store.endpoint
            and rec.header.get("bucket") == store.bucket
        ):
            found.append(rec)
    return found


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


class _SourceChanged(StorageError):
    """The bytes read differ from the sha256 the upload was started for."""


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

    existing = _head(store, key)
    if existing is not None:
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
            result.seconds = time.monotonic() - started
            return result
        if not overwrite:
            theirs = existing.get("Metadata", {}).get(META_SHA256)
            what = f"sha256 {theirs[:12]}…" if theirs else "no labkit sha256"
            raise StorageError(
                f"{s3_uri(store.bucket, key)} already holds a different object "
                f"({human_bytes(existing.get('ContentLength', 0))}, {what})",
                "pass --overwrite (overwrite=True) to replace it, or --family to store this one under another key",
            )
        result.replaced = True

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


def _head(store: Store, key: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return dict(store.client.head_object(Bucket=store.bucket, Key=key, ChecksumMode="ENABLED"))
    except ClientError as exc:
        if _code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise store.translate(exc, key=key) from None
    except Exception as exc:
        raise store.translate(exc, key=key) from None


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
    from tqdm.auto import tqdm

    client, bucket = store.client, store.bucket
    record = _Record.load(record_path)
    done: dict[int, dict[str, Any]] = {}
    if record is not None:
        if pid := record.active_elsewhere():
            raise StorageError(
                f"another labkit process (pid {pid}) is uploading {s3_uri(bucket, key)} right now",
                "wait for it to finish, or stop it and run again to resume",
            )
        confirmed = _confirmed_parts(store, key, record)
        if confirmed is None:  # the upload is gone (aborted, or expired by a lifecycle rule)
            record.delete()
            record = None
        else:
            done = confirmed
    if record is not None:
        part_size = record.part_size  # part boundaries must match the parts already there
        record.claim()
    else:
        try:
            created = client.create_multipart_upload(
                Bucket=bucket,
                Key=key,
                Metadata=metadata,
                ChecksumAlgorithm="SHA256",
                ContentType=_content_type(source),
            )
        except Exception as exc:
            raise store.translate(exc, key=key) from None
        record = _Record.create(
            record_path,
            {
                "endpoint": store.endpoint,
                "bucket": bucket,
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
    upload_id = record.upload_id
    count = -(-source.size // part_size)
    digests: dict[int, bytes] = {}
    whole = hashlib.sha256()
    total = 0
    slots = threading.BoundedSemaphore(concurrency)
    failed = threading.Event()
    futures: list[Future[None]] = []

    def send(number: int, data: bytes, bar: Any) -> None:
        try:
            digest = hashlib.sha256(data).digest()
            digests[number] = digest
            recorded = done.get(number)
            if recorded is not None:
                if recorded["sha256"] != _b64(digest) or recorded["size"] != len(data):
                    raise _SourceChanged(
                        f"part {number} of {source.label} differs from the part uploaded before",
                        "the source changed since the interrupted upload: run the upload again "
                        "(it starts afresh)",
                    )
                bar.update(len(data))
                return
            if failed.is_set():
                return
            checksum = _b64(digest)
            answer = _put_part(client, bucket, key, upload_id, number, data, checksum)
            record.add(number, str(answer["ETag"]), len(data), checksum)
            bar.update(len(data))
        except BaseException:
            failed.set()
            raise
        finally:
            slots.release()

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
                slots.acquire()
                if failed.is_set():
                    slots.release()
                    break
                whole.update(data)
                total += len(data)
                futures.append(pool.submit(send, number, data, bar))
                del data
            wait(futures)
        except BaseException:
            failed.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    errors = [f.exception() for f in futures if f.exception() is not None]
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
    if total != source.size or len(digests) != count or whole.hexdigest() != source.sha256:
        _abandon(store, key, record)
        raise _SourceChanged(
            f"{source.label} read as {total} bytes with sha256 {whole.hexdigest()[:12]}…, "
            f"expected {source.size} bytes with sha256 {source.sha256[:12]}…",
            "the tar or the cache changed since it was packaged: package it again, then upload",
        )
    parts = record.parts
    try:
        answer = client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
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
    record.delete()
    result.etag = str(answer.get("ETag", "")).strip('"')
    result.parts, result.part_size = count, part_size
    result.resumed_parts = len(done)
    result.uploaded_parts = count - len(done)
    _verify(store, key, source, composite_sha256([digests[n] for n in range(1, count + 1)]), result)


def _content_type(source: _Source) -> str:
    return "application/gzip" if source.compression == "gz" else "application/x-tar"


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


@dataclass
class StaleUpload:
    """A multipart upload left open under the lab's key prefix."""

    key: str
    upload_id: str
    initiated: str
    recorded_parts: int | None = None
    owner_pid: int | None = None
    aborted: bool = False
    record: str | None = field(default=None, repr=False)

    @property
    def ours(self) -> bool:
        """Whether this machine's lab started it (a resume record exists)."""
        return self.record is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ours": self.ours}


def list_stale_uploads(store: Store, prefix: str = KEY_ROOT + "/") -> list[StaleUpload]:
    """Open multipart uploads under ``prefix``, with the resume record this machine keeps for each."""
    by_upload = {(r.key, r.upload_id): r for r in _records(store)}
    found: list[StaleUpload] = []
    kwargs: dict[str, Any] = {"Bucket": store.bucket, "Prefix": prefix}
    try:
        while True:
            page = store.client.list_multipart_uploads(**kwargs)
            for up in page.get("Uploads", []):
                rec = by_upload.get((up["Key"], up["UploadId"]))
                initiated = up.get("Initiated")
                found.append(
                    StaleUpload(
                        key=up["Key"],
                        upload_id=up["UploadId"],
                        initiated=initiated.isoformat() if initiated else "",
                        recorded_parts=len(rec.parts) if rec else None,
                        owner_pid=rec.active_elsewhere() if rec else None,
                        record=str(rec.path) if rec else None,
                    )
                )
            if not page.get("IsTruncated"):
                break
            kwargs.update(
                KeyMarker=page.get("NextKeyMarker", ""),
                UploadIdMarker=page.get("NextUploadIdMarker", ""),
            )
    except Exception as exc:
        raise store.translate(exc) from None
    return found


def abort_stale_uploads(
    store: Store,
    *,
    older_than: timedelta | None = None,
    prefix: str = KEY_ROOT + "/",
) -> list[StaleUpload]:
    """Abort this machine's uploads whose process is gone (and, with ``older_than``, older others)."""
    # Uploads without a record here may be a teammate's, still running: only age lets them go.
    now = datetime.now(UTC)
    aborted = []
    for up in list_stale_uploads(store, prefix):
        if up.owner_pid is not None:
            continue
        if not up.ours:
            if older_than is None or not up.initiated:
                continue
            if now - datetime.fromisoformat(up.initiated) < older_than:
                continue
        try:
            store.client.abort_multipart_upload(
                Bucket=store.bucket, Key=up.key, UploadId=up.upload_id
            )
        except Exception as exc:
            if _code(exc) not in ("NoSuchUpload", "404"):
                raise store.translate(exc, key=up.key) from None
        if up.record:
            Path(up.record).unlink(missing_ok=True)
        up.aborted = True
        aborted.append(up)
    return aborted
