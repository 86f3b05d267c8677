"""Step 06: deploy the served model through SAP AI Core's AI API with SAP's own client (``ai_core_sdk``).

Every object is get-or-create, in the order a team sets them up on a tenant: resource group, git
repository and application (AI Core syncs the serving templates from git), docker registry secret,
object store secret, artifact, configuration, deployment; then a bounded wait for RUNNING. What
the lab created is recorded in the lab state (key ``deploy``) as it goes, so that the clean-up
deletes only that, even after a run that failed half-way. The local profile's AI Core and a real
tenant run the same code; only the service key differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from pydantic import SecretStr

from labkit.config import Config
from labkit.errors import ConfigError, LabError, ServiceError
from labkit.state import State

MASK = "********"
STATE_KEY = "deploy"
DEFAULT_REPOSITORY = "labkit-templates"
DEFAULT_APPLICATION = "labkit-templates"
DEFAULT_ARTIFACT_KEY = "model"
DEFAULT_TIMEOUT_S = 1800.0
DEFAULT_POLL_S = 5.0
DEFAULT_SYNC_TIMEOUT_S = 600.0
DEFAULT_STOP_TIMEOUT_S = 300.0
LOG_TAIL = 40
# Statuses from which a deployment never reaches RUNNING again (a stopped one cannot restart).
ENDED = ("DEAD", "STOPPING", "STOPPED", "COMPLETED")
ACTIVE = ("UNKNOWN", "PENDING", "RUNNING")
# Creation order; the clean-up goes backwards through it.
KINDS = (
    "resource_group",
    "repository",
    "application",
    "docker_registry_secret",
    "object_store_secret",
    "artifact",
    "configuration",
    "deployment",
)
_TTL = re.compile(r"[0-9]+[mMhHdD]")
_SHA = re.compile(r"[0-9a-f]{40}")
# AI Core's patterns (AI_CORE_API.yaml): resource group ids, repository and application names.
_RESOURCE_GROUP = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9.-]{1,251}[a-zA-Z0-9]")
_ARGO_NAME = re.compile(r"[a-z0-9-]+")
_SDK_LOGGERS = ("ai-api-client-sdk", "ai_core_sdk")
_HTTP_TIMEOUT = (10.0, 30.0)


class AICoreError(LabError):
    """AI Core refused a request or answered something the lab cannot use."""


class DeploymentFailed(AICoreError):
    """The deployment went DEAD or did not reach RUNNING in time; carries its logs and the likely causes."""

    def __init__(
        self,
        message: str,
        hint: str,
        *,
        info: DeploymentInfo | None = None,
        logs: Sequence[str] = (),
        causes: Sequence[Cause] = (),
    ) -> None:
        super().__init__(message, hint)
        self.info = info
        self.logs = list(logs)
        self.causes = list(causes)

    def report(self) -> str:
        """The logs tail and the likely causes, as text for a terminal."""
        lines = [str(self), "", "likely causes:" if self.causes else "no known cause in the logs"]
        lines += [f"  - {c.summary}: {c.advice}\n      {c.evidence}" for c in self.causes]
        if self.logs:
            lines += ["", f"last {len(self.logs)} log lines:", *(f"  {line}" for line in self.logs)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The failure as data (for --json)."""
        info = self.info.to_dict() if self.info else {}
        return {
            "deployment_id": info.get("id", ""),
            "status": info.get("status", ""),
            "deployment_url": info.get("deployment_url", ""),
            "error": str(self),
            "causes": [asdict(c) for c in self.causes],
            "logs_tail": self.logs,
        }


# --- secrets: masked everywhere, also in the SDK's debug logs ------------------------------------

_secrets: set[str] = set()
_redaction_installed = False
_lock = threading.Lock()


def register_secret(*values: str | SecretStr | None) -> None:
    """Remember secret values so that :func:`redact` and the SDK's loggers mask them."""
    for value in values:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text and len(text) >= 4:
            _secrets.add(text)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by a mask."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class _RedactFilter(logging.Filter):
    # The SDK logs request payloads (secret bodies included) when DEBUG=true.
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logger's problem, not ours
            return True
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def _install_redaction() -> None:
    global _redaction_installed
    with _lock:
        if _redaction_installed:
            return
        for name in _SDK_LOGGERS:
            logging.getLogger(name).addFilter(_RedactFilter())
        _redaction_installed = True


# --- service key ---------------------------------------------------------------------------------


@dataclass(repr=False)
class ServiceKey:
    """What the lab needs from an AI Core service key; the client secret and x509 key stay masked."""

    client_id: str
    auth_url: str  # the full token URL, .../oauth/token
    api_url: str  # serviceurls.AI_API_URL, without /v2
    origin: str
    client_secret: SecretStr | None = None
    certificate: SecretStr | None = None
    key: SecretStr | None = None
    identityzone: str = ""

    @property
    def base_url(self) -> str:
        """The AI API base the SDK takes: ``AI_API_URL/v2``."""
        return _v2(self.api_url)

    @property
    def auth(self) -> str:
        """How the key authenticates: ``client secret`` or ``x509``."""
        return "client secret" if self.client_secret is not None else "x509"

    def public(self) -> dict[str, Any]:
        """The key's non-secret parts, safe to print."""
        return {
            "origin": self.origin,
            "client_id": self.client_id,
            "auth_url": self.auth_url,
            "api_url": self.api_url,
            "identityzone": self.identityzone,
            "auth": self.auth,
            "secret": MASK,
        }

    def __repr__(self) -> str:
        return f"ServiceKey({json.dumps(self.public())})"

    __str__ = __repr__


def _v2(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v2") else url + "/v2"


def _token_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/oauth/token") else url + "/oauth/token"


def parse_service_key(data: str | Mapping[str, Any], origin: str = "the service key") -> ServiceKey:
    """A service key as BTP gives it (JSON text or dict, also wrapped in ``credentials``)."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            raise ConfigError(
                f"the service key in {origin} is not JSON",
                "paste the service key exactly as the BTP cockpit shows it",
            ) from None
    if isinstance(data, Mapping) and isinstance(data.get("credentials"), Mapping):
        data = data["credentials"]  # `cf service-key` and some exports wrap it
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the service key in {origin} is not a JSON object",
            "use the AI Core service key JSON from the BTP cockpit",
        )
    urls = data.get("serviceurls")
    api_url = urls.get("AI_API_URL") if isinstance(urls, Mapping) else None
    x509 = bool(data.get("certificate") and data.get("key"))
    missing = [] if data.get("clientid") else ["clientid"]
    if not (data.get("url") or (x509 and data.get("certurl"))):
        missing.append("url")
    if not api_url:
        missing.append("serviceurls.AI_API_URL")
    if not data.get("clientsecret") and not x509:
        missing.append("clientsecret (or certificate and key)")
    if missing:
        raise ConfigError(
            f"the service key in {origin} lacks {', '.join(missing)}",
            "use a service key of an SAP AI Core instance, as the BTP cockpit shows it",
        )
    for value in (data.get("clientsecret"), data.get("key")):
        register_secret(value)
    auth = data.get("certurl") if x509 and data.get("certurl") else data.get("url")
    return ServiceKey(
        client_id=str(data["clientid"]),
        auth_url=_token_url(str(auth)),
        api_url=str(api_url).rstrip("/").removesuffix("/v2"),
        origin=origin,
        client_secret=SecretStr(str(data["clientsecret"])) if data.get("clientsecret") else None,
        certificate=SecretStr(str(data["certificate"])) if x509 else None,
        key=SecretStr(str(data["key"])) if x509 else None,
        identityzone=str(data.get("identityzone", "")),
    )


def local_service_key_file(cfg: Config) -> Path:
    """Where the local AI Core writes its service key."""
    return cfg.local_dir / "aicore-service-key.json"


def load_service_key(cfg: Config) -> ServiceKey:
    """The service key: the variable, the file, the local AI Core's (local profile), or the SDK's variables."""
    if cfg.profile == "local":
        # Never a tenant's key from AICORE_SERVICE_KEY here: the local profile must not deploy
        # to a real tenant by accident. An explicit key file still wins.
        path = cfg.aicore_service_key_file or local_service_key_file(cfg)
        if not path.is_file():
            raise ServiceError(
                f"no service key of the local AI Core at {path}",
                "start the local services with `labkit local up`",
            )
        return parse_service_key(_read_key_file(path), str(path))
    if cfg.aicore_service_key is not None:
        return parse_service_key(cfg.aicore_service_key.get_secret_value(), "AICORE_SERVICE_KEY")
    if cfg.aicore_service_key_file is not None:
        path = cfg.aicore_service_key_file
        return parse_service_key(_read_key_file(path), str(path))
    return _sdk_env_key()


def _read_key_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the service key file {path} ({exc.strerror})",
            "set LABKIT_AICORE_SERVICE_KEY_FILE to the JSON file BTP gave you",
        ) from None


def _sdk_env_key() -> ServiceKey:
    """The SDK's own sources: AICORE_CLIENT_ID/... variables, ~/.aicore/config.json, VCAP_SERVICES."""
    from ai_core_sdk.credentials import fetch_credentials

    try:
        creds = fetch_credentials()
    except (ValueError, KeyError, FileNotFoundError):
        raise ConfigError(
            "no AI Core service key found",
            "set AICORE_SERVICE_KEY to the service key JSON (or LABKIT_AICORE_SERVICE_KEY_FILE to "
            "its file), or the SDK's AICORE_CLIENT_ID, AICORE_CLIENT_SECRET, AICORE_AUTH_URL and "
            "AICORE_BASE_URL",
        ) from None
    cert, key = creds.get("cert_str"), creds.get("key_str")
    with contextlib.suppress(OSError):
        if creds.get("cert_file_path") and creds.get("key_file_path"):
            cert = Path(creds["cert_file_path"]).read_text()
            key = Path(creds["key_file_path"]).read_text()
    data = {
        "clientid": creds["client_id"],
        "clientsecret": creds.get("client_secret"),
        "certificate": cert,
        "key": key,
        "url": creds["auth_url"],
        "serviceurls": {"AI_API_URL": creds["base_url"]},
    }
    return parse_service_key(data, "the AICORE_* variables")


# --- token ---------------------------------------------------------------------------------------


class _Token:
    """OAuth client-credentials token for the SDK's ``token_creator``: cached, refreshed early,
    fetched with timeouts (the SDK's own authenticator posts without one, so a silent token
    endpoint would hang the lab) and with one-line errors."""

    def __init__(self, key: ServiceKey, *, local: bool) -> None:
        self._key = key
        self._local = local
        self._value: SecretStr | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<token for {self._key.client_id} from {self._key.auth_url}>"

    def __call__(self) -> str:
        with self._lock:
            if self._value is None or time.time() > self._expires:
                self._fetch()
            assert self._value is not None
            return "Bearer " + self._value.get_secret_value()

    def _fetch(self) -> None:
        import requests

        key = self._key
        data = {"grant_type": "client_credentials", "client_id": key.client_id}
        try:
            if key.client_secret is not None:
                data["client_secret"] = key.client_secret.get_secret_value()
                answer = requests.post(key.auth_url, data=data, timeout=_HTTP_TIMEOUT)
            else:
                answer = self._post_x509(data)
        except requests.RequestException as exc:
            raise _unreachable(
                key.auth_url, exc, local=self._local, what="token endpoint"
            ) from None
        if answer.status_code in (400, 401, 403):
            raise AICoreError(
                f"the token endpoint {key.auth_url} refused the client id and "
                f"{'secret' if key.client_secret is not None else 'certificate'} "
                f"of {key.origin} ({answer.status_code})",
                "start the local services again (`labkit local up` writes a fresh key)"
                if self._local
                else "use a current service key of the AI Core instance (BTP cockpit > instance > "
                "Service Keys)",
            )
        if answer.status_code // 100 != 2:
            raise AICoreError(
                f"the token endpoint {key.auth_url} answered {answer.status_code}: "
                f"{_short(answer.text)}",
                "try again later; if it persists, check the service key's url",
            )
        try:
            payload = answer.json()
            token = str(payload["access_token"])
            lifetime = float(payload.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise AICoreError(
                f"the token endpoint {key.auth_url} answered without an access token",
                "check that the service key's url is the XSUAA of the AI Core instance",
            ) from None
        register_secret(token)
        self._value = SecretStr(token)
        # Refresh well before expiry: a poll loop must never send a token about to lapse.
        self._expires = time.time() + max(30.0, min(lifetime * 0.8, lifetime - 300.0))

    def _post_x509(self, data: dict[str, str]) -> Any:
        import requests

        assert self._key.certificate is not None and self._key.key is not None
        with tempfile.TemporaryDirectory(prefix="labkit-x509-") as folder:
            paths = []
            for name, value in (("cert.pem", self._key.certificate), ("key.pem", self._key.key)):
                path = Path(folder) / name
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(value.get_secret_value().replace("\\n", "\n"))
                paths.append(str(path))
            return requests.post(
                self._key.auth_url, data=data, cert=(paths[0], paths[1]), timeout=_HTTP_TIMEOUT
            )


def _unreachable(url: str, exc: BaseException, *, local: bool, what: str) -> LabError:
    reason = type(exc).__name__
    if local:
        return ServiceError(
            f"the local AI Core's {what} {url} is unreachable ({reason})",
            "start the local services with `labkit local up`",
        )
    return AICoreError(
        f"AI Core's {what} {url} is unreachable ({reason})",
        "check the network and the service key's url / serviceurls.AI_API_URL",
    )


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(redact(str(text)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the client ----------------------------------------------------------------------------------


class MaskedHeaders(dict):
    """Request headers whose Authorization value never shows in a repr or a notebook."""

    def __repr__(self) -> str:
        shown = {
            k: ("Bearer " + MASK if k.lower() == "authorization" else v) for k, v in self.items()
        }
        return repr(shown)

    __str__ = __repr__

    def _repr_html_(self) -> str:
        return f"<code>{escape(repr(self))}</code>"


class AICore:
    """SAP's ``AICoreV2Client`` for one service key and resource group, with one-line errors."""

    def __init__(
        self,
        key: ServiceKey,
        resource_group: str,
        *,
        local: bool = False,
        timeout: float = 60.0,
        retries: int = 2,
    ) -> None:
        from ai_core_sdk.ai_core_v2_client import AICoreV2Client

        _install_redaction()
        self.key = key
        self.resource_group = check_resource_group_name(resource_group)
        self.local = local
        self._token = _Token(key, local=local)
        self.client = AICoreV2Client(
            base_url=key.base_url,
            token_creator=self._token,
            resource_group=self.resource_group,
            read_timeout=timeout,
            connect_timeout=10,
            num_request_retries=retries,
            client_type="labkit",
        )

    @property
    def api_url(self) -> str:
        """``AI_API_URL`` of the instance."""
        return self.key.api_url

    def __repr__(self) -> str:
        return (
            f"AICore(api_url={self.api_url!r}, resource_group={self.resource_group!r}, "
            f"client_id={self.key.client_id!r}, secret={MASK!r})"
        )

    def _repr_html_(self) -> str:
        rows = {
            "AI API": self.api_url,
            "resource group": self.resource_group,
            "client id": self.key.client_id,
            "auth": f"{self.key.auth} ({MASK})",
            "service key": self.key.origin,
        }
        return _table(rows)

    def token(self) -> str:
        """``Bearer <token>`` for a request of your own (never print it)."""
        return self._token()

    def headers(self) -> MaskedHeaders:
        """Authorization and AI-Resource-Group headers for the deployment URL (masked in reprs)."""
        return MaskedHeaders(
            {"Authorization": self.token(), "AI-Resource-Group": self.resource_group}
        )

    def call(
        self, what: str, fn: Callable[..., Any], *args: Any, missing_ok: bool = False, **kwargs: Any
    ) -> Any:
        """Run an SDK call; its errors become one-line AICoreErrors (None if missing and ``missing_ok``)."""
        try:
            return fn(*args, **kwargs)
        except LabError:
            raise
        except Exception as exc:
            if missing_ok and getattr(exc, "status_code", None) == 404:
                return None
            raise self.translate(exc, what) from None

    def translate(self, exc: BaseException, what: str) -> LabError:
        """An SDK or HTTP error as a one-line LabError that says what to do."""
        import requests
        from ai_api_client_sdk.exception import AIAPIServerException

        if isinstance(exc, LabError):
            return exc
        if isinstance(exc, requests.RequestException):
            return _unreachable(self.api_url, exc, local=self.local, what="AI API")
        if isinstance(exc, AIAPIServerException):
            code = exc.status_code
            message = _error_text(exc)
            if code == 401:
                return AICoreError(
                    f"AI Core rejected the token when trying to {what} (401)",
                    "the service key's url and AI_API_URL must belong to the same instance; "
                    "use a current service key",
                )
            if code == 403:
                return AICoreError(
                    f"not allowed to {what} (403): {message}",
                    "the service key lacks the role for this; ask the tenant's administrator",
                )
            if "resource group" in message.lower() or "resource-group" in message.lower():
                return AICoreError(
                    f"cannot {what} in resource group '{self.resource_group}' ({code}): {message}",
                    "set LABKIT_RESOURCE_GROUP to an existing resource group (`labkit deploy` "
                    "creates it)",
                )
            if code == 404:
                return AICoreError(f"cannot {what}: not found ({message})", "check the name or id")
            return AICoreError(
                f"AI Core could not {what} ({code}): {message}",
                "fix the request as the message says"
                if code and code < 500
                else "try again later; AI Core had an internal error",
            )
        return AICoreError(
            f"unexpected answer from AI Core to '{what}' ({type(exc).__name__}: {_short(str(exc))})",
            "check that serviceurls.AI_API_URL points at an SAP AI Core AI API",
        )

    # The few reads every part of the step needs.

    def deployment(self, deployment_id: str) -> DeploymentInfo:
        """The deployment's current state."""
        found = self.call(
            f"get deployment {deployment_id}", self.client.deployment.get, deployment_id
        )
        return DeploymentInfo.from_sdk(found)

    def find_deployment(self, deployment_id: str) -> DeploymentInfo | None:
        """The deployment's current state, or None when it does not exist (any more)."""
        found = self.call(
            f"get deployment {deployment_id}",
            self.client.deployment.get,
            deployment_id,
            missing_ok=True,
        )
        return DeploymentInfo.from_sdk(found) if found is not None else None

    def logs_tail(self, deployment_id: str, lines: int = LOG_TAIL) -> list[str]:
        """The last ``lines`` log lines of a deployment, oldest first ("" lines dropped)."""
        from ai_api_client_sdk.models.base_models import Order

        answer = self.call(
            f"read the logs of deployment {deployment_id}",
            self.client.deployment.query_logs,
            deployment_id,
            top=max(1, lines),
            order=Order.DESC,
        )
        items = list(getattr(getattr(answer, "data", None), "result", None) or [])
        # Servers differ in honouring top/order (the SDK sends neither $top nor $order): sort
        # by time here and keep the tail.
        items.sort(key=lambda r: str(getattr(r, "timestamp", "") or ""))
        out = []
        for item in items:
            msg = str(getattr(item, "msg", "") or "").rstrip()
            if msg:
                out.append(redact(msg))
        return out[-lines:]

    def check_resource_group(self) -> None:
        """Raise a one-line AICoreError unless the configured resource group exists."""
        found = self.call(
            f"get resource group {self.resource_group}",
            self.client.resource_groups.get,
            self.resource_group,
            missing_ok=True,
        )
        if found is None:
            names = self.resource_group_names()
            raise AICoreError(
                f"resource group '{self.resource_group}' does not exist at {self.api_url}",
                f"set LABKIT_RESOURCE_GROUP to one of: {', '.join(names) or '(none)'}; "
                "`labkit deploy` creates a missing one",
            )

    def resource_group_names(self) -> list[str]:
        """The tenant's resource groups."""
        answer = self.call("list resource groups", self.client.resource_groups.query)
        return sorted(str(r.resource_group_id) for r in getattr(answer, "resources", []) or [])


def _error_text(exc: Any) -> str:
    message = exc.error_message or ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        body = json.loads(message)
        if isinstance(body, dict):
            err = body.get("error", body)
            message = err.get("message") or err.get("detail") or message
    return _short(str(message) or exc.description or "")


def check_resource_group_name(name: str) -> str:
    """``name`` if AI Core takes it as a resource group id, else a ConfigError."""
    if not _RESOURCE_GROUP.fullmatch(name or ""):
        raise ConfigError(
            f"'{name}' is not a valid resource group id",
            "use 3-253 letters, digits, '.' and '-', starting and ending with a letter or digit",
        )
    return name


def check_ttl(ttl: str | None) -> str | None:
    """A deployment ttl as AI Core takes it (whole minutes, hours or days: 30m, 2h, 1d), or None."""
    if ttl in (None, ""):
        return None
    if not _TTL.fullmatch(ttl) or int(ttl[:-1]) == 0:
        raise ConfigError(
            f"ttl {ttl!r} is not a whole number of minutes, hours or days",
            "use e.g. 30m, 2h or 1d (or none)",
        )
    return ttl


def connect(cfg: Config, *, resource_group: str | None = None, check: bool = True) -> AICore:
    """A client for the configured AI Core; with ``check``, the token is fetched now so bad
    credentials fail here."""
    ai = AICore(
        load_service_key(cfg), resource_group or cfg.resource_group, local=cfg.profile == "local"
    )
    if check:
        ai.token()
    return ai


def deployment_headers(cfg: Config, ai: AICore | None = None) -> MaskedHeaders:
    """Headers for calls through a deployment URL: bearer token and AI-Resource-Group."""
    return (ai or connect(cfg)).headers()


def inference_url(deployment_url: str, path: str) -> str:
    """The URL of a server path (``/v1/models``) behind a deployment URL."""
    if not deployment_url:
        raise AICoreError(
            "the deployment has no URL yet", "wait until it is RUNNING (`labkit deploy status`)"
        )
    return deployment_url.rstrip("/") + "/" + path.lstrip("/")


# --- results -------------------------------------------------------------------------------------


@dataclass
class DeploymentInfo:
    """A deployment as AI Core reports it."""

    id: str
    status: str
    target_status: str = ""
    deployment_url: str = ""
    status_message: str = ""
    configuration_id: str = ""
    configuration_name: str = ""
    scenario_id: str = ""
    executable_id: str = ""
    ttl: str = ""
    created_at: str = ""

    @classmethod
    def from_sdk(cls, d: Any) -> DeploymentInfo:
        """From the SDK's Deployment object."""

        def text(name: str) -> str:
            value = getattr(d, name, None)
            value = getattr(value, "value", value)
            return "" if value is None else str(value)

        return cls(
            id=text("id"),
            status=text("status") or "UNKNOWN",
            target_status=text("target_status"),
            deployment_url=text("deployment_url"),
            status_message=redact(text("status_message")),
            configuration_id=text("configuration_id"),
            configuration_name=text("configuration_name"),
            scenario_id=text("scenario_id"),
            executable_id=text("executable_id"),
            ttl=text("ttl"),
            created_at=text("created_at"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _repr_html_(self) -> str:
        rows = {k: v for k, v in self.to_dict().items() if v}
        rows["status"] = _badge(self.status)
        return _table(rows, raw={"status"})


@dataclass
class Resource:
    """One AI Core object the step needs: what it is, and whether the lab created it."""

    kind: str
    id: str
    action: str = "reused"  # what this run did: created, reused, updated, skipped, deleted, kept...
    created: bool = False  # the lab created it (this run or an earlier one)
    detail: str = ""
    resource_group: str = ""
    api_url: str = ""
    deleted: bool = False

    def key(self) -> tuple[str, str, str, str]:
        return (self.api_url, self.resource_group, self.kind, self.id)


class ResourceTable(list):
    """Resources as a table in a notebook and as lines in a terminal."""

    def to_text(self) -> str:
        return "\n".join(
            f"{r.kind:24} {r.action:9} {r.id}" + (f"  ({r.detail})" if r.detail else "")
            for r in self
        )

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{escape(r.kind.replace('_', ' '))}</td><td><code>{escape(r.id)}</code></td>"
            f"<td>{escape(r.action)}</td><td>{escape(r.detail)}</td></tr>"
            for r in self
        )
        return (
            "<table><tr><th>object</th><th>id</th><th>this run</th><th>detail</th></tr>"
            f"{rows}</table>"
        )


@dataclass
class DeploymentResult:
    """The result of step 06: the deployment and every object it stands on."""

    deployment_id: str
    status: str
    deployment_url: str
    configuration_id: str
    artifact_id: str
    artifact_url: str
    scenario_id: str
    executable_id: str
    resource_group: str
    api_url: str
    ttl: str | None = None
    status_message: str = ""
    served_model_name: str = ""
    seconds: float = 0.0
    objects: list[Resource] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 1)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeploymentResult:
        """Back from the lab state."""
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known and k != "objects"}
        objects = [Resource(**_known(Resource, o)) for o in data.get("objects", [])]
        for name in known - {"objects", "ttl", "status_message", "served_model_name", "seconds"}:
            values.setdefault(name, "")
        return cls(**values, objects=objects)

    def __repr__(self) -> str:
        return f"DeploymentResult({self.deployment_id!r}, {self.status!r}, {self.deployment_url!r})"

    def to_text(self) -> str:
        lines = [
            f"deployment {self.deployment_id}: {self.status}",
            f"url: {self.deployment_url or '(none yet)'}",
            f"configuration {self.configuration_id}, artifact {self.artifact_id} ({self.artifact_url})",
            f"executable {self.executable_id} in scenario {self.scenario_id}, "
            f"resource group {self.resource_group} at {self.api_url}",
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = {
            "deployment": self.deployment_id,
            "status": _badge(self.status),
            "deployment URL": self.deployment_url,
            "configuration": self.configuration_id,
            "artifact": f"{self.artifact_id} ({self.artifact_url})",
            "executable": f"{self.executable_id} (scenario {self.scenario_id})",
            "resource group": self.resource_group,
            "AI API": self.api_url,
            "ttl": self.ttl or "",
        }
        return _table({k: v for k, v in rows.items() if v}, raw={"status"})


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k in cls.__dataclass_fields__}


def _table(rows: Mapping[str, Any], raw: Iterable[str] = ()) -> str:
    raw = set(raw)
    cells = "".join(
        f"<tr><th style='text-align:left'>{escape(str(k))}</th>"
        f"<td>{v if k in raw else escape(str(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table>{cells}</table>"


_COLOURS = {"RUNNING": "#2e7d32", "DEAD": "#c62828", "PENDING": "#ef6c00", "UNKNOWN": "#757575"}


def _badge(status: str) -> str:
    colour = _COLOURS.get(status, "#455a64")
    return (
        f"<span style='background:{colour};color:white;padding:1px 6px;border-radius:3px'>"
        f"{escape(status)}</span>"
    )


# --- why a deployment died -----------------------------------------------------------------------


@dataclass(frozen=True)
class Cause:
    """A likely cause of a failed deployment, with the log line that points at it."""

    name: str
    summary: str
    advice: str
    evidence: str


# Each: name, summary, advice, patterns (case-insensitive) on the logs and the status message.
_CAUSES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "image",
        "the image cannot be pulled",
        "check the image parameter (the reference step 04 pushed), that the tag exists in the "
        "registry, and that imagePullSecrets names a docker registry secret with a working login",
        (
            r"ErrImagePull",
            r"ImagePullBackOff",
            r"InvalidImageName",
            r"pull access denied",
            r"manifest unknown",
            r"manifest for .* not found",
            r"failed to pull",
            r"cannot be pulled",
            r"(?:cannot|can't|could not|unable to) pull",
            r"image .*(?:not found|does not exist|unknown)",
            r"repository does not exist",
            r"unauthorized: authentication required",
        ),
    ),
    (
        "secret",
        "a secret is missing or wrong",
        "create the object store secret the artifact URL names (ai://<secret>/...) and the docker "
        "registry secret the template names, in this resource group, with valid keys",
        (
            r"secrets? .*(?:not found|missing|does not exist)",
            r"(?:no|unknown|missing) (?:object store|docker registry) secret",
            r"CreateContainerConfigError",
            r"couldn't find key",
            r"InvalidAccessKeyId",
            r"SignatureDoesNotMatch",
            r"NoCredentialsError",
            r"AccessDenied",
            r"\b403\b.*(?:s3|bucket|forbidden)",
        ),
    ),
    (
        "oom",
        "out of memory",
        "choose a larger resource plan, or lower maxModelLen / gpuMemoryUtilization (see step 01)",
        (
            r"OOMKilled",
            r"out of memory",
            r"OutOfMemoryError",
            r"Cannot allocate memory",
            r"\bMemoryError\b",
            r"exit code 137",
            r"exited with code (?:137|-9)\b",
            r"\bsignal 9\b|SIGKILL",
            r"No available memory for the cache blocks",
            r"larger than the maximum number of tokens that can be stored in KV cache",
            r"not enough (?:free )?memory",
            r"insufficient memory",
        ),
    ),
    (
        "model",
        "the model files are missing or unusable",
        "check the artifact URL against the uploaded object (step 03) and the object store "
        "secret's bucket and pathPrefix; the tar must hold the model as step 02 packaged it",
        (
            r"StorageInitializerError",
            r"NoSuchKey",
            r"holds nothing",
            r"cannot fetch",
            r"cannot be unpacked",
            r"NoSuchBucket",
            r"no model in",
            r"no such (?:object|key)",
            r"(?:object|key|file|artifact|path) .*(?:not found|does not exist)",
            r"storage.initializer.*(?:fail|error)",
            r"Failed to (?:fetch|download|copy) (?:model|the model|artifact)",
            r"no snapshot",
            r"does not appear to have a file named",
            r"MODELS_DIR .* is not a directory",
            r"tarballs? .*(?:refus|invalid|unsafe|corrupt)",
            r"not a (?:valid )?tar",
        ),
    ),
    (
        "server",
        "the inference server did not start",
        "read the server's error above: fix the template's parameters (step 05: env, args, "
        "maxModelLen, dtype) or the image's runtime (step 04)",
        (
            r"entrypoint: error",
            r"exited with code \d+ before it was ready",
            r"did not answer .* within",
            r"ReadinessTimeout|CrashLoopBackOff|RunContainerError|ContainerExited",
            r"^Traceback|\b\w+Error: ",
        ),
    ),
)


def diagnose(lines: Iterable[str]) -> list[Cause]:
    """Likely causes of a failed deployment from its log lines (and status message): the cause
    whose evidence comes last (closest to the failure) first, causes seen only in warnings last;
    a line counts for its first cause."""
    found: dict[str, tuple[int, int, Cause]] = {}
    for index, line in enumerate(lines):
        # A warning (say, a missing pull secret for a registry that needs none) rarely kills
        # a deployment by itself: it ranks after every cause an error line shows.
        weight = 0 if re.search(r"\bwarn(?:ing)?\b", line, re.IGNORECASE) else 1
        for name, summary, advice, patterns in _CAUSES:
            if any(re.search(p, line, re.IGNORECASE | re.MULTILINE) for p in patterns):
                if weight >= found.get(name, (0, -1, None))[0]:
                    found[name] = (weight, index, Cause(name, summary, advice, _short(line, 240)))
                break
    ranked = sorted(found.values(), key=lambda x: (-x[0], -x[1]))
    return [cause for _, _, cause in ranked]


# --- a status view that updates while waiting ----------------------------------------------------


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class _Html:
    def __init__(self, html: str, text: str) -> None:
        self._html, self._text = html, text

    def _repr_html_(self) -> str:
        return self._html

    def __repr__(self) -> str:
        return self._text


class StatusView:
    """A live status: an updating HTML cell output in a notebook, a line per change elsewhere."""

    def __init__(
        self,
        title: str,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        live: bool | None = None,
    ) -> None:
        self.title = title
        self.enabled = enabled
        self.stream = stream
        self.live = _in_notebook() if live is None else live
        self._handle: Any = None
        self._last = ""

    def show(
        self, status: str, rows: Mapping[str, str], *, extra_html: str = "", extra_text: str = ""
    ) -> None:
        """Show ``status`` and ``rows`` (replacing what was shown before)."""
        if not self.enabled:
            return
        text = f"{self.title}: {status}  " + "  ".join(f"{k} {v}" for k, v in rows.items() if v)
        if self.live:
            html = (
                f"<b>{escape(self.title)}</b> {_badge(status)}"
                + _table({k: v for k, v in rows.items() if v})
                + extra_html
            )
            self._display(_Html(html, text + (("\n" + extra_text) if extra_text else "")))
            return
        line = f"{self.title}: {status}" + "".join(
            f"  {k} {v}" for k, v in rows.items() if v and k != "elapsed"
        )
        out = self.stream or sys.stderr
        if line != self._last:
            self._last = line
            elapsed = rows.get("elapsed", "")
            print(f"[{elapsed:>6}] {line}" if elapsed else line, file=out)
        if extra_text:
            print(extra_text, file=out)

    def _display(self, obj: _Html) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display(obj, display_id=True)
        else:
            self._handle.update(obj)

    def failure(
        self, status: str, rows: Mapping[str, str], logs: Sequence[str], causes: Sequence[Cause]
    ) -> None:
        """Show the logs tail and the likely causes of a failure."""
        causes_html = "".join(
            f"<li><b>{escape(c.summary)}</b>: {escape(c.advice)}<br><code>{escape(c.evidence)}"
            "</code></li>"
            for c in causes
        )
        html = (
            f"<p><b>Likely causes</b></p><ul>{causes_html}</ul>"
            if causes
            else "<p>No known cause in the logs.</p>"
        )
        if logs:
            html += (
                f"<details open><summary>last {len(logs)} log lines</summary><pre>"
                + escape("\n".join(logs))
                + "</pre></details>"
            )
        text = "\n".join(
            ["likely causes:" if causes else "no known cause in the logs"]
            + [f"  - {c.summary}: {c.advice}\n      {c.evidence}" for c in causes]
            + ([f"last {len(logs)} log lines:"] + [f"  {line}" for line in logs] if logs else [])
        )
        self.show(status, rows, extra_html=html, extra_text=text)


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# --- waiting -------------------------------------------------------------------------------------


def wait_running(
    ai: AICore,
    deployment_id: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    poll: float = DEFAULT_POLL_S,
    view: StatusView | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DeploymentInfo:
    """Poll until the deployment is RUNNING with a URL; DeploymentFailed (logs, causes) on DEAD,
    a stop, or after ``timeout`` seconds."""
    view = view or StatusView(f"deployment {deployment_id}", enabled=False)
    start = clock()
    while True:
        info = ai.deployment(deployment_id)
        elapsed = clock() - start
        rows = _rows(info, elapsed)
        view.show(info.status, rows)
        if info.status == "RUNNING" and info.deployment_url:
            return info
        if info.status in ENDED or info.target_status in ("STOPPED", "DELETED"):
            raise _failed(ai, info, view, rows, timed_out=None)
        if elapsed >= timeout:
            raise _failed(ai, info, view, rows, timed_out=timeout)
        sleep(max(0.0, min(poll, timeout - elapsed)))


def _rows(info: DeploymentInfo, elapsed: float) -> dict[str, str]:
    return {
        "deployment": info.id,
        "elapsed": _elapsed(elapsed),
        "message": info.status_message,
        "url": info.deployment_url,
    }


def _failed(
    ai: AICore,
    info: DeploymentInfo,
    view: StatusView,
    rows: Mapping[str, str],
    *,
    timed_out: float | None,
) -> DeploymentFailed:
    try:
        logs = ai.logs_tail(info.id)
    except LabError:
        logs = []
    causes = diagnose([*logs, info.status_message])
    view.failure(info.status, rows, logs, causes)
    if timed_out is not None:
        message = f"deployment {info.id} is still {info.status} after {timed_out:.0f} s"
    else:
        message = f"deployment {info.id} is {info.status}"
    if causes:
        message += f": {causes[0].summary} ({causes[0].evidence})"
        hint = causes[0].advice
    elif info.status_message:
        message += f": {info.status_message}"
        hint = f"read its logs with `labkit deploy logs {info.id}`"
    else:
        hint = f"read its logs with `labkit deploy logs {info.id}`"
    if timed_out is not None and not causes:
        hint = f"wait longer (a larger timeout), or {hint}"
    return DeploymentFailed(message, hint, info=info, logs=logs, causes=causes)


def wait_status(
    ai: AICore,
    deployment_id: str,
    statuses: Sequence[str],
    *,
    timeout: float = DEFAULT_STOP_TIMEOUT_S,
    poll: float = 3.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DeploymentInfo | None:
    """Poll until the deployment reaches one of ``statuses`` (None once it is gone); bounded."""
    start = clock()
    while True:
        info = ai.find_deployment(deployment_id)
        if info is None or info.status in statuses:
            return info
        elapsed = clock() - start
        if elapsed >= timeout:
            raise AICoreError(
                f"deployment {deployment_id} is still {info.status} after {timeout:.0f} s "
                f"(waiting for {' or '.join(statuses)})",
                "try again later, or look at it with `labkit deploy status`",
            )
        sleep(max(0.0, min(poll, timeout - elapsed)))


# --- get-or-create, one object at a time ---------------------------------------------------------


def _resource(
    ai: AICore, kind: str, id: str, action: str, detail: str = "", *, scoped: bool = True
) -> Resource:
    return Resource(
        kind=kind,
        id=id,
        action=action,
        created=action == "created",
        detail=detail,
        resource_group=ai.resource_group if scoped else "",
        api_url=ai.api_url,
    )


def ensure_resource_group(
    ai: AICore,
    *,
    create: bool = True,
    timeout: float = 300.0,
    poll: float = 3.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Resource:
    """The configured resource group, created (and waited for until PROVISIONED) if missing."""
    rg = ai.resource_group
    client = ai.client.resource_groups
    found = ai.call(f"get resource group {rg}", client.get, rg, missing_ok=True)
    action = "reused"
    if found is None:
        if not create:
            ai.check_resource_group()  # raises with the list of existing ones
        ai.call(f"create resource group {rg}", client.create, resource_group_id=rg)
        action = "created"
    deadline = time.monotonic() + timeout
    while True:
        found = found or ai.call(f"get resource group {rg}", client.get, rg, missing_ok=True)
        status = str(getattr(getattr(found, "status", None), "value", getattr(found, "status", "")))
        if found is not None and status in ("PROVISIONED", "", "None"):
            break
        if status == "ERROR":
            raise AICoreError(
                f"resource group '{rg}' is in ERROR: {getattr(found, 'status_message', '') or ''}",
                "delete it or choose another LABKIT_RESOURCE_GROUP",
            )
        if time.monotonic() > deadline:
            raise AICoreError(
                f"resource group '{rg}' is still {status or 'missing'} after {timeout:.0f} s",
                "try again in a few minutes",
            )
        found = None
        sleep(poll)
    return Resource("resource_group", rg, action, action == "created", api_url=ai.api_url)


def template_repo_url(cfg: Config, repo_dir: str | Path | None = None) -> str:
    """The git URL AI Core syncs: LABKIT_TEMPLATE_REPO_URL, the local repo's path (local
    profile), or that repo's origin remote."""
    if cfg.template_repo_url:
        return cfg.template_repo_url
    repo = Path(repo_dir or cfg.template_repo_dir)
    if cfg.profile == "local":
        return str(repo)
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "remote", "get-url", "origin"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        url = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        url = ""
    if not url:
        raise ConfigError(
            f"no git URL for the templates: {repo} has no origin remote",
            "push the templates repo (step 05) to GitHub or another git server AI Core can "
            "reach, and set LABKIT_TEMPLATE_REPO_URL to its https URL",
        )
    return url


def _same_url(a: str, b: str) -> bool:
    def norm(u: str) -> str:
        u = u.strip().removeprefix("file://").rstrip("/")
        return u.removesuffix(".git")

    return norm(a) == norm(b)


def _check_argo_name(kind: str, name: str, lo: int, hi: int) -> str:
    if not (lo <= len(name) <= hi and _ARGO_NAME.fullmatch(name)):
        raise ConfigError(
            f"'{name}' is not a valid {kind} name",
            f"use {lo}-{hi} lowercase letters, digits and '-'",
        )
    return name


def ensure_repository(
    ai: AICore,
    url: str,
    name: str = DEFAULT_REPOSITORY,
    *,
    username: str = "",
    password: SecretStr | None = None,
) -> Resource:
    """The git repository on-boarded in AI Core (one with the same URL is reused, whatever its name)."""
    _check_argo_name("repository", name, 1, 51)
    repos = ai.client.repositories
    answer = ai.call("list git repositories", repos.query)
    for repo in getattr(answer, "resources", None) or []:
        if _same_url(str(getattr(repo, "url", "")), url):
            status = getattr(getattr(repo, "status", None), "value", getattr(repo, "status", ""))
            return _resource(
                ai, "repository", str(repo.name), "reused", f"{url} ({status})", scoped=False
            )
        if str(getattr(repo, "name", "")) == name:
            raise AICoreError(
                f"AI Core's repository '{name}' points at {repo.url}, not {url}",
                "pass another repository name, or delete that one (`labkit deploy cleanup` "
                "deletes what the lab created)",
            )
    register_secret(password)
    ai.call(
        f"on-board the git repository {url}",
        repos.create,
        name=name,
        url=url,
        username=username or "",
        password=password.get_secret_value() if password else "",
    )
    return _resource(ai, "repository", name, "created", url, scoped=False)


def ensure_application(
    ai: AICore, repository_url: str, path: str, name: str = DEFAULT_APPLICATION
) -> Resource:
    """The application that syncs ``path`` of the repository (one with the same source is reused)."""
    _check_argo_name("application", name, 3, 54)
    apps = ai.client.applications
    answer = ai.call("list applications", apps.query)
    for app in getattr(answer, "resources", None) or []:
        same_source = _same_url(str(getattr(app, "repository_url", "")), repository_url) and (
            str(getattr(app, "path", "")).strip("/") == path.strip("/")
        )
        if same_source:
            return _resource(
                ai,
                "application",
                str(app.application_name),
                "reused",
                f"{path} of {repository_url}",
                scoped=False,
            )
        if str(getattr(app, "application_name", "")) == name:
            raise AICoreError(
                f"AI Core's application '{name}' syncs {app.path} of {app.repository_url}, "
                f"not {path} of {repository_url}",
                "pass another application name, or delete that one",
            )
    ai.call(
        f"create the application {name}",
        apps.create,
        revision="HEAD",
        path=path,
        application_name=name,
        repository_url=repository_url,
    )
    return _resource(
        ai, "application", name, "created", f"{path} of {repository_url}", scoped=False
    )


@dataclass
class SyncResult:
    """The application's sync and the executable the configuration will use."""

    application: str
    sync_status: str
    health_status: str
    scenario_id: str
    executable_id: str
    parameters: dict[str, str]  # declared parameter -> default
    input_artifacts: list[str]
    seconds: float

    def _repr_html_(self) -> str:
        return _table(
            {
                "application": self.application,
                "sync / health": f"{self.sync_status} / {self.health_status}",
                "executable": f"{self.executable_id} (scenario {self.scenario_id})",
                "parameters": ", ".join(self.parameters),
                "input artifacts": ", ".join(self.input_artifacts),
                "waited": _elapsed(self.seconds),
            }
        )


# ArgoCD's words for a sync or resource that failed ("Missing"/"OutOfSync" are transient).
_SYNC_FAILED = ("degraded", "syncfailed", "failed", "error")
# After a sync that finished since our refresh, how long the executable may take to show up.
_SYNC_GRACE_S = 15.0


def _sync_errors(status: Any) -> list[str]:
    errors = []
    for res in getattr(status, "sync_resources_status", None) or []:
        state = str(getattr(res, "status", "") or "")
        if state.lower().replace(" ", "") in _SYNC_FAILED:
            errors.append(f"{getattr(res, 'name', '?')}: {getattr(res, 'message', '') or state}")
    return errors


def sync_templates(
    ai: AICore,
    application: str,
    *,
    scenario_id: str,
    executable_id: str,
    needs: Iterable[str] = (),
    commit: str = "",
    timeout: float = DEFAULT_SYNC_TIMEOUT_S,
    poll: float = DEFAULT_POLL_S,
    view: StatusView | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncResult:
    """Refresh the application and wait (bounded) until the executable exists and declares the
    parameters in ``needs``; the sync's own error when the templates fail to sync. Once a sync
    has finished since the refresh (a new finish time, or ``commit`` as the synced revision),
    a still missing executable fails without waiting for the timeout."""
    apps = ai.client.applications
    view = view or StatusView(f"application {application}", enabled=False)
    before = ai.call(f"get the status of application {application}", apps.get_status, application)
    ai.call(f"refresh application {application}", apps.refresh, application)
    first_sync = getattr(before, "sync_finished_at", None)
    synced_at: float | None = None  # when a sync finished since the refresh was first seen
    needs = set(needs)
    start = clock()
    while True:
        status = ai.call(
            f"get the status of application {application}", apps.get_status, application
        )
        sync = str(getattr(status, "sync_status", "") or "")
        health = str(getattr(status, "health_status", "") or "")
        message = _short(str(getattr(status, "message", "") or ""))
        exe = ai.call(
            f"get executable {executable_id} of scenario {scenario_id}",
            ai.client.executable.get,
            scenario_id,
            executable_id,
            missing_ok=True,
        )
        declared = {
            str(p.name): str(getattr(p, "default", "") or "")
            for p in (getattr(exe, "parameters", None) or [])
        }
        missing = sorted(needs - set(declared)) if exe is not None else sorted(needs)
        elapsed = clock() - start
        view.show(
            sync or "UNKNOWN",
            {
                "health": health,
                "executable": executable_id if exe is not None else "(not yet)",
                "elapsed": _elapsed(elapsed),
                "message": message,
            },
        )
        errors = _sync_errors(status)
        revision = str(getattr(getattr(status, "source", None), "revision", "") or "")
        new_sync = getattr(status, "sync_finished_at", None) not in (None, first_sync) or (
            bool(commit) and revision == commit
        )
        if new_sync:
            synced_at = clock() if synced_at is None else synced_at
        # Before a sync since the refresh, an executable synced from another commit may be an
        # older version of the template: wait for the refresh (when the revision says so).
        stale = bool(commit) and _SHA.fullmatch(revision) is not None and revision != commit
        if exe is not None and not missing and (synced_at is not None or not stale):
            return SyncResult(
                application=application,
                sync_status=sync,
                health_status=health,
                scenario_id=scenario_id,
                executable_id=executable_id,
                parameters=declared,
                input_artifacts=[
                    str(a.name) for a in (getattr(exe, "input_artifacts", None) or [])
                ],
                seconds=elapsed,
            )
        failed = health.lower() == "degraded" or sync.lower() in _SYNC_FAILED or errors
        if failed and (synced_at is not None or elapsed >= poll):
            raise AICoreError(
                f"the templates of application {application} did not sync ({sync}/{health}): "
                + "; ".join(errors or [message or "no message"]),
                "fix the template (`labkit template lint`), commit it (step 05), and deploy again",
            )
        settled = (
            synced_at is not None
            and sync.lower() == "synced"
            and clock() - synced_at >= max(_SYNC_GRACE_S, 2 * poll)
        )
        if elapsed >= timeout and exe is not None and not missing:
            raise AICoreError(
                f"application {application} still shows revision {revision[:12]} after "
                f"{elapsed:.0f} s, not step 05's commit {commit[:12]}",
                "check that the commit is in the repository AI Core syncs (pushed), then deploy "
                "again",
            )
        if elapsed >= timeout or settled:
            raise _missing_executable(
                ai,
                application,
                scenario_id,
                executable_id,
                exe,
                missing,
                sync,
                health,
                message,
                elapsed,
            )
        sleep(max(0.0, min(poll, timeout - elapsed)))


def _missing_executable(
    ai: AICore,
    application: str,
    scenario_id: str,
    executable_id: str,
    exe: Any,
    missing: list[str],
    sync: str,
    health: str,
    message: str,
    elapsed: float,
) -> AICoreError:
    where = f"application {application}: {sync or 'no sync status'}/{health or '?'}"
    if message:
        where += f", {message}"
    if exe is not None:
        return AICoreError(
            f"executable {executable_id} does not declare the parameters {', '.join(missing)} "
            f"after {elapsed:.0f} s ({where})",
            "the synced template is older than step 05's: commit and publish it again (step 05), "
            "or wait for the next sync",
        )
    listed = ai.call(
        f"list the executables of scenario {scenario_id}",
        ai.client.executable.query,
        scenario_id,
        missing_ok=True,
    )
    names = sorted(str(e.id) for e in (getattr(listed, "resources", None) or []))
    known = (
        f"scenario {scenario_id} has {', '.join(names)}"
        if names
        else (f"scenario {scenario_id} has no executables")
    )
    return AICoreError(
        f"no executable {executable_id} in scenario {scenario_id} after {elapsed:.0f} s "
        f"({where}; {known})",
        "run step 05 to publish the template (its metadata.name is the executable id), or "
        "deploy the executable that exists",
    )


def ensure_object_store_secret(ai: AICore, secret: Any, *, update: bool = False) -> Resource:
    """The object store secret (``labkit.storage.ObjectStoreSecret``) in the resource group; an
    existing one pointing elsewhere (or with ``update``) is patched."""
    body = secret.body()
    register_secret(*body.get("data", {}).values())
    client = ai.client.object_store_secrets
    name = body["name"]
    found = ai.call(f"get object store secret {name}", client.get, name, missing_ok=True)
    fields = {
        "type": body["type"],
        "data": body["data"],
        "bucket": body.get("bucket"),
        "endpoint": body.get("endpoint"),
        "region": body.get("region"),
        "path_prefix": body.get("pathPrefix") or None,
        "usehttps": body.get("usehttps"),
    }
    where = f"s3://{body.get('bucket')}/{body.get('pathPrefix') or ''} at {body.get('endpoint')}"
    if found is None:
        ai.call(f"create object store secret {name}", client.create, name=name, **fields)
        return _resource(ai, "object_store_secret", name, "created", where)
    meta = dict(getattr(found, "metadata", None) or {})
    have = {
        "bucket": meta.get("storage.ai.sap.com/bucket"),
        "endpoint": meta.get("storage.ai.sap.com/endpoint"),
        "path_prefix": meta.get("storage.ai.sap.com/pathPrefix"),
    }
    differs = any(
        have[k] is not None and str(have[k]).strip("/") != str(fields[k] or "").strip("/")
        for k in have
    )
    if update or differs:
        ai.call(f"update object store secret {name}", client.modify, name=name, **fields)
        return _resource(ai, "object_store_secret", name, "updated", where)
    return _resource(ai, "object_store_secret", name, "reused", where)


def ensure_docker_registry_secret(
    ai: AICore, secret: Any | None, *, update: bool = False
) -> Resource | None:
    """The docker registry secret (``labkit.image.DockerRegistrySecret``); None when there is none
    to make (a registry without login)."""
    if secret is None:
        return None
    body = secret.body()
    register_secret(secret.password, body["data"][".dockerconfigjson"])
    with contextlib.suppress(Exception):
        auths = json.loads(body["data"][".dockerconfigjson"]).get("auths", {})
        register_secret(*(a.get("auth") for a in auths.values()))
    client = ai.client.docker_registry_secrets
    name = body["name"]
    found = ai.call(f"get docker registry secret {name}", client.get, name, missing_ok=True)
    if found is None:
        ai.call(
            f"create docker registry secret {name}", client.create, name=name, data=body["data"]
        )
        return _resource(
            ai, "docker_registry_secret", name, "created", secret.registry, scoped=False
        )
    if update:
        ai.call(
            f"update docker registry secret {name}", client.modify, name=name, data=body["data"]
        )
        return _resource(
            ai, "docker_registry_secret", name, "updated", secret.registry, scoped=False
        )
    return _resource(ai, "docker_registry_secret", name, "reused", secret.registry, scoped=False)


def ensure_artifact(
    ai: AICore,
    url: str,
    scenario_id: str,
    name: str,
    description: str = "",
    *,
    prefer: str | None = None,
) -> Resource:
    """The model artifact for ``url`` in the scenario; one registered with the same URL is reused."""
    from ai_api_client_sdk.models.artifact import Artifact

    if url.endswith("/"):
        raise ConfigError(f"artifact URL {url} ends with '/'", "drop the trailing slash")
    client = ai.client.artifact
    answer = ai.call(
        f"list the model artifacts of scenario {scenario_id}",
        client.query,
        scenario_id=scenario_id,
        kind=Artifact.Kind.MODEL,
    )
    same = [a for a in (getattr(answer, "resources", None) or []) if str(a.url) == url]
    if same:
        pick = next((a for a in same if str(a.id) == prefer), same[0])
        return _resource(ai, "artifact", str(pick.id), "reused", url)
    made = ai.call(
        f"register the artifact {url}",
        client.create,
        name=name,
        kind=Artifact.Kind.MODEL,
        url=url,
        scenario_id=scenario_id,
        description=description or None,
    )
    return _resource(ai, "artifact", str(made.id), "created", url)


def configuration_name(
    executable_id: str, parameters: Mapping[str, str], artifacts: Mapping[str, str]
) -> str:
    """A configuration name that changes whenever the bindings do (configurations are immutable)."""
    digest = hashlib.sha256(
        json.dumps([sorted(parameters.items()), sorted(artifacts.items())]).encode()
    ).hexdigest()[:10]
    return f"{executable_id}-{digest}"


def ensure_configuration(
    ai: AICore,
    *,
    scenario_id: str,
    executable_id: str,
    parameters: Mapping[str, str],
    artifacts: Mapping[str, str],
    name: str | None = None,
) -> Resource:
    """A configuration with exactly these bindings; an identical one is reused."""
    from ai_api_client_sdk.models.input_artifact_binding import InputArtifactBinding
    from ai_api_client_sdk.models.parameter_binding import ParameterBinding

    name = name or configuration_name(executable_id, parameters, artifacts)
    client = ai.client.configuration
    answer = ai.call(
        f"list the configurations of {executable_id}",
        client.query,
        scenario_id=scenario_id,
        executable_ids=[executable_id],
    )
    want_params = {str(k): str(v) for k, v in parameters.items()}
    want_artifacts = {str(k): str(v) for k, v in artifacts.items()}
    for conf in getattr(answer, "resources", None) or []:
        have_params = {
            str(b.key): str(b.value) for b in (getattr(conf, "parameter_bindings", None) or [])
        }
        have_artifacts = {
            str(b.key): str(b.artifact_id)
            for b in (getattr(conf, "input_artifact_bindings", None) or [])
        }
        if (
            str(conf.executable_id) == executable_id
            and have_params == want_params
            and have_artifacts == want_artifacts
        ):
            return _resource(ai, "configuration", str(conf.id), "reused", str(conf.name))
    made = ai.call(
        f"create configuration {name}",
        client.create,
        name=name,
        scenario_id=scenario_id,
        executable_id=executable_id,
        parameter_bindings=[ParameterBinding(k, v) for k, v in sorted(want_params.items())],
        input_artifact_bindings=[
            InputArtifactBinding(k, v) for k, v in sorted(want_artifacts.items())
        ],
    )
    return _resource(ai, "configuration", str(made.id), "created", name)


def ensure_deployment(
    ai: AICore, configuration_id: str, *, ttl: str | None = None, prefer: str | None = None
) -> Resource:
    """A deployment of the configuration: a live one (the ``prefer`` id first) is reused, else a
    new one is created (a stopped or dead deployment cannot be restarted)."""
    ttl = check_ttl(ttl)
    if prefer:
        info = ai.find_deployment(prefer)
        if (
            info
            and info.configuration_id == configuration_id
            and info.status in ACTIVE
            and (info.target_status not in ("STOPPED", "DELETED"))
        ):
            return _resource(ai, "deployment", info.id, "reused", info.status)
    client = ai.client.deployment
    answer = ai.call(
        f"list the deployments of configuration {configuration_id}",
        client.query,
        configuration_id=configuration_id,
    )
    for dep in getattr(answer, "resources", None) or []:
        info = DeploymentInfo.from_sdk(dep)
        if info.status in ACTIVE and info.target_status not in ("STOPPED", "DELETED"):
            return _resource(ai, "deployment", info.id, "reused", info.status)
    made = ai.call(
        f"create a deployment of configuration {configuration_id}",
        client.create,
        configuration_id=configuration_id,
        ttl=ttl,
    )
    return _resource(ai, "deployment", str(made.id), "created", f"ttl {ttl}" if ttl else "")


# --- what step 05 recorded -----------------------------------------------------------------------


@dataclass
class TemplateInputs:
    """What the deployment needs from step 05: executable, scenario, parameter values."""

    executable_id: str
    scenario_id: str
    parameters: dict[str, str]
    artifact_key: str = DEFAULT_ARTIFACT_KEY
    commit: str = ""
    repo_dir: str = ""
    folder: str = ""  # the repo folder the application syncs


def template_inputs(template: Mapping[str, Any], cfg: Config) -> TemplateInputs:
    """Step 05's recorded result, read for the deployment."""
    executable = template.get("executable_id") or template.get("executableId")
    if not executable:
        raise ConfigError(
            "step 05's result names no executable",
            "run notebooks/05_author_serving_template.ipynb again",
        )
    scenario = template.get("scenario_id") or template.get("scenarioId") or cfg.scenario
    bindings = template.get("bindings") or {}
    params: dict[str, str] = {}
    listed = bindings.get("parameterBindings") or template.get("parameter_bindings")
    if listed:
        params = {str(b["key"]): str(b["value"]) for b in listed}
    elif isinstance(template.get("parameters"), Mapping):
        params = {str(k): str(v) for k, v in template["parameters"].items()}
    artifact_key = DEFAULT_ARTIFACT_KEY
    artifact_bindings = bindings.get("inputArtifactBindings") or []
    if artifact_bindings:
        artifact_key = str(artifact_bindings[0]["key"])
    elif template.get("input_artifacts"):
        artifact_key = str(next(iter(template["input_artifacts"])))
    return TemplateInputs(
        executable_id=str(executable),
        scenario_id=str(scenario),
        parameters=params,
        artifact_key=artifact_key,
        commit=str(template.get("commit") or ""),
        repo_dir=str(template.get("repo_dir") or ""),
        folder=Path(str(template["path_in_repo"])).parent.as_posix()
        if template.get("path_in_repo")
        else "",
    )


def _artifact_name(upload: Mapping[str, Any]) -> str:
    repo = str(upload.get("repo_id") or "model").rsplit("/", 1)[-1].lower()
    rev = str(upload.get("revision") or "")[:7]
    return f"{repo}-{rev}" if rev else repo


# --- the step ------------------------------------------------------------------------------------


class Deployer:
    """One run of step 06: each phase get-or-creates its objects and records them in the state."""

    def __init__(
        self,
        cfg: Config,
        state: State,
        ai: AICore | None = None,
        *,
        parameters: Mapping[str, str] | None = None,
        artifact_url: str | None = None,
        repository: str = DEFAULT_REPOSITORY,
        application: str = DEFAULT_APPLICATION,
        update_secrets: bool = False,
        create_resource_group: bool = True,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.state = state
        self.ai = ai or connect(cfg)
        self.overrides = {str(k): str(v) for k, v in (parameters or {}).items()}
        self.artifact_url_override = artifact_url
        self.repository = repository
        self.application = application
        self.update_secrets = update_secrets
        self.create_resource_group = create_resource_group
        self.progress = progress
        self.template = template_inputs(state.require("template"), cfg)
        self.upload = state.require("upload")
        self.sync: SyncResult | None = None
        self.started = time.monotonic()
        previous = state.get(STATE_KEY) or {}
        self.result = DeploymentResult(
            deployment_id="",
            status="",
            deployment_url="",
            configuration_id="",
            artifact_id="",
            artifact_url=self.artifact_url,
            scenario_id=self.template.scenario_id,
            executable_id=self.template.executable_id,
            resource_group=self.ai.resource_group,
            api_url=self.ai.api_url,
            objects=[Resource(**_known(Resource, o)) for o in previous.get("objects", []) or []],
        )
        same_place = (previous.get("api_url"), previous.get("resource_group")) == (
            self.ai.api_url,
            self.ai.resource_group,
        )
        if same_place:
            # Until this run gets that far, the state keeps pointing at the last deployment.
            for name in ("deployment_id", "status", "deployment_url", "configuration_id",
                         "artifact_id", "served_model_name", "ttl", "status_message"):  # fmt: skip
                if previous.get(name):
                    setattr(self.result, name, previous[name])
        self._previous = previous if same_place else {}

    @property
    def artifact_url(self) -> str:
        """The model's ai:// URL: the override, else step 03's."""
        url = self.artifact_url_override or self.upload.get("artifact_url")
        if not url:
            raise ConfigError(
                "step 03's result has no artifact URL", "run notebooks/03_upload_to_s3.ipynb"
            )
        return str(url)

    def _note(self, *resources: Resource | None) -> ResourceTable:
        table = ResourceTable()
        for res in resources:
            if res is None:
                continue
            table.append(res)
            for old in self.result.objects:
                if old.key() == res.key() and not old.deleted:
                    old.created = old.created or res.created
                    old.action, old.detail = res.action, res.detail
                    break
            else:
                self.result.objects.append(res)
        self._record()
        return table

    def _record(self) -> None:
        self.result.seconds = time.monotonic() - self.started
        self.state.record(STATE_KEY, self.result)

    def _view(self, title: str) -> StatusView:
        return StatusView(title, enabled=self.progress)

    def setup(
        self, *, sync_timeout: float = DEFAULT_SYNC_TIMEOUT_S, poll: float = DEFAULT_POLL_S
    ) -> ResourceTable:
        """Resource group, git repository, application; then the templates' sync."""
        ai, cfg = self.ai, self.cfg
        table = self._note(ensure_resource_group(ai, create=self.create_resource_group))
        url = template_repo_url(cfg, self.template.repo_dir or None)
        repo = ensure_repository(
            ai, url, self.repository, username=cfg.git_username or "", password=cfg.git_password
        )
        table += self._note(repo)
        folder = self.template.folder if self.template.folder not in ("", ".") else None
        path = folder or cfg.template_repo_path
        table += self._note(ensure_application(ai, url, path, self.application))
        app = next(r.id for r in table if r.kind == "application")
        self.sync = sync_templates(
            ai,
            app,
            scenario_id=self.template.scenario_id,
            executable_id=self.template.executable_id,
            needs=self.parameters().keys(),
            commit=self.template.commit,
            timeout=sync_timeout,
            poll=poll,
            view=self._view(f"application {app}"),
        )
        return table

    def parameters(self) -> dict[str, str]:
        """Step 05's parameter values with this run's overrides on top."""
        return {**self.template.parameters, **self.overrides}

    def secrets(self) -> ResourceTable:
        """The docker registry secret (when the registry needs a login) and the object store secret."""
        from labkit import image, storage

        cfg, upload = self.cfg, self.upload
        login = image.credentials(cfg)
        docker = None
        if login is not None:
            built = self.state.get("image") or {}
            registry = built.get("registry") or image.registry_address(cfg)
            docker = image.registry_secret(
                registry, login[0], login[1], name=cfg.docker_registry_secret, verify=False
            )
        made = ensure_docker_registry_secret(self.ai, docker, update=self.update_secrets)
        table = self._note(made)
        if made is None:
            table.append(
                Resource(
                    "docker_registry_secret",
                    cfg.docker_registry_secret,
                    "skipped",
                    detail="the registry needs no login",
                )
            )
        secret_name = str(self.artifact_url.removeprefix("ai://").split("/", 1)[0])
        secret = storage.object_store_secret(
            cfg,
            name=secret_name,
            bucket=upload.get("bucket") or None,
            path_prefix=upload.get("path_prefix")
            if secret_name == upload.get("secret_name")
            else None,
        )
        table += self._note(ensure_object_store_secret(self.ai, secret, update=self.update_secrets))
        return table

    def configure(self) -> ResourceTable:
        """The artifact for the uploaded model and the configuration that binds it."""
        tpl, upload = self.template, self.upload
        prefer = self._previous.get("artifact_id")
        artifact = ensure_artifact(
            self.ai,
            self.artifact_url,
            tpl.scenario_id,
            _artifact_name(upload),
            f"{upload.get('repo_id', '')}@{upload.get('revision', '')} "
            f"(s3://{upload.get('bucket', '')}/{upload.get('key', '')})",
            prefer=prefer,
        )
        table = self._note(artifact)
        self.result.artifact_id = artifact.id
        params = self.parameters()
        if self.sync is not None:
            unknown = sorted(set(params) - set(self.sync.parameters))
            if unknown:
                raise ConfigError(
                    f"executable {tpl.executable_id} declares no parameter {', '.join(unknown)}",
                    f"use its parameters: {', '.join(sorted(self.sync.parameters))}",
                )
        key = tpl.artifact_key
        if (
            self.sync is not None
            and self.sync.input_artifacts
            and key not in self.sync.input_artifacts
        ):
            key = self.sync.input_artifacts[0]
        served = params.get("servedModelName")
        if served is None and self.sync is not None:
            served = self.sync.parameters.get("servedModelName")
        self.result.served_model_name = served or ""
        conf = ensure_configuration(
            self.ai,
            scenario_id=tpl.scenario_id,
            executable_id=tpl.executable_id,
            parameters=params,
            artifacts={key: artifact.id},
        )
        self.result.configuration_id = conf.id
        table += self._note(conf)
        return table

    def start(self, *, ttl: str | None = None) -> ResourceTable:
        """The deployment of the configuration (a live one is reused)."""
        dep = ensure_deployment(
            self.ai,
            self.result.configuration_id,
            ttl=ttl,
            prefer=self._previous.get("deployment_id"),
        )
        self.result.deployment_id = dep.id
        self.result.ttl = check_ttl(ttl)
        self.result.status = dep.detail if dep.action == "reused" else "UNKNOWN"
        return self._note(dep)

    def wait(
        self, *, timeout: float = DEFAULT_TIMEOUT_S, poll: float = DEFAULT_POLL_S
    ) -> DeploymentResult:
        """Wait for RUNNING (live status view); records the outcome either way."""
        try:
            info = wait_running(
                self.ai,
                self.result.deployment_id,
                timeout=timeout,
                poll=poll,
                view=self._view(f"deployment {self.result.deployment_id}"),
            )
        except DeploymentFailed as exc:
            if exc.info is not None:
                self.result.status = exc.info.status
                self.result.status_message = exc.info.status_message
            self._record()
            raise
        self.result.status = info.status
        self.result.deployment_url = info.deployment_url
        self.result.status_message = info.status_message
        self._record()
        return self.result

    def run(
        self,
        *,
        ttl: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        poll: float = DEFAULT_POLL_S,
        sync_timeout: float = DEFAULT_SYNC_TIMEOUT_S,
    ) -> DeploymentResult:
        """Every phase in order."""
        check_ttl(ttl)
        self.setup(sync_timeout=sync_timeout, poll=poll)
        self.secrets()
        self.configure()
        self.start(ttl=ttl)
        return self.wait(timeout=timeout, poll=poll)


def deploy(
    cfg: Config,
    state: State,
    *,
    ai: AICore | None = None,
    ttl: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    poll: float = DEFAULT_POLL_S,
    sync_timeout: float = DEFAULT_SYNC_TIMEOUT_S,
    parameters: Mapping[str, str] | None = None,
    artifact_url: str | None = None,
    repository: str = DEFAULT_REPOSITORY,
    application: str = DEFAULT_APPLICATION,
    update_secrets: bool = False,
    create_resource_group: bool = True,
    progress: bool = True,
) -> DeploymentResult:
    """Get-or-create everything the deployment needs, start it, wait for RUNNING; records state ``deploy``."""
    check_ttl(ttl)  # before any call: a typo should not leave half a setup behind
    return Deployer(
        cfg,
        state,
        ai,
        parameters=parameters,
        artifact_url=artifact_url,
        repository=repository,
        application=application,
        update_secrets=update_secrets,
        create_resource_group=create_resource_group,
        progress=progress,
    ).run(ttl=ttl, timeout=timeout, poll=poll, sync_timeout=sync_timeout)


# --- after the deployment ------------------------------------------------------------------------


@dataclass
class ModelList:
    """The answer of ``/v1/models`` through the deployment URL."""

    url: str
    models: list[str]
    max_model_len: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _repr_html_(self) -> str:
        return _table(
            {
                "GET": self.url,
                "models": ", ".join(self.models),
                "max_model_len": self.max_model_len or "",
                "answered in": f"{self.seconds:.2f} s",
            }
        )


def list_models(
    cfg: Config,
    deployment_url: str | None = None,
    *,
    ai: AICore | None = None,
    state: State | None = None,
    timeout: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> ModelList:
    """``GET <deployment URL>/v1/models`` with the bearer token and resource group (retried while
    the route warms up, bounded by ``timeout``)."""
    import httpx

    if deployment_url is None:
        recorded = (state or State(cfg.state_file)).require(STATE_KEY)
        deployment_url = recorded.get("deployment_url") or ""
    url = inference_url(deployment_url, "/v1/models")
    ai = ai or connect(cfg)
    loopback = urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")
    deadline = time.monotonic() + timeout
    last = ""
    with httpx.Client(timeout=30.0, trust_env=not loopback) as http:
        while True:
            started = time.monotonic()
            try:
                answer = http.get(url, headers=dict(ai.headers()))
                if answer.status_code == 200:
                    body = answer.json()
                    data = body.get("data", []) if isinstance(body, dict) else []
                    return ModelList(
                        url=url,
                        models=[str(m.get("id")) for m in data],
                        max_model_len=next(
                            (m.get("max_model_len") for m in data if m.get("max_model_len")), None
                        ),
                        seconds=time.monotonic() - started,
                    )
                last = f"{answer.status_code}: {_short(answer.text, 200)}"
                if answer.status_code in (400, 401, 403):
                    break
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if time.monotonic() > deadline:
                break
            sleep(2.0)
    raise AICoreError(
        f"GET {url} failed ({last})",
        "check the deployment is RUNNING (`labkit deploy status`) and its logs "
        "(`labkit deploy logs`)",
    )


def recorded_deployment_id(state: State | None, deployment_id: str | None = None) -> str:
    """``deployment_id`` if given, else the deployment step 06 recorded."""
    if deployment_id:
        return deployment_id
    recorded = state.require(STATE_KEY) if state is not None else {}
    if not recorded.get("deployment_id"):
        raise AICoreError("no deployment recorded", "run `labkit deploy` (step 06) first")
    return str(recorded["deployment_id"])


def stop(
    ai: AICore, deployment_id: str, *, timeout: float = DEFAULT_STOP_TIMEOUT_S, poll: float = 3.0
) -> DeploymentInfo | None:
    """Stop a deployment and wait until it is STOPPED (or DEAD); None if it does not exist."""
    from ai_api_client_sdk.models.target_status import TargetStatus

    info = ai.find_deployment(deployment_id)
    if info is None or info.status in ("STOPPED", "DEAD", "COMPLETED"):
        return info
    if info.target_status != "STOPPED":
        ai.call(
            f"stop deployment {deployment_id}",
            ai.client.deployment.modify,
            deployment_id,
            target_status=TargetStatus.STOPPED,
        )
    return wait_status(
        ai, deployment_id, ("STOPPED", "DEAD", "COMPLETED"), timeout=timeout, poll=poll
    )


def delete(
    ai: AICore, deployment_id: str, *, timeout: float = DEFAULT_STOP_TIMEOUT_S, poll: float = 3.0
) -> bool:
    """Stop (if needed) and delete a deployment, waiting until it is gone; False if it was gone."""
    if stop(ai, deployment_id, timeout=timeout, poll=poll) is None:
        return False
    gone = ai.call(
        f"delete deployment {deployment_id}",
        ai.client.deployment.delete,
        deployment_id,
        missing_ok=True,
    )
    if gone is None:
        return False
    wait_status(ai, deployment_id, (), timeout=timeout, poll=poll)
    return True


def list_deployments(ai: AICore, scenario_id: str | None = None) -> list[DeploymentInfo]:
    """The resource group's deployments (of one scenario if given)."""
    answer = ai.call("list deployments", ai.client.deployment.query, scenario_id=scenario_id)
    return [DeploymentInfo.from_sdk(d) for d in getattr(answer, "resources", None) or []]


def recorded_objects(state: State) -> ResourceTable:
    """What step 06 recorded (and whether the lab created each), for a look before the clean-up."""
    recorded = state.get(STATE_KEY)
    if not recorded:
        return ResourceTable()
    return ResourceTable(DeploymentResult.from_dict(recorded).objects)


@dataclass
class CleanupReport:
    """What the clean-up did with each object the lab recorded."""

    rows: list[Resource]

    @property
    def deleted(self) -> list[Resource]:
        return [r for r in self.rows if r.action == "deleted"]

    def to_dict(self) -> dict[str, Any]:
        return {"objects": [asdict(r) for r in self.rows], "deleted": len(self.deleted)}

    def to_text(self) -> str:
        return ResourceTable(self.rows).to_text() or "nothing recorded: nothing to clean up"

    def _repr_html_(self) -> str:
        if not self.rows:
            return "<p>Nothing recorded: nothing to clean up.</p>"
        return ResourceTable(self.rows)._repr_html_()


# AI Core's API has no DELETE for these (AI_CORE_API.yaml): they stay, and say so.
_UNDELETABLE = {
    "configuration": "kept: AI Core's API cannot delete configurations",
    "artifact": "kept: AI Core's API cannot delete artifact registrations",
}
_SETUP = (
    "application",
    "repository",
    "docker_registry_secret",
    "object_store_secret",
    "resource_group",
)


def cleanup(
    cfg: Config,
    state: State,
    *,
    ai: AICore | None = None,
    delete_setup: bool = True,
    timeout: float = DEFAULT_STOP_TIMEOUT_S,
    poll: float = 3.0,
) -> CleanupReport:
    """Stop and delete what the lab created (recorded in state ``deploy``), newest first; safe to
    run again. With ``delete_setup`` also the application, repository, secrets and resource group
    the lab created; objects it found already there are never touched."""
    recorded = state.get(STATE_KEY)
    if not recorded:
        return CleanupReport([])
    result = DeploymentResult.from_dict(recorded)
    rows: list[Resource] = []
    order = {k: i for i, k in enumerate(KINDS)}
    objects = sorted(enumerate(result.objects), key=lambda x: (-order.get(x[1].kind, 0), -x[0]))
    clients: dict[str, AICore] = {}
    for _, obj in objects:
        row = Resource(**asdict(obj))
        rows.append(row)
        if obj.deleted:
            row.action, row.detail = "gone", "deleted before"
            continue
        if not obj.created:
            row.action, row.detail = "kept", "the lab did not create it"
            continue
        if obj.kind in _UNDELETABLE:
            row.action, row.detail = "kept", _UNDELETABLE[obj.kind]
            continue
        if obj.kind in _SETUP and not delete_setup:
            row.action, row.detail = "kept", "setup kept (delete_setup off)"
            continue
        client = _client_for(cfg, obj, ai, clients)
        if client is None:
            row.action, row.detail = "kept", f"on another AI Core ({obj.api_url})"
            continue
        gone = _delete_object(client, obj, timeout=timeout, poll=poll)
        row.action = "deleted" if gone else "gone"
        row.detail = "" if gone else "already gone"
        obj.deleted = True
        obj.action = "deleted"
        # After each deletion: a failure later keeps what is done. Keys the notebook added
        # (e.g. the first call's models) stay.
        state.record(STATE_KEY, {**recorded, **result.to_dict()})
    if result.deployment_id and any(
        o.kind == "deployment" and o.id == result.deployment_id and o.deleted
        for o in result.objects
    ):
        result.status, result.deployment_url = "DELETED", ""
        state.record(STATE_KEY, {**recorded, **result.to_dict()})
    return CleanupReport(rows)


def _client_for(
    cfg: Config, obj: Resource, ai: AICore | None, clients: dict[str, AICore]
) -> AICore | None:
    if ai is None:
        ai = clients.get("") or connect(cfg)
        clients[""] = ai
    if obj.api_url and obj.api_url != ai.api_url:
        return None
    rg = obj.resource_group or ai.resource_group
    if rg == ai.resource_group:
        return ai
    if rg not in clients:
        clients[rg] = AICore(ai.key, rg, local=ai.local)
    return clients[rg]


def _delete_object(ai: AICore, obj: Resource, *, timeout: float, poll: float) -> bool:
    c = ai.client
    if obj.kind == "deployment":
        return delete(ai, obj.id, timeout=timeout, poll=poll)
    calls: dict[str, Callable[[str], Any]] = {
        "application": c.applications.delete,
        "repository": c.repositories.delete,
        "docker_registry_secret": c.docker_registry_secrets.delete,
        "object_store_secret": c.object_store_secrets.delete,
        "resource_group": c.resource_groups.delete,
    }
    fn = calls.get(obj.kind)
    if fn is None:
        return False
    done = ai.call(f"delete {obj.kind.replace('_', ' ')} {obj.id}", fn, obj.id, missing_ok=True)
    return done is not None
