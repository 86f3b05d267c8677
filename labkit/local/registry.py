"""The local profile's image registry: Debian's `docker-registry` (Distribution 2.x) on loopback.

It listens on 127.0.0.1:<registry_port> over plain HTTP, without authentication, with its own
config file and storage under ``<local_dir>/registry``, so images pushed there survive a restart.
Clients reach it as ``localhost:<registry_port>`` and must skip TLS (``--tls-verify=false``);
labkit.image does that for every loopback registry.

The program comes from the Debian package, not from PyPI: when it is missing, `up` does not
fail but leaves the service reported as unavailable with the install hint, so the rest of the
local profile still comes up (the image step then says what to install).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from labkit.config import Config
from labkit.errors import ServiceError
from labkit.local.daemon import LOOPBACK, Daemon, ServiceStatus, service_lock

PROGRAM = "docker-registry"
PACKAGE = "docker-registry"
INSTALL_HINT = f"install it with `apt-get install {PACKAGE}` (or `make system`)"
_HEALTH_TIMEOUT_S = 5.0
# The registry is on loopback: a proxy from the environment must not carry requests away.


def registry_dir(cfg: Config) -> Path:
    """The registry's config file and storage."""
    return cfg.local_dir / "registry"


def registry_url(cfg: Config) -> str:
    """Where the local registry listens (its HTTP API v2 is under /v2/)."""
    return f"http://127.0.0.1:{cfg.registry_port}"


def registry_host(cfg: Config) -> str:
    """The registry as image references name it: ``localhost:<port>``."""
    return f"localhost:{cfg.registry_port}"


def program() -> str | None:
    """The docker-registry executable, or None when the Debian package is not installed."""
    return shutil.which(PROGRAM) or shutil.which(PROGRAM, path="/usr/bin:/usr/sbin")


@dataclass
class _Registry(Daemon):
    """The registry counts as healthy only when /v2/ answers as a Distribution registry."""

    def healthy(self, timeout: float = _HEALTH_TIMEOUT_S) -> bool:
        try:
            with LOOPBACK.open(self.health_url, timeout=timeout) as resp:
                api = resp.headers.get("Docker-Distribution-Api-Version", "")
                return resp.status == 200 and api.startswith("registry/2")
        except (OSError, ValueError):
            return False


def _daemon(cfg: Config, exe: str | None = None) -> _Registry:
    root = registry_dir(cfg)
    return _Registry(
        name="registry",
        argv=[exe or program() or PROGRAM, "serve", str(root / "config.yml")],
        run_dir=cfg.local_dir,
        health_url=registry_url(cfg) + "/v2/",
        cwd=root,
        start_timeout=30.0,
    )


def _write_config(cfg: Config) -> None:
    root = registry_dir(cfg)
    (root / "data").mkdir(parents=True, exist_ok=True)
    # JSON is YAML: no YAML library needed, and paths with odd characters stay quoted.
    config = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {
            "addr": f"127.0.0.1:{cfg.registry_port}",
            # Fixed rather than random per start: uploads in flight survive a restart.
            "secret": "labkit-local-registry",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    (root / "config.yml").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def up(cfg: Config, *, progress: bool = True) -> None:
    """`labkit local up`: start the registry once; without the Debian package, leave it down."""
    exe = program()
    if exe is None:
        return  # status() reports it as unavailable, with the install hint
    with service_lock(cfg.local_dir / "registry.lock"):
        daemon = _daemon(cfg, exe)
        if daemon.pid() is not None and daemon.healthy():
            return
        _write_config(cfg)
        daemon.start()


def down(cfg: Config) -> None:
    """Stop the registry; pushed images stay in its storage for the next `up`."""
    _daemon(cfg).stop()


def status(cfg: Config) -> ServiceStatus:
    """Whether the registry runs and answers the HTTP API v2, and which repositories it holds."""
    url = registry_url(cfg)
    if program() is None:
        return ServiceStatus(
            "registry", url, False, f"unavailable: {PROGRAM} is not installed; {INSTALL_HINT}"
        )

    def details(pid: int) -> str:
        repos = catalog(cfg)
        lab = [r for r in repos if r.startswith(f"{cfg.image_repository}/")]
        held = f"{len(repos)} repositories" + (f" ({', '.join(lab[:3])})" if lab else "")
        return f"{_version()}, pid {pid}, {held}"

    return _daemon(cfg).status(url, "does not answer /v2/", details)


def require(cfg: Config) -> str:
    """The local registry's host for image references; a ServiceError when it is not running."""
    if program() is None:
        raise ServiceError(f"the local registry needs {PROGRAM}, which is missing", INSTALL_HINT)
    if not _daemon(cfg).healthy():
        raise ServiceError(
            f"the local registry does not answer at {registry_url(cfg)}", "run `labkit local up`"
        )
    return registry_host(cfg)


def catalog(cfg: Config) -> list[str]:
    """The repositories the local registry holds (first 1000)."""
    try:
        with LOOPBACK.open(
            registry_url(cfg) + "/v2/_catalog?n=1000", timeout=_HEALTH_TIMEOUT_S
        ) as resp:
            return list(json.load(resp).get("repositories") or [])
    except (OSError, ValueError, AttributeError):
        return []


def _version() -> str:
    try:
        out = subprocess.run(
            [program() or PROGRAM, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return PROGRAM
    return f"{PROGRAM} {out[-1]}" if out else PROGRAM
