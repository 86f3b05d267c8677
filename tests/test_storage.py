"""labkit.storage: key convention, names, artifact URL and secret, errors, parts and resume
records (unit)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest

from labkit import storage
from labkit.config import LOCAL_S3_CREDENTIALS, load_config
from labkit.errors import StorageError
from labkit.storage import (
    ObjectStoreSecret,
    artifact_url,
    composite_sha256,
    model_family,
    object_key,
    part_size_for,
    validate_bucket,
    validate_key,
)

REPO_ID = "org/tiny-1B-Instruct"
REVISION = "a" * 40
MiB = 1 << 20


@pytest.mark.parametrize(
    ("repo_id", "family"),
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1"),
        ("meta-llama/Llama-2-7b-chat-hf", "llama-2"),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral"),
        ("Qwen/Qwen2.5-Coder-7B-Instruct", "qwen2.5-coder"),
        ("microsoft/Phi-3-mini-4k-instruct", "phi-3"),
        ("google/gemma-2-9b-it", "gemma-2"),
        ("tiiuae/falcon-40b", "falcon"),
        ("gpt2", "gpt2"),
        ("bigscience/bloom_560m", "bloom"),
        ("deepseek-ai/deepseek-coder-6.7b-instruct", "deepseek-coder"),
    ],
)
def test_model_family_from_repo_id(repo_id: str, family: str) -> None:
    assert model_family(repo_id) == family


def test_object_key_follows_the_convention() -> None:
    key = object_key(
        "HuggingFaceTB/SmolLM2-135M-Instruct", "6d86325e0e6acc56868542c32e1a1e1a4e92b541"
    )
    assert key == "models/smollm2/6d86325/HuggingFaceTB--SmolLM2-135M-Instruct.tar"
    assert (
        object_key(REPO_ID, REVISION, family="tiny")
        == "models/tiny/aaaaaaa/org--tiny-1B-Instruct.tar"
    )
    assert object_key("gpt2", REVISION, compression="gz") == "models/gpt2/aaaaaaa/gpt2.tar.gz"


@pytest.mark.parametrize("revision", ["main", "a" * 7, "A" * 40, "a" * 41])
def test_object_key_wants_a_pinned_commit(revision: str) -> None:
    with pytest.raises(StorageError, match="40-hex"):
        object_key(REPO_ID, revision)


@pytest.mark.parametrize("family", ["Llama", "-x", "x-", "a/b", "a b", "", "x" * 65, "a..b"])
def test_bad_family_is_refused(family: str) -> None:
    with pytest.raises(StorageError, match="model family"):
        object_key(REPO_ID, REVISION, family=family or "-")


@pytest.mark.parametrize("bucket", ["labkit-models", "abc", "my.bucket-1", "a" * 63])
def test_valid_buckets(bucket: str) -> None:
    assert validate_bucket(bucket) == bucket


@pytest.mark.parametrize(
    ("bucket", "why"),
    [
        ("ab", "3 to 63"),
        ("a" * 64, "3 to 63"),
        ("Labkit", "lowercase"),
        ("my_bucket", "lowercase"),
        ("-bucket", "start and end"),
        ("bucket-", "start and end"),
        ("my..bucket", r"'\.\.'"),
        ("my.-bucket", r"'\.\.'"),
        ("192.168.1.1", "IP address"),
        ("xn--bucket", "reserves"),
        ("bucket-s3alias", "reserves"),
    ],
)
def test_invalid_buckets(bucket: str, why: str) -> None:
    with pytest.raises(StorageError, match=why) as info:
        validate_bucket(bucket)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "key", ["", "/models/x.tar", "models/x/", "models//x.tar", "models/../x.tar", "models/./x",
            "models/x y.tar", "models/ä.tar", "m/" + "x" * 1024],
)  # fmt: skip
def test_invalid_keys(key: str) -> None:
    with pytest.raises(StorageError, match="not a valid object key"):
        validate_key(key)


def test_artifact_url_is_relative_to_the_path_prefix() -> None:
    key = "models/smollm2/6d86325/HuggingFaceTB--SmolLM2-135M-Instruct.tar"
    assert artifact_url(key) == f"ai://default/{key}"
    assert artifact_url(key, "team-s3", "models") == (
        "ai://team-s3/smollm2/6d86325/HuggingFaceTB--SmolLM2-135M-Instruct.tar"
    )
    assert artifact_url(key, "s", "/models/smollm2/") == (
        "ai://s/6d86325/HuggingFaceTB--SmolLM2-135M-Instruct.tar"
    )
    assert not artifact_url(key, "s", "models").endswith("/")


def test_artifact_url_refuses_a_prefix_that_does_not_cover_the_key() -> None:
    with pytest.raises(StorageError, match="not below the secret's pathPrefix 'mod'"):
        artifact_url("models/x/aaaaaaa/x.tar", "default", "mod")
    with pytest.raises(StorageError, match="not a valid object store secret name"):
        artifact_url("models/x/aaaaaaa/x.tar", "Default")


def test_composite_checksum_is_s3s() -> None:
    parts = [b"a" * 10, b"b" * 3]
    digests = [hashlib.sha256(p).digest() for p in parts]
    expected = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()
    assert composite_sha256(digests) == f"{expected}-2"


def test_part_size_respects_s3_limits() -> None:
    assert part_size_for(100 * MiB, 1 * MiB) == 5 * MiB
    assert part_size_for(140 * 10**9) == 16 * MiB  # 8,345 parts
    assert -(-200 * 10**9 // part_size_for(200 * 10**9)) <= 10_000


def test_parts_regroups_a_stream_exactly() -> None:
    data = os.urandom(3 * 1000 + 17)
    chunks = [data[i : i + 333] for i in range(0, len(data), 333)]
    parts = list(storage.source._parts(iter(chunks), 1000))
    assert [len(p) for p in parts] == [1000, 1000, 1000, 17]
    assert b"".join(parts) == data


def test_resolve_snapshot(tmp_path: Path) -> None:
    snap = tmp_path / "hub" / "models--org--name" / "snapshots" / REVISION
    assert storage.resolve_snapshot(snap) == (tmp_path / "hub", "org/name", REVISION)
    assert storage.resolve_snapshot(snap.parent.parent, "v1") == (
        tmp_path / "hub",
        "org/name",
        "v1",
    )
    with pytest.raises(StorageError, match="no snapshot of a Hugging Face cache"):
        storage.resolve_snapshot(tmp_path)


def test_record_keeps_whole_lines_only(tmp_path: Path) -> None:
    rec = storage.records._Record.create(
        tmp_path / "r.jsonl", {"upload_id": "u", "part_size": 5, "key": "k"}
    )
    rec.add(1, '"e1"', 5, "c1")
    rec.add(2, '"e2"', 5, "c2")
    with open(rec.path, "a") as fh:
        fh.write('{"part": 3, "etag": "e3", "si')  # a torn line
    again = storage.records._Record.load(rec.path)
    assert again is not None and sorted(again.parts) == [1, 2]
    again.drop({1})
    assert sorted(storage.records._Record.load(rec.path).parts) == [2]


def test_config_s3_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(profile="local", s3_port=9123)
    assert cfg.s3_endpoint == "http://127.0.0.1:9123"
    assert cfg.s3_credentials() == LOCAL_S3_CREDENTIALS
    aws = load_config(profile="aicore")
    assert aws.s3_endpoint is None and aws.s3_credentials() is None
    monkeypatch.setenv("LABKIT_AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("LABKIT_AWS_SECRET_ACCESS_KEY", "very-secret")
    cfg = load_config(profile="aicore", s3_endpoint_url="https://s3.example.com/")
    assert cfg.s3_endpoint == "https://s3.example.com"
    assert cfg.s3_credentials() == ("AKIAEXAMPLE", "very-secret")
    shown = json.dumps(cfg.public()) + repr(cfg)
    assert "very-secret" not in shown and "AKIAEXAMPLE" not in shown


def test_secret_body_is_masked_everywhere_but_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("LABKIT_AWS_SECRET_ACCESS_KEY", "very-secret")
    cfg = load_config(profile="aicore", aws_region="eu-central-1", s3_path_prefix="/models/")
    secret = storage.object_store_secret(cfg, name="team-s3", bucket="my-models")
    body = secret.body()
    assert body == {
        "name": "team-s3",
        "type": "S3",
        "bucket": "my-models",
        "endpoint": "s3.eu-central-1.amazonaws.com",
        "pathPrefix": "models",
        "region": "eu-central-1",
        "usehttps": "1",
        "data": {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "very-secret"},
    }
    for shown in (repr(secret), str(secret), json.dumps(secret.public()), secret._repr_html_()):
        assert "very-secret" not in shown and "AKIAEXAMPLE" not in shown
    assert secret.public()["data"] == {
        "AWS_ACCESS_KEY_ID": "********",
        "AWS_SECRET_ACCESS_KEY": "********",
    }


def test_secret_for_a_plain_http_endpoint() -> None:
    secret = storage.object_store_secret(load_config(profile="local", s3_port=9000))
    assert isinstance(secret, ObjectStoreSecret)
    assert (secret.endpoint, secret.usehttps, secret.region) == ("127.0.0.1:9000", "0", "us-east-1")
    assert secret.body()["data"]["AWS_ACCESS_KEY_ID"] == LOCAL_S3_CREDENTIALS[0]


def test_secret_refuses_temporary_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "t")
    with pytest.raises(StorageError, match="temporary"):
        storage.object_store_secret(load_config(profile="aicore"))


def _store(local: bool = True) -> storage.Store:
    endpoint = "http://127.0.0.1:9000" if local else "https://s3.eu-central-1.amazonaws.com"
    return storage.Store(
        None, "labkit-models", endpoint, "eu-central-1", Path("/nonexistent"), local
    )


def _client_error(code: str, status: int, op: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": "msg"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        op,
    )


@pytest.mark.parametrize(
    ("exc", "says", "hint"),
    [
        ("nocreds", "no S3 credentials found", "AWS_ACCESS_KEY_ID"),
        ("unreachable", "is unreachable", "labkit local up"),
        (("404", 404, "HeadBucket"), "does not exist", "LABKIT_BUCKET"),
        (("NoSuchBucket", 404, "ListParts"), "does not exist", "LABKIT_BUCKET"),
        (("AccessDenied", 403, "PutObject"), "access denied", "s3:PutObject"),
        (("403", 403, "HeadBucket"), "access denied", "s3:ListBucket"),
        (("InvalidAccessKeyId", 403, "HeadObject"), "access key is unknown", "policy"),
        (("SlowDown", 503, "UploadPart"), "UploadPart on s3://labkit-models/k failed", "--debug"),
    ],
)
def test_botocore_errors_become_one_line(exc: object, says: str, hint: str) -> None:
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    if exc == "nocreds":
        error: Exception = NoCredentialsError()
    elif exc == "unreachable":
        error = EndpointConnectionError(endpoint_url="http://127.0.0.1:9000")
    else:
        error = _client_error(*exc)  # type: ignore[misc]
    translated = _store().translate(error, key="k")
    assert isinstance(translated, StorageError)
    text = str(translated)
    assert says in text and hint in text and "\n" not in text


def test_unreachable_tenant_endpoint_hints_at_settings() -> None:
    from botocore.exceptions import EndpointConnectionError

    text = str(_store(local=False).translate(EndpointConnectionError(endpoint_url="x")))
    assert "LABKIT_S3_ENDPOINT_URL" in text and "local up" not in text


def test_stored_model_json_has_the_contract_fields() -> None:
    result = storage.StoredModel(
        bucket="b-1", key="models/x/aaaaaaa/x.tar", sha256="0" * 64, size=1, repo_id="x",
        revision=REVISION, family="x", endpoint="e", region="r",
        artifact_url="ai://default/models/x/aaaaaaa/x.tar", secret_name="default", path_prefix="",
    )  # fmt: skip
    data = json.loads(json.dumps(result.to_dict()))
    assert data["s3_uri"] == "s3://b-1/models/x/aaaaaaa/x.tar"
    assert {"sha256", "artifact_url"} <= data.keys()
