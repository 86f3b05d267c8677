"""Shared fixtures. The session-wide setup (the test lab dir, the tiers, the recorded lab run) is
in the repository's root conftest.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from labkit.util import net, procs

# Generated inputs (Hypothesis): every run tries the same examples (derandomized), so a failure
# in CI is a failure on every machine; `make fuzz` tries many more, each run new ones.
settings.register_profile(
    "default",
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("fuzz", max_examples=3000, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The local profile's model folder, built on first use (as `labkit local up` does)."""
    from labkit.config import load_config
    from labkit.local.model import ensure_default_model

    return ensure_default_model(load_config().local_model_dir, progress=False)


@pytest.fixture(scope="session")
def tokenizer(default_model: Path):
    """The default model's tokenizer (what the benchmark's workload counts tokens with)."""
    from labkit import bench

    return bench.load_tokenizer(default_model)


@pytest.fixture
def lab_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty lab dir for one test; returns it."""
    monkeypatch.setenv("LABKIT_LAB_DIR", str(tmp_path / "lab"))
    return tmp_path / "lab"


@pytest.fixture(scope="session")
def local_hub(default_model: Path):
    """The local Hub mirror, started once (as `labkit local up` does) and left running."""
    from labkit.config import load_config
    from labkit.local import hub

    cfg = load_config()
    hub.up(cfg, progress=False)
    return cfg


@pytest.fixture(scope="session")
def default_tarball(local_hub, tmp_path_factory: pytest.TempPathFactory):
    """The default model's tarball, made the lab's way: downloaded from the local Hub at its first
    commit, then packaged (steps 02 and 03 of the lab, once per session)."""
    from labkit import hub, package
    from labkit.local.hub import DEFAULT_REPO_ID, FIRST_COMMIT

    cache = tmp_path_factory.mktemp("hub-cache")
    plan = hub.plan_download(
        DEFAULT_REPO_ID, FIRST_COMMIT, endpoint=local_hub.hub_endpoint, cache_dir=cache
    )
    snap = hub.download(plan, progress=False)
    dest = tmp_path_factory.mktemp("tarball") / "HuggingFaceTB--SmolLM2-135M-Instruct.tar"
    return package.write_tarball(cache, DEFAULT_REPO_ID, snap.revision, dest, progress=False)


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port that is free now (for a server the test starts)."""
    return net.free_port()


class ProcessGroups:
    """Programs a test started in their own process group; each is stopped when the test ends."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def add(self, proc: subprocess.Popen) -> subprocess.Popen:
        """Stop ``proc``'s group (started with ``start_new_session=True``) at teardown."""
        self.started.append(proc)
        return proc

    def popen(self, argv, **kwargs) -> subprocess.Popen:
        """``subprocess.Popen`` in a new process group, stopped at teardown."""
        return self.add(subprocess.Popen(argv, start_new_session=True, **kwargs))

    def stop_all(self, grace: float = 10.0) -> None:
        while self.started:
            proc = self.started.pop()
            procs.stop_group(proc.pid, grace=grace, proc=proc)


@pytest.fixture
def process_groups():
    """Start programs through this and they never outlive the test, pass or fail."""
    groups = ProcessGroups()
    try:
        yield groups
    finally:
        groups.stop_all()
