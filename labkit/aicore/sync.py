"""The templates' sync: refresh the application (ArgoCD) through which AI Core syncs the serving
templates from git, and wait, bounded, until the executable step 05 published exists and declares
the parameters the deployment binds; the sync's own error when the templates fail to sync."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from labkit.aicore.client import AICore
from labkit.aicore.errors import AICoreError
from labkit.aicore.results import _table
from labkit.aicore.secrets import _short
from labkit.aicore.status import StatusView, _elapsed
from labkit.aicore.waiting import (
    DEFAULT_POLL_S,
    MIN_APPEAR_S,
    scaled_poll,
    tenant_seconds,
)
from labkit.util.names import COMMIT

DEFAULT_SYNC_TIMEOUT_S = 600.0
# A tenant answers 404 for an application's status until its first sync, which comes within about
# 3 minutes (SAP's AI Core set-up tutorial: "KeyError: 'operationState'" ... "wait for 3
# minutes"); the lab waits through twice that before it says so.
FIRST_SYNC_S = 360.0


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
# A tenant's app-level messages for a sync that cannot succeed, often with health Healthy or
# Unknown (ArgoCD's ComparisonError wording, as tenants report it, issue 16): the path is not in
# the repository, the revision (branch) does not exist, or the repository cannot be read.
_SYNC_FAILED_MESSAGES = (
    r"app path does not exist",
    r"unable to resolve .+ to a commit sha",
    r"rpc error: code = \w+ desc = ",
    r"repository not found",
    r"authentication required",
)
# What ArgoCD reports before its first sync (sap-tutorials/Tutorials issue 7187: every field
# "Unknown"); read as no value.
_UNKNOWN = ("", "unknown")


def _known(value: Any) -> str:
    text = str(value or "")
    return "" if text.lower() in _UNKNOWN else text


# After a sync that finished since our refresh, how long the executable may take to show up.
_SYNC_GRACE_S = 15.0


def _sync_errors(status: Any) -> list[str]:
    errors = []
    for res in getattr(status, "sync_resources_status", None) or []:
        state = str(getattr(res, "status", "") or "")
        if state.lower().replace(" ", "") in _SYNC_FAILED:
            errors.append(f"{getattr(res, 'name', '?')}: {getattr(res, 'message', '') or state}")
    return errors


@dataclass
class _Seen:
    """One look at the application's sync and the executable, while waiting."""

    sync: str
    health: str
    message: str
    revision: str
    finished_at: Any
    errors: list[str]
    exe: Any
    declared: dict[str, str]  # declared parameter -> default
    missing: list[
        str
    ]  # needed parameters the executable does not declare (all while it is missing)
    no_status: bool = (
        False  # the status answered 404 (a tenant's application before its first sync)
    )

    @property
    def ready(self) -> bool:
        """The executable exists and declares every needed parameter."""
        return self.exe is not None and not self.missing

    @property
    def failed(self) -> bool:
        """ArgoCD says the sync (or one of its resources) failed, in its status or its message."""
        return (
            self.health.lower() == "degraded"
            or self.sync.lower() in _SYNC_FAILED
            or bool(self.errors)
            or any(re.search(p, self.message, re.IGNORECASE) for p in _SYNC_FAILED_MESSAGES)
        )


def _look(
    ai: AICore, application: str, scenario_id: str, executable_id: str, needs: set[str]
) -> _Seen:
    status = ai.call(
        f"get the status of application {application}",
        ai.client.applications.get_status,
        application,
        missing_ok=True,
    )
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
    return _Seen(
        sync=_known(getattr(status, "sync_status", "")),
        health=_known(getattr(status, "health_status", "")),
        message=_short(_known(getattr(status, "message", ""))),
        revision=_known(getattr(getattr(status, "source", None), "revision", "")),
        finished_at=_known(getattr(status, "sync_finished_at", None)) or None,
        errors=_sync_errors(status),
        exe=exe,
        declared=declared,
        missing=sorted(needs - set(declared)) if exe is not None else sorted(needs),
        no_status=status is None,
    )


def _show(view: StatusView, seen: _Seen, executable_id: str, elapsed: float) -> None:
    view.show(
        seen.sync or "UNKNOWN",
        {
            "health": seen.health,
            "executable": executable_id if seen.exe is not None else "(not yet)",
            "elapsed": _elapsed(elapsed),
            "message": seen.message,
        },
    )


def _result(
    application: str, scenario_id: str, executable_id: str, seen: _Seen, elapsed: float
) -> SyncResult:
    return SyncResult(
        application=application,
        sync_status=seen.sync,
        health_status=seen.health,
        scenario_id=scenario_id,
        executable_id=executable_id,
        parameters=seen.declared,
        input_artifacts=[str(a.name) for a in (getattr(seen.exe, "input_artifacts", None) or [])],
        seconds=elapsed,
    )


def _sync_failed(application: str, seen: _Seen) -> AICoreError:
    message = seen.message.lower()
    if "app path does not exist" in message:
        hint = (
            "the application's path must be a folder of the repository at its revision: push "
            "step 05's commit, or set LABKIT_TEMPLATE_REPO_PATH to the folder, and deploy again"
        )
    elif "commit sha" in message:
        hint = (
            "the application's revision (branch) must exist in the repository: push it, then "
            "deploy again"
        )
    else:
        hint = "fix the template (`labkit template lint`), commit it (step 05), and deploy again"
    return AICoreError(
        f"the templates of application {application} did not sync "
        f"({seen.sync or 'Unknown'}/{seen.health or 'Unknown'}): "
        + "; ".join(seen.errors or [seen.message or "no message"]),
        hint,
    )


def _old_revision(application: str, seen: _Seen, commit: str, elapsed: float) -> AICoreError:
    return AICoreError(
        f"application {application} still shows revision {seen.revision[:12] or '(unknown)'} after "
        f"{elapsed:.0f} s, not step 05's commit {commit[:12]}",
        "check that the commit is in the repository AI Core syncs (pushed), then deploy again",
    )


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
    poll = scaled_poll(ai, poll)
    first_status = tenant_seconds(ai, FIRST_SYNC_S, MIN_APPEAR_S)
    what = f"get the status of application {application}"
    before = ai.call(what, apps.get_status, application, missing_ok=True)
    ai.call(f"refresh application {application}", apps.refresh, application, missing_ok=True)
    first_sync = _known(getattr(before, "sync_finished_at", None)) or None
    synced_at: float | None = None  # when a sync finished since the refresh was first seen
    needs = set(needs)
    start = clock()
    while True:
        seen = _look(ai, application, scenario_id, executable_id, needs)
        elapsed = clock() - start
        _show(view, seen, executable_id, elapsed)
        new_sync = seen.finished_at not in (None, first_sync) or (
            bool(commit) and seen.revision == commit
        )
        if new_sync:
            synced_at = clock() if synced_at is None else synced_at
        # Before a sync since the refresh, an executable synced from another commit may be an
        # older version of the template: wait for the refresh (when the revision says so).
        # Before a tenant's first sync the revision is unknown (404, or "Unknown"): wait too.
        stale = (
            bool(commit)
            and seen.revision != commit
            and (not seen.revision or COMMIT.fullmatch(seen.revision) is not None)
        )
        if seen.ready and (synced_at is not None or not stale):
            return _result(application, scenario_id, executable_id, seen, elapsed)
        if seen.failed and (synced_at is not None or elapsed >= poll):
            raise _sync_failed(application, seen)
        if seen.no_status and elapsed >= min(first_status, timeout):
            raise AICoreError(
                f"application {application} has no sync status {elapsed:.0f} s after it was "
                "created or refreshed (AI Core answers 404 until its first sync)",
                "check the application's repository URL, path and the repository's credentials "
                "(`labkit deploy` registers them), then deploy again",
            )
        settled = (
            synced_at is not None
            and seen.sync.lower() == "synced"
            and clock() - synced_at >= max(_SYNC_GRACE_S, 2 * poll)
        )
        if elapsed >= timeout and seen.ready:
            raise _old_revision(application, seen, commit, elapsed)
        if elapsed >= timeout or settled:
            raise _missing_executable(ai, application, scenario_id, executable_id, seen, elapsed)
        sleep(max(0.0, min(poll, timeout - elapsed)))


def _missing_executable(
    ai: AICore,
    application: str,
    scenario_id: str,
    executable_id: str,
    seen: _Seen,
    elapsed: float,
) -> AICoreError:
    where = f"application {application}: {seen.sync or 'no sync status'}/{seen.health or '?'}"
    if seen.message:
        where += f", {seen.message}"
    if seen.exe is not None:
        return AICoreError(
            f"executable {executable_id} does not declare the parameters {', '.join(seen.missing)} "
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
