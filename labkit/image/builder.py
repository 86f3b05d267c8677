"""The image builder (buildah, podman or a Docker engine): which one this machine has, its command
lines and environment, and running its tools with streamed output and a timeout."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.config import Config
from labkit.errors import ServiceError
from labkit.image.tags import ImageError, is_loopback
from labkit.util import procs

BUILDERS = ("buildah", "podman", "docker")
OnLine = Callable[[str], None]
_BUILD_TIMEOUT_S = 3 * 3600
_TOOL_TIMEOUT_S = 600


@dataclass(frozen=True)
class Builder:
    """An image builder program; buildah and podman keep their storage under ``storage``."""

    name: str
    exe: str
    storage: Path | None = None

    @property
    def daemonless(self) -> bool:
        return self.name in ("buildah", "podman")

    def argv(self, *args: str) -> list[str]:
        """The command line with the storage options this builder takes."""
        base = [self.exe]
        if self.storage is not None and self.daemonless:
            base += ["--root", str(self.storage / "root"), "--runroot", str(self.storage / "run")]
        return [*base, *args]

    def env(self) -> dict[str, str]:
        """The environment: buildah's cache mounts and temporary layers go under ``storage``."""
        env = dict(os.environ)
        if self.storage is not None and self.daemonless:
            tmp = self.storage / "tmp"
            tmp.mkdir(parents=True, exist_ok=True)
            env["TMPDIR"] = str(tmp)
        if self.name == "docker":
            env["DOCKER_BUILDKIT"] = "1"  # --secret, --mount and --build-context need BuildKit
        return env

    def tls(self, registry: str) -> list[str]:
        """The flag that lets buildah/podman/skopeo talk plain HTTP to a loopback registry."""
        return ["--tls-verify=false"] if self.daemonless and is_loopback(registry) else []

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "exe": self.exe, "storage": str(self.storage or "")}


def image_dir(cfg: Config) -> Path:
    """The image step's cache, one per machine (LABKIT_IMAGE_CACHE_DIR): the mmdebstrap base and
    the builder's storage with its layers, so a second checkout builds on what the first made."""
    return cfg.image_cache_dir


def find_builder(cfg: Config, choice: str | None = None) -> Builder:
    """The builder to use: ``choice`` or LABKIT_IMAGE_BUILDER, else buildah, podman, docker."""
    choice = choice or cfg.image_builder
    names = BUILDERS if choice == "auto" else (choice,)
    if choice not in ("auto", *BUILDERS):
        raise ImageError(f"unknown builder {choice!r}", f"use one of auto, {', '.join(BUILDERS)}")
    notes = []
    for name in names:
        exe = shutil.which(name)
        if exe is None:
            notes.append(f"no {name}")
            continue
        if name == "docker" and not _docker_engine(exe):
            notes.append("docker finds no engine")
            continue
        storage = image_dir(cfg) / "storage" if name != "docker" else None
        return Builder(name, exe, storage)
    if choice == "auto":
        raise ServiceError(
            f"no image builder on this machine ({', '.join(notes)})",
            "install buildah (`apt-get install buildah`, or `make system` as root); "
            "podman or a running Docker engine also work",
        )
    package = {"buildah": "buildah", "podman": "podman", "docker": "docker.io"}[choice]
    raise ServiceError(
        f"the builder {choice} is not usable here ({notes[0]})",
        f"install it (`apt-get install {package}`) or set LABKIT_IMAGE_BUILDER=auto",
    )


def _docker_engine(exe: str) -> bool:
    try:
        return (
            subprocess.run(
                [exe, "version", "--format", "{{.Server.Version}}"],
                capture_output=True,
                timeout=15,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def _run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    on_line: OnLine | None = None,
    timeout: float = _TOOL_TIMEOUT_S,
    what: str = "",
) -> str:
    """Run a tool, streaming its merged output lines to ``on_line``; ImageError on failure."""
    what = what or Path(argv[0]).name
    tail: deque[str] = deque(maxlen=400)
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=dict(env) if env is not None else None,
            start_new_session=True,  # a timeout stops the whole group (buildah's children too)
        )
    except OSError as exc:
        raise ServiceError(
            f"{what} did not start ({exc.strerror})", "check the installation"
        ) from None
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        procs.signal_group(proc.pid, signal.SIGTERM)

    timer = threading.Timer(timeout, expire)
    timer.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            if on_line:
                on_line(line)
        code = proc.wait()
    except BaseException:
        procs.signal_group(proc.pid, signal.SIGTERM)
        proc.wait()
        raise
    finally:
        timer.cancel()
    if code != 0:
        last = [ln.strip() for ln in tail if ln.strip()][-3:]
        why = f"timed out after {timeout:.0f} s" if expired.is_set() else f"exit {code}"
        raise ImageError(
            f"{what} failed ({why}): {' | '.join(last) or 'no output'}", "see the output above"
        )
    return "\n".join(tail)


def capture(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 60
) -> str | None:
    """A tool's stdout, or None when it fails (for queries such as "does this image exist")."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env=dict(env) if env else None,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def image_exists(builder: Builder, ref: str) -> bool:
    """Whether the builder's local storage holds ``ref``."""
    if builder.name == "buildah":
        argv = builder.argv("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref)
    else:
        argv = builder.argv("image", "inspect", "--format", "{{.Id}}", ref)
    return capture(argv, env=builder.env()) is not None


def _build_verb(builder: Builder) -> list[str]:
    if builder.name == "docker":
        return ["build"]
    # chroot: no daemon and no user namespaces needed; docker format keeps SHELL/HEALTHCHECK.
    return ["build", "--isolation", "chroot", "--format", "docker", "--pull=false"]


def available_builder(cfg: Config) -> Builder | None:
    """The builder find_builder would pick, or None (the notebook then says what to install)."""
    try:
        return find_builder(cfg)
    except (ServiceError, ImageError):
        return None
