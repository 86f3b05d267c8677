"""labkit.storage: uploads against the local moto (integration): idempotent skip, conflict,
overwrite, resume after SIGKILL, stale uploads, streaming from the cache, and the one-line user
errors."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labkit_cli import labkit

from labkit import storage
from labkit.config import LOCAL_S3_CREDENTIALS, load_config
from labkit.errors import StorageError
from labkit.storage import (
    object_key,
)
from labkit.util import net

REPO_ID = "org/tiny-1B-Instruct"
REVISION = "a" * 40
MiB = 1 << 20


ROOT = Path(__file__).resolve().parents[1]


def _etag(name: str, data: bytes) -> str:
    if name.endswith(".safetensors"):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def make_cache(root: Path, weights: bytes, *, repo_id: str = REPO_ID) -> Path:
    """A Hugging Face cache with one snapshot, as snapshot_download leaves it."""
    cache = root / "hub"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    files = {
        "config.json": b'{"model_type": "llama"}\n',
        "model.safetensors": weights,
        "tokenizer.json": b'{"tokens": []}\n',
    }
    (repo / "blobs").mkdir(parents=True)
    for rel, data in files.items():
        blob = repo / "blobs" / _etag(rel, data)
        blob.write_bytes(data)
        link = repo / "snapshots" / REVISION / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return cache


def make_tar(root: Path, weights: bytes) -> Path:
    from labkit.package import write_tarball

    cache = make_cache(root, weights)
    return write_tarball(cache, REPO_ID, REVISION, root / "tiny.tar", progress=False).path


def snapshot_dir(cache: Path) -> Path:
    return cache / ("models--" + REPO_ID.replace("/", "--")) / "snapshots" / REVISION


@pytest.fixture(scope="module")
def local_s3():
    """The local moto, started once (as `labkit local up` does) and left running."""
    from labkit.local import s3

    cfg = load_config()
    s3.up(cfg, progress=False)
    return cfg


@pytest.fixture(scope="module")
def bucket(local_s3):
    """A bucket of this module's own in the shared moto, emptied and removed afterwards."""
    name = f"labkit-test-{os.getpid()}"
    store = storage.open_store(local_s3, name, check=False)
    storage.ensure_bucket(store)
    yield name
    client = store.client
    for up in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
    for obj in client.list_objects_v2(Bucket=name).get("Contents", []):
        client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lab dir of this test's own (resume records live in it), for the API and subprocesses."""
    lab_dir = tmp_path / "lab"
    monkeypatch.setenv("LABKIT_LAB_DIR", str(lab_dir))
    return lab_dir


def open_store(bucket: str) -> storage.Store:
    return storage.open_store(load_config(), bucket)


def get_bytes(store: storage.Store, key: str) -> bytes:
    return store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()


@pytest.mark.integration
def test_upload_skip_conflict_overwrite(bucket: str, lab: Path, tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "a", os.urandom(12 * MiB))
    store = open_store(bucket)
    first = storage.upload_tarball(store, tar, family="tiny", part_size=5 * MiB, progress=False)
    assert first.outcome == "uploaded" and first.parts == 3 and first.uploaded_parts == 3
    assert first.key == "models/tiny/aaaaaaa/org--tiny-1B-Instruct.tar"
    assert first.artifact_url == f"ai://default/{first.key}"
    manifest = json.loads(tar.with_name(tar.name + ".manifest.json").read_text())
    assert first.sha256 == manifest["sha256"] and first.size == manifest["size"]
    assert get_bytes(store, first.key) == tar.read_bytes()
    head = store.client.head_object(Bucket=bucket, Key=first.key)
    assert head["Metadata"]["sha256"] == manifest["sha256"]
    assert not list(store.records_dir.glob("*.jsonl")), "the record goes once the upload completes"

    again = storage.upload_tarball(store, tar, family="tiny", progress=False)
    assert again.outcome == "skipped" and again.uploaded_parts == 0

    other = make_tar(tmp_path / "b", os.urandom(12 * MiB))  # same repo and revision: same key
    with pytest.raises(StorageError, match="already holds a different object") as info:
        storage.upload_tarball(store, other, family="tiny", progress=False)
    assert "--overwrite" in str(info.value) and "\n" not in str(info.value)
    assert get_bytes(store, first.key) == tar.read_bytes()

    replaced = storage.upload_tarball(store, other, family="tiny", overwrite=True, progress=False)
    assert replaced.outcome == "replaced"
    assert get_bytes(store, first.key) == other.read_bytes()


@pytest.mark.integration
def test_small_tar_goes_in_one_request(bucket: str, lab: Path, tmp_path: Path) -> None:
    tar = make_tar(tmp_path, os.urandom(100_000))
    cfg = load_config(object_store_secret="team-s3", s3_path_prefix="models/")
    store = storage.open_store(cfg, bucket)
    result = storage.upload_tarball(store, tar, family="small", progress=False)
    assert result.parts == 1 and result.uploaded_parts == 1
    assert result.artifact_url == "ai://team-s3/small/aaaaaaa/org--tiny-1B-Instruct.tar"
    assert result.checksum_sha256 == base64.b64encode(bytes.fromhex(result.sha256)).decode()
    assert get_bytes(store, result.key) == tar.read_bytes()
    # Without its manifest the tar names its repo and commit itself, and is hashed first.
    bare = tar.rename(tmp_path / "renamed.tar")
    again = storage.upload_tarball(store, bare, family="small", progress=False)
    assert again.skipped and (again.repo_id, again.revision) == (REPO_ID, REVISION)


@pytest.mark.integration
def test_a_tar_that_differs_from_its_manifest_is_not_completed(
    bucket: str, lab: Path, tmp_path: Path
) -> None:
    tar = make_tar(tmp_path, os.urandom(11 * MiB))
    with open(tar, "r+b") as fh:  # same size, one byte changed: only the sha256 can tell
        fh.seek(6 * MiB)
        byte = fh.read(1)
        fh.seek(6 * MiB)
        fh.write(bytes([byte[0] ^ 0xFF]))
    store = open_store(bucket)
    with pytest.raises(StorageError, match="sha256"):
        storage.upload_tarball(store, tar, family="corrupt", part_size=5 * MiB, progress=False)
    key = object_key(REPO_ID, REVISION, family="corrupt")
    assert storage.client._head(store, key) is None
    assert not [u for u in storage.list_stale_uploads(store) if u.key == key]


THROTTLED = """
import sys, time
import labkit.storage.multipart as s
put = s._put_part
def slow(*args, **kwargs):
    time.sleep(0.25)  # so that the test can kill the upload between parts
    return put(*args, **kwargs)
s._put_part = slow
from labkit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_and_kill(tar: Path, bucket: str, family: str, lab: Path, parts: int) -> dict:
    """Run `labkit upload` in a subprocess and SIGKILL it once ``parts`` parts are recorded."""
    proc = subprocess.Popen(
        [sys.executable, "-c", THROTTLED, "upload", str(tar), "--bucket", bucket,
         "--family", family, "--part-size-mib", "5", "--concurrency", "1", "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            records = list((lab / "uploads").glob("*.jsonl"))
            if records and len(records[0].read_text().splitlines()) >= 1 + parts:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.01)
        else:
            pytest.fail("the upload recorded no parts in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    lines = records[0].read_text().splitlines()
    return {"header": json.loads(lines[0]), "recorded": len(lines) - 1, "record": records[0]}


def part_puts(log: Path, offset: int, upload_id: str) -> list[int]:
    """Part numbers of the UploadPart requests moto logged after ``offset`` for one upload."""
    text = log.read_bytes()[offset:].decode(errors="replace")
    pattern = re.compile(r'"PUT /[^ ]*\?[^ ]*uploadId=' + re.escape(upload_id) + r"[^ ]*")
    return sorted(
        int(re.search(r"partNumber=(\d+)", m.group(0)).group(1)) for m in pattern.finditer(text)
    )


@pytest.mark.integration
@pytest.mark.slow
def test_resume_after_sigkill_sends_only_missing_parts(
    bucket: str, lab: Path, tmp_path: Path, local_s3
) -> None:
    tar = make_tar(tmp_path, os.urandom(40 * MiB))  # 9 parts of 5 MiB
    killed = start_and_kill(tar, bucket, "resume", lab, parts=3)
    upload_id, recorded = killed["header"]["upload_id"], killed["recorded"]
    assert 3 <= recorded < 9

    store = open_store(bucket)
    stale = [u for u in storage.list_stale_uploads(store) if u.upload_id == upload_id]
    assert len(stale) == 1 and stale[0].ours and stale[0].recorded_parts == recorded
    assert stale[0].owner_pid is None  # the owner is dead

    log = local_s3.local_dir / "s3.log"
    offset = log.stat().st_size
    result = storage.upload_tarball(
        store, tar, family="resume", part_size=16 * MiB, progress=False
    )  # a different part size asked: the recorded 5 MiB wins
    assert result.outcome == "resumed" and result.part_size == 5 * MiB and result.parts == 9
    assert result.resumed_parts == recorded
    assert result.uploaded_parts == 9 - recorded
    # moto's own request log: only the parts that were not recorded went up again.
    assert part_puts(log, offset, upload_id) == list(range(recorded + 1, 10))
    assert get_bytes(store, result.key) == tar.read_bytes()
    assert not killed["record"].exists()
    assert not [u for u in storage.list_stale_uploads(store) if u.upload_id == upload_id]


@pytest.mark.integration
@pytest.mark.slow
def test_stale_uploads_are_listed_and_aborted(bucket: str, lab: Path, tmp_path: Path) -> None:
    tar = make_tar(tmp_path, os.urandom(30 * MiB))
    killed = start_and_kill(tar, bucket, "stale", lab, parts=2)
    store = open_store(bucket)
    foreign = store.client.create_multipart_upload(Bucket=bucket, Key="models/x/aaaaaaa/x.tar")
    outside = store.client.create_multipart_upload(Bucket=bucket, Key="elsewhere/x.tar")

    listed = json.loads(labkit("upload-stale", "--bucket", bucket, "--json").stdout)["uploads"]
    by_id = {u["upload_id"]: u for u in listed}
    assert by_id[killed["header"]["upload_id"]]["ours"] is True
    assert by_id[killed["header"]["upload_id"]]["recorded_parts"] == killed["recorded"]
    assert by_id[foreign["UploadId"]]["ours"] is False
    assert outside["UploadId"] not in by_id  # not under models/

    done = labkit("upload-stale", "--bucket", bucket, "--abort", "--json")
    assert done.returncode == 0, done.stderr
    aborted = {u["upload_id"] for u in json.loads(done.stdout)["aborted"]}
    assert aborted == {killed["header"]["upload_id"]}  # a teammate's may still be running
    assert not killed["record"].exists()

    done = labkit("upload-stale", "--bucket", bucket, "--abort", "--older-than", "0", "--json")
    assert {u["upload_id"] for u in json.loads(done.stdout)["aborted"]} == {foreign["UploadId"]}
    store.client.abort_multipart_upload(
        Bucket=bucket, Key="elsewhere/x.tar", UploadId=outside["UploadId"]
    )


@pytest.mark.integration
def test_streaming_from_the_snapshot_is_byte_identical(
    bucket: str, lab: Path, tmp_path: Path
) -> None:
    from labkit.package import write_tarball

    cache = make_cache(tmp_path, os.urandom(13 * MiB))
    store = open_store(bucket)
    streamed = storage.upload_snapshot(
        store, snapshot_dir(cache), family="stream", part_size=5 * MiB, progress=False
    )
    assert streamed.streamed and streamed.parts == 3
    tar = write_tarball(cache, REPO_ID, REVISION, tmp_path / "written.tar", progress=False)
    assert streamed.sha256 == tar.sha256 and streamed.size == tar.size
    assert get_bytes(store, streamed.key) == tar.path.read_bytes()
    # the tarball of step 02 at the same key is the same object: skipped, not a conflict
    assert storage.upload_tarball(store, tar.path, family="stream", progress=False).skipped


@pytest.mark.integration
def test_cli_upload_json_and_streaming(bucket: str, lab: Path, tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "t", os.urandom(6 * MiB))
    done = labkit("upload", str(tar), "--bucket", bucket, "--family", "cli", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["s3_uri"] == f"s3://{bucket}/models/cli/aaaaaaa/org--tiny-1B-Instruct.tar"
    assert data["artifact_url"] == "ai://default/models/cli/aaaaaaa/org--tiny-1B-Instruct.tar"
    assert data["sha256"] == hashlib.sha256(tar.read_bytes()).hexdigest()
    secret = data["object_store_secret"]
    assert secret["type"] == "S3" and secret["bucket"] == bucket
    assert set(secret["data"].values()) == {"********"}
    assert LOCAL_S3_CREDENTIALS[1] not in done.stdout + done.stderr

    out = tmp_path / "secret.json"
    cache = make_cache(tmp_path / "s", os.urandom(6 * MiB))
    done = labkit(
        "upload", "--from-snapshot", str(snapshot_dir(cache)), "--bucket", bucket,
        "--family", "cli-stream", "--path-prefix", "models", "--secret-name", "team-s3",
        "--secret-out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "ai://team-s3/cli-stream/aaaaaaa/org--tiny-1B-Instruct.tar" in done.stdout
    assert LOCAL_S3_CREDENTIALS[1] not in done.stdout + done.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    body = json.loads(out.read_text())
    assert body["data"]["AWS_SECRET_ACCESS_KEY"] == LOCAL_S3_CREDENTIALS[1]
    assert body["pathPrefix"] == "models" and body["name"] == "team-s3"


@pytest.fixture(scope="module")
def denying_s3(local_s3, tmp_path_factory: pytest.TempPathFactory):
    """A second moto that checks credentials, with a bucket and a user that has no policy."""
    import boto3

    from labkit.local import s3

    port = net.free_port()
    run_dir = tmp_path_factory.mktemp("moto-auth")
    daemon = s3._daemon(local_s3)
    daemon.name, daemon.run_dir, daemon.cwd = "s3-auth", run_dir, run_dir
    daemon.argv = [*daemon.argv[:-1], str(port)]
    daemon.health_url = f"http://127.0.0.1:{port}/"
    # The first three requests go unchecked: the bucket, the user and the user's key.
    daemon.env = {"TMPDIR": str(run_dir), "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    endpoint = f"http://127.0.0.1:{port}"
    daemon.healthy = lambda timeout=5.0: _port_open(port)  # ListBuckets would use up a request
    daemon.start()
    try:
        kw = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        root = {"aws_access_key_id": "root", "aws_secret_access_key": "root"}
        boto3.client("s3", **kw, **root).create_bucket(Bucket="locked")
        iam = boto3.client("iam", **kw, **root)
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        yield {
            "LABKIT_S3_ENDPOINT_URL": endpoint,
            "LABKIT_AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "LABKIT_AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
    finally:
        daemon.stop()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _no_aws_env(tmp_path: Path) -> dict[str, str | None]:
    """An environment in which boto3's chain finds no credentials (and asks no metadata service)."""
    gone: dict[str, str | None] = {
        name: None
        for name in (
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE",
            "LABKIT_AWS_ACCESS_KEY_ID", "LABKIT_AWS_SECRET_ACCESS_KEY",
        )
    }  # fmt: skip
    return {
        **gone,
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.mark.integration
def test_user_errors_are_one_line(
    bucket: str, lab: Path, tmp_path: Path, local_s3, denying_s3
) -> None:
    tar = make_tar(tmp_path / "t", os.urandom(6 * MiB))
    other = make_tar(tmp_path / "o", os.urandom(6 * MiB))
    assert labkit("upload", str(tar), "--bucket", bucket, "--family", "errors").returncode == 0
    endpoint = f"http://127.0.0.1:{local_s3.s3_port}"
    nowhere = f"http://127.0.0.1:{net.free_port()}"
    cases: dict[str, tuple[list[str], dict[str, str | None]]] = {
        "no S3 credentials found": (
            ["--profile", "aicore", "--bucket", bucket],
            {**_no_aws_env(tmp_path), "LABKIT_S3_ENDPOINT_URL": endpoint},
        ),
        "the bucket labkit-no-such-bucket does not exist": (
            ["--bucket", "labkit-no-such-bucket"],
            {},
        ),
        "access denied to s3://locked": (["--bucket", "locked"], denying_s3),
        f"the S3 endpoint {nowhere} is unreachable": (
            ["--bucket", bucket],
            {"LABKIT_S3_ENDPOINT_URL": nowhere},
        ),
        "already holds a different object": (["--bucket", bucket, "--family", "errors"], {}),
    }
    for says, (args, env) in cases.items():
        path = other if "different object" in says else tar
        done = labkit("upload", str(path), *args, env=env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (says, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("labkit: error: "), (says, done.stderr)
        assert says in lines[0], (says, lines[0])
        assert ": " in lines[0].removeprefix("labkit: error: "), "what to do comes after a colon"


@pytest.mark.integration
def test_a_vanished_upload_starts_afresh_and_a_live_one_is_left_alone(
    bucket: str, lab: Path, tmp_path: Path
) -> None:
    tar = make_tar(tmp_path, os.urandom(11 * MiB))
    store = open_store(bucket)
    sha = json.loads(tar.with_name(tar.name + ".manifest.json").read_text())["sha256"]
    key = object_key(REPO_ID, REVISION, family="vanished")
    header = {"endpoint": store.endpoint, "bucket": bucket, "key": key, "sha256": sha,
              "part_size": 5 * MiB, "host": socket.gethostname()}  # fmt: skip
    path = storage.records._Record.path_for(store, key, sha)

    # Another live process on this machine owns the record: refuse, touch nothing.
    storage.records._Record.create(path, {**header, "upload_id": "x", "pid": os.getppid()})
    with pytest.raises(StorageError, match=rf"another labkit process \(pid {os.getppid()}\)"):
        storage.upload_tarball(store, tar, family="vanished", part_size=5 * MiB, progress=False)

    # Its process is gone and the store no longer knows the upload (aborted, expired by a
    # lifecycle rule, or moto restarted): start afresh.
    rec = storage.records._Record.create(path, {**header, "upload_id": "gone", "pid": 2**22 + 1})
    rec.add(1, '"0123"', 5 * MiB, "c2hh")
    result = storage.upload_tarball(
        store, tar, family="vanished", part_size=5 * MiB, progress=False
    )
    assert result.outcome == "uploaded" and result.resumed_parts == 0
    assert get_bytes(store, key) == tar.read_bytes()
    assert not path.exists()
