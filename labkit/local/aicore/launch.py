"""The local profile's SAP AI Core, a service: labkit.local.aicore.server on 127.0.0.1:<aicore_port>
and its token endpoint, labkit.local.aicore.tokens, on a port of its own (<aicore_port> + 1, or
``LABKIT_AICORE_TOKEN_PORT``), as a tenant's token endpoint is a separate XSUAA host.

`up` writes the service key ``<local_dir>/aicore-service-key.json`` (mode 0600, in the JSON shape
the BTP cockpit gives: ``url`` the token host, ``serviceurls.AI_API_URL`` the API host; the
client secret is generated once and kept) and starts both programs in the background with the
lab's Python (``LABKIT_AICORE_TIME_SCALE`` passed on to the server). Its state (objects, secrets, deployment logs and models)
lives under ``<local_dir>/aicore`` and survives a restart: deployments that were running start
again. `down` stops the server, which stops every predictor first. SAP's client connects with::

    key = json.load(open(".lab/local/aicore-service-key.json"))
    AICoreV2Client(base_url=key["serviceurls"]["AI_API_URL"] + "/v2",
                   auth_url=key["url"] + "/oauth/token", client_id=key["clientid"],
                   client_secret=key["clientsecret"], resource_group="default")

How predictors run (``LABKIT_AICORE_RUNNER``): ``auto`` runs the pushed image with buildah where
buildah is installed and runtime/entrypoint.py on the host otherwise; ``buildah`` or ``host``
force one way.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.config import Config
from labkit.errors import ServiceError
from labkit.local.aicore.common import SERVICE
from labkit.local.daemon import LOOPBACK, Daemon, ServiceStatus, service_lock
from labkit.util.fs import atomic_write_json

# Shaped like an XSUAA client id; its '|' and '!' exercise the clients' credential encoding.
CLIENT_ID = "sb-labkit-local!b1|aicore!b540"
_HEALTH_TIMEOUT_S = 5.0
_STOP_TIMEOUT_S = 60.0  # the server ends every predictor (SIGTERM, then SIGKILL) before it exits


def aicore_url(cfg: Config) -> str:
    """Where the local AI Core's API listens (the service key's AI_API_URL)."""
    return f"http://127.0.0.1:{cfg.aicore_port}"


def token_port(cfg: Config) -> int:
    """The token endpoint's port: ``aicore_token_port`` (LABKIT_AICORE_TOKEN_PORT) where the
    configuration has it, else the API's port + 1."""
    return cfg.aicore_token_port or cfg.aicore_port + 1


def token_url(cfg: Config) -> str:
    """Where the token endpoint listens (the service key's ``url``; + /oauth/token)."""
    return f"http://127.0.0.1:{token_port(cfg)}"


def service_key_file(cfg: Config) -> Path:
    """The local AI Core's service key."""
    return cfg.local_dir / "aicore-service-key.json"


def state_dir(cfg: Config) -> Path:
    """The local AI Core's objects, secrets, deployment logs and models."""
    return cfg.local_dir / "aicore"


def ensure_service_key(cfg: Config, *, auth_url: str | None = None) -> dict[str, Any]:
    """The service key file, written on first use (mode 0600); the client secret is kept.
    ``url`` is the token endpoint's host (``auth_url``, else :func:`token_url`), never the
    API's: a BTP key names XSUAA there."""
    path = service_key_file(cfg)
    url = aicore_url(cfg)
    key: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        key = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(key, dict) or not key.get("clientsecret") or not key.get("clientid"):
        key = {"clientid": CLIENT_ID, "clientsecret": secrets.token_urlsafe(32)}
    wanted = {
        **key,
        "url": auth_url or token_url(cfg),
        "serviceurls": {"AI_API_URL": url},
        "identityzone": "local",
        "identityzoneid": "local",
        "appname": SERVICE,
    }
    mode = path.stat().st_mode & 0o777 if path.exists() else None
    if wanted != key or mode != 0o600:
        atomic_write_json(path, wanted, indent=2, newline=True, mode=0o600)
    return wanted


@dataclass
class _AICore(Daemon):
    """Healthy only when /healthz answers as the local AI Core."""

    def healthy(self, timeout: float = _HEALTH_TIMEOUT_S) -> bool:
        try:
            with LOOPBACK.open(self.health_url, timeout=timeout) as resp:
                return resp.status == 200 and json.load(resp).get("service") == SERVICE
        except (OSError, ValueError, AttributeError):
            return False


def server_argv(cfg: Config) -> list[str]:
    """The command line that runs the server for this configuration."""
    from labkit.image import image_dir

    argv = [
        sys.executable,
        "-m",
        "labkit.local.aicore.server",
        "--state-dir", str(state_dir(cfg)),
        "--service-key", str(service_key_file(cfg)),
        "--port", str(cfg.aicore_port),
        "--token-ttl", str(cfg.aicore_token_ttl),
        "--runner", cfg.aicore_runner,
        "--start-timeout", str(cfg.aicore_start_timeout),
        "--entrypoint", str(cfg.root / "runtime" / "entrypoint.py"),
        "--python", sys.executable,
        "--image-storage", str(image_dir(cfg) / "storage"),
    ]  # fmt: skip
    return argv


@dataclass
class _TokenEndpoint(Daemon):
    """Healthy only when /healthz answers as the local AI Core's token endpoint."""

    def healthy(self, timeout: float = _HEALTH_TIMEOUT_S) -> bool:
        from labkit.local.aicore.tokens import TOKEN_SERVICE

        try:
            with LOOPBACK.open(self.health_url, timeout=timeout) as resp:
                return resp.status == 200 and json.load(resp).get("service") == TOKEN_SERVICE
        except (OSError, ValueError, AttributeError):
            return False


def token_argv(cfg: Config) -> list[str]:
    """The command line that runs the token endpoint for this configuration."""
    return [
        sys.executable,
        "-m",
        "labkit.local.aicore.tokens",
        "--state-dir", str(state_dir(cfg)),
        "--service-key", str(service_key_file(cfg)),
        "--port", str(token_port(cfg)),
        "--token-ttl", str(cfg.aicore_token_ttl),
    ]  # fmt: skip


def _server_env(cfg: Config) -> dict[str, str]:
    """The server's environment: the time scale of the configuration, where it has one."""
    return {"LABKIT_AICORE_TIME_SCALE": str(cfg.aicore_time_scale)}


def _daemon(cfg: Config) -> _AICore:
    return _AICore(
        name="aicore",
        argv=server_argv(cfg),
        run_dir=cfg.local_dir,
        health_url=aicore_url(cfg) + "/healthz",
        cwd=cfg.root,
        start_timeout=60.0,
        env=_server_env(cfg),
    )


def _token_daemon(cfg: Config) -> _TokenEndpoint:
    return _TokenEndpoint(
        name="aicore-token",
        argv=token_argv(cfg),
        run_dir=cfg.local_dir,
        health_url=token_url(cfg) + "/healthz",
        cwd=cfg.root,
        start_timeout=60.0,
    )


def up(cfg: Config, *, progress: bool = True) -> None:
    """`labkit local up`: write the service key and start the server (quick when it runs)."""
    from tqdm.auto import tqdm

    from labkit.local.aicore.tokens import token_key

    entrypoint = cfg.root / "runtime" / "entrypoint.py"
    if not entrypoint.is_file():
        raise ServiceError(
            f"no runtime entrypoint at {entrypoint}, which the local AI Core runs deployments with",
            "run labkit from the lab's checkout (LABKIT_ROOT)",
        )
    if shutil.which("git") is None:
        raise ServiceError(
            "git is not installed: the local AI Core syncs the templates from a git repository",
            "install git (`apt-get install git`)",
        )
    with (
        service_lock(cfg.local_dir / "aicore.lock"),
        tqdm(total=3, desc="aicore", disable=not progress, leave=False) as bar,
    ):
        bar.set_description_str("aicore: service key")
        ensure_service_key(cfg)
        state_dir(cfg).mkdir(parents=True, exist_ok=True)
        token_key(state_dir(cfg))  # made once, before the two programs that share it start
        bar.update()
        bar.set_description_str("aicore: token endpoint")
        _token_daemon(cfg).start()
        bar.update()
        bar.set_description_str("aicore: start")
        _daemon(cfg).start()
        bar.update()


def down(cfg: Config) -> None:
    """Stop the server (it stops every predictor first); the state and the key stay."""
    from labkit.local.aicore.processes import kill_recorded

    _daemon(cfg).stop(grace=_STOP_TIMEOUT_S)
    _token_daemon(cfg).stop()
    # A server killed before it ended its predictors leaves them recorded: end them too.
    for dep in _deployments(cfg):
        if dep.get("_process"):
            kill_recorded(dep["_process"])


def _deployments(cfg: Config) -> list[dict[str, Any]]:
    try:
        data = json.loads((state_dir(cfg) / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [d for group in data.get("deployments", {}).values() for d in group.values()]


def status(cfg: Config) -> ServiceStatus:
    """Whether the server runs and answers, and how many deployments it has."""
    url = aicore_url(cfg)
    daemon = _daemon(cfg)
    pid = daemon.pid()
    if pid is None:
        return ServiceStatus("aicore", url, False, "not running: run `labkit local up`")
    if not daemon.healthy():
        return ServiceStatus(
            "aicore", url, False, f"pid {pid} does not answer /healthz: see {daemon.log_file}"
        )
    token = _token_daemon(cfg)
    if not token.healthy():
        return ServiceStatus(
            "aicore",
            url,
            False,
            f"the token endpoint {token_url(cfg)} does not answer: see {token.log_file}",
        )
    deployments = _deployments(cfg)
    running = sum(1 for d in deployments if d.get("status") == "RUNNING")
    how = cfg.aicore_runner
    if how == "auto":
        how = "image with buildah" if shutil.which("buildah") else "entrypoint on the host"
    return ServiceStatus(
        "aicore",
        url,
        True,
        f"pid {pid}, {len(deployments)} deployment{'' if len(deployments) == 1 else 's'} "
        f"({running} running), predictors: {how}; token endpoint {token_url(cfg)}; "
        f"service key {service_key_file(cfg)}",
    )
