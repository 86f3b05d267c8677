"""labkit.local.s3: moto as the local profile's S3, started, checked and stopped like a real service."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest

from labkit import storage
from labkit.config import load_config
from labkit.local import s3
from labkit.util.net import free_port


@pytest.fixture
def private_s3(tmp_path: Path):
    """A moto of this test's own (own port and run dir), sharing the built moto venv."""
    shared = load_config().local_dir / "envs" / s3.S3_EXTRA
    if not (shared / "bin" / "moto_server").exists():
        pytest.skip("the moto venv is not built yet: run `labkit local up` once")
    local_dir = tmp_path / "local"
    (local_dir / "envs").mkdir(parents=True)
    (local_dir / "envs" / s3.S3_EXTRA).symlink_to(shared)
    cfg = load_config(local_dir=local_dir, s3_port=free_port(), bucket="labkit-private")
    yield cfg
    s3.down(cfg)


@pytest.mark.integration
def test_up_status_down_and_a_restart_empties_it(private_s3) -> None:
    cfg = private_s3
    assert not s3.status(cfg).healthy
    assert "labkit local up" in s3.status(cfg).detail

    s3.up(cfg, progress=False)
    status = s3.status(cfg)
    assert status.healthy, status.detail
    assert status.url == f"http://127.0.0.1:{cfg.s3_port}"
    assert "labkit-private (0 objects)" in status.detail and "restart empties it" in status.detail
    # The health check is an S3 answer, not just an open port.
    with urllib.request.urlopen(status.url + "/", timeout=5) as resp:
        assert b"<ListAllMyBucketsResult" in resp.read()

    store = storage.open_store(cfg)  # boto3 through the configured endpoint and dummy keys
    store.client.put_object(Bucket=cfg.bucket, Key="models/x/aaaaaaa/x.tar", Body=b"x")
    assert "(1 objects)" in s3.status(cfg).detail
    s3.up(cfg, progress=False)  # idempotent: same process, object still there
    assert "(1 objects)" in s3.status(cfg).detail

    pid = int((cfg.local_dir / "s3.pid").read_text())
    s3.down(cfg)
    assert not s3.status(cfg).healthy
    assert not (cfg.local_dir / "s3.pid").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    s3.up(cfg, progress=False)
    status = s3.status(cfg)
    assert status.healthy and "(0 objects)" in status.detail  # in memory: the restart emptied it


@pytest.mark.integration
def test_status_notices_a_missing_bucket(private_s3) -> None:
    cfg = private_s3
    s3.up(cfg, progress=False)
    storage.open_store(cfg).client.delete_bucket(Bucket=cfg.bucket)
    status = s3.status(cfg)
    assert not status.healthy and f"no bucket {cfg.bucket}" in status.detail
    s3.up(cfg, progress=False)
    assert s3.status(cfg).healthy
