"""Running the server image locally: a container of its own entrypoint (the smoke test and the
benchmark), stopped as the kubelet stops a pod."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.config import Config
from labkit.image.builder import Builder, _run, capture, find_builder
from labkit.image.tags import ImageError
from labkit.util import procs
from labkit.util.net import free_port


@dataclass
class Container:
    """A running container of the image (for the smoke test and the benchmark)."""

    builder: Builder
    name: str
    process: subprocess.Popen[bytes]
    started: float

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM to the server (as the kubelet sends it), SIGKILL to what is left after
        ``timeout`` seconds, then clean up the container."""
        code = procs.stop_group(self.process.pid, grace=timeout, proc=self.process)
        if self.builder.name == "buildah":
            capture(self.builder.argv("rm", self.name), env=self.builder.env())
        return code


def image_config(builder: Builder, ref: str) -> dict[str, Any]:
    """The image's run config (Entrypoint, Cmd, Env, User, Labels) from the builder's storage."""
    if builder.name == "buildah":
        out = capture(builder.argv("inspect", "--type", "image", ref), env=builder.env())
    else:
        out = capture(builder.argv("image", "inspect", ref), env=builder.env())
    if out is None:
        raise ImageError(f"no image {ref} in {builder.name}'s storage", "build it first")
    data = json.loads(out)
    # buildah: {"OCIv1": {"config": {...}}}; podman and docker: [{"Config": {...}}]
    config = data["OCIv1"].get("config") if builder.name == "buildah" else data[0].get("Config")
    return config or {}


def image_command(builder: Builder, ref: str) -> list[str]:
    """The image's ENTRYPOINT + CMD: what a runtime starts."""
    config = image_config(builder, ref)
    return list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])


def start_container(
    builder: Builder,
    ref: str,
    *,
    env: Mapping[str, str],
    volumes: Mapping[Path, str],
    log: Path,
    name: str | None = None,
) -> Container:
    """Start the image's own entrypoint with ``env`` and read-only ``volumes`` (host -> path).

    The container shares the host's network (buildah's chroot isolation has no other), so the
    server's $PORT is reachable on 127.0.0.1.
    """
    started = time.monotonic()
    name = name or f"labkit-smoke-{os.getpid()}-{int(time.time())}"
    mounts = [arg for host, inside in volumes.items() for arg in ("-v", f"{host}:{inside}:ro")]
    env_args = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
    if builder.name != "buildah":
        argv = builder.argv(
            "run", "--rm", "--name", name, "--network", "host", *mounts, *env_args, ref
        )
        return Container(builder, name, _spawn(argv, builder, log), started)
    command = image_command(builder, ref)
    _run(
        builder.argv("from", "--pull=never", "--name", name, ref),
        env=builder.env(),
        what="buildah from",
    )
    argv = builder.argv("run", "--isolation", "chroot", *mounts, *env_args, name, "--", *command)
    try:
        return Container(builder, name, _spawn(argv, builder, log), started)
    except BaseException:
        capture(builder.argv("rm", name), env=builder.env())  # no working container left over
        raise


def _spawn(argv: Sequence[str], builder: Builder, log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=builder.env(),
            start_new_session=True,
        )


@dataclass
class SmokeResult:
    """The image started its own server on a model: time to /health and one chat answer."""

    reference: str
    health_seconds: float
    answer: str
    server_uids: list[int]
    log: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "health_seconds": round(self.health_seconds, 1),
            "answer": self.answer,
            "server_uids": self.server_uids,
            "log": self.log,
        }

    def to_text(self) -> str:
        users = ", ".join(str(u) for u in self.server_uids) or "unknown"
        return (
            f"{self.reference}: /health after {self.health_seconds:.1f} s (server uid {users}); "
            f"answer: {self.answer!r}"
        )


def smoke_test(
    cfg: Config,
    reference: str,
    models_dir: Path,
    *,
    model_id: str,
    builder: Builder | None = None,
    port: int | None = None,
    prompt: str = "What is the capital of France?",
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
    log: Path | None = None,
) -> SmokeResult:
    """Run the image's entrypoint with ``models_dir`` (or a dir holding just the model tarball
    given instead) read-only at /mnt/models, as KServe mounts it, wait for /health, ask one chat
    question, then stop it (SIGTERM)."""
    builder = builder or find_builder(cfg)
    port = port or free_port()
    log = log or Path(tempfile.mkdtemp(prefix="labkit-smoke-")) / "container.log"
    models_dir = Path(models_dir)
    made = None
    if models_dir.is_file():
        models_dir = made = _models_dir_of(models_dir, log.parent / "models")
    settings = {
        "PORT": str(port),
        "HOST": "127.0.0.1",  # the container shares the host's network: loopback only
        "MODEL_ID": model_id,
        "ENFORCE_EAGER": "true",  # a smoke test, not a benchmark: skip torch.compile
        "MAX_MODEL_LEN": "2048",
        **(env or {}),
    }
    container = start_container(
        builder, reference, env=settings, volumes={Path(models_dir): "/mnt/models"}, log=log
    )
    base = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        _wait_health(container, opener, base, log, timeout)
        seconds = time.monotonic() - container.started
        uids = _server_uids(container)
        answer = _chat(opener, base, model_id, prompt, log)
    finally:
        container.stop()
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    return SmokeResult(reference, seconds, answer, uids, str(log))


def _wait_health(
    container: Container,
    opener: urllib.request.OpenerDirector,
    base: str,
    log: Path,
    timeout: float,
) -> None:
    """Until /health answers; ImageError when the container exits or ``timeout`` passes."""
    while not _answers(opener, f"{base}/health"):
        if container.process.poll() is not None:
            raise ImageError(
                f"the container exited with {container.process.returncode} before /health "
                f"answered ({_tail(log)})",
                f"see {log}",
            )
        if time.monotonic() - container.started > timeout:
            raise ImageError(f"no /health within {timeout:.0f} s ({_tail(log)})", f"see {log}")
        time.sleep(0.5)


def _server_uids(container: Container) -> list[int]:
    """The user ids the container's server (/opt/labkit/serve.py) runs as."""
    return sorted(
        {
            uid
            for pid in _session_pids(container.process.pid)
            if b"/opt/labkit/serve.py" in _proc_read(pid, "cmdline")
            and (uid := _proc_uid(pid)) is not None
        }
    )


def _chat(
    opener: urllib.request.OpenerDirector, base: str, model_id: str, prompt: str, log: Path
) -> str:
    """One chat completion of ``prompt`` (greedy, 32 tokens): the answer's text."""
    body = {
        "model": model_id,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": 32,
    }
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    try:
        with opener.open(request, timeout=300) as resp:
            return json.load(resp)["choices"][0]["message"]["content"]
    except (OSError, ValueError, LookupError) as exc:
        raise ImageError(
            f"the server in the container did not answer a chat request ({exc})", f"see {log}"
        ) from None


def _models_dir_of(tarball: Path, where: Path) -> Path:
    """A models dir holding only ``tarball``, as KServe's storage initializer leaves it."""
    where.mkdir(parents=True, exist_ok=True)
    target = where / tarball.name
    if not target.exists():
        try:
            os.link(tarball, target)
        except OSError:  # another file system: a copy
            shutil.copyfile(tarball, target)
    return where


def _answers(opener: urllib.request.OpenerDirector, url: str) -> bool:
    try:
        with opener.open(url, timeout=2) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def _tail(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return " | ".join(lines[-3:]) or "empty log"


def _session_pids(sid: int) -> list[int]:
    """The processes of a session (the container's, started in a session of its own)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
    return pids


def _proc_read(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def _proc_uid(pid: int) -> int | None:
    match = re.search(rb"^Uid:\s+(\d+)", _proc_read(pid, "status"), re.MULTILINE)
    return int(match.group(1)) if match else None
