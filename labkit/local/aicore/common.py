"""What every area of the local AI Core shares: the service's constants, its error answer
(:class:`ApiError`, one line of message and a code), checks of request body fields, ``$skip`` /
``$top`` paging, label selectors and ``$search``, and the time formats of the AI API."""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("labkit.aicore")

SERVICE = "labkit-local-aicore"  # what /healthz names, so another program on the port is no match
API_VERSION = "2.42.0"  # the spec version this server answers like
TENANT_ID = "labkit-local"
ZONE_ID = "local"
DEFAULT_RESOURCE_GROUP = "default"
MAX_STATUS_MESSAGE = 256

ID = re.compile(r"[\w.-]{4,64}")
NAME = re.compile(r"""[\w\s.!?,;:\[\](){}<>"'=+*/\\^&%@~$#|-]*""")
LABEL_KEY = re.compile(r"ext\.ai\.sap\.com/[\w.-]+")
TTL = re.compile(r"([0-9]+)([mMhHdD])")

# --- the tenant's pace (docs/tenant.md) --------------------------------------------------------
# A tenant's durations in seconds. The local AI Core waits ``scale`` times each (the setting
# LABKIT_AICORE_TIME_SCALE, labkit.config.Config.aicore_time_scale; 1.0 is the tenant's pace).
# Only its own artificial waits scale: real work (a download, vLLM's start, a request) keeps a
# real deadline.
# A new deployment's first moments, as SAP's BYOM sample notebooks recorded them on tenants
# (SAP-samples/btp-generative-ai-hub-use-cases, 10-byom-oss-llm-ai-core/byom-oss-llm-code,
# llama.cpp/ and local-ai/01-deployment.ipynb, cell 19, every poll printed): GET of the deployment
# answers its status at once, UNKNOWN until it is scheduled (PENDING from 82 to 116 s after the
# creation), while its logs answer the tenant's "DeploymentNotFoundError" for about the first
# minute (still at 40 and 63 s, gone at 60 and 85 s). SAP docs, Troubleshooting > Deployment,
# "Deployment ID <abc> not found: this message appears when you have just started the
# deployment", and sap-tutorials/Tutorials issue 24095 ("the message you see in the log. When
# the status is UNKNOWN usually you see it") say the same of the logs.
SCHEDULING_S = 80.0
LOGS_NOT_FOUND_S = 60.0
# A recorded tenant cleanup (issue 16, item 9): RUNNING for about 3 minutes after the stop, then
# STOPPED, never showing STOPPING.
STOP_DELAY_S = 180.0
# Knative Serving's progress deadline (config-deployment, progress-deadline: 600s), which counts
# the pod's init containers (KServe's storage initializer) too.
PROGRESS_DEADLINE_S = 600.0
# Knative Serving's revision timeout (config-defaults, revision-timeout-seconds: 300) unless the
# predictor sets ``timeout``: a request to the deployment's server may take that long. Real work:
# never scaled.
REQUEST_TIMEOUT_S = 300.0
# The kubelet's back-off for a failing container or image pull: 10 s, doubled each time, at most
# 300 s (Kubernetes docs, Pod Lifecycle: container restarts; Images: ImagePullBackOff).
BACKOFF_INITIAL_S = 10.0
BACKOFF_MAX_S = 300.0


def backoff_s(failures: int, scale: float) -> float:
    """The kubelet's wait before the next try after ``failures`` failures, scaled."""
    base = min(BACKOFF_INITIAL_S * 2 ** max(failures - 1, 0), BACKOFF_MAX_S)
    return base * scale


# --- times and ids -----------------------------------------------------------------------------


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
    match = TTL.fullmatch(ttl)
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


# --- errors ------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer: HTTP status, a descriptive code and one line of message."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str = "",
        details: Any = None,
        target: str | None = None,
    ) -> None:
        super().__init__(message)
        self.target = target  # the error's ``target`` when not the request's path
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


# --- request fields and queries ----------------------------------------------------------------


def check_text(
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


def check_labels(
    value: Any, key_pattern: re.Pattern[str], what: str, *, max_key_len: int = 256
) -> list[dict[str, str]]:
    """Labels ``[{key, value}]``: keys match ``key_pattern`` within ``max_key_len`` characters
    (the spec's AiLabelKey: 256; a resource group's label keys: 63), values at most 5000."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad(f"'{what}' must be a list of {{key, value}}", "InvalidField")
    out = []
    for item in value:
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            raise bad(f"each of '{what}' needs a string key and value", "InvalidField")
        if len(item["key"]) > max_key_len:
            raise bad(
                f"label key {item['key'][:80]!r} is longer than {max_key_len} characters",
                "InvalidField",
            )
        if not key_pattern.fullmatch(item["key"]):
            raise bad(
                f"label key {item['key']!r} does not match {key_pattern.pattern}", "InvalidField"
            )
        if not isinstance(item.get("value"), str) or len(item["value"]) > 5000:
            raise bad(f"label {item['key']!r} needs a string value (at most 5000)", "InvalidField")
        out.append({"key": item["key"], "value": item["value"]})
    return out


def page(items: list[Any], query: Mapping[str, str]) -> list[Any]:
    """``$skip`` then ``$top`` of a list."""
    skip = int_param(query, "$skip", 0)
    top = int_param(query, "$top", None)
    items = items[skip:]
    return items if top is None else items[:top]


def int_param(query: Mapping[str, str], name: str, default: int | None) -> int | None:
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


def listing(items: list[Any], query: Mapping[str, str]) -> dict[str, Any]:
    return {"count": len(items), "resources": page(items, query)}


def selected(labels: Mapping[str, str], selectors: Iterable[str]) -> bool:
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


def matches_search(query: Mapping[str, str], *texts: str | None) -> bool:
    term = query.get("$search")
    if not term:
        return True
    insensitive = str(query.get("searchCaseInsensitive", "false")).lower() == "true"
    haystack = [t for t in texts if t]
    if insensitive:
        return any(term.lower() in t.lower() for t in haystack)
    return any(term in t for t in haystack)
