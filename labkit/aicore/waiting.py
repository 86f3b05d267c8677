"""Bounded waits on a deployment: until it is RUNNING with a URL (a failure carries its logs and
likely causes), or until it reaches a status such as STOPPED or is gone.

The waits survive what a tenant does and the local AI Core imitates: a deployment that answers 404
for a few minutes after it was created, a deployment that stays PENDING for good when its image
cannot be pulled or no node has a free GPU (explained in ``statusDetails``, not in the logs), a
predictor that crash-loops, and a stop that takes minutes. Tenant durations are multiplied by the
client's ``time_scale`` (LABKIT_AICORE_TIME_SCALE), so the local lab waits seconds where a tenant
takes minutes."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from labkit.aicore.client import AICore
from labkit.aicore.diagnosis import Cause, detail_lines, diagnose
from labkit.aicore.errors import AICoreError, DeploymentFailed
from labkit.aicore.results import ENDED, DeploymentInfo
from labkit.aicore.status import StatusView, _elapsed
from labkit.errors import LabError

DEFAULT_TIMEOUT_S = 1800.0
DEFAULT_POLL_S = 5.0
# A stop on a tenant: the deployment stayed RUNNING (never STOPPING) for about 3 minutes, then
# STOPPED (SAP-samples/btp-generative-ai-hub-use-cases, 10-byom-oss-llm-ai-core/ollama/
# 04-cleanup.ipynb, saved output: 8 polls 20 s apart). The lab's stop timeout stays above it.
TENANT_STOP_S = 180.0
DEFAULT_STOP_TIMEOUT_S = 300.0
# "Deployment ID <abc> not found: this message appears when you have just started the deployment.
# Wait a few minutes" (SAP Help, SAP AI Core, Troubleshooting > Deployment).
APPEAR_S = 300.0
# How long a cause that keeps a deployment PENDING for good (image pull, missing secret, no free
# GPU, crash loop) may show before the lab gives up, instead of the whole timeout: kubelet's
# back-off for image pulls and restarts grows to 5 minutes, so a passing registry hiccup heals.
STUCK_PENDING_S = 300.0
# Scaled waits never poll faster than this, and failure windows never shrink below these (a floor
# on a bound that only ends a failed wait costs a healthy deployment nothing).
MIN_POLL_S = 0.5
MIN_APPEAR_S = 30.0
MIN_STUCK_S = 5.0


def scale_of(ai: Any) -> float:
    """The client's time scale (1.0: a tenant's real pace)."""
    scale = float(getattr(ai, "time_scale", 1.0) or 1.0)
    return scale if scale > 0 else 1.0


def tenant_seconds(ai: Any, seconds: float, floor: float = 0.0) -> float:
    """A tenant duration at the client's time scale, at least ``floor``."""
    return max(floor, seconds * scale_of(ai))


def scaled_poll(ai: Any, poll: float) -> float:
    """A poll interval at the client's time scale (never below MIN_POLL_S unless asked for)."""
    return max(min(MIN_POLL_S, poll), poll * scale_of(ai))


def wait_running(
    ai: AICore,
    deployment_id: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    poll: float = DEFAULT_POLL_S,
    view: StatusView | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    appear: float | None = None,
    stuck: float | None = None,
) -> DeploymentInfo:
    """Poll until the deployment is RUNNING with a URL; DeploymentFailed (logs, causes) on DEAD,
    a stop, a cause that keeps it PENDING for ``stuck`` seconds, or after ``timeout`` seconds.
    A 404 is waited through for ``appear`` seconds (a tenant's new deployment)."""
    view = view or StatusView(f"deployment {deployment_id}", enabled=False)
    poll = scaled_poll(ai, poll)
    appear = tenant_seconds(ai, APPEAR_S, MIN_APPEAR_S) if appear is None else appear
    stuck = tenant_seconds(ai, STUCK_PENDING_S, MIN_STUCK_S) if stuck is None else stuck
    start = clock()
    blocked_since: float | None = None
    while True:
        info = ai.find_deployment(deployment_id)
        elapsed = clock() - start
        if info is None:
            if elapsed >= min(appear, timeout):
                raise AICoreError(
                    f"deployment {deployment_id} is still not found {elapsed:.0f} s after it was "
                    "created",
                    "check LABKIT_RESOURCE_GROUP and the id (`labkit deploy list`); a tenant "
                    "answers 404 only for a few minutes after creating a deployment",
                )
            view.show("UNKNOWN", {"deployment": deployment_id, "elapsed": _elapsed(elapsed),
                                  "message": "not visible yet (new deployments answer 404 at "
                                  "first)"})  # fmt: skip
            sleep(max(0.0, min(poll, appear - elapsed)))
            continue
        rows = _rows(info, elapsed)
        view.show(info.status, rows)
        if info.status == "RUNNING" and info.deployment_url:
            return info
        if info.status in ENDED or info.target_status in ("STOPPED", "DELETED"):
            raise _failed(ai, info, view, rows)
        blocking = _blocking(info)
        blocked_since = (
            None if blocking is None else elapsed if blocked_since is None else blocked_since
        )
        if blocking is not None and blocked_since is not None and elapsed - blocked_since >= stuck:
            raise _failed(ai, info, view, rows, stuck=(elapsed, blocking))
        if elapsed >= timeout:
            raise _failed(ai, info, view, rows, timed_out=timeout)
        left = timeout - elapsed
        if blocked_since is not None:
            left = min(left, stuck - (elapsed - blocked_since))
        sleep(max(0.0, min(poll, left)))


def _blocking(info: DeploymentInfo) -> Cause | None:
    """The cause that keeps a PENDING (or UNKNOWN) deployment from starting, read from its status
    details and message as a tenant reports them; None when it is just starting."""
    if info.status not in ("PENDING", "UNKNOWN"):
        return None
    causes = diagnose([*detail_lines(info.status_details), info.status_message])
    return next((c for c in causes if c.blocking), None)


def _rows(info: DeploymentInfo, elapsed: float) -> dict[str, str]:
    rows = {
        "deployment": info.id,
        "elapsed": _elapsed(elapsed),
        "message": info.status_message,
        "url": info.deployment_url,
    }
    details = detail_lines(info.status_details)
    if details:
        rows["details"] = "; ".join(details[:3])
    return rows


def _failed(
    ai: AICore,
    info: DeploymentInfo,
    view: StatusView,
    rows: Mapping[str, str],
    *,
    timed_out: float | None = None,
    stuck: tuple[float, Cause] | None = None,
) -> DeploymentFailed:
    try:
        logs = ai.logs_tail(info.id)
    except LabError:
        logs = []
    causes = diagnose([*logs, *detail_lines(info.status_details), info.status_message])
    hint = f"read its logs with `labkit deploy logs {info.id}`"
    if stuck is not None:
        elapsed, blocking = stuck
        found = next((c for c in causes if c.name == blocking.name), blocking)
        others = [c for c in causes if c.name != blocking.name]
        causes = [found, *others]
        message = (
            f"deployment {info.id} is stuck in {info.status} after {elapsed:.0f} s: "
            f"{found.summary} ({found.evidence})"
        )
        hint = found.advice
        if found.name == "crashloop" and others:
            # The restarts say only that it crashes; its logs say why.
            message += f"; its logs point at: {others[0].summary} ({others[0].evidence})"
            hint = others[0].advice
    else:
        if timed_out is not None:
            message = f"deployment {info.id} is still {info.status} after {timed_out:.0f} s"
        else:
            message = f"deployment {info.id} is {info.status}"
        if causes:
            message += f": {causes[0].summary} ({causes[0].evidence})"
            hint = causes[0].advice
        elif info.status_message:
            message += f": {info.status_message}"
        if timed_out is not None and not causes:
            hint = f"wait longer (a larger timeout), or {hint}"
    view.failure(info.status, rows, logs, causes)
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
    poll = scaled_poll(ai, poll)
    start = clock()
    while True:
        info = ai.find_deployment(deployment_id)
        if info is None or info.status in statuses:
            return info
        elapsed = clock() - start
        if elapsed >= timeout:
            raise AICoreError(
                f"deployment {deployment_id} is still {info.status} after {timeout:.0f} s "
                f"(waiting for {' or '.join(statuses) or 'it to be gone'})",
                "try again later, or look at it with `labkit deploy status`",
            )
        sleep(max(0.0, min(poll, timeout - elapsed)))
