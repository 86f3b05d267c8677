"""labkit.local.hub: olah serving the local git repos as a Hugging Face Hub, checked with huggingface_hub."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
from huggingface_hub import (
    HfApi,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from labkit.config import Config, load_config
from labkit.errors import ModelError, ServiceError
from labkit.local import hub
from labkit.local.hub import DEFAULT_REPO_ID, DEFAULT_TAG, FIRST_COMMIT, MAIN_COMMIT
from labkit.util.net import free_port

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1\n"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def api(local_hub: Config) -> HfApi:
    return HfApi(endpoint=hub.hub_url(local_hub), token=False)


@pytest.fixture(scope="module")
def full_snapshot(local_hub: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole default repo at its first commit (260 MB): downloaded once for this file."""
    return Path(
        snapshot_download(
            DEFAULT_REPO_ID,
            revision=FIRST_COMMIT,
            cache_dir=tmp_path_factory.mktemp("hf-cache"),
            endpoint=hub.hub_url(local_hub),
            token=False,
        )
    )


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A small model folder: a JSON file, a *.bin (LFS by pattern), a file over 10 MB (LFS by size)."""
    folder = tmp_path / "tiny"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "tiny"}\n')
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (folder / "sub" / "big.dat").write_bytes(b"\1" * (hub.LFS_MIN_SIZE + 1))
    return folder


@pytest.fixture
def scratch_repo(local_hub: Config, request: pytest.FixtureRequest):
    """A repo id in the shared hub that only this test uses; removed afterwards."""
    repo_id = f"labkit-test/{request.node.name.replace('_', '-')}-{os.getpid()}"
    yield repo_id
    import shutil

    shutil.rmtree(hub.repo_dir(local_hub, repo_id), ignore_errors=True)


@pytest.mark.integration
def test_default_repo_has_the_pinned_commits(local_hub: Config) -> None:
    assert hub.default_revisions(local_hub) == {"main": MAIN_COMMIT, DEFAULT_TAG: FIRST_COMMIT}
    assert FIRST_COMMIT != MAIN_COMMIT
    status = hub.status(local_hub)
    assert status.healthy and status.url == local_hub.hub_endpoint
    assert DEFAULT_REPO_ID in status.detail


@pytest.mark.integration
def test_model_info_at_the_first_commit_and_at_main(api: HfApi, default_model: Path) -> None:
    first = api.model_info(DEFAULT_REPO_ID, revision=FIRST_COMMIT, files_metadata=True)
    main = api.model_info(DEFAULT_REPO_ID, revision="main", files_metadata=True)
    assert (first.sha, main.sha) == (FIRST_COMMIT, MAIN_COMMIT)
    assert api.model_info(DEFAULT_REPO_ID, revision=DEFAULT_TAG).sha == FIRST_COMMIT
    # Without a revision the Hub answers for the default branch.
    assert api.model_info(DEFAULT_REPO_ID).sha == MAIN_COMMIT

    files = {s.rfilename: s for s in first.siblings}
    assert sorted(files) == sorted([".gitattributes", *(p.name for p in default_model.iterdir())])
    for name, sibling in files.items():
        if name != ".gitattributes":
            assert sibling.size == (default_model / name).stat().st_size, name
    weights = files["model.safetensors"]
    assert weights.lfs is not None
    assert weights.lfs.size == weights.size
    assert weights.lfs.sha256 == _sha256(default_model / "model.safetensors")
    assert files["config.json"].lfs is None
    assert files["config.json"].blob_id == _git_blob_id(
        (default_model / "config.json").read_bytes()
    )

    # Only the README differs between the two commits.
    changed = {s.rfilename for s in main.siblings if files[s.rfilename].blob_id != s.blob_id}
    assert changed == {"README.md"}
    # Without files_metadata the Hub lists names only.
    assert api.model_info(DEFAULT_REPO_ID, revision=FIRST_COMMIT).siblings[0].size is None


@pytest.mark.integration
def test_refs_paths_info_and_tree(api: HfApi) -> None:
    refs = api.list_repo_refs(DEFAULT_REPO_ID)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", MAIN_COMMIT)]
    assert [(t.name, t.target_commit) for t in refs.tags] == [(DEFAULT_TAG, FIRST_COMMIT)]

    info = {
        p.path: p
        for p in api.get_paths_info(
            DEFAULT_REPO_ID,
            ["config.json", "model.safetensors", "missing.txt"],
            revision=FIRST_COMMIT,
        )
    }
    assert sorted(info) == ["config.json", "model.safetensors"]
    assert info["model.safetensors"].lfs is not None and info["config.json"].lfs is None

    tree = {
        f.path: f
        for f in api.list_repo_tree(DEFAULT_REPO_ID, revision=FIRST_COMMIT, recursive=True)
    }
    assert tree["model.safetensors"].lfs.sha256 == info["model.safetensors"].lfs.sha256
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(DEFAULT_REPO_ID, path_in_repo="missing", revision=FIRST_COMMIT))

    commits = api.list_repo_commits(DEFAULT_REPO_ID, revision="main")
    assert [c.commit_id for c in commits] == [MAIN_COMMIT, FIRST_COMMIT]
    assert commits[-1].authors == ["labkit"] and commits[-1].title.startswith("Add SmolLM2")


@pytest.mark.integration
def test_snapshot_of_config_and_tokenizer_at_the_first_commit(
    local_hub: Config, default_model: Path, tmp_path: Path
) -> None:
    snapshot = Path(
        snapshot_download(
            DEFAULT_REPO_ID,
            revision=FIRST_COMMIT,
            allow_patterns=["config.json", "tokenizer*"],
            cache_dir=tmp_path,
            endpoint=hub.hub_url(local_hub),
            token=False,
        )
    )
    assert snapshot.name == FIRST_COMMIT
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    for path in snapshot.iterdir():
        assert path.read_bytes() == (default_model / path.name).read_bytes(), path.name

    readme_first = hf_hub_download(
        DEFAULT_REPO_ID,
        "README.md",
        revision=DEFAULT_TAG,
        cache_dir=tmp_path,
        endpoint=hub.hub_url(local_hub),
        token=False,
    )
    readme_main = hf_hub_download(
        DEFAULT_REPO_ID,
        "README.md",
        revision="main",
        cache_dir=tmp_path,
        endpoint=hub.hub_url(local_hub),
        token=False,
    )
    assert Path(readme_first).read_bytes() == (default_model / "README.md").read_bytes()
    assert f"/{MAIN_COMMIT}/" in readme_main
    assert Path(readme_main).read_text().startswith(Path(readme_first).read_text())
    assert "## Revisions" in Path(readme_main).read_text()


@pytest.mark.integration
def test_every_etag_matches_the_downloaded_bytes(
    local_hub: Config, full_snapshot: Path, default_model: Path
) -> None:
    """LFS files: ETag = X-Linked-Etag = sha256 of the bytes; other files: the git blob id."""
    files = sorted(full_snapshot.iterdir())
    assert {p.name for p in files} >= {p.name for p in default_model.iterdir()}
    lfs_files = 0
    for path in files:
        url = hf_hub_url(
            DEFAULT_REPO_ID, path.name, revision=FIRST_COMMIT, endpoint=hub.hub_url(local_hub)
        )
        meta = get_hf_file_metadata(url, token=False)
        assert meta.commit_hash == FIRST_COMMIT
        assert meta.size == path.stat().st_size, path.name
        # huggingface_hub names each blob in its cache after the file's ETag.
        assert path.resolve().name == meta.etag, path.name
        data_sha256 = _sha256(path)
        if path.name.endswith(".safetensors") or path.stat().st_size >= hub.LFS_MIN_SIZE:
            lfs_files += 1
            assert meta.etag == data_sha256, path.name
        else:
            assert meta.etag == _git_blob_id(path.read_bytes()), path.name
        if path.name in {p.name for p in default_model.iterdir()}:
            assert data_sha256 == _sha256(default_model / path.name), path.name
    assert lfs_files == 1

    import httpx

    url = hf_hub_url(
        DEFAULT_REPO_ID, "model.safetensors", revision=FIRST_COMMIT, endpoint=hub.hub_url(local_hub)
    )
    head = httpx.head(url)
    sha = _sha256(full_snapshot / "model.safetensors")
    # As huggingface.co sends them: quoted, the linked headers naming the LFS object.
    assert head.headers["x-linked-etag"] == head.headers["etag"] == f'"{sha}"'
    assert (
        int(head.headers["x-linked-size"]) == (full_snapshot / "model.safetensors").stat().st_size
    )
    assert head.headers["x-repo-commit"] == FIRST_COMMIT


@pytest.mark.integration
def test_unknown_repo_revision_and_file_raise_the_hub_errors(
    local_hub: Config, api: HfApi, tmp_path: Path
) -> None:
    endpoint = hub.hub_url(local_hub)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("nobody/nothing", revision="main")
    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_refs("nobody/nothing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(
            "nobody/nothing", "config.json", cache_dir=tmp_path, endpoint=endpoint, token=False
        )
    for revision in ("no-such-branch", "0" * 40):
        with pytest.raises(RevisionNotFoundError):
            api.model_info(DEFAULT_REPO_ID, revision=revision)
        with pytest.raises(RevisionNotFoundError):
            hf_hub_download(
                DEFAULT_REPO_ID,
                "config.json",
                revision=revision,
                cache_dir=tmp_path,
                endpoint=endpoint,
                token=False,
            )
        with pytest.raises(RevisionNotFoundError):
            snapshot_download(
                DEFAULT_REPO_ID,
                revision=revision,
                cache_dir=tmp_path,
                endpoint=endpoint,
                token=False,
            )
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(
            DEFAULT_REPO_ID,
            "missing.txt",
            revision=FIRST_COMMIT,
            cache_dir=tmp_path,
            endpoint=endpoint,
            token=False,
        )


@pytest.mark.integration
def test_add_model_serves_a_folder_with_lfs_files(
    local_hub: Config, api: HfApi, tiny_model: Path, scratch_repo: str, tmp_path: Path
) -> None:
    first = hub.add_model(local_hub, tiny_model, scratch_repo, tag="v1")
    assert hub.add_model(local_hub, tiny_model, scratch_repo) == first  # unchanged: no new commit
    (tiny_model / "config.json").write_text('{"model_type": "tiny", "v": 2}\n')
    second = hub.add_model(local_hub, tiny_model, scratch_repo)
    assert second != first

    info = api.model_info(scratch_repo, revision="main", files_metadata=True)
    assert info.sha == second
    assert api.model_info(scratch_repo, revision="v1").sha == first
    files = {s.rfilename: s for s in info.siblings}
    assert sorted(files) == [".gitattributes", "config.json", "sub/big.dat", "weights.bin"]
    assert files["weights.bin"].lfs.sha256 == _sha256(tiny_model / "weights.bin")
    assert files["sub/big.dat"].lfs.size == hub.LFS_MIN_SIZE + 1
    assert files["config.json"].lfs is None

    snapshot = Path(
        snapshot_download(
            scratch_repo,
            revision=first,
            cache_dir=tmp_path,
            endpoint=hub.hub_url(local_hub),
            token=False,
        )
    )
    assert (snapshot / "sub" / "big.dat").read_bytes() == (
        tiny_model / "sub" / "big.dat"
    ).read_bytes()
    assert (snapshot / "config.json").read_text() == '{"model_type": "tiny"}\n'
    assert "sub/big.dat filter=lfs" in (snapshot / ".gitattributes").read_text()


@pytest.mark.integration
def test_gated_repo_needs_its_token(
    local_hub: Config, api: HfApi, tiny_model: Path, scratch_repo: str, tmp_path: Path
) -> None:
    hub.add_model(local_hub, tiny_model, scratch_repo, gated_token="hf_local_secret")
    assert api.model_info(scratch_repo, revision="main").gated == "manual"
    endpoint = hub.hub_url(local_hub)
    for token in (False, "hf_wrong"):
        with pytest.raises(GatedRepoError):
            hf_hub_download(
                scratch_repo, "config.json", cache_dir=tmp_path, endpoint=endpoint, token=token
            )
    path = hf_hub_download(
        scratch_repo, "config.json", cache_dir=tmp_path, endpoint=endpoint, token="hf_local_secret"
    )
    assert Path(path).read_bytes() == (tiny_model / "config.json").read_bytes()


@pytest.mark.integration
def test_a_rebuild_in_a_fresh_dir_gives_the_same_commits(
    default_model: Path, tmp_path: Path
) -> None:
    cfg = load_config(local_dir=tmp_path / "local", local_model_dir=default_model)
    repo = hub.ensure_default_repo(cfg, progress=False)
    assert hub.default_revisions(cfg) == {"main": MAIN_COMMIT, DEFAULT_TAG: FIRST_COMMIT}
    pointer = (repo / ".git" / "lfs" / "objects").rglob("*")
    assert any(
        p.is_file() and p.stat().st_size == (default_model / "model.safetensors").stat().st_size
        for p in pointer
    )
    # Intact: a second call leaves it alone; a lost LFS object makes it rebuild.
    assert hub.ensure_default_repo(cfg, progress=False) == repo
    for obj in (repo / ".git" / "lfs" / "objects").rglob("*"):
        if obj.is_file():
            obj.unlink()
    hub.ensure_default_repo(cfg, progress=False)
    assert hub.default_revisions(cfg)["main"] == MAIN_COMMIT
    assert hub._default_repo_intact(repo)


@pytest.mark.integration
def test_a_failing_olah_reports_its_log(
    local_hub: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(local_dir=tmp_path / "local", hub_port=free_port())
    cfg.local_dir.mkdir()
    (cfg.local_dir / "envs").symlink_to(local_hub.local_dir / "envs")  # reuse the built tool env
    monkeypatch.setattr(hub, "_ensure_default_repo", lambda cfg, progress: None)
    launcher = tmp_path / "olah_launch.py"
    launcher.write_text("import sys\nprint('olah: bad config file')\nsys.exit(3)\n")
    monkeypatch.setattr(hub, "_LAUNCHER", launcher)
    with pytest.raises(ServiceError, match=r"exited with code 3 .*olah: bad config file"):
        hub.up(cfg, progress=False)
    assert not hub.status(cfg).healthy


def test_a_taken_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = load_config(local_dir=tmp_path / "local", hub_port=busy.getsockname()[1])
        with pytest.raises(
            ServiceError, match=r"port \d+ is taken by another program.*LABKIT_HUB_PORT"
        ):
            hub.up(cfg, progress=False)


def test_missing_git_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    cfg = load_config(local_dir=tmp_path / "local")
    with pytest.raises(ServiceError, match="apt-get install git"):
        hub.add_model(cfg, tmp_path / "m", "org/name")


@pytest.mark.parametrize("repo_id", ["name-only", "a/b/c", "../x", "org/..", "org/na me", ""])
def test_bad_repo_ids_are_refused(tmp_path: Path, repo_id: str) -> None:
    with pytest.raises(ModelError, match="not a Hub repo id"):
        hub.repo_dir(load_config(local_dir=tmp_path), repo_id)


@pytest.mark.integration
def test_up_again_while_running_keeps_the_running_hub(local_hub: Config) -> None:
    pid = (local_hub.local_dir / "hub.pid").read_text()
    hub.up(local_hub, progress=False)
    assert (local_hub.local_dir / "hub.pid").read_text() == pid  # not restarted
    assert hub.status(local_hub).healthy


@pytest.fixture
def private_hub(local_hub: Config, tmp_path: Path):
    """A local Hub of this test's own (own port and dir, sharing the built olah venv and the
    default model), so stopping it leaves the suite's hub serving tests that run meanwhile."""
    local_dir = tmp_path / "local"
    (local_dir / "envs").mkdir(parents=True)
    (local_dir / "envs" / hub.OLAH_EXTRA).symlink_to(local_hub.local_dir / "envs" / hub.OLAH_EXTRA)
    (local_dir / "models").symlink_to(local_hub.local_dir / "models")
    cfg = load_config(local_dir=local_dir, hub_port=free_port())
    hub.up(cfg, progress=False)
    yield cfg
    hub.down(cfg)


@pytest.mark.integration
def test_down_leaves_nothing_behind_and_up_restarts(private_hub: Config) -> None:
    cfg = private_hub
    api = HfApi(endpoint=hub.hub_url(cfg), token=False)
    assert api.model_info(DEFAULT_REPO_ID, revision=DEFAULT_TAG).sha == FIRST_COMMIT
    pid = int((cfg.local_dir / "hub.pid").read_text())
    hub.down(cfg)
    status = hub.status(cfg)
    assert not status.healthy and "not running" in status.detail
    assert not _port_open(cfg.hub_port)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    hub.down(cfg)  # stopping twice is fine

    hub.up(cfg, progress=False)
    assert hub.status(cfg).healthy
    assert api.model_info(DEFAULT_REPO_ID, revision=DEFAULT_TAG).sha == FIRST_COMMIT
