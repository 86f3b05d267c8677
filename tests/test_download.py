"""Step 02 against the local Hub mirror: pinning, verification, resume, and the errors users meet."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit import hub
from labkit.errors import DiskError, ModelError, ServiceError
from labkit.local.hub import DEFAULT_REPO_ID, DEFAULT_TAG, FIRST_COMMIT, MAIN_COMMIT, add_model

pytestmark = pytest.mark.integration


def _plan(cfg, cache, revision="main", **kw):
    return hub.plan_download(
        DEFAULT_REPO_ID, revision, endpoint=cfg.hub_endpoint, cache_dir=cache, **kw
    )


@pytest.fixture(scope="module")
def pinned(local_hub, tmp_path_factory):
    """The default model downloaded once at its tag, as `labkit download --revision v1.0` does."""
    cache = tmp_path_factory.mktemp("cache")
    return hub.download(_plan(local_hub, cache, DEFAULT_TAG), progress=False)


def test_a_tag_is_pinned_to_its_full_commit(pinned):
    assert pinned.revision == FIRST_COMMIT
    folder = hub.repo_folder(pinned.cache_dir, DEFAULT_REPO_ID)
    assert (folder / "refs" / DEFAULT_TAG).read_text() == FIRST_COMMIT
    assert Path(pinned.snapshot_dir) == folder / "snapshots" / FIRST_COMMIT


def test_the_manifest_matches_the_hub(pinned, local_hub):
    info = hub.resolve_revision(DEFAULT_REPO_ID, FIRST_COMMIT, endpoint=local_hub.hub_endpoint)[1]
    hub_files = {s.rfilename: s for s in info.siblings}
    assert {f.path for f in pinned.files} == set(hub_files)
    for f in pinned.files:
        assert f.size == hub_files[f.path].size
        if hub_files[f.path].lfs:
            assert f.sha256 == f.etag == hub_files[f.path].lfs.sha256
    assert any(f.path == "model.safetensors" and f.etag == f.sha256 for f in pinned.files)


def test_branch_and_pin_give_different_commits(local_hub, tmp_path):
    assert _plan(local_hub, tmp_path).revision == MAIN_COMMIT
    assert _plan(local_hub, tmp_path, FIRST_COMMIT).revision == FIRST_COMMIT


def test_finished_files_count_as_present(pinned, local_hub):
    plan = _plan(local_hub, pinned.cache_dir, FIRST_COMMIT)
    assert plan.missing_bytes == 0 and plan.total_bytes == pinned.total_bytes


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_a_corrupt_file_is_named_removed_and_fetched_again(local_hub, tmp_path, name):
    plan = _plan(local_hub, tmp_path, FIRST_COMMIT, include=["*.json", "model.safetensors"])
    snap = hub.download(plan, progress=False)
    blob = (Path(snap.snapshot_dir) / name).resolve()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(ModelError) as exc:
        hub.verify_snapshot(plan)
    assert name in str(exc.value) and "\n" not in str(exc.value)
    assert not blob.exists()
    assert hub.download(plan, progress=False).files == snap.files


def test_a_killed_download_resumes_without_refetching_finished_files(local_hub, tmp_path):
    cache = tmp_path / "cache"
    blobs = hub.repo_folder(cache, DEFAULT_REPO_ID) / "blobs"
    cmd = [str(Path(sys.executable).with_name("labkit")), "download", DEFAULT_REPO_ID,
           "--revision", FIRST_COMMIT, "--cache-dir", str(cache), "--workers", "1", "--json"]  # fmt: skip
    weights_etag = next(
        f.lfs_sha256 for f in _plan(local_hub, cache, FIRST_COMMIT).files if f.lfs_sha256
    )
    # One worker fetches the files in order, so the small ones are done when the weights start.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        partial = list(blobs.glob(f"{weights_etag}.*.incomplete")) if blobs.exists() else []
        if partial and partial[0].stat().st_size > 0:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the download finished before it could be killed"
    finished = {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in blobs.iterdir()
        if p.suffix != ".incomplete"
    }
    assert finished, "no file had finished before the kill"
    plan = _plan(local_hub, cache, FIRST_COMMIT)
    assert 0 < plan.missing_bytes < plan.total_bytes
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["revision"] == FIRST_COMMIT
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in blobs.iterdir()}
    assert all(after[name] == stamp for name, stamp in finished.items()), (
        "a finished file was fetched again"
    )
    assert not list(blobs.glob("*.incomplete"))
    assert len(hub.verify_snapshot(plan).files) == len(result["files"])


def test_user_errors_are_one_line(local_hub, tmp_path, monkeypatch):
    cases = [
        (lambda: hub.plan_download("nobody/nothing", "main", endpoint=local_hub.hub_endpoint, cache_dir=tmp_path),
         ModelError, "no model repo"),
        (lambda: _plan(local_hub, tmp_path, "no-such-branch"), ModelError, "no branch or tag"),
        (lambda: _plan(local_hub, tmp_path, "0" * 40), ModelError, "no revision"),
        (lambda: _plan(local_hub, tmp_path, FIRST_COMMIT[:7]), ModelError, "full 40-hex"),
        (lambda: _plan(local_hub, tmp_path, include=["*.gguf"]), ModelError, "matches"),
        (lambda: hub.plan_download(DEFAULT_REPO_ID, "main", endpoint="http://127.0.0.1:9", cache_dir=tmp_path),
         ServiceError, "unreachable"),
    ]  # fmt: skip
    for call, error, needle in cases:
        with pytest.raises(error) as exc:
            call()
        assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_not_enough_disk_is_refused_before_downloading(local_hub, tmp_path, monkeypatch):
    plan = _plan(local_hub, tmp_path)
    monkeypatch.setattr(hub.shutil, "disk_usage", lambda _: type("U", (), {"free": 1000})())
    with pytest.raises(DiskError, match="needs"):
        hub.download(plan, progress=False)
    assert not list(tmp_path.rglob("*.safetensors"))


def test_gated_repo_needs_the_right_token(local_hub, tmp_path):
    folder = tmp_path / "gated"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    repo_id = f"labkit-test/gated-{os.getpid()}"
    add_model(local_hub, folder, repo_id, gated_token="hf_right")
    try:
        for token, needle in [(None, "set HF_TOKEN"), ("hf_wrong", "no access")]:
            with pytest.raises(ModelError) as exc:
                hub.plan_download(
                    repo_id,
                    "main",
                    endpoint=local_hub.hub_endpoint,
                    cache_dir=tmp_path,
                    token=token,
                )
            assert "gated" in str(exc.value) and needle in str(exc.value)
        plan = hub.plan_download(
            repo_id, "main", endpoint=local_hub.hub_endpoint, cache_dir=tmp_path, token="hf_right"
        )
        assert "config.json" in [
            f.path for f in hub.download(plan, token="hf_right", progress=False).files
        ]
    finally:
        import shutil

        from labkit.local.hub import repo_dir

        shutil.rmtree(repo_dir(local_hub, repo_id), ignore_errors=True)


def test_cli_download_with_tar_then_verify(local_hub, tmp_path):
    labkit = str(Path(sys.executable).with_name("labkit"))
    tar = tmp_path / "out" / "model.tar"
    out = subprocess.run(
        [labkit, "download", DEFAULT_REPO_ID, "--revision", DEFAULT_TAG, "--cache-dir", str(tmp_path / "c"),
         "--tar", str(tar), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"repo_id", "revision", "snapshot_dir", "files", "tar", "tar_sha256"} <= data.keys()
    assert data["revision"] == FIRST_COMMIT and Path(data["tar"]) == tar
    assert tar.with_name("model.tar.sha256").read_text().split()[0] == data["tar_sha256"]
    ok = subprocess.run(
        [labkit, "package", "verify", str(tar), "--json"], capture_output=True, text=True
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    with tar.open("r+b") as fh:
        fh.seek(tar.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    bad = subprocess.run([labkit, "package", "verify", str(tar)], capture_output=True, text=True)
    assert bad.returncode == 1 and "model.safetensors" in bad.stdout + bad.stderr
