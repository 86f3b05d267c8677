"""After the deployment: its models through the deployment URL; stop, delete and list
deployments; and the clean-up, which stops and deletes what the lab created (as step 06 recorded
it), newest first, and never touches what it found already there."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from labkit.aicore.client import AICore, connect, inference_url
from labkit.aicore.deployer import STATE_KEY
from labkit.aicore.errors import AICoreError
from labkit.aicore.results import (
    KINDS,
    DeploymentInfo,
    DeploymentResult,
    Resource,
    ResourceTable,
    _table,
)
from labkit.aicore.secrets import _short
from labkit.aicore.waiting import DEFAULT_STOP_TIMEOUT_S, scale_of, wait_status
from labkit.config import Config
from labkit.state import State


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


# A tenant stops only a RUNNING or PENDING deployment; any other answers 400 "Invalid Request,
# Current status UNKNOWN cannot be changed", and an UNKNOWN one is deleted without a stop (SAP
# Help, SAP AI Core, Troubleshooting > Deployment: "stopping a deployment is necessary only when
# it's running"). A STOPPING one is on its way: wait for it.
STOPPABLE = ("RUNNING", "PENDING")
STOPPED = ("STOPPED", "DEAD", "COMPLETED")


def _cannot_change(exc: AICoreError) -> bool:
    return exc.status_code == 400 and "cannot be changed" in exc.server_message.lower()


def stop(
    ai: AICore, deployment_id: str, *, timeout: float = DEFAULT_STOP_TIMEOUT_S, poll: float = 3.0
) -> DeploymentInfo | None:
    """Stop a RUNNING or PENDING deployment and wait until it is STOPPED (or DEAD); any other is
    returned as it is (an UNKNOWN one cannot be stopped, only deleted); None if it does not exist."""
    from ai_api_client_sdk.models.target_status import TargetStatus

    info = ai.find_deployment(deployment_id)
    if info is None:
        return None
    if info.status in STOPPABLE and info.target_status != "STOPPED":
        try:
            ai.call(
                f"stop deployment {deployment_id}",
                ai.client.deployment.modify,
                deployment_id,
                target_status=TargetStatus.STOPPED,
            )
        except AICoreError as exc:
            # Its status changed between the read and the stop (say, RUNNING -> DEAD, or an
            # interrupted start back to UNKNOWN): read it again; still stoppable is a real error.
            if not _cannot_change(exc):
                raise
            info = ai.find_deployment(deployment_id)
            if info is None or (info.status not in STOPPABLE and info.status != "STOPPING"):
                return info
            if info.target_status != "STOPPED":
                raise
    elif info.status not in STOPPABLE and info.status != "STOPPING":
        return info
    return wait_status(ai, deployment_id, STOPPED, timeout=timeout, poll=poll)


def delete(
    ai: AICore, deployment_id: str, *, timeout: float = DEFAULT_STOP_TIMEOUT_S, poll: float = 3.0
) -> bool:
    """Stop (if RUNNING or PENDING) and delete a deployment, waiting until it is gone; an UNKNOWN
    or DEAD one is deleted directly; False if it was gone."""
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
# Issue 16, item 11: a tenant can refuse a deleted repository's name when it is on-boarded again
# ("Repository ... not found for tenant"; unverified, docs/tenant.md). The registration costs
# nothing, and the next run reuses it.
_REPOSITORY_KEPT = "kept for the next run (a tenant may refuse the name once deleted)"
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
    delete_repository: bool = False,
    timeout: float = DEFAULT_STOP_TIMEOUT_S,
    poll: float = 3.0,
) -> CleanupReport:
    """Stop and delete what the lab created (recorded in state ``deploy``), newest first; safe to
    run again. With ``delete_setup`` also the application, secrets and resource group the lab
    created, and with ``delete_repository`` too its git repository registration (kept by default:
    a tenant may refuse the name again, issue 16 item 11); objects it found already there are
    never touched."""
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
        if obj.kind == "repository" and not delete_repository:
            row.action, row.detail = "kept", _REPOSITORY_KEPT
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
        clients[rg] = AICore(ai.key, rg, local=ai.local, time_scale=scale_of(ai))
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
