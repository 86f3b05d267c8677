"""The client: SAP's ``AICoreV2Client`` for one service key and resource group, whose errors
become one-line LabErrors that say what to do; the few reads every part of the step needs; and
the headers and URLs of calls through a deployment URL."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from html import escape
from typing import Any

from labkit.aicore.auth import ServiceKey, _Token, _unreachable, load_service_key
from labkit.aicore.errors import AICoreError
from labkit.aicore.names import check_resource_group_name
from labkit.aicore.results import DeploymentInfo, _table
from labkit.aicore.secrets import MASK, _install_redaction, _short, redact
from labkit.config import Config
from labkit.errors import LabError

LOG_TAIL = 40


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
        time_scale: float = 1.0,
    ) -> None:
        from ai_core_sdk.ai_core_v2_client import AICoreV2Client

        _install_redaction()
        self.key = key
        self.resource_group = check_resource_group_name(resource_group)
        self.local = local
        # Tenant durations the waits imitate (404 windows, PENDING bounds, polls) are multiplied
        # by this: LABKIT_AICORE_TIME_SCALE, compressed on the local profile (labkit.config).
        self.time_scale = time_scale if time_scale > 0 else 1.0
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
            error = self._refused(exc, what)
            error.status_code, error.server_message = exc.status_code, _error_text(exc)
            return error
        return AICoreError(
            f"unexpected answer from AI Core to '{what}' ({type(exc).__name__}: {_short(str(exc))})",
            "check that serviceurls.AI_API_URL points at an SAP AI Core AI API",
        )

    def _refused(self, exc: Any, what: str) -> AICoreError:
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


def connect(cfg: Config, *, resource_group: str | None = None, check: bool = True) -> AICore:
    """A client for the configured AI Core; with ``check``, the token is fetched now so bad
    credentials fail here."""
    ai = AICore(
        load_service_key(cfg),
        resource_group or cfg.resource_group,
        local=cfg.profile == "local",
        # A tenant keeps its own pace; the local AI Core runs at the configured one.
        time_scale=cfg.aicore_time_scale if cfg.profile == "local" else 1.0,
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
