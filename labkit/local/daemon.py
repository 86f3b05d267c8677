"""Background programs of the local profile: start detached, wait until healthy, stop by process group.

Each service is a real program (a Hub mirror, an S3 server, ...) that outlives the command that
started it; its pid file and log live in ``<lab_dir>/local/<name>.{pid,log}``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import venv
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

from labkit.errors import ServiceError
from labkit.util import pip
from labkit.util.fs import file_lock
from labkit.util.procs import GRACE_S, is_zombie, stop_group

LOG_TAIL_LINES = 15
# Local services listen on loopback: a proxy from the environment must not carry requests away.
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class ServiceStatus:
    """One local service: where it is and whether it answers."""

    name: str
    url: str
    healthy: bool
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "url": self.url, "healthy": self.healthy, "detail": self.detail}


@dataclass
class Daemon:
    """A local service program: how to start it and how to tell that it answers."""

    name: str
    argv: Sequence[str]
    run_dir: Path
    health_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    start_timeout: float = 60.0

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of the running program, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            self.pid_file.unlink(missing_ok=True)
            return None
        except PermissionError:
            pass
        if is_zombie(pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def healthy(self, timeout: float = 2.0) -> bool:
        """True when the health URL answers with a status below 500."""
        try:
            with LOOPBACK.open(self.health_url, timeout=timeout) as resp:
                return resp.status < 500
        except urllib.error.HTTPError as exc:
            return exc.code < 500
        except (OSError, ValueError):
            return False

    def start(self) -> None:
        """Start the program unless it already runs and answers; wait until it is healthy."""
        if self.pid() is not None and self.healthy():
            return
        self.stop()
        if self.healthy():
            raise ServiceError(
                f"something else answers at {self.health_url}, so the local {self.name} cannot start",
                f"stop that program or choose another port for {self.name} (see `labkit config`)",
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                start_new_session=True,  # its own process group, so stop() reaches its children
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise ServiceError(
                    f"the local {self.name} exited with code {proc.returncode} while starting ({self.tail()})",
                    f"see {self.log_file}",
                )
            if self.healthy():
                return
            time.sleep(0.2)
        self.stop()
        raise ServiceError(
            f"the local {self.name} did not answer at {self.health_url} within {self.start_timeout:.0f} s ({self.tail()})",
            f"see {self.log_file}",
        )

    def stop(self, grace: float = GRACE_S) -> None:
        """Stop the program and its children (SIGTERM, then SIGKILL); no-op when not running."""
        pid = self.pid()
        if pid is None:
            return
        stop_group(pid, grace=grace)
        self.pid_file.unlink(missing_ok=True)

    def status(
        self, url: str, fails: str, details: Callable[[int], ServiceStatus | str]
    ) -> ServiceStatus:
        """Every service's status: not running, running but not answering (``pid N <fails>``), or
        healthy with ``details(pid)`` (a line, or a whole ServiceStatus for a service that checks more)."""
        pid = self.pid()
        if pid is None:
            return ServiceStatus(self.name, url, False, "not running: run `labkit local up`")
        if not self.healthy():
            return ServiceStatus(self.name, url, False, f"pid {pid} {fails}: see {self.log_file}")
        found = details(pid)
        return (
            found
            if isinstance(found, ServiceStatus)
            else ServiceStatus(self.name, url, True, found)
        )

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the log, folded onto one line for error messages."""
        try:
            text = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "no log"
        last = [line.strip() for line in text if line.strip()]
        return " | ".join(last[-3:]) or "empty log"


def service_lock(path: Path) -> contextlib.AbstractContextManager[None]:
    """One `up` of a service at a time (two `labkit local up`s, or `up` and a test fixture)."""
    return file_lock(path)


def extra_requirements(extra: str) -> list[str]:
    """The pinned requirements of one of labkit's extras, read from the installed metadata."""
    try:
        reqs = requires("labkit") or []
    except PackageNotFoundError:
        reqs = []
    marker = f'extra == "{extra}"'
    found = [r.split(";")[0].strip() for r in reqs if marker in r]
    if not found:
        raise ServiceError(
            f"labkit's metadata has no '{extra}' extra",
            "reinstall the lab with `make venv` (pip install -e .)",
        )
    return found


def tool_env(root: Path, extra: str, *, python: str = sys.executable) -> Path:
    """A venv of its own for a service program (kept apart from vLLM's pins); returns its bin dir.

    Built once per set of requirements: a stamp file holds the requirement list it was built for.
    With uv beside the lab's Python (the `dev` extra; `make venv` installs it) the venv is made
    by uv from its cache, in seconds; otherwise by venv and pip (half a minute per service).
    """
    reqs = extra_requirements(extra)
    env_dir = root / extra
    stamp = env_dir / ".labkit-requirements"
    bin_dir = env_dir / "bin"
    if stamp.exists() and stamp.read_text() == "\n".join(reqs):
        return bin_dir
    uv = Path(sys.executable).parent / "uv"
    if uv.is_file():
        shutil.rmtree(env_dir, ignore_errors=True)
        steps = [
            [str(uv), "venv", "--quiet", "--python", python, str(env_dir)],
            # uv reads no pip configuration: the wheel folders pip is pointed at are passed on.
            [str(uv), "pip", "install", "--quiet", "--system-certs", "--python",
             str(bin_dir / "python"),
             *(arg for folder in pip.find_links() for arg in ("--find-links", str(folder))),
             *reqs],
        ]  # fmt: skip
    else:
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        steps = [[str(bin_dir / "python"), "-m", "pip", "install", "--quiet", *reqs]]
    for argv in steps:
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ServiceError(
                f"installing {' '.join(reqs)} for the local services failed ({last})",
                "check that PyPI is reachable, then run `labkit local up` again",
            )
    stamp.write_text("\n".join(reqs))
    return bin_dir
