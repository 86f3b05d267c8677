"""The local AI Core: the part of SAP AI Core's AI API the lab uses, as a real HTTP server.

Paths, camelCase JSON bodies, status codes and statuses follow the official spec
(``AI_CORE_API.yaml``, paths relative to ``<AI_API_URL>/v2``), so SAP's own client
(``ai_core_sdk.AICoreV2Client``) drives it unchanged:

- ``POST /oauth/token``: client credentials (form fields or HTTP Basic) from the service key give
  an HS256-signed JWT that expires after ``--token-ttl`` seconds; wrong credentials get 401.
  The signing key lives with the state, so tokens stay valid across a restart.
- ``/v2/admin/...``: resource groups, git repositories and applications (``/status``,
  ``/refresh``), object store secrets (per resource group, listed as
  ``<name>-object-store-secret`` as on the service), docker registry secrets, instance types.
- ``/v2/lm/...``: scenarios, versions and executables (from the synced templates), artifacts,
  configurations, deployments (create, get, list, ``$count``, PATCH ``targetStatus: STOPPED`` or a
  new ``configurationId``, bulk PATCH, DELETE, ``/logs``), ``/meta``.
- ``/v2/inference/deployments/<id>/<path>``: proxied to the deployment's server, streaming chunk
  by chunk, after the token and ``AI-Resource-Group`` checks.

Applications sync ServingTemplates from a git repository on this machine (a path or file://
URL) at ``revision`` under ``path``: each template is linted with ``labkit.templates`` (step 05's
rules); valid ones become scenarios and executables, invalid ones are listed in the
application's status as ``SyncFailed`` with the lint messages. Sync happens on creation, on
``/refresh`` and every ``--sync-interval`` seconds (AI Core: about every 3 minutes). The status
says ``syncStatus`` ``Synced`` (all templates valid) or ``OutOfSync``, ``healthStatus``
``Healthy``/``Degraded``/``Progressing``, and ``source.revision`` is the synced commit.

Deployments run as :mod:`labkit.local.aicore_runner` describes. Statuses: UNKNOWN on creation,
PENDING while the image is checked, the model fetched and the server starts, RUNNING once it
answers, STOPPING/STOPPED after PATCH ``targetStatus: STOPPED``, DEAD with the reason in
``statusMessage``, ``statusDetails`` and the logs. ``deploymentUrl`` is empty until RUNNING; a
stopped deployment cannot be started again; only STOPPED, DEAD or UNKNOWN deployments can be
deleted (412 otherwise); a ``ttl`` deletes the deployment when it runs out.

State lives under ``--state-dir``: ``state.json`` (no secrets) and ``secrets.json`` (0600), both
rewritten atomically on every change, plus each deployment's log and models dir. After a
restart, deployments that should run are started again (PENDING, then RUNNING); predictors of a
server that died are ended first.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import SecretStr
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from labkit.local.aicore_runner import (
    ObjectStore,
    Runner,
    RunnerSettings,
    RunSpec,
    kill_recorded,
    remove_tree,
)

log = logging.getLogger("labkit.aicore")

SERVICE = "labkit-local-aicore"
API_VERSION = "2.42.0"  # the spec version this server answers like
TENANT_ID = "labkit-local"
ZONE_ID = "local"
DEFAULT_RESOURCE_GROUP = "default"
STATE_FORMAT = 1
TOKEN_PATH = "/oauth/token"
MAX_STATUS_MESSAGE = 256
LOG_DEFAULT_TOP = 1000
LOG_MAX_TOP = 5000
SYNC_INTERVAL_S = 180.0
TTL_CHECK_S = 5.0
TEMPLATE_KINDS = ("ServingTemplate",)
MAX_SERVING_TEMPLATES = 50

_ID = re.compile(r"[\w.-]{4,64}")
_NAME = re.compile(r"""[\w\s.!?,;:\[\](){}<>"'=+*/\\^&%@~$#|-]*""")
_ARTIFACT_URL = re.compile(r"([a-z0-9-]+)://.+")
_LABEL_KEY = re.compile(r"ext\.ai\.sap\.com/[\w.-]+")
_RG_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9.-]{1,251}[a-zA-Z0-9]")
_RG_LABEL_KEY = re.compile(r"ext.ai.sap.com/(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]){1,48}")
_OBJECT_STORE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_REGISTRY_SECRET_NAME = re.compile(r"[a-z0-9](?:_?[a-z0-9.\-]+)*[a-z0-9]")
_REPO_NAME = re.compile(r"[a-z0-9\-]{1,51}")
_APP_NAME = re.compile(r"[a-z0-9\-]{3,54}")
_TTL = re.compile(r"([0-9]+)([mMhHdD])")
_DEPLOYMENT_STATUSES = ("PENDING", "RUNNING", "COMPLETED", "DEAD", "STOPPING", "STOPPED", "UNKNOWN")
_ARTIFACT_KINDS = ("model", "dataset", "resultset", "other")
_SECRET_SUFFIX = "-object-store-secret"
# Hop-by-hop headers (RFC 9110 7.6.1) and what the proxy itself owns.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
}
_NOT_FORWARDED = _HOP_BY_HOP | {"authorization", "ai-resource-group", "content-length"}


# --- small helpers ----------------------------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


def iso(when: datetime) -> str:
    """A timestamp as the service writes resource times: ``2024-05-19T00:00:14Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def log_time(when: datetime) -> str:
    """A timestamp as the logs API writes it: RFC 3339 with milliseconds."""
    when = when.astimezone(UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}+00:00"


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp (``Z`` or an offset); naive ones count as UTC."""
    when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "+"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def ttl_seconds(ttl: str) -> int:
    """``30m``, ``2h``, ``1d`` as seconds."""
    match = _TTL.fullmatch(ttl)
    if not match:
        raise ValueError(ttl)
    return int(match.group(1)) * {"m": 60, "h": 3600, "d": 86400}[match.group(2).lower()]


def new_deployment_id() -> str:
    """16 hex digits starting with ``d``, like the service's deployment ids."""
    return "d" + secrets.token_hex(8)[1:]


def new_uuid() -> str:
    return str(uuid.uuid4())


def public(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object without the server's own bookkeeping (keys starting with ``_``)."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def write_json_atomic(path: Path, data: Any, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_service_key(path: Path) -> dict[str, Any]:
    """The service key JSON the server checks client credentials against."""
    return json.loads(path.read_text(encoding="utf-8"))


class ApiError(Exception):
    """An error answer: HTTP status, a descriptive code and one line of message."""

    def __init__(self, status: int, message: str, code: str = "", details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or {
            400: "BadRequest",
            401: "Unauthorized",
            404: "NotFound",
            409: "Conflict",
            412: "PreconditionFailed",
            502: "BadGateway",
            503: "ServiceUnavailable",
        }.get(status, "Error")
        self.details = details


def bad(message: str, code: str = "BadRequest") -> ApiError:
    return ApiError(400, message, code)


def missing(what: str) -> ApiError:
    return ApiError(404, f"{what} not found", "NotFound")


def _text(
    body: Mapping[str, Any],
    key: str,
    *,
    required: bool = True,
    pattern: re.Pattern[str] | None = None,
    max_len: int | None = None,
) -> str | None:
    """A string field of a request body, checked; None when optional and absent."""
    value = body.get(key)
    if value is None:
        if required:
            raise bad(f"the request body lacks '{key}'", "MissingField")
        return None
    if not isinstance(value, str):
        raise bad(f"'{key}' must be a string", "InvalidField")
    if max_len is not None and len(value) > max_len:
        raise bad(f"'{key}' is longer than {max_len} characters", "InvalidField")
    if pattern is not None and not pattern.fullmatch(value):
        raise bad(f"'{key}' {value[:80]!r} does not match {pattern.pattern}", "InvalidField")
    return value


def _labels(value: Any, key_pattern: re.Pattern[str], what: str) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad(f"'{what}' must be a list of {{key, value}}", "InvalidField")
    out = []
    for item in value:
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            raise bad(f"each of '{what}' needs a string key and value", "InvalidField")
        if not key_pattern.fullmatch(item["key"]):
            raise bad(
                f"label key {item['key']!r} does not match {key_pattern.pattern}", "InvalidField"
            )
        if not isinstance(item.get("value"), str) or len(item["value"]) > 5000:
            raise bad(f"label {item['key']!r} needs a string value (at most 5000)", "InvalidField")
        out.append({"key": item["key"], "value": item["value"]})
    return out


def _page(items: list[Any], query: Mapping[str, str]) -> list[Any]:
    """``$skip`` then ``$top`` of a list."""
    skip = _int_param(query, "$skip", 0)
    top = _int_param(query, "$top", None)
    items = items[skip:]
    return items if top is None else items[:top]


def _int_param(query: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad(f"query parameter {name} must be a whole number", "InvalidParameter") from None
    if value < 0:
        raise bad(f"query parameter {name} must not be negative", "InvalidParameter")
    return value


def _listing(items: list[Any], query: Mapping[str, str]) -> dict[str, Any]:
    return {"count": len(items), "resources": _page(items, query)}


# --- persistence ------------------------------------------------------------------------------


def _empty_state() -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "resourceGroups": {},
        "repositories": {},
        "applications": {},
        "scenarios": {},
        "executables": {},
        "templates": {},
        "objectStoreSecrets": {},
        "dockerRegistrySecrets": {},
        "artifacts": {},
        "configurations": {},
        "deployments": {},
    }


class Store:
    """The AI Core's objects on disk: ``state.json`` (no secrets) and ``secrets.json`` (0600)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        self.lock = threading.RLock()
        self.data = _empty_state()
        self.data.update(self._load("state.json"))
        self.secrets: dict[str, Any] = {"objectStore": {}, "dockerRegistry": {}}
        self.secrets.update(self._load("secrets.json"))

    def _load(self, name: str) -> dict[str, Any]:
        path = self.root / name
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            # Never start over silently: the objects (and deployments) would vanish.
            raise SystemExit(
                f"aicore: cannot read {path} ({exc}); move it away to start empty"
            ) from None
        return data if isinstance(data, dict) else {}

    def save(self) -> None:
        with self.lock:
            write_json_atomic(self.root / "state.json", self.data)

    def save_secrets(self) -> None:
        with self.lock:
            write_json_atomic(self.root / "secrets.json", self.secrets, 0o600)

    def in_group(self, kind: str, group: str) -> dict[str, Any]:
        """The objects of one kind in one resource group (created on first use)."""
        return self.data[kind].setdefault(group, {})


# --- settings and tokens ----------------------------------------------------------------------


@dataclass
class Settings:
    """Where the server keeps its state and how it runs deployments."""

    state_dir: Path
    port: int
    service_key_file: Path
    runner: RunnerSettings
    host: str = "127.0.0.1"
    token_ttl: int = 43200
    sync_interval: float = SYNC_INTERVAL_S
    ttl_check: float = TTL_CHECK_S

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Tokens:
    """OAuth client credentials -> HS256 JWTs, checked without any table (so a restart keeps
    them valid, as tokens of the real UAA outlive a restart of the AI API)."""

    def __init__(self, key: bytes, client_id: str, client_secret: SecretStr, issuer: str, ttl: int):
        self._key = key
        self.client_id = client_id
        self._secret = client_secret
        self.issuer = issuer
        self.ttl = ttl

    def credentials_ok(self, client_id: str, client_secret: str) -> bool:
        """Constant-time check of a client id and secret."""
        ok_id = hmac.compare_digest(client_id.encode(), self.client_id.encode())
        ok_secret = hmac.compare_digest(
            client_secret.encode(), self._secret.get_secret_value().encode()
        )
        return ok_id and ok_secret

    def issue(self, at: float | None = None) -> dict[str, Any]:
        """A token response as XSUAA gives it (``expires_in`` one second short of the lifetime)."""
        issued = int(at if at is not None else time.time())
        jti = secrets.token_hex(16)
        claims = {
            "jti": jti,
            "iss": self.issuer,
            "sub": self.client_id,
            "cid": self.client_id,
            "client_id": self.client_id,
            "azp": self.client_id,
            "grant_type": "client_credentials",
            "zid": ZONE_ID,
            "aud": [self.client_id],
            "scope": ["uaa.resource"],
            "iat": issued,
            "exp": issued + self.ttl,
        }
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return {
            "access_token": f"{header}.{payload}.{_b64url(signature)}",
            "token_type": "bearer",
            "expires_in": max(self.ttl - 1, 0),
            "scope": "uaa.resource",
            "jti": jti,
        }

    def check(self, authorization: str | None, at: float | None = None) -> dict[str, Any]:
        """The claims of a valid ``Bearer`` token; ApiError 401 otherwise."""
        if not authorization:
            raise ApiError(401, "no Authorization header: send 'Bearer <token>' from " + TOKEN_PATH)
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "the Authorization header must be 'Bearer <token>'")
        parts = token.strip().split(".")
        if len(parts) != 3:
            raise ApiError(401, "the bearer token is not a JWT")
        expected = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            signature = _b64url_decode(parts[2])
            claims = json.loads(_b64url_decode(parts[1]))
        except (ValueError, TypeError):
            raise ApiError(401, "the bearer token is malformed") from None
        if not hmac.compare_digest(signature, expected) or not isinstance(claims, dict):
            raise ApiError(401, "the bearer token was not issued by this AI Core")
        if claims.get("cid") != self.client_id:
            raise ApiError(401, "the bearer token belongs to another client")
        if float(claims.get("exp", 0)) <= (at if at is not None else time.time()):
            raise ApiError(401, "the bearer token has expired: get a new one from " + TOKEN_PATH)
        return claims


def _token_key(state_dir: Path) -> bytes:
    path = state_dir / "token.key"
    with contextlib.suppress(OSError):
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


# --- templates --------------------------------------------------------------------------------


class GitError(Exception):
    """The repository cannot be read."""


def repo_path(url: str) -> Path:
    """The local repository an URL names: a path or a file:// URL (the local profile's gitops)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return Path(urllib.parse.unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:
        raise GitError(
            f"{url} is a remote URL; the local AI Core syncs repositories on this machine only "
            "(a path or file:// URL)"
        )
    return Path(url).expanduser()


def _git(repo: Path, *args: str, timeout: float = 60) -> str:
    argv = ["git", "-c", "safe.directory=*", "-C", str(repo), *args]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git failed: {exc}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise GitError(last.removeprefix("fatal: "))
    return proc.stdout


def repo_reachable(url: str) -> str | None:
    """None when the URL names a readable git repository, else why not."""
    try:
        path = repo_path(url)
        if not path.is_dir():
            return f"{path} is not a directory"
        _git(path, "rev-parse", "--git-dir")
    except GitError as exc:
        return str(exc)
    return None


def read_templates(url: str, revision: str, path: str) -> tuple[str, list[tuple[str, str]]]:
    """The commit ``revision`` resolves to and the YAML files under ``path`` at that commit."""
    repo = repo_path(url)
    if not repo.is_dir():
        raise GitError(f"repository {url} does not exist on this machine")
    if revision.startswith("-") or not revision:
        raise GitError(f"revision {revision!r} is not a git revision")
    sha = _git(repo, "rev-parse", "--verify", "--end-of-options", f"{revision}^{{commit}}").strip()
    folder = path.strip("/")
    names = _git(
        repo,
        "ls-tree",
        "-r",
        "--name-only",
        sha,
        "--",
        *([folder] if folder and folder != "." else []),
    )
    files = []
    for name in sorted(names.splitlines()):
        if name.endswith((".yaml", ".yml")):
            files.append((name, _git(repo, "show", f"{sha}:{name}")))
    return sha, files


def executable_from(doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The scenario and executable objects a ServingTemplate defines (without timestamps)."""
    meta = doc.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    eid, sid = meta.get("name"), labels.get("scenarios.ai.sap.com/id")
    version = labels.get("ai.sap.com/version")
    if not isinstance(eid, str) or not _ID.fullmatch(eid):
        raise ValueError(
            "metadata.name (the executable id) is missing or not 4-64 of [A-Za-z0-9_.-]"
        )
    if not sid or not _ID.fullmatch(sid):
        raise ValueError("label scenarios.ai.sap.com/id is missing or not 4-64 of [A-Za-z0-9_.-]")
    if not version:
        raise ValueError("label ai.sap.com/version is missing")
    inputs = (doc.get("spec") or {}).get("inputs") or {}
    parameters = []
    for p in inputs.get("parameters") or []:
        item = {"name": str(p["name"]), "type": "string"}
        if p.get("default") is not None:
            item["default"] = str(p["default"])
        if p.get("description"):
            item["description"] = str(p["description"])
        parameters.append(item)
    artifacts = []
    for a in inputs.get("artifacts") or []:
        item = {"name": str(a["name"])}
        for key in ("kind", "description"):
            # AI Core reads an input artifact's kind and description from annotations
            # artifacts.ai.sap.com/<name>.<key>.
            value = a.get(key) or annotations.get(f"artifacts.ai.sap.com/{a['name']}.{key}")
            if value:
                item[key] = str(value)
        artifacts.append(item)
    executable: dict[str, Any] = {
        "id": eid,
        "name": str(annotations.get("executables.ai.sap.com/name") or eid),
        "scenarioId": sid,
        "versionId": version,
        "parameters": parameters,
        "inputArtifacts": artifacts,
        "outputArtifacts": [],
        "labels": [{"key": k, "value": v} for k, v in labels.items() if _LABEL_KEY.fullmatch(k)],
        "deployable": True,
    }
    if annotations.get("executables.ai.sap.com/description"):
        executable["description"] = str(annotations["executables.ai.sap.com/description"])
    scenario: dict[str, Any] = {
        "id": sid,
        "name": str(annotations.get("scenarios.ai.sap.com/name") or sid),
        "labels": [
            {"key": k, "value": v}
            for k, v in labels.items()
            if re.fullmatch(r"(scenarios|ext)\.ai\.sap\.com/[\w.-]+", k)
            and k != "scenarios.ai.sap.com/id"
        ],
    }
    if annotations.get("scenarios.ai.sap.com/description"):
        scenario["description"] = str(annotations["scenarios.ai.sap.com/description"])
    return scenario, executable


def run_spec(rendered: Any) -> RunSpec:
    """What the runner needs from ``labkit.templates.render``'s result."""
    container = dict(getattr(rendered, "container", None) or {})
    image = container.get("image")
    if not image:
        raise ValueError("the rendered predictor has no kserve-container image")
    probe = ((container.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
    env = {str(k): str(v) for k, v in (getattr(rendered, "env", None) or {}).items()}
    port = getattr(rendered, "port", None) or env.get("PORT") or 8080
    return RunSpec(
        image=str(image),
        env=env,
        container_port=int(port),
        storage_uri=getattr(rendered, "storage_uri", None) or env.get("STORAGE_URI") or None,
        command=[str(c) for c in container["command"]] if container.get("command") else None,
        args=[str(a) for a in container["args"]] if container.get("args") is not None else None,
        image_pull_secrets=[str(s) for s in getattr(rendered, "image_pull_secrets", None) or []],
        resource_plan=getattr(rendered, "resource_plan", None),
        min_replicas=_count(getattr(rendered, "min_replicas", None), 1),
        max_replicas=_count(getattr(rendered, "max_replicas", None), 1),
        health_path=str(probe or "/health"),
    )


def _count(value: Any, default: int) -> int:
    return default if value is None else int(value)


def _templates_module() -> Any:
    from labkit import templates

    return templates


def _lint_messages(report: Any) -> list[str]:
    return [f"{f.rule}: {f.message}" for f in getattr(report, "errors", [])]


# --- the service ------------------------------------------------------------------------------


class LocalAICore:
    """The objects, their rules and the deployments' runners; the HTTP layer calls into it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.state_dir)
        key = read_service_key(settings.service_key_file)
        self.tokens = Tokens(
            _token_key(settings.state_dir),
            str(key["clientid"]),
            SecretStr(str(key["clientsecret"])),
            settings.base_url + TOKEN_PATH,
            settings.token_ttl,
        )
        self.runners: dict[str, Runner] = {}
        self._log_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._sync_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        with self.store.lock:
            groups = self.store.data["resourceGroups"]
            if DEFAULT_RESOURCE_GROUP not in groups:
                groups[DEFAULT_RESOURCE_GROUP] = self._resource_group(DEFAULT_RESOURCE_GROUP, [])
                self.store.save()

    # lifecycle

    def startup(self) -> None:
        """Pick up where the last run stopped: end its predictors, start what should run."""
        builder = self.settings.runner.builder
        restart: list[tuple[str, str]] = []
        with self.store.lock:
            for group, deployments in self.store.data["deployments"].items():
                for dep_id, dep in list(deployments.items()):
                    if dep.get("_process"):
                        if kill_recorded(dep["_process"], builder):
                            log.info("ended predictor of %s left by an earlier run", dep_id)
                        dep["_process"] = None
                    if dep.get("targetStatus") == "DELETED":
                        self._remove_deployment(group, dep_id)
                    elif dep["status"] == "STOPPING" or (
                        dep.get("targetStatus") == "STOPPED"
                        and dep["status"] not in ("STOPPED", "DEAD")
                    ):
                        self._set(dep, status="STOPPED", completionTime=iso(now()))
                    elif dep.get("targetStatus") == "RUNNING" and dep["status"] in (
                        "UNKNOWN",
                        "PENDING",
                        "RUNNING",
                    ):
                        self._set(
                            dep,
                            status="PENDING",
                            statusMessage="Restarting after the local AI Core restarted",
                        )
                        restart.append((group, dep_id))
            self.store.save()
        for group, dep_id in restart:
            self.append_log(
                dep_id, "aicore: the local AI Core restarted: starting the predictor again"
            )
            self._start_runner(group, dep_id)
        for target, name in ((self._ttl_loop, "aicore-ttl"), (self._sync_loop, "aicore-sync")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        with self.store.lock:
            names = list(self.store.data["applications"])
        for name in names:
            self.schedule_sync(name)
        # labkit.templates (jsonschema, the KServe schema) takes seconds to import on a busy
        # machine: import it now rather than in the first application's sync.
        threading.Thread(target=_templates_module, name="aicore-import", daemon=True).start()

    def shutdown(self) -> None:
        """Stop every predictor (in parallel); their deployments keep their status, so the next
        start runs them again."""
        self._closing.set()
        runners = list(self.runners.values())
        stoppers = [threading.Thread(target=r.stop, kwargs={"timeout": 8}) for r in runners]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(20)

    # resource groups

    def _resource_group(self, group: str, labels: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "resourceGroupId": group,
            "tenantId": TENANT_ID,
            "zoneId": ZONE_ID,
            "createdAt": iso(now()),
            "labels": labels,
            "status": "PROVISIONED",
            "statusMessage": "",
        }

    def group(self, request_group: str | None, *, unknown_status: int = 404) -> str:
        """The resource group a request names in AI-Resource-Group, which must exist."""
        if not request_group:
            raise bad(
                "the header AI-Resource-Group is missing: name the resource group (e.g. default)",
                "MissingResourceGroup",
            )
        with self.store.lock:
            found = self.store.data["resourceGroups"].get(request_group)
        if found is None:
            raise ApiError(
                unknown_status,
                f"resource group '{request_group}' does not exist: create it with POST "
                "/v2/admin/resourceGroups or use another AI-Resource-Group",
                "ResourceGroupNotFound",
            )
        return request_group

    def create_resource_group(self, body: Mapping[str, Any]) -> dict[str, Any]:
        group = _text(body, "resourceGroupId", pattern=_RG_ID, max_len=253)
        assert group is not None
        labels = _labels(body.get("labels"), _RG_LABEL_KEY, "labels")
        with self.store.lock:
            groups = self.store.data["resourceGroups"]
            if group in groups:
                raise bad(f"resource group '{group}' already exists", "AlreadyExists")
            groups[group] = self._resource_group(group, labels)
            self.store.save()
        log.info("resource group %s created", group)
        return {"resourceGroupId": group, "tenantId": TENANT_ID, "zoneId": ZONE_ID}

    def resource_groups(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [dict(g) for g in self.store.data["resourceGroups"].values()]

    def resource_group(self, group: str) -> dict[str, Any]:
        with self.store.lock:
            found = self.store.data["resourceGroups"].get(group)
            if found is None:
                raise missing(f"resource group '{group}'")
            return dict(found)

    def patch_resource_group(self, group: str, body: Mapping[str, Any]) -> None:
        labels = _labels(body.get("labels"), _RG_LABEL_KEY, "labels")
        with self.store.lock:
            found = self.store.data["resourceGroups"].get(group)
            if found is None:
                raise missing(f"resource group '{group}'")
            found["labels"] = labels
            self.store.save()

    def delete_resource_group(self, group: str) -> dict[str, Any]:
        if group == DEFAULT_RESOURCE_GROUP:
            raise bad("the default resource group cannot be deleted", "Forbidden")
        with self.store.lock:
            if group not in self.store.data["resourceGroups"]:
                raise missing(f"resource group '{group}'")
            deployments = list(self.store.data["deployments"].get(group, {}))
            for dep in self.store.data["deployments"].get(group, {}).values():
                dep["targetStatus"] = "DELETED"
            self.store.save()
        for dep_id in deployments:
            runner = self.runners.pop(dep_id, None)
            if runner is not None:
                runner.stop()
        with self.store.lock:
            for dep_id in deployments:
                self._remove_deployment(group, dep_id)
            for kind in ("objectStoreSecrets", "artifacts", "configurations", "deployments"):
                self.store.data[kind].pop(group, None)
            self.store.secrets["objectStore"].pop(group, None)
            del self.store.data["resourceGroups"][group]
            self.store.save()
            self.store.save_secrets()
        return {"id": group, "message": "Resource group deletion scheduled"}

    # object store secrets

    def _object_store_body(
        self, body: Mapping[str, Any], *, for_post: bool
    ) -> tuple[dict[str, Any], dict[str, str]]:
        name = _text(body, "name", pattern=_OBJECT_STORE_NAME if for_post else None, max_len=233)
        kind = _text(body, "type")
        data = body.get("data")
        if not isinstance(data, Mapping) or not all(isinstance(v, str) for v in data.values()):
            raise bad(
                "'data' must be an object of strings (the store's credentials)", "InvalidField"
            )
        meta: dict[str, Any] = {"name": name, "type": kind}
        for key in ("bucket", "endpoint", "region", "pathPrefix", "verifyssl", "usehttps"):
            value = _text(body, key, required=False)
            if value is not None:
                meta[key] = value
        meta.setdefault("usehttps", "1")
        if str(kind).upper() == "S3":
            if not meta.get("bucket"):
                raise bad("an S3 object store secret needs 'bucket'", "MissingField")
            need = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} - set(data)
            if need:
                raise bad(f"an S3 object store secret needs data.{sorted(need)[0]}", "MissingField")
        return meta, dict(data)

    def create_object_store_secret(self, group: str, body: Mapping[str, Any]) -> dict[str, Any]:
        meta, data = self._object_store_body(body, for_post=True)
        name = meta["name"]
        with self.store.lock:
            secrets_ = self.store.in_group("objectStoreSecrets", group)
            if name in secrets_:
                raise bad(
                    f"object store secret '{name}' already exists in resource group '{group}'",
                    "AlreadyExists",
                )
            secrets_[name] = {**meta, "createdAt": iso(now())}
            self.store.secrets["objectStore"].setdefault(group, {})[name] = data
            self.store.save_secrets()
            self.store.save()
        log.info("object store secret %s created in %s", name, group)
        return {"message": "Secret has been created"}

    def _object_store_status(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        md: dict[str, str] = {"storage.ai.sap.com/type": str(meta.get("type", ""))}
        mapping = {
            "bucket": ["storage.ai.sap.com/bucket"],
            "endpoint": ["storage.ai.sap.com/endpoint", "serving.kubeflow.org/s3-endpoint"],
            "region": ["storage.ai.sap.com/region", "serving.kubeflow.org/s3-region"],
            "pathPrefix": ["storage.ai.sap.com/pathPrefix"],
            "usehttps": ["serving.kubeflow.org/s3-usehttps"],
            "verifyssl": ["serving.kubeflow.org/s3-verifyssl"],
        }
        for key, names in mapping.items():
            if meta.get(key) is not None:
                for name in names:
                    md[name] = str(meta[key])
        return {"name": f"{meta['name']}{_SECRET_SUFFIX}", "metadata": md}

    def object_store_secrets(self, group: str) -> list[dict[str, Any]]:
        with self.store.lock:
            return [
                self._object_store_status(m)
                for m in self.store.in_group("objectStoreSecrets", group).values()
            ]

    def _object_store_name(self, group: str, name: str) -> str:
        with self.store.lock:
            known = self.store.in_group("objectStoreSecrets", group)
            for candidate in (name, name.removesuffix(_SECRET_SUFFIX)):
                if candidate in known:
                    return candidate
        raise missing(f"object store secret '{name}' in resource group '{group}'")

    def object_store_secret(self, group: str, name: str) -> dict[str, Any]:
        name = self._object_store_name(group, name)
        with self.store.lock:
            return self._object_store_status(self.store.in_group("objectStoreSecrets", group)[name])

    def patch_object_store_secret(
        self, group: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        name = self._object_store_name(group, name)
        meta, data = self._object_store_body({**body, "name": name}, for_post=False)
        with self.store.lock:
            created = self.store.in_group("objectStoreSecrets", group)[name].get("createdAt")
            self.store.in_group("objectStoreSecrets", group)[name] = {**meta, "createdAt": created}
            self.store.secrets["objectStore"].setdefault(group, {})[name] = data
            self.store.save_secrets()
            self.store.save()
        return {"id": name, "message": "Secret has been modified"}

    def delete_object_store_secret(self, group: str, name: str) -> dict[str, Any]:
        name = self._object_store_name(group, name)
        with self.store.lock:
            del self.store.in_group("objectStoreSecrets", group)[name]
            self.store.secrets["objectStore"].get(group, {}).pop(name, None)
            self.store.save_secrets()
            self.store.save()
        return {"id": name, "message": "Object Store Secret has been deleted"}

    def resolve_object_store(self, group: str, name: str) -> ObjectStore | None:
        """The object store secret with its credentials, for the storage initializer."""
        with self.store.lock:
            meta = self.store.in_group("objectStoreSecrets", group).get(name)
            data = self.store.secrets["objectStore"].get(group, {}).get(name)
        if meta is None or data is None:
            return None
        return ObjectStore(
            name=name,
            bucket=str(meta.get("bucket", "")),
            endpoint=str(meta.get("endpoint") or "s3.amazonaws.com"),
            region=str(meta.get("region") or "us-east-1"),
            path_prefix=str(meta.get("pathPrefix") or ""),
            usehttps=str(meta.get("usehttps", "1")) != "0",
            verifyssl=str(meta.get("verifyssl", "1")) != "0",
            access_key_id=SecretStr(data.get("AWS_ACCESS_KEY_ID", "")),
            secret_access_key=SecretStr(data.get("AWS_SECRET_ACCESS_KEY", "")),
        )

    # docker registry secrets

    def _docker_data(self, body: Mapping[str, Any]) -> dict[str, str]:
        data = body.get("data")
        if not isinstance(data, Mapping) or set(data) != {".dockerconfigjson"}:
            raise bad("'data' must hold exactly '.dockerconfigjson'", "InvalidField")
        text = data[".dockerconfigjson"]
        try:
            parsed = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, Mapping) or not isinstance(parsed.get("auths"), Mapping):
            raise bad(
                "data['.dockerconfigjson'] must be a JSON object with 'auths'", "InvalidField"
            )
        return {".dockerconfigjson": text}

    def create_docker_registry_secret(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name = _text(body, "name", pattern=_REGISTRY_SECRET_NAME, max_len=63)
        assert name is not None
        data = self._docker_data(body)
        with self.store.lock:
            known = self.store.data["dockerRegistrySecrets"]
            if name in known:
                raise bad(f"docker registry secret '{name}' already exists", "AlreadyExists")
            known[name] = {"name": name, "createdAt": iso(now())}
            self.store.secrets["dockerRegistry"][name] = data
            self.store.save_secrets()
            self.store.save()
        log.info("docker registry secret %s created", name)
        return {"message": "Secret has been created"}

    def docker_registry_secrets(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [{"name": n} for n in self.store.data["dockerRegistrySecrets"]]

    def docker_registry_secret(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            if name not in self.store.data["dockerRegistrySecrets"]:
                raise missing(f"docker registry secret '{name}'")
        return {"name": name}

    def patch_docker_registry_secret(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        data = self._docker_data(body)
        with self.store.lock:
            if name not in self.store.data["dockerRegistrySecrets"]:
                raise missing(f"docker registry secret '{name}'")
            self.store.secrets["dockerRegistry"][name] = data
            self.store.save_secrets()
        return {"id": name, "message": "Secret has been modified"}

    def delete_docker_registry_secret(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            if name not in self.store.data["dockerRegistrySecrets"]:
                raise missing(f"docker registry secret '{name}'")
            del self.store.data["dockerRegistrySecrets"][name]
            self.store.secrets["dockerRegistry"].pop(name, None)
            self.store.save_secrets()
            self.store.save()
        return {"id": name, "message": "Docker Registry Secret has been deleted"}

    def docker_config(self, name: str) -> dict[str, Any] | None:
        with self.store.lock:
            data = self.store.secrets["dockerRegistry"].get(name)
        if data is None:
            return None
        with contextlib.suppress(ValueError):
            return json.loads(data[".dockerconfigjson"])
        return None

    # repositories and applications

    def _repository_view(self, repo: Mapping[str, Any]) -> dict[str, Any]:
        problem = repo_reachable(repo["url"])
        return {
            "name": repo["name"],
            "url": repo["url"],
            "status": "ERROR" if problem else "COMPLETED",
        }

    def create_repository(self, body: Mapping[str, Any]) -> dict[str, Any]:
        url = _text(body, "url")
        _text(body, "username")
        _text(body, "password")  # checked, never stored: local repositories need none
        assert url is not None
        name = _text(body, "name", required=False, pattern=_REPO_NAME)
        if name is None:
            base = re.sub(
                r"[^a-z0-9-]+", "-", Path(url.rstrip("/")).name.lower().removesuffix(".git")
            )
            name = base.strip("-")[:51] or "repository"
        with self.store.lock:
            repos = self.store.data["repositories"]
            if name in repos or any(r["url"] == url for r in repos.values()):
                raise ApiError(
                    409, f"repository '{name}' ({url}) is already on-boarded", "AlreadyExists"
                )
            repos[name] = {
                "name": name,
                "url": url,
                "username": body["username"],
                "createdAt": iso(now()),
            }
            self.store.save()
        log.info("repository %s on-boarded: %s", name, url)
        return {"id": name, "message": "Repository has been on-boarded"}

    def repositories(self) -> list[dict[str, Any]]:
        with self.store.lock:
            repos = list(self.store.data["repositories"].values())
        return [self._repository_view(r) for r in repos]

    def repository(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            repo = self.store.data["repositories"].get(name)
        if repo is None:
            raise missing(f"repository '{name}'")
        return self._repository_view(repo)

    def patch_repository(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        username = _text(body, "username")
        _text(body, "password")
        with self.store.lock:
            repo = self.store.data["repositories"].get(name)
            if repo is None:
                raise missing(f"repository '{name}'")
            repo["username"] = username
            self.store.save()
        return {"id": name, "message": "Repository has been updated"}

    def delete_repository(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            if self.store.data["repositories"].pop(name, None) is None:
                raise missing(f"repository '{name}'")
            self.store.save()
        return {"id": name, "message": "The repository has been off-boarded."}

    def create_application(self, body: Mapping[str, Any]) -> dict[str, Any]:
        revision = _text(body, "revision")
        path = _text(body, "path")
        url = _text(body, "repositoryUrl", required=False)
        repo_name = _text(body, "repositoryName", required=False)
        name = _text(body, "applicationName", required=False, pattern=_APP_NAME)
        if (url is None) == (repo_name is None):
            raise bad("give either repositoryUrl or repositoryName", "InvalidField")
        with self.store.lock:
            repos = self.store.data["repositories"]
            repo = (
                repos.get(repo_name)
                if repo_name
                else next((r for r in repos.values() if r["url"] == url), None)
            )
            if repo is None:
                raise bad(
                    f"repository {repo_name or url} is not on-boarded: POST /v2/admin/repositories first",
                    "RepositoryNotFound",
                )
            if name is None:
                name = re.sub(
                    r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", f"{repo['name']}-{path}".lower())
                ).strip("-")[:54]
                name = name if len(name) >= 3 else f"{name}-app"
            apps = self.store.data["applications"]
            if name in apps:
                raise bad(f"application '{name}' already exists", "AlreadyExists")
            apps[name] = {
                "applicationName": name,
                "repositoryUrl": repo["url"],
                "revision": revision,
                "path": path,
                "_createdAt": iso(now()),
                "_sync": {
                    "healthStatus": "Progressing",
                    "syncStatus": "Unknown",
                    "message": "sync scheduled",
                },
            }
            self.store.save()
        log.info("application %s created", name)
        self.schedule_sync(name)
        return {"id": name, "message": "ArgoCD application has been created"}

    def applications(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [public(a) for a in self.store.data["applications"].values()]

    def application(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            app = self.store.data["applications"].get(name)
            if app is None:
                raise missing(f"application '{name}'")
            return public(app)

    def patch_application(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        fields = {k: _text(body, k) for k in ("repositoryUrl", "revision", "path")}
        with self.store.lock:
            app = self.store.data["applications"].get(name)
            if app is None:
                raise missing(f"application '{name}'")
            app.update(fields)
            self.store.save()
        self.schedule_sync(name)
        return {"id": name, "message": "ArgoCD application has been updated"}

    def delete_application(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            if self.store.data["applications"].pop(name, None) is None:
                raise missing(f"application '{name}'")
            self._apply_sync(name, {})
            self.store.save()
        return {"id": name, "message": "ArgoCD application has been deleted"}

    def application_status(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            app = self.store.data["applications"].get(name)
            if app is None:
                raise missing(f"application '{name}'")
            sync = dict(app.get("_sync") or {})
            source = {
                "repoURL": app["repositoryUrl"],
                "path": app["path"],
                "revision": sync.pop("revision", app["revision"]),
            }
        resources = sync.pop("resources", [])
        return {
            **sync,
            "source": source,
            "syncResourcesStatus": resources,
            "syncRessourcesStatus": resources,
        }

    def refresh_application(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            if name not in self.store.data["applications"]:
                raise missing(f"application '{name}'")
        self.schedule_sync(name)
        return {"id": name, "message": "Refresh of ArgoCD application has been scheduled"}

    def schedule_sync(self, name: str) -> None:
        """Sync an application in the background (one sync per application at a time)."""
        with self.store.lock:
            app = self.store.data["applications"].get(name)
            if app is None:
                return
            app.setdefault("_sync", {})["healthStatus"] = "Progressing"
            app["_sync"]["syncStartedAt"] = iso(now())
        threading.Thread(
            target=self.sync, args=(name,), name=f"aicore-sync-{name}", daemon=True
        ).start()

    def sync(self, name: str) -> None:
        """Read the application's templates from git and make them scenarios and executables."""
        with self._sync_locks[name]:
            with self.store.lock:
                app = self.store.data["applications"].get(name)
                if app is None:
                    return
                url, revision, path = app["repositoryUrl"], app["revision"], app["path"]
                started = app.get("_sync", {}).get("syncStartedAt") or iso(now())
            resources: list[dict[str, Any]] = []
            found: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]] = {}
            try:
                sha, files = read_templates(url, revision, path)
                templates = _templates_module()
            except (GitError, ImportError) as exc:
                message = f"ComparisonError: {exc}"
                self._finish_sync(name, started, None, resources, message)
                log.warning("application %s cannot sync: %s", name, exc)
                return
            for file, text in files:
                resources += self._sync_file(templates, file, text, found)
            with self.store.lock:
                taken = {
                    key: t["application"]
                    for key, t in self.store.data["templates"].items()
                    if t["application"] != name
                }
            others = len(taken)
            applied: dict[str, Any] = {}
            for key, (scenario, executable, doc, file) in found.items():
                status = next(
                    r for r in resources if r["name"] == executable["id"] and r.get("_file") == file
                )
                if key in taken:
                    status.update(
                        status="SyncFailed",
                        message=f"executable {key} is already defined by application '{taken[key]}'",
                    )
                elif len(applied) + others >= MAX_SERVING_TEMPLATES:
                    status.update(
                        status="SyncFailed",
                        message=f"at most {MAX_SERVING_TEMPLATES} serving templates per tenant",
                    )
                else:
                    applied[key] = (scenario, executable, doc, file)
            with self.store.lock:
                if name in self.store.data["applications"]:
                    self._apply_sync(name, applied)
            for r in resources:
                r.pop("_file", None)
            failed = [r for r in resources if r["status"] != "Synced"]
            message = (
                f"{len(failed)} of {len(resources)} resources failed to sync: "
                + "; ".join(f"{r['name']}: {r['message']}" for r in failed)
                if failed
                else f"successfully synced (all tasks run); {len(resources)} templates at {sha[:12]}"
            )
            self._finish_sync(name, started, sha, resources, message)

    def _sync_file(
        self,
        templates: Any,
        file: str,
        text: str,
        found: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]],
    ) -> list[dict[str, Any]]:
        import yaml

        out: list[dict[str, Any]] = []
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())
            return [
                {
                    "name": file,
                    "kind": "Unknown",
                    "status": "SyncFailed",
                    "message": f"invalid YAML: {problem}",
                    "_file": file,
                }
            ]
        for doc in docs:
            if not isinstance(doc, dict):
                out.append(
                    {
                        "name": file,
                        "kind": "Unknown",
                        "status": "SyncFailed",
                        "message": "not a YAML mapping",
                        "_file": file,
                    }
                )
                continue
            kind = str(doc.get("kind") or "Unknown")
            rname = str((doc.get("metadata") or {}).get("name") or file)
            entry = {"name": rname, "kind": kind, "status": "Synced", "message": "", "_file": file}
            out.append(entry)
            if kind not in TEMPLATE_KINDS:
                entry.update(
                    status="SyncFailed",
                    message=f"{file}: the local AI Core syncs {', '.join(TEMPLATE_KINDS)}s only",
                )
                continue
            try:
                # A one-document file is linted as text: the strict loader then also catches
                # duplicate keys, which safe_load_all silently merges.
                report = templates.lint(text + "\n" if len(docs) == 1 else doc)
            except Exception as exc:  # a broken template must not stop the sync of the others
                entry.update(status="SyncFailed", message=f"{file}: {exc}")
                continue
            problems = _lint_messages(report)
            if problems:
                entry.update(status="SyncFailed", message=f"{file}: " + "; ".join(problems))
                continue
            try:
                scenario, executable = executable_from(doc)
            except (ValueError, KeyError, TypeError) as exc:
                entry.update(status="SyncFailed", message=f"{file}: {exc}")
                continue
            key = f"{executable['scenarioId']}/{executable['id']}"
            if key in found:
                entry.update(
                    status="SyncFailed", message=f"{file}: executable {key} is defined twice"
                )
                continue
            entry["message"] = (
                f"{file}: executable {executable['id']} of scenario {executable['scenarioId']}"
            )
            found[key] = (scenario, executable, doc, file)
        return out

    def _apply_sync(self, name: str, applied: Mapping[str, Any]) -> None:
        """Make the store hold exactly ``applied`` for this application (ArgoCD prunes)."""
        data = self.store.data
        stamp = iso(now())
        for key in [
            k for k, t in data["templates"].items() if t["application"] == name and k not in applied
        ]:
            del data["templates"][key]
            data["executables"].pop(key, None)
        for key, (scenario, executable, doc, file) in applied.items():
            old = data["executables"].get(key)
            template = {"application": name, "file": file, "template": doc}
            changed = old is None or data["templates"].get(key, {}).get("template") != doc
            data["templates"][key] = template
            data["executables"][key] = {
                **executable,
                "createdAt": old["createdAt"] if old else stamp,
                "modifiedAt": stamp if changed or old is None else old["modifiedAt"],
            }
            sid = scenario["id"]
            old_scenario = data["scenarios"].get(sid)
            same = old_scenario and {k: old_scenario.get(k) for k in scenario} == scenario
            data["scenarios"][sid] = {
                **scenario,
                "createdAt": old_scenario["createdAt"] if old_scenario else stamp,
                "modifiedAt": old_scenario["modifiedAt"] if same else stamp,
            }
        used = {e["scenarioId"] for e in data["executables"].values()}
        for sid in [s for s in data["scenarios"] if s not in used]:
            del data["scenarios"][sid]

    def _finish_sync(
        self,
        name: str,
        started: str,
        sha: str | None,
        resources: list[dict[str, Any]],
        message: str,
    ) -> None:
        failed = sha is None or any(r["status"] != "Synced" for r in resources)
        with self.store.lock:
            app = self.store.data["applications"].get(name)
            if app is None:
                return
            stamp = iso(now())
            sync = {
                "healthStatus": "Degraded" if failed else "Healthy",
                "syncStatus": ("Unknown" if sha is None else "OutOfSync") if failed else "Synced",
                "message": message,
                "syncStartedAt": started,
                "syncFinishedAt": stamp,
                "reconciledAt": stamp,
                "resources": resources,
            }
            if sha is not None:
                sync["revision"] = sha
            elif app.get("_sync", {}).get("revision"):
                sync["revision"] = app["_sync"]["revision"]
            app["_sync"] = sync
            self.store.save()

    def _sync_loop(self) -> None:
        while not self._closing.wait(self.settings.sync_interval):
            with self.store.lock:
                names = list(self.store.data["applications"])
            for name in names:
                self.schedule_sync(name)

    # scenarios and executables

    def scenarios(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [dict(s) for s in self.store.data["scenarios"].values()]

    def scenario(self, sid: str) -> dict[str, Any]:
        with self.store.lock:
            found = self.store.data["scenarios"].get(sid)
            if found is None:
                raise missing(f"scenario '{sid}'")
            return dict(found)

    def executables(self, sid: str, version: str | None = None) -> list[dict[str, Any]]:
        with self.store.lock:
            return [
                dict(e)
                for e in self.store.data["executables"].values()
                if e["scenarioId"] == sid and (version is None or e["versionId"] == version)
            ]

    def executable(self, sid: str, eid: str) -> dict[str, Any]:
        with self.store.lock:
            found = self.store.data["executables"].get(f"{sid}/{eid}")
            if found is None:
                raise missing(f"executable '{eid}' of scenario '{sid}'")
            return dict(found)

    def versions(self, sid: str) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for e in self.executables(sid):
            v = seen.setdefault(
                e["versionId"],
                {
                    "id": e["versionId"],
                    "scenarioId": sid,
                    "createdAt": e["createdAt"],
                    "modifiedAt": e["modifiedAt"],
                },
            )
            v["createdAt"] = min(v["createdAt"], e["createdAt"])
            v["modifiedAt"] = max(v["modifiedAt"], e["modifiedAt"])
        return list(seen.values())

    # artifacts

    def create_artifact(self, group: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = _text(body, "name", pattern=_NAME, max_len=256)
        kind = _text(body, "kind")
        if kind not in _ARTIFACT_KINDS:
            raise bad(f"'kind' must be one of {', '.join(_ARTIFACT_KINDS)}", "InvalidField")
        url = _text(body, "url", max_len=1024)
        if not _ARTIFACT_URL.match(url or ""):
            raise bad(
                f"'url' {url!r} is not <scheme>://<path>, e.g. ai://default/models/x",
                "InvalidField",
            )
        sid = _text(body, "scenarioId", pattern=_ID)
        description = _text(body, "description", required=False, max_len=5000)
        labels = _labels(body.get("labels"), _LABEL_KEY, "labels")
        with self.store.lock:
            if sid not in self.store.data["scenarios"]:
                raise bad(
                    f"scenario '{sid}' does not exist: sync the application that defines it first",
                    "ScenarioNotFound",
                )
            stamp = iso(now())
            art_id = new_uuid()
            artifact: dict[str, Any] = {
                "id": art_id,
                "name": name,
                "kind": kind,
                "url": url,
                "scenarioId": sid,
                "labels": labels,
                "createdAt": stamp,
                "modifiedAt": stamp,
            }
            if description is not None:
                artifact["description"] = description
            self.store.in_group("artifacts", group)[art_id] = artifact
            self.store.save()
        log.info("artifact %s registered in %s: %s", art_id, group, url)
        return {"id": art_id, "message": "Artifact acknowledged", "url": url}

    def _with_scenario(self, obj: dict[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
        expand = query.get("$expand")
        if expand is None:
            return obj
        if expand != "scenario":
            raise bad("$expand takes only 'scenario'", "InvalidParameter")
        with self.store.lock:
            scenario = self.store.data["scenarios"].get(obj["scenarioId"])
        return {**obj, "scenario": dict(scenario) if scenario else None}

    @staticmethod
    def _search(query: Mapping[str, str], *texts: str | None) -> bool:
        term = query.get("$search")
        if not term:
            return True
        insensitive = str(query.get("searchCaseInsensitive", "false")).lower() == "true"
        haystack = [t for t in texts if t]
        if insensitive:
            return any(term.lower() in t.lower() for t in haystack)
        return any(term in t for t in haystack)

    def artifacts(self, group: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        kind = query.get("kind")
        if kind is not None and kind not in _ARTIFACT_KINDS:
            raise bad(f"kind must be one of {', '.join(_ARTIFACT_KINDS)}", "InvalidParameter")
        selectors = [s for s in (query.get("artifactLabelSelector") or "").split(",") if s]
        with self.store.lock:
            items = list(self.store.in_group("artifacts", group).values())
        out = []
        for a in items:
            labels = {lab["key"]: lab["value"] for lab in a.get("labels", [])}
            if (
                (query.get("scenarioId") and a["scenarioId"] != query["scenarioId"])
                or (query.get("executionId") and a.get("executionId") != query["executionId"])
                or (query.get("name") and a["name"] != query["name"])
                or (kind and a["kind"] != kind)
                or not _selected(labels, selectors)
                or not self._search(query, a["name"], a.get("description"))
            ):
                continue
            out.append(self._with_scenario(dict(a), query))
        return out

    def artifact(self, group: str, art_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        with self.store.lock:
            found = self.store.in_group("artifacts", group).get(art_id)
            if found is None:
                raise missing(f"artifact '{art_id}' in resource group '{group}'")
            return self._with_scenario(dict(found), query)

    # configurations

    def _check_bindings(
        self, group: str, executable: Mapping[str, Any], body: Mapping[str, Any]
    ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        params = body.get("parameterBindings") or []
        arts = body.get("inputArtifactBindings") or []
        if (
            not isinstance(params, list)
            or not isinstance(arts, list)
            or len(params) > 1000
            or len(arts) > 1000
        ):
            raise bad(
                "parameterBindings and inputArtifactBindings must be lists (at most 1000)",
                "InvalidField",
            )
        declared = {p["name"] for p in executable.get("parameters", [])}
        declared_arts = {a["name"] for a in executable.get("inputArtifacts", [])}
        out_params, out_arts, seen = [], [], set()
        for item in params:
            if (
                not isinstance(item, Mapping)
                or not isinstance(item.get("key"), str)
                or not isinstance(item.get("value"), str)
            ):
                raise bad("each parameter binding needs a string key and value", "InvalidField")
            key, value = item["key"], item["value"]
            if len(key) > 256 or len(value) > 5000:
                raise bad(
                    f"parameter binding {key[:40]!r} is too long (key 256, value 5000)",
                    "InvalidField",
                )
            if key not in declared:
                raise bad(
                    f"parameter '{key}' is not declared by executable '{executable['id']}' "
                    f"(it declares {', '.join(sorted(declared)) or 'none'})",
                    "UnknownParameter",
                )
            if key in seen:
                raise bad(f"parameter '{key}' is bound twice", "InvalidField")
            seen.add(key)
            out_params.append({"key": key, "value": value})
        with self.store.lock:
            known = self.store.in_group("artifacts", group)
        seen = set()
        for item in arts:
            if (
                not isinstance(item, Mapping)
                or not isinstance(item.get("key"), str)
                or not isinstance(item.get("artifactId"), str)
            ):
                raise bad(
                    "each input artifact binding needs a string key and artifactId", "InvalidField"
                )
            key, art_id = item["key"], item["artifactId"]
            if key not in declared_arts:
                raise bad(
                    f"input artifact '{key}' is not declared by executable '{executable['id']}' "
                    f"(it declares {', '.join(sorted(declared_arts)) or 'none'})",
                    "UnknownArtifact",
                )
            if art_id not in known:
                raise bad(
                    f"artifact '{art_id}' does not exist in resource group '{group}'",
                    "ArtifactNotFound",
                )
            if key in seen:
                raise bad(f"input artifact '{key}' is bound twice", "InvalidField")
            seen.add(key)
            out_arts.append({"key": key, "artifactId": art_id})
        return out_params, out_arts

    def create_configuration(self, group: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = _text(body, "name", pattern=_NAME, max_len=256)
        sid = _text(body, "scenarioId", pattern=_ID)
        eid = _text(body, "executableId", pattern=_ID)
        with self.store.lock:
            executable = self.store.data["executables"].get(f"{sid}/{eid}")
        if executable is None:
            raise bad(
                f"executable '{eid}' does not exist in scenario '{sid}': check the ids, or that the "
                "application synced the template (GET /v2/admin/applications/<name>/status)",
                "ExecutableNotFound",
            )
        params, arts = self._check_bindings(group, executable, body)
        conf_id = new_uuid()
        conf = {
            "id": conf_id,
            "name": name,
            "scenarioId": sid,
            "executableId": eid,
            "parameterBindings": params,
            "inputArtifactBindings": arts,
            "createdAt": iso(now()),
        }
        with self.store.lock:
            self.store.in_group("configurations", group)[conf_id] = conf
            self.store.save()
        log.info("configuration %s created in %s for %s/%s", conf_id, group, sid, eid)
        return {"id": conf_id, "message": "Configuration created"}

    def configurations(self, group: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        executables = [e for e in (query.get("executableIds") or "").split(",") if e]
        with self.store.lock:
            items = list(self.store.in_group("configurations", group).values())
        return [
            self._with_scenario(dict(c), query)
            for c in items
            if not (query.get("scenarioId") and c["scenarioId"] != query["scenarioId"])
            and not (executables and c["executableId"] not in executables)
            and self._search(query, c["name"])
        ]

    def configuration(self, group: str, conf_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        with self.store.lock:
            found = self.store.in_group("configurations", group).get(conf_id)
            if found is None:
                raise missing(f"configuration '{conf_id}' in resource group '{group}'")
            return self._with_scenario(dict(found), query)

    # deployments

    def _render(self, group: str, conf_id: str) -> tuple[dict[str, Any], RunSpec]:
        """The configuration and what its template renders to; 400 when it cannot run."""
        with self.store.lock:
            conf = self.store.in_group("configurations", group).get(conf_id)
            if conf is None:
                raise bad(
                    f"configuration '{conf_id}' does not exist in resource group '{group}'",
                    "ConfigurationNotFound",
                )
            key = f"{conf['scenarioId']}/{conf['executableId']}"
            executable = self.store.data["executables"].get(key)
            template = (self.store.data["templates"].get(key) or {}).get("template")
            artifacts = self.store.in_group("artifacts", group)
            urls = {}
            for b in conf.get("inputArtifactBindings", []):
                art = artifacts.get(b["artifactId"])
                if art is None:
                    raise bad(
                        f"artifact '{b['artifactId']}' of configuration '{conf_id}' no longer exists",
                        "ArtifactNotFound",
                    )
                urls[b["key"]] = art["url"]
        if executable is None or template is None:
            raise bad(
                f"executable '{conf['executableId']}' of scenario '{conf['scenarioId']}' no longer exists "
                "(the application's last sync removed or rejected it)",
                "ExecutableNotFound",
            )
        if not executable.get("deployable"):
            raise bad(f"executable '{conf['executableId']}' is not deployable", "NotDeployable")
        params = {b["key"]: b["value"] for b in conf.get("parameterBindings", [])}
        try:
            rendered = _templates_module().render(template, params, urls)
            spec = run_spec(rendered)
        except ImportError as exc:
            raise ApiError(
                500, f"labkit.templates is not available ({exc})", "InternalError"
            ) from None
        except Exception as exc:
            raise bad(
                f"the configuration does not render the template: {exc}", "InvalidConfiguration"
            ) from None
        return conf, spec

    @staticmethod
    def _details(spec: RunSpec, running: int) -> dict[str, Any]:
        return {
            "scaling": {
                "backendDetails": {
                    "predictor": {
                        "minReplicas": spec.min_replicas,
                        "maxReplicas": spec.max_replicas,
                        "runningReplicas": running,
                    }
                }
            },
            "resources": {
                "backendDetails": {"predictor": {"resourcePlan": spec.resource_plan or ""}}
            },
        }

    def create_deployment(self, group: str, body: Mapping[str, Any]) -> dict[str, Any]:
        conf_id = _text(body, "configurationId", pattern=_ID)
        ttl = body.get("ttl")
        if ttl is not None and (not isinstance(ttl, str) or not _TTL.fullmatch(ttl)):
            raise bad(
                "'ttl' must be a whole number of minutes, hours or days, e.g. 30m, 2h, 1d",
                "InvalidField",
            )
        assert conf_id is not None
        conf, spec = self._render(group, conf_id)
        dep_id = new_deployment_id()
        stamp = iso(now())
        dep: dict[str, Any] = {
            "id": dep_id,
            "deploymentUrl": "",
            "configurationId": conf_id,
            "configurationName": conf["name"],
            "executableId": conf["executableId"],
            "scenarioId": conf["scenarioId"],
            "status": "UNKNOWN",
            "targetStatus": "RUNNING",
            "lastOperation": "CREATE",
            "details": self._details(spec, 0),
            "createdAt": stamp,
            "modifiedAt": stamp,
            "submissionTime": stamp,
            "_run": spec.to_dict(),
            "_process": None,
        }
        if ttl is not None:
            dep["ttl"] = ttl
        with self.store.lock:
            self.store.in_group("deployments", group)[dep_id] = dep
            self.store.save()
        self.work_dir(dep_id).mkdir(parents=True, exist_ok=True)
        log.info("deployment %s created in %s (configuration %s)", dep_id, group, conf_id)
        self.append_log(dep_id, f"aicore: deployment {dep_id} scheduled (configuration {conf_id})")
        self._start_runner(group, dep_id)
        out = {
            "id": dep_id,
            "message": "Deployment scheduled.",
            "deploymentUrl": "",
            "status": "UNKNOWN",
        }
        if ttl is not None:
            out["ttl"] = ttl
        return out

    def work_dir(self, dep_id: str) -> Path:
        return self.settings.state_dir / "deployments" / dep_id

    def _start_runner(self, group: str, dep_id: str) -> None:
        with self.store.lock:
            dep = self.store.in_group("deployments", group).get(dep_id)
            if dep is None:
                return
            spec = RunSpec.from_dict(dep["_run"])
        events = _Events(self, group, dep_id)
        runner = Runner(dep_id, spec, self.work_dir(dep_id), self.settings.runner, events)
        events.runner = runner
        self.runners[dep_id] = runner
        runner.start()

    def _set(self, dep: dict[str, Any], **fields: Any) -> None:
        for key, value in fields.items():
            if value is None:
                dep.pop(key, None)
            else:
                dep[key] = value[:MAX_STATUS_MESSAGE] if key == "statusMessage" else value
        dep["modifiedAt"] = iso(now())

    def update_from_runner(self, group: str, dep_id: str, runner: Runner, **fields: Any) -> None:
        """A status change the runner reports; ignored once the deployment is being stopped."""
        with self.store.lock:
            dep = self.store.in_group("deployments", group).get(dep_id)
            if dep is None or self.runners.get(dep_id) is not runner or self._closing.is_set():
                return
            if dep.get("targetStatus") != "RUNNING":
                return
            if fields.get("status") == "RUNNING":
                spec = RunSpec.from_dict(dep["_run"])
                fields.update(
                    deploymentUrl=f"{self.settings.base_url}/v2/inference/deployments/{dep_id}",
                    details=self._details(spec, 1),
                    statusMessage=None,
                    statusDetails=None,
                )
                fields.setdefault("startTime", dep.get("startTime") or iso(now()))
            if fields.get("status") == "DEAD":
                fields.update(
                    details=self._details(RunSpec.from_dict(dep["_run"]), 0),
                    completionTime=iso(now()),
                )
            self._set(dep, **fields)
            self.store.save()
        if fields.get("status") in ("RUNNING", "DEAD"):
            log.info(
                "deployment %s is %s %s",
                dep_id,
                fields["status"],
                fields.get("statusMessage") or "",
            )

    def set_process(self, group: str, dep_id: str, info: dict[str, Any] | None) -> None:
        with self.store.lock:
            dep = self.store.in_group("deployments", group).get(dep_id)
            if dep is not None:
                dep["_process"] = info
                self.store.save()

    def _deployment(self, group: str, dep_id: str) -> dict[str, Any]:
        dep = self.store.in_group("deployments", group).get(dep_id)
        if dep is None:
            raise missing(f"deployment '{dep_id}' in resource group '{group}'")
        return dep

    @staticmethod
    def _status_only(dep: Mapping[str, Any]) -> dict[str, Any]:
        keys = (
            "id",
            "configurationId",
            "status",
            "createdAt",
            "modifiedAt",
            "statusDetails",
            "details",
        )
        return {k: dep[k] for k in keys if k in dep}

    def deployment(self, group: str, dep_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        select = query.get("$select")
        if select is not None and select != "status":
            raise bad("$select takes only 'status'", "InvalidParameter")
        with self.store.lock:
            dep = public(self._deployment(group, dep_id))
        return self._status_only(dep) if select else dep

    def deployments(self, group: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        status = query.get("status")
        if status is not None and status not in _DEPLOYMENT_STATUSES:
            raise bad(
                f"status must be one of {', '.join(_DEPLOYMENT_STATUSES)}", "InvalidParameter"
            )
        select = query.get("$select")
        if select is not None and select != "status":
            raise bad("$select takes only 'status'", "InvalidParameter")
        executables = [e for e in (query.get("executableIds") or "").split(",") if e]
        with self.store.lock:
            items = [public(d) for d in self.store.in_group("deployments", group).values()]
        out = [
            d
            for d in items
            if not (query.get("scenarioId") and d["scenarioId"] != query["scenarioId"])
            and not (
                query.get("configurationId") and d["configurationId"] != query["configurationId"]
            )
            and not (executables and d["executableId"] not in executables)
            and not (status and d["status"] != status)
        ]
        return [self._status_only(d) for d in out] if select else out

    def modify_deployment(self, group: str, dep_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        target = body.get("targetStatus")
        conf_id = body.get("configurationId")
        if target is not None and conf_id is not None:
            raise bad("give either targetStatus or configurationId, not both", "InvalidField")
        if target is None and conf_id is None:
            raise bad("give targetStatus (STOPPED) or configurationId", "MissingField")
        if target is not None:
            if target != "STOPPED":
                raise bad(
                    f"targetStatus {target!r} is not supported: only STOPPED (a stopped deployment "
                    "cannot be started again: create a new one)",
                    "InvalidTargetStatus",
                )
            self.stop_deployment(group, dep_id)
            return {"id": dep_id, "message": "Deployment modification scheduled"}
        if not isinstance(conf_id, str) or not _ID.fullmatch(conf_id):
            raise bad("'configurationId' must be a configuration id", "InvalidField")
        with self.store.lock:
            dep = self._deployment(group, dep_id)
            if dep["status"] not in ("RUNNING", "PENDING") or dep.get("targetStatus") != "RUNNING":
                raise ApiError(
                    412,
                    f"deployment {dep_id} is {dep['status']}: only RUNNING or PENDING deployments "
                    "can change their configuration",
                )
        conf, spec = self._render(group, conf_id)
        with self.store.lock:
            dep = self._deployment(group, dep_id)
            if conf["scenarioId"] != dep["scenarioId"]:
                raise bad(
                    "the new configuration belongs to another scenario", "InvalidConfiguration"
                )
            old_runner = self.runners.pop(dep_id, None)
            self._set(
                dep,
                latestRunningConfigurationId=dep["configurationId"],
                configurationId=conf_id,
                configurationName=conf["name"],
                executableId=conf["executableId"],
                lastOperation="UPDATE",
                status="PENDING",
                statusMessage="Updating to a new configuration",
                statusDetails=None,
                details=self._details(spec, 0),
            )
            dep["_run"] = spec.to_dict()
            self.store.save()
        self.append_log(
            dep_id, f"aicore: configuration changed to {conf_id}: replacing the predictor"
        )

        def replace() -> None:
            if old_runner is not None:
                old_runner.stop()
            self._start_runner(group, dep_id)

        threading.Thread(target=replace, name=f"aicore-update-{dep_id}", daemon=True).start()
        return {"id": dep_id, "message": "Deployment modification scheduled"}

    def stop_deployment(self, group: str, dep_id: str) -> None:
        """targetStatus STOPPED: end the predictor in the background (STOPPING, then STOPPED)."""
        with self.store.lock:
            dep = self._deployment(group, dep_id)
            if dep.get("targetStatus") == "DELETED":
                raise missing(f"deployment '{dep_id}' in resource group '{group}'")
            if dep["status"] in ("STOPPED", "STOPPING") and dep.get("targetStatus") == "STOPPED":
                return
            final = dep["status"] in ("DEAD", "STOPPED")
            self._set(
                dep,
                targetStatus="STOPPED",
                lastOperation="UPDATE",
                status="STOPPED" if final else "STOPPING",
            )
            if final:
                dep["completionTime"] = dep.get("completionTime") or iso(now())
            runner = self.runners.pop(dep_id, None)
            self.store.save()
        self.append_log(dep_id, "aicore: stop requested (targetStatus STOPPED)")

        def finish() -> None:
            if runner is not None:
                runner.stop()
            with self.store.lock:
                dep = self.store.in_group("deployments", group).get(dep_id)
                if dep is not None and dep["status"] == "STOPPING":
                    spec = RunSpec.from_dict(dep["_run"])
                    self._set(
                        dep,
                        status="STOPPED",
                        completionTime=iso(now()),
                        statusMessage=None,
                        details=self._details(spec, 0),
                    )
                    self.store.save()
            self.append_log(dep_id, "aicore: predictor stopped; deployment STOPPED")
            log.info("deployment %s stopped", dep_id)

        threading.Thread(target=finish, name=f"aicore-stop-{dep_id}", daemon=True).start()

    def delete_deployment(self, group: str, dep_id: str, *, force: bool = False) -> dict[str, Any]:
        with self.store.lock:
            dep = self._deployment(group, dep_id)
            if not force and dep["status"] not in ("STOPPED", "DEAD", "UNKNOWN"):
                raise ApiError(
                    412,
                    f"deployment {dep_id} is {dep['status']}: stop it first (PATCH targetStatus "
                    "STOPPED); only STOPPED, DEAD or UNKNOWN deployments can be deleted",
                    "PreconditionFailed",
                )
            self._set(dep, targetStatus="DELETED", lastOperation="DELETE")
            runner = self.runners.pop(dep_id, None)
            self.store.save()

        def finish() -> None:
            if runner is not None:
                runner.stop()
            with self.store.lock:
                self._remove_deployment(group, dep_id)
                self.store.save()
            log.info("deployment %s deleted", dep_id)

        threading.Thread(target=finish, name=f"aicore-delete-{dep_id}", daemon=True).start()
        return {"id": dep_id, "message": "Deletion scheduled"}

    def bulk_modify(self, group: str, body: Mapping[str, Any]) -> dict[str, Any]:
        items = body.get("deployments")
        if not isinstance(items, list) or not 1 <= len(items) <= 100:
            raise bad("'deployments' must list 1 to 100 {id, targetStatus}", "InvalidField")
        results: list[dict[str, Any]] = []
        for item in items:
            dep_id = str(item.get("id", "")) if isinstance(item, Mapping) else ""
            try:
                target = item.get("targetStatus") if isinstance(item, Mapping) else None
                if target == "STOPPED":
                    self.stop_deployment(group, dep_id)
                    results.append({"id": dep_id, "message": "Deployment modification scheduled"})
                elif target == "DELETED":
                    results.append(self.delete_deployment(group, dep_id))
                else:
                    raise bad("targetStatus must be STOPPED or DELETED", "InvalidTargetStatus")
            except ApiError as exc:
                results.append(
                    {"id": dep_id or "none", "error": {"code": exc.code, "message": exc.message}}
                )
        return {"deployments": results}

    def _remove_deployment(self, group: str, dep_id: str) -> None:
        """Forget a deployment and its files (caller holds the store lock and saves)."""
        dep = self.store.in_group("deployments", group).pop(dep_id, None)
        if dep and dep.get("_process"):
            kill_recorded(dep["_process"], self.settings.runner.builder)
        remove_tree(self.work_dir(dep_id))

    def _ttl_loop(self) -> None:
        while not self._closing.wait(self.settings.ttl_check):
            expired = []
            with self.store.lock:
                for group, deployments in self.store.data["deployments"].items():
                    for dep_id, dep in deployments.items():
                        if not dep.get("ttl") or dep.get("targetStatus") == "DELETED":
                            continue
                        end = parse_time(dep["createdAt"]) + timedelta(
                            seconds=ttl_seconds(dep["ttl"])
                        )
                        if now() >= end:
                            expired.append((group, dep_id, dep["ttl"]))
            for group, dep_id, ttl in expired:
                self.append_log(dep_id, f"aicore: ttl {ttl} has run out: deleting the deployment")
                log.info("deployment %s: ttl %s ran out", dep_id, ttl)
                with contextlib.suppress(ApiError):
                    self.delete_deployment(group, dep_id, force=True)

    # logs

    def append_log(self, dep_id: str, line: str) -> None:
        path = self.work_dir(dep_id) / "log.jsonl"
        record = json.dumps({"timestamp": log_time(now()), "msg": line}) + "\n"
        with self._log_locks[dep_id]:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(record)

    def logs(self, group: str, dep_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        with self.store.lock:
            self._deployment(group, dep_id)
        top = _int_param(query, "$top", LOG_DEFAULT_TOP)
        if top is None or not 1 <= top <= LOG_MAX_TOP:
            raise bad(f"$top must be 1 to {LOG_MAX_TOP}", "InvalidParameter")
        order = query.get("$order", "asc")
        if order not in ("asc", "desc"):
            raise bad("$order must be asc or desc", "InvalidParameter")
        try:
            end = parse_time(query["end"]) if query.get("end") else now()
            start = parse_time(query["start"]) if query.get("start") else end - timedelta(hours=1)
        except ValueError:
            raise bad(
                "start and end must be RFC 3339 times, e.g. 2024-05-19T00:00:14Z",
                "InvalidParameter",
            ) from None
        records = []
        lines: list[str] = []
        path = self.work_dir(dep_id) / "log.jsonl"
        with self._log_locks[dep_id], contextlib.suppress(OSError):
            lines = path.read_text(encoding="utf-8").splitlines()
        for raw in lines:
            with contextlib.suppress(ValueError, KeyError):
                item = json.loads(raw)
                if start <= parse_time(item["timestamp"]) <= end:
                    records.append(item)
        if order == "desc":
            records.reverse()
        return {"data": {"result": records[:top]}}

    # inference

    def inference_target(self, group: str, dep_id: str) -> int:
        """The local port of a RUNNING deployment's predictor."""
        with self.store.lock:
            dep = self.store.in_group("deployments", group).get(dep_id)
            if dep is None or dep.get("targetStatus") == "DELETED":
                raise missing(f"deployment '{dep_id}' in resource group '{group}'")
            port = (dep.get("_process") or {}).get("port")
            if dep["status"] != "RUNNING" or not port:
                raise ApiError(
                    503,
                    f"deployment {dep_id} is {dep['status']}, not RUNNING: wait for RUNNING "
                    "(GET /v2/lm/deployments/<id>) or see its logs",
                )
            return int(port)

    # meta

    @staticmethod
    def meta() -> dict[str, Any]:
        return {
            "runtimeIdentifier": "aicore",
            "runtimeApiVersion": API_VERSION,
            "description": "labkit's local AI Core (the lab's local profile)",
            "aiApi": {
                "version": API_VERSION,
                "capabilities": {
                    "multitenant": False,
                    "shareable": False,
                    "staticDeployments": False,
                    "userDeployments": True,
                    "userExecutions": False,
                    "timeToLiveDeployments": True,
                    "executionSchedules": False,
                    "bulkUpdates": {"executions": False, "deployments": True},
                    "logs": {"executions": False, "deployments": True},
                },
                "limits": {
                    "executions": {"maxRunningCount": 0},
                    "deployments": {"maxRunningCount": -1},
                },
            },
            "extensions": {"resourceGroups": {"version": "1.0"}},
        }


def _selected(labels: Mapping[str, str], selectors: Iterable[str]) -> bool:
    for sel in selectors:
        if "!=" in sel:
            key, value = sel.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in sel:
            key, value = sel.split("=", 1)
            if labels.get(key) != value:
                return False
    return True


@dataclass
class _Events:
    """The runner's line to the service, for one deployment."""

    core: LocalAICore
    group: str
    dep_id: str
    runner: Runner | None = field(default=None)

    def log(self, line: str) -> None:
        self.core.append_log(self.dep_id, line)

    def phase(self, message: str) -> None:
        assert self.runner is not None
        with self.core.store.lock:
            dep = self.core.store.in_group("deployments", self.group).get(self.dep_id)
            status = dep["status"] if dep else None
        if status in ("UNKNOWN", "PENDING"):
            self.core.update_from_runner(
                self.group, self.dep_id, self.runner, status="PENDING", statusMessage=message
            )

    def running(self, port: int) -> None:
        assert self.runner is not None
        self.core.update_from_runner(self.group, self.dep_id, self.runner, status="RUNNING")

    def dead(self, reason: str, message: str) -> None:
        assert self.runner is not None
        self.core.update_from_runner(
            self.group,
            self.dep_id,
            self.runner,
            status="DEAD",
            statusMessage=message,
            statusDetails={"reason": reason, "message": message},
        )

    def process(self, info: dict[str, Any] | None) -> None:
        self.core.set_process(self.group, self.dep_id, info)

    def object_store(self, name: str) -> ObjectStore | None:
        return self.core.resolve_object_store(self.group, name)

    def docker_config(self, name: str) -> dict[str, Any] | None:
        return self.core.docker_config(name)


# --- HTTP -------------------------------------------------------------------------------------


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        raise bad("the request needs a JSON body", "MissingBody")
    try:
        data = json.loads(raw)
    except ValueError:
        raise bad("the request body is not JSON", "InvalidBody") from None
    if not isinstance(data, dict):
        raise bad("the request body must be a JSON object", "InvalidBody")
    return data


def _error_response(request: Request, exc: ApiError) -> JSONResponse:
    error: dict[str, Any] = {
        "code": exc.code,
        "message": exc.message,
        "requestId": uuid.uuid4().hex,
        "target": request.url.path,
    }
    if exc.details is not None:
        error["details"] = exc.details
    headers = (
        {"WWW-Authenticate": 'Bearer realm="labkit-local-aicore"'} if exc.status == 401 else None
    )
    return JSONResponse({"error": error}, status_code=exc.status, headers=headers)


def _client_credentials(request: Request, form: Mapping[str, str]) -> tuple[str, str] | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(auth[6:].strip()).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            return None
        # RFC 6749 2.3.1: both parts are form-urlencoded before they are joined.
        return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)
    if "client_id" in form and "client_secret" in form:
        return form["client_id"], form["client_secret"]
    return None


def _core(request: Request) -> LocalAICore:
    return request.app.state.core  # type: ignore[no-any-return]


def _auth(request: Request) -> dict[str, Any]:
    """Every /v2 call needs a valid bearer token."""
    return _core(request).tokens.check(request.headers.get("authorization"))


def _group_item(request: Request) -> str:
    """The resource group of a request about one object (404 when it does not exist)."""
    return _core(request).group(request.headers.get("ai-resource-group"), unknown_status=404)


def _group_list(request: Request) -> str:
    """The resource group of a list or create request (the spec has no 404 there: 400)."""
    return _core(request).group(request.headers.get("ai-resource-group"), unknown_status=400)


def _group_default(request: Request) -> str:
    """Object store secrets: the header is optional and defaults to 'default'."""
    name = request.headers.get("ai-resource-group") or DEFAULT_RESOURCE_GROUP
    return _core(request).group(name, unknown_status=404)


JsonBody = Annotated[dict[str, Any], Depends(_json_body)]
GroupItem = Annotated[str, Depends(_group_item)]
GroupList = Annotated[str, Depends(_group_list)]
GroupDefault = Annotated[str, Depends(_group_default)]


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app of the local AI Core."""
    core = LocalAICore(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        app.state.http = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=60.0),
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256),
            trust_env=False,  # the predictors are on loopback: never through a proxy
        )
        core.startup()
        try:
            yield
        finally:
            await app.state.http.aclose()
            core.shutdown()

    app = FastAPI(
        title="labkit local AI Core",
        version=API_VERSION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.core = core

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error_response(
            request, bad(f"invalid request: {where} {first.get('msg', '')}".strip())
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "no such path" if exc.status_code == 404 else str(exc.detail)
        return _error_response(
            request, ApiError(exc.status_code, f"{message}: {request.method} {request.url.path}")
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error_response(
            request, ApiError(500, f"internal error ({type(exc).__name__})", "InternalError")
        )

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {
            "status": "READY",
            "message": "the local AI Core is up",
            "service": SERVICE,
            "apiVersion": API_VERSION,
        }

    @app.post(TOKEN_PATH)
    async def token(request: Request) -> JSONResponse:
        raw = (await request.body()).decode("utf-8", "replace")
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}
        for key, value in request.query_params.items():
            form.setdefault(key, value)
        if form.get("grant_type") != "client_credentials":
            return JSONResponse(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "only grant_type=client_credentials",
                },
                status_code=400,
            )
        creds = _client_credentials(request, form)
        if creds is None or not core.tokens.credentials_ok(*creds):
            return JSONResponse(
                {"error": "unauthorized", "error_description": "Bad credentials"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="UAA/client"'},
            )
        return JSONResponse(
            core.tokens.issue(), headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
        )

    admin = APIRouter(prefix="/v2/admin", dependencies=[Depends(_auth)])
    lm = APIRouter(prefix="/v2/lm", dependencies=[Depends(_auth)])

    def q(request: Request) -> dict[str, str]:
        return dict(request.query_params)

    # admin: resource groups
    @admin.post("/resourceGroups", status_code=202)
    def rg_create(body: JsonBody) -> dict[str, Any]:
        return core.create_resource_group(body)

    @admin.get("/resourceGroups")
    def rg_query(request: Request) -> dict[str, Any]:
        return _listing(core.resource_groups(), q(request))

    @admin.get("/resourceGroups/{group}")
    def rg_get(group: str) -> dict[str, Any]:
        return core.resource_group(group)

    @admin.patch("/resourceGroups/{group}")
    def rg_patch(group: str, body: JsonBody) -> Response:
        core.patch_resource_group(group, body)
        return Response(status_code=202)

    @admin.delete("/resourceGroups/{group}", status_code=202)
    def rg_delete(group: str) -> dict[str, Any]:
        return core.delete_resource_group(group)

    # admin: object store secrets
    @admin.post("/objectStoreSecrets", status_code=202)
    def oss_create(group: GroupDefault, body: JsonBody) -> dict[str, Any]:
        return core.create_object_store_secret(group, body)

    @admin.get("/objectStoreSecrets")
    def oss_query(request: Request, group: GroupDefault) -> dict[str, Any]:
        return _listing(core.object_store_secrets(group), q(request))

    @admin.get("/objectStoreSecrets/{name}")
    def oss_get(name: str, group: GroupDefault) -> dict[str, Any]:
        return core.object_store_secret(group, name)

    @admin.patch("/objectStoreSecrets/{name}", status_code=202)
    def oss_patch(name: str, group: GroupDefault, body: JsonBody) -> dict[str, Any]:
        return core.patch_object_store_secret(group, name, body)

    @admin.delete("/objectStoreSecrets/{name}", status_code=202)
    def oss_delete(name: str, group: GroupDefault) -> dict[str, Any]:
        return core.delete_object_store_secret(group, name)

    # admin: docker registry secrets
    @admin.post("/dockerRegistrySecrets", status_code=202)
    def drs_create(body: JsonBody) -> dict[str, Any]:
        return core.create_docker_registry_secret(body)

    @admin.get("/dockerRegistrySecrets")
    def drs_query(request: Request) -> dict[str, Any]:
        return _listing(core.docker_registry_secrets(), q(request))

    @admin.get("/dockerRegistrySecrets/{name}")
    def drs_get(name: str) -> dict[str, Any]:
        return core.docker_registry_secret(name)

    @admin.patch("/dockerRegistrySecrets/{name}", status_code=202)
    def drs_patch(name: str, body: JsonBody) -> dict[str, Any]:
        return core.patch_docker_registry_secret(name, body)

    @admin.delete("/dockerRegistrySecrets/{name}", status_code=202)
    def drs_delete(name: str) -> dict[str, Any]:
        return core.delete_docker_registry_secret(name)

    # admin: repositories and applications
    @admin.post("/repositories")
    def repo_create(body: JsonBody) -> dict[str, Any]:
        return core.create_repository(body)

    @admin.get("/repositories")
    def repo_query(request: Request) -> dict[str, Any]:
        return _listing(core.repositories(), q(request))

    @admin.get("/repositories/{name}")
    def repo_get(name: str) -> dict[str, Any]:
        return core.repository(name)

    @admin.patch("/repositories/{name}")
    def repo_patch(name: str, body: JsonBody) -> dict[str, Any]:
        return core.patch_repository(name, body)

    @admin.delete("/repositories/{name}")
    def repo_delete(name: str) -> dict[str, Any]:
        return core.delete_repository(name)

    @admin.post("/applications")
    def app_create(body: JsonBody) -> dict[str, Any]:
        return core.create_application(body)

    @admin.get("/applications")
    def app_query(request: Request) -> dict[str, Any]:
        return _listing(core.applications(), q(request))

    @admin.get("/applications/{name}/status")
    def app_status(name: str) -> dict[str, Any]:
        return core.application_status(name)

    @admin.post("/applications/{name}/refresh", status_code=202)
    def app_refresh(name: str) -> dict[str, Any]:
        return core.refresh_application(name)

    @admin.get("/applications/{name}")
    def app_get(name: str) -> dict[str, Any]:
        return core.application(name)

    @admin.patch("/applications/{name}")
    def app_patch(name: str, body: JsonBody) -> dict[str, Any]:
        return core.patch_application(name, body)

    @admin.delete("/applications/{name}")
    def app_delete(name: str) -> dict[str, Any]:
        return core.delete_application(name)

    @admin.get("/resources/instanceTypes")
    def instance_types() -> dict[str, Any]:
        # Instance types are a tenant's newer hardware; this machine offers none: resource plans
        # (the templates' ai.sap.com/resourcePlan) are what the local AI Core takes.
        return {"instanceTypes": {}}

    # lm: scenarios and executables
    @lm.get("/meta")
    def meta() -> dict[str, Any]:
        return core.meta()

    @lm.get("/scenarios")
    def sc_query(group: GroupList) -> dict[str, Any]:
        items = core.scenarios()
        return {"count": len(items), "resources": items}

    @lm.get("/scenarios/{sid}")
    def sc_get(sid: str, group: GroupItem) -> dict[str, Any]:
        return core.scenario(sid)

    @lm.get("/scenarios/{sid}/versions")
    def sc_versions(sid: str, group: GroupList) -> dict[str, Any]:
        items = core.versions(sid)
        return {"count": len(items), "resources": items}

    @lm.get("/scenarios/{sid}/executables")
    def ex_query(sid: str, request: Request, group: GroupList) -> dict[str, Any]:
        items = core.executables(sid, request.query_params.get("versionId"))
        return {"count": len(items), "resources": items}

    @lm.get("/scenarios/{sid}/executables/{eid}")
    def ex_get(sid: str, eid: str, group: GroupItem) -> dict[str, Any]:
        return core.executable(sid, eid)

    # lm: artifacts
    @lm.post("/artifacts", status_code=201)
    def art_create(
        response: Response,
        group: GroupList,
        body: JsonBody,
    ) -> dict[str, Any]:
        out = core.create_artifact(group, body)
        response.headers["Location"] = f"{settings.base_url}/v2/lm/artifacts/{out['id']}"
        return out

    @lm.get("/artifacts/$count")
    def art_count(request: Request, group: GroupList) -> PlainTextResponse:
        return PlainTextResponse(str(len(core.artifacts(group, q(request)))))

    @lm.get("/artifacts")
    def art_query(request: Request, group: GroupList) -> dict[str, Any]:
        return _listing(core.artifacts(group, q(request)), q(request))

    @lm.get("/artifacts/{art_id}")
    def art_get(art_id: str, request: Request, group: GroupItem) -> dict[str, Any]:
        return core.artifact(group, art_id, q(request))

    # lm: configurations
    @lm.post("/configurations", status_code=201)
    def conf_create(
        response: Response,
        group: GroupList,
        body: JsonBody,
    ) -> dict[str, Any]:
        out = core.create_configuration(group, body)
        response.headers["Location"] = f"{settings.base_url}/v2/lm/configurations/{out['id']}"
        return out

    @lm.get("/configurations/$count")
    def conf_count(request: Request, group: GroupList) -> PlainTextResponse:
        return PlainTextResponse(str(len(core.configurations(group, q(request)))))

    @lm.get("/configurations")
    def conf_query(request: Request, group: GroupList) -> dict[str, Any]:
        return _listing(core.configurations(group, q(request)), q(request))

    @lm.get("/configurations/{conf_id}")
    def conf_get(conf_id: str, request: Request, group: GroupItem) -> dict[str, Any]:
        return core.configuration(group, conf_id, q(request))

    # lm: deployments
    @lm.post("/deployments", status_code=202)
    def dep_create(
        response: Response,
        group: GroupList,
        body: JsonBody,
    ) -> dict[str, Any]:
        out = core.create_deployment(group, body)
        response.headers["Location"] = f"{settings.base_url}/v2/lm/deployments/{out['id']}"
        return out

    @lm.patch("/deployments", status_code=202)
    def dep_bulk(group: GroupList, body: JsonBody) -> dict[str, Any]:
        return core.bulk_modify(group, body)

    @lm.get("/deployments/$count")
    def dep_count(request: Request, group: GroupList) -> PlainTextResponse:
        return PlainTextResponse(str(len(core.deployments(group, q(request)))))

    @lm.get("/deployments")
    def dep_query(request: Request, group: GroupList) -> dict[str, Any]:
        return _listing(core.deployments(group, q(request)), q(request))

    @lm.get("/deployments/{dep_id}/logs")
    def dep_logs(dep_id: str, request: Request, group: GroupItem) -> dict[str, Any]:
        return core.logs(group, dep_id, q(request))

    @lm.get("/deployments/{dep_id}")
    def dep_get(dep_id: str, request: Request, group: GroupItem) -> dict[str, Any]:
        return core.deployment(group, dep_id, q(request))

    @lm.patch("/deployments/{dep_id}", status_code=202)
    def dep_patch(dep_id: str, group: GroupItem, body: JsonBody) -> dict[str, Any]:
        return core.modify_deployment(group, dep_id, body)

    @lm.delete("/deployments/{dep_id}", status_code=202)
    def dep_delete(dep_id: str, group: GroupItem) -> dict[str, Any]:
        return core.delete_deployment(group, dep_id)

    app.include_router(admin)
    app.include_router(lm)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

    @app.api_route("/v2/inference/deployments/{dep_id}/{path:path}", methods=methods)
    async def inference(dep_id: str, path: str, request: Request) -> Response:
        core.tokens.check(request.headers.get("authorization"))
        group = core.group(request.headers.get("ai-resource-group"), unknown_status=404)
        port = core.inference_target(group, dep_id)
        url = f"http://127.0.0.1:{port}/{path}"
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED]
        body = await request.body()
        client: httpx.AsyncClient = request.app.state.http
        upstream = client.build_request(
            request.method, url, params=request.query_params, headers=headers, content=body
        )
        try:
            resp = await client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            raise ApiError(
                502, f"deployment {dep_id}'s server did not answer ({type(exc).__name__})"
            ) from None
        out_headers = {
            k: v
            for k, v in resp.headers.items()
            if k.lower() not in _HOP_BY_HOP | {"content-length"}
        }
        return StreamingResponse(
            resp.aiter_raw(),
            status_code=resp.status_code,
            headers=out_headers,
            background=BackgroundTask(resp.aclose),
        )

    return app


# --- the program ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m labkit.local.aicore_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--service-key", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-ttl", type=int, default=43200, help="token lifetime in seconds")
    parser.add_argument("--runner", choices=["auto", "buildah", "host"], default="auto")
    parser.add_argument("--start-timeout", type=float, default=900.0)
    parser.add_argument("--sync-interval", type=float, default=SYNC_INTERVAL_S)
    parser.add_argument("--entrypoint", type=Path, required=True, help="runtime/entrypoint.py")
    parser.add_argument("--python", default=sys.executable, help="interpreter for host mode")
    parser.add_argument("--image-storage", type=Path, help="buildah's storage (labkit.image's)")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the command line; buildah is used when it is installed."""
    from labkit.local.aicore_runner import has_gpu

    builder = None
    exe = shutil.which("buildah")
    if exe:  # also in host mode: containers of an earlier run in buildah mode get removed
        from labkit.image import Builder

        builder = Builder("buildah", exe, args.image_storage)
    runner = RunnerSettings(
        mode=args.runner,
        python=args.python,
        entrypoint=args.entrypoint,
        start_timeout=args.start_timeout,
        builder=builder,
        gpu=has_gpu(),
    )
    return Settings(
        state_dir=args.state_dir,
        port=args.port,
        host=args.host,
        service_key_file=args.service_key,
        runner=runner,
        token_ttl=args.token_ttl,
        sync_interval=args.sync_interval,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM."""
    import uvicorn

    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per proxied request
    settings = settings_from(args)
    log.info(
        "local AI Core on %s (state %s, runner %s, token lifetime %d s)",
        settings.base_url,
        settings.state_dir,
        args.runner if settings.runner.builder or args.runner == "host" else "host (no buildah)",
        settings.token_ttl,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        backlog=2048,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
