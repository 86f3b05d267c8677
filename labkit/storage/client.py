"""The S3 client and the bucket it reaches (a ``Store``), and botocore's errors translated into
one-line StorageErrors that say what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from labkit.config import Config
from labkit.errors import StorageError
from labkit.storage.naming import s3_uri, validate_bucket, validate_secret_name

DEFAULT_CONCURRENCY = 8
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
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
