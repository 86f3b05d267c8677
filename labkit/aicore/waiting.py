"""Bounded waits on a deployment: until it is RUNNING with a URL (a failure carries its logs and
likely causes), or until it reaches a status such as STOPPED or is gone."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from labkit.aicore.client import AICore
from labkit.aicore.diagnosis import diagnose
from labkit.aicore.errors import AICoreError, DeploymentFailed
from labkit.aicore.results import ENDED, DeploymentInfo
from labkit.aicore.status import StatusView, _elapsed
from labkit.errors import LabError

DEFAULT_TIMEOUT_S = 1800.0
DEFAULT_POLL_S = 5.0
DEFAULT_STOP_TIMEOUT_S = 300.0


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
