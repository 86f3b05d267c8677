"""The team's naming convention for model objects: bucket names, keys, model families, the
object's metadata names, and the AI Core artifact URL (``ai://<secret>/<key>``) of a key.
"""

from __future__ import annotations

import re

from labkit.errors import StorageError
from labkit.util import names
from labkit.util.names import COMMIT

KEY_ROOT = "models"
META_SHA256 = "sha256"  # stored as x-amz-meta-sha256
META_REPO = "repo-id"
META_REVISION = "revision"

_FAMILY = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
_KEY_CHARS = re.compile(r"[A-Za-z0-9!_.*'()/-]+")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
# Name parts that end a model family: sizes (135m, 7b, 8x7b, 1.5b), context lengths (4k) and
# variant words; what comes before them names the family (SmolLM2-135M-Instruct -> smollm2).
_SIZE_TOKEN = re.compile(r"(\d+x)?\d+(\.\d+)?[kmbt]")
_VARIANT_TOKENS = {
    "instruct", "chat", "it", "base", "hf", "sft", "dpo", "rlhf", "awq", "gptq", "gguf",
    "fp8", "fp16", "bf16", "int4", "int8", "mini", "tiny", "small", "medium", "large",
    "xl", "xxl", "uncased", "cased",
}  # fmt: skip


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
    if not COMMIT.fullmatch(revision):
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
    if len(name) > names.OBJECT_STORE_SECRET_MAX or not names.OBJECT_STORE_SECRET_NAME.fullmatch(
        name
    ):
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
