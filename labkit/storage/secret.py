"""The object store secret that lets AI Core read the bucket (POST /v2/admin/objectStoreSecrets),
its key pair masked everywhere but in ``body()``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from labkit.config import Config
from labkit.errors import StorageError
from labkit.storage.client import _region
from labkit.storage.naming import validate_bucket, validate_secret_name
from labkit.util.html import esc


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
        return f"<pre>{esc(json.dumps(self.public(), indent=2))}</pre>"


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
