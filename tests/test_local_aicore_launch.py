"""The local AI Core as a service (labkit.local.aicore.launch): its service key, and
`labkit local up|down|status` for it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aicore_emulator
import pytest
from aicore_emulator import (
    sdk_client,
    wait_for,
)

from labkit.config import Config, load_config
from labkit.local import aicore
from labkit.util.procs import stop_group

# The fixtures of tests/aicore_emulator.py this file uses.
service_cfg = aicore_emulator.service_cfg


def test_service_key_is_private_generated_once_and_follows_the_port(tmp_path: Path) -> None:
    cfg = Config(local_dir=tmp_path, aicore_port=8123)
    key = aicore.ensure_service_key(cfg)
    path = aicore.service_key_file(cfg)
    assert path == tmp_path / "aicore-service-key.json"
    assert path.stat().st_mode & 0o777 == 0o600
    # url is the token endpoint's host, a port of its own (a tenant's XSUAA), not the API's.
    assert key["serviceurls"]["AI_API_URL"] == "http://127.0.0.1:8123"
    assert key["url"] == "http://127.0.0.1:8124" == aicore.launch.token_url(cfg)
    assert key["identityzone"] == "local" and len(key["clientsecret"]) >= 32
    assert json.loads(path.read_text()) == key
    path.chmod(0o644)
    again = aicore.ensure_service_key(Config(local_dir=tmp_path, aicore_port=8124))
    assert again["clientsecret"] == key["clientsecret"] and again["clientid"] == key["clientid"]
    assert again["serviceurls"]["AI_API_URL"] == "http://127.0.0.1:8124"
    assert again["url"] == "http://127.0.0.1:8125" and path.stat().st_mode & 0o777 == 0o600
    # The config's own reader takes it as a BTP service key.
    parsed = load_config(aicore_service_key_file=path).service_key()
    assert parsed is not None and parsed["clientid"] == key["clientid"]


def test_up_status_down(service_cfg: Config) -> None:
    cfg = service_cfg
    assert not aicore.status(cfg).healthy
    aicore.up(cfg, progress=False)
    aicore.up(cfg, progress=False)  # idempotent
    row = aicore.status(cfg)
    assert (
        row.healthy
        and row.url == f"http://127.0.0.1:{cfg.aicore_port}"
        and "0 deployments" in row.detail
    )
    key = json.loads(aicore.service_key_file(cfg).read_text())
    assert key["url"] != key["serviceurls"]["AI_API_URL"] and "token endpoint" in row.detail
    assert sdk_client(key).resource_groups.get("default").resource_group_id == "default"
    log = (cfg.local_dir / "aicore.log").read_text()
    assert key["clientsecret"] not in log
    aicore.down(cfg)
    assert not aicore.status(cfg).healthy
    # Something else on the port is not taken for the local AI Core.
    with _other_server(cfg.aicore_port):
        from labkit.errors import ServiceError

        with pytest.raises(ServiceError, match="aicore"):
            aicore.up(cfg, progress=False)


@contextlib.contextmanager
def _other_server(port: int) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), "http.server")
        yield
    finally:
        stop_group(proc.pid, grace=10, proc=proc)


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2):
            return True
    except OSError:
        return False


def test_registered_as_the_last_local_service() -> None:
    from labkit.local import services

    assert services.SERVICES[-1] == "aicore"


def test_the_token_endpoint_runs_as_its_own_program(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LABKIT_AICORE_TOKEN_PORT", raising=False)  # the default: the next port
    cfg = Config(local_dir=tmp_path, aicore_port=8200)
    argv = aicore.launch.token_argv(cfg)
    assert argv[1:3] == ["-m", "labkit.local.aicore.tokens"]
    assert argv[argv.index("--port") + 1] == "8201"
    monkeypatch.setenv("LABKIT_AICORE_TOKEN_PORT", "9444")
    cfg = Config(local_dir=tmp_path, aicore_port=8200)  # the setting (Config.aicore_token_port)
    assert aicore.launch.token_url(cfg) == "http://127.0.0.1:9444"
    # The configuration's time scale (Config.aicore_time_scale) reaches the server's environment.
    from types import SimpleNamespace

    assert aicore.launch._server_env(SimpleNamespace(aicore_time_scale=1.0)) == {
        "LABKIT_AICORE_TIME_SCALE": "1.0"
    }
