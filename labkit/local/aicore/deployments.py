"""The local AI Core's deployments: their lifecycle and state machine, each run by a
:class:`~labkit.local.aicore.runner.Runner`, and their ``/v2/lm/deployments`` routes.

Deployments run as :mod:`labkit.local.aicore.runner` describes, at a tenant's pace times the
time scale (docs/tenant.md). Statuses: UNKNOWN on creation until scheduled (its logs answer 404
"DeploymentNotFoundError" for the first minute, as on a tenant); PENDING while the image is pulled (a pull that fails stays
PENDING), the model fetched and the server starts (a crashing one restarts with back-off);
RUNNING once it answers; after PATCH ``targetStatus: STOPPED`` (only from RUNNING or PENDING, 400
otherwise) the status stays as it was for the tenant's stop time, then STOPPED; DEAD when the
progress deadline passes, with the reason in ``statusMessage`` and ``statusDetails``.
``deploymentUrl`` is empty until RUNNING; a stopped deployment cannot be started again; only
STOPPED, DEAD or UNKNOWN deployments can be deleted (412 otherwise); a ``ttl`` deletes the
deployment when it runs out. After a restart, deployments that should run are started again
(PENDING, then RUNNING); predictors of a server that died are ended first.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse, Response

from labkit.local.aicore.admin import DockerRegistrySecrets, ObjectStoreSecrets
from labkit.local.aicore.common import (
    ID,
    LOGS_NOT_FOUND_S,
    MAX_STATUS_MESSAGE,
    REQUEST_TIMEOUT_S,
    SCHEDULING_S,
    STOP_DELAY_S,
    TTL,
    ApiError,
    bad,
    check_text,
    iso,
    listing,
    log,
    missing,
    new_deployment_id,
    now,
    parse_time,
    public,
    ttl_seconds,
)
from labkit.local.aicore.deps import Core, GroupItem, GroupList, JsonBody, Query, auth, created
from labkit.local.aicore.gitsync import templates_module
from labkit.local.aicore.logs import DeploymentLogs
from labkit.local.aicore.processes import kill_recorded, remove_tree
from labkit.local.aicore.runner import Runner
from labkit.local.aicore.runspec import ObjectStore, RunnerSettings, RunSpec
from labkit.local.aicore.store import Store

TTL_CHECK_S = 5.0
_DEPLOYMENT_STATUSES = ("PENDING", "RUNNING", "COMPLETED", "DEAD", "STOPPING", "STOPPED", "UNKNOWN")


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
        request_timeout=_request_timeout(getattr(rendered, "predictor", None) or {}),
    )


def _request_timeout(predictor: Mapping[str, Any]) -> float:
    """The predictor's ``timeout`` (KServe's ComponentExtensionSpec, seconds), else Knative's
    default revision timeout."""
    value = predictor.get("timeout")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return REQUEST_TIMEOUT_S


def _count(value: Any, default: int) -> int:
    return default if value is None else int(value)


def details(spec: RunSpec, running: int) -> dict[str, Any]:
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
        "resources": {"backendDetails": {"predictor": {"resourcePlan": spec.resource_plan or ""}}},
    }


def set_fields(dep: dict[str, Any], **fields: Any) -> None:
    """Change a deployment's fields (None removes one) and its ``modifiedAt``."""
    for key, value in fields.items():
        if value is None:
            dep.pop(key, None)
        else:
            dep[key] = value[:MAX_STATUS_MESSAGE] if key == "statusMessage" else value
    dep["modifiedAt"] = iso(now())


def status_only(dep: Mapping[str, Any]) -> dict[str, Any]:
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


def _stop_and_start(old: Runner | None, start: Any) -> None:
    if old is not None:
        old.stop()
    start()


class Deployments:
    """The deployments of every resource group and their runners."""

    def __init__(
        self,
        store: Store,
        runner_settings: RunnerSettings,
        base_url: str,
        closing: threading.Event,
        object_stores: ObjectStoreSecrets,
        registry_secrets: DockerRegistrySecrets,
        ttl_check: float = TTL_CHECK_S,
    ) -> None:
        self.store = store
        self.runner_settings = runner_settings
        self.base_url = base_url
        self.closing = closing
        self.object_stores = object_stores
        self.registry_secrets = registry_secrets
        self.ttl_check = ttl_check
        self.logs = DeploymentLogs(store)
        self.runners: dict[str, Runner] = {}

    # lifecycle of the server

    def recover(self) -> None:
        """Pick up where the last run stopped: end its predictors, start what should run."""
        builder = self.runner_settings.builder
        restart: list[tuple[str, str]] = []
        with self.store.lock:
            for group, deployments in self.store.data["deployments"].items():
                for dep_id, dep in list(deployments.items()):
                    if dep.get("_process"):
                        if kill_recorded(dep["_process"], builder):
                            log.info("ended predictor of %s left by an earlier run", dep_id)
                        dep["_process"] = None
                    if dep.get("targetStatus") == "DELETED":
                        self.remove(group, dep_id)
                    elif dep["status"] == "STOPPING" or (
                        dep.get("targetStatus") == "STOPPED"
                        and dep["status"] not in ("STOPPED", "DEAD")
                    ):
                        set_fields(dep, status="STOPPED", completionTime=iso(now()))
                    elif dep.get("targetStatus") == "RUNNING" and dep["status"] in (
                        "UNKNOWN",
                        "PENDING",
                        "RUNNING",
                    ):
                        set_fields(
                            dep,
                            status="PENDING",
                            statusMessage="Restarting after the local AI Core restarted",
                        )
                        restart.append((group, dep_id))
            self.store.save()
        for group, dep_id in restart:
            self.logs.append(
                dep_id, "aicore: the local AI Core restarted: starting the predictor again"
            )
            self._start_runner(group, dep_id)

    def stop_all(self) -> None:
        """Stop every predictor (in parallel); their deployments keep their status, so the next
        start runs them again."""
        runners = list(self.runners.values())
        stoppers = [threading.Thread(target=r.stop, kwargs={"timeout": 8}) for r in runners]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(20)

    def ttl_loop(self) -> None:
        while not self.closing.wait(self.ttl_check):
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
                self.logs.append(dep_id, f"aicore: ttl {ttl} has run out: deleting the deployment")
                log.info("deployment %s: ttl %s ran out", dep_id, ttl)
                with contextlib.suppress(ApiError):
                    self.delete(group, dep_id, force=True)

    # creation

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
            rendered = templates_module().render(template, params, urls)
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

    def create(self, group: str, body: Mapping[str, Any]) -> dict[str, Any]:
        conf_id = check_text(body, "configurationId", pattern=ID)
        ttl = body.get("ttl")
        if ttl is not None and (not isinstance(ttl, str) or not TTL.fullmatch(ttl)):
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
            "details": details(spec, 0),
            "createdAt": stamp,
            "modifiedAt": stamp,
            "submissionTime": stamp,
            "_run": spec.to_dict(),
            "_process": None,
            # UNKNOWN until scheduled; the logs not found at first (common.SCHEDULING_S).
            "_scheduledAt": time.time() + self.scaled(SCHEDULING_S),
            "_logsAt": time.time() + self.scaled(LOGS_NOT_FOUND_S),
        }
        if ttl is not None:
            dep["ttl"] = ttl
        with self.store.lock:
            self.store.in_group("deployments", group)[dep_id] = dep
            self.store.save()
        self.work_dir(dep_id).mkdir(parents=True, exist_ok=True)
        log.info("deployment %s created in %s (configuration %s)", dep_id, group, conf_id)
        self.logs.append(dep_id, f"aicore: deployment {dep_id} scheduled (configuration {conf_id})")
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
        return self.store.work_dir(dep_id)

    def scaled(self, seconds: float) -> float:
        """A tenant's duration at this server's pace."""
        return seconds * self.runner_settings.time_scale

    def _start_runner(self, group: str, dep_id: str) -> None:
        with self.store.lock:
            dep = self.store.in_group("deployments", group).get(dep_id)
            if dep is None:
                return
            spec = RunSpec.from_dict(dep["_run"])
            hidden = max(0.0, float(dep.get("_scheduledAt") or 0) - time.time())
        events = Events(self, group, dep_id)
        runner = Runner(
            dep_id, spec, self.work_dir(dep_id), self.runner_settings, events, schedule_delay=hidden
        )
        events.runner = runner
        self.runners[dep_id] = runner
        runner.start()

    # what the runners report

    def update_from_runner(self, group: str, dep_id: str, runner: Runner, **fields: Any) -> None:
        """A status change the runner reports; ignored once the deployment is being stopped."""
        with self.store.lock:
            dep = self.store.in_group("deployments", group).get(dep_id)
            if dep is None or self.runners.get(dep_id) is not runner or self.closing.is_set():
                return
            if dep.get("targetStatus") != "RUNNING":
                return
            if fields.get("status") == "RUNNING":
                spec = RunSpec.from_dict(dep["_run"])
                fields.update(
                    deploymentUrl=f"{self.base_url}/v2/inference/deployments/{dep_id}",
                    details=details(spec, 1),
                    statusMessage=None,
                    statusDetails=None,
                )
                fields.setdefault("startTime", dep.get("startTime") or iso(now()))
            if fields.get("status") == "PENDING" and dep["status"] == "RUNNING":
                fields.update(details=details(RunSpec.from_dict(dep["_run"]), 0))
            if fields.get("status") == "DEAD":
                fields.update(
                    details=details(RunSpec.from_dict(dep["_run"]), 0),
                    completionTime=iso(now()),
                )
            set_fields(dep, **fields)
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

    # reading

    def stored(self, group: str, dep_id: str) -> dict[str, Any]:
        """The deployment as stored (caller holds the store lock); 404 when there is none."""
        dep = self.store.in_group("deployments", group).get(dep_id)
        if dep is None:
            raise missing(f"deployment '{dep_id}' in resource group '{group}'")
        return dep

    def logs_found(self, group: str, dep_id: str) -> None:
        """404 for a new deployment's logs during its first minute, in the tenant's words
        (common.LOGS_NOT_FOUND_S; the recorded body's code and target included)."""
        dep = self.stored(group, dep_id)
        if time.time() < float(dep.get("_logsAt") or 0):
            raise ApiError(
                404,
                f"DeploymentNotFoundError: Deployment {dep_id} not found.",
                "05011000",
                target=f"/api/v4alpha/deployments/{dep_id}/logs",
            )

    def get(self, group: str, dep_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        select = query.get("$select")
        if select is not None and select != "status":
            raise bad("$select takes only 'status'", "InvalidParameter")
        with self.store.lock:
            dep = public(self.stored(group, dep_id))
        return status_only(dep) if select else dep

    def list_all(self, group: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
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
        return [status_only(d) for d in out] if select else out

    def read_logs(self, group: str, dep_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        with self.store.lock:
            self.logs_found(group, dep_id)
        return self.logs.read(dep_id, query)

    # changes

    def modify(self, group: str, dep_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
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
            self.stop(group, dep_id)
            return {"id": dep_id, "message": "Deployment modification scheduled"}
        if not isinstance(conf_id, str) or not ID.fullmatch(conf_id):
            raise bad("'configurationId' must be a configuration id", "InvalidField")
        self._change_configuration(group, dep_id, conf_id)
        return {"id": dep_id, "message": "Deployment modification scheduled"}

    def _change_configuration(self, group: str, dep_id: str, conf_id: str) -> None:
        """A new configuration for a RUNNING or PENDING deployment: a new predictor replaces
        the old one in the background."""
        with self.store.lock:
            dep = self.stored(group, dep_id)
            if dep["status"] not in ("RUNNING", "PENDING") or dep.get("targetStatus") != "RUNNING":
                raise ApiError(
                    412,
                    f"deployment {dep_id} is {dep['status']}: only RUNNING or PENDING deployments "
                    "can change their configuration",
                )
        conf, spec = self._render(group, conf_id)
        with self.store.lock:
            dep = self.stored(group, dep_id)
            if conf["scenarioId"] != dep["scenarioId"]:
                raise bad(
                    "the new configuration belongs to another scenario", "InvalidConfiguration"
                )
            old_runner = self.runners.pop(dep_id, None)
            set_fields(
                dep,
                latestRunningConfigurationId=dep["configurationId"],
                configurationId=conf_id,
                configurationName=conf["name"],
                executableId=conf["executableId"],
                lastOperation="UPDATE",
                status="PENDING",
                statusMessage="Updating to a new configuration",
                statusDetails=None,
                details=details(spec, 0),
            )
            dep["_run"] = spec.to_dict()
            self.store.save()
        self.logs.append(
            dep_id, f"aicore: configuration changed to {conf_id}: replacing the predictor"
        )
        threading.Thread(
            target=_stop_and_start,
            args=(old_runner, lambda: self._start_runner(group, dep_id)),
            name=f"aicore-update-{dep_id}",
            daemon=True,
        ).start()

    def stop(self, group: str, dep_id: str) -> None:
        """targetStatus STOPPED, only from RUNNING or PENDING (SAP docs, Troubleshooting >
        Deployment: "Invalid Request, Current status UNKNOWN cannot be changed"; "stopping a
        deployment is necessary only when it's running"). The status stays as it is for the
        tenant's stop time, then STOPPED, never STOPPING (a recorded tenant cleanup: RUNNING for
        about 3 minutes)."""
        with self.store.lock:
            dep = self.stored(group, dep_id)
            if dep.get("targetStatus") == "DELETED":
                raise missing(f"deployment '{dep_id}' in resource group '{group}'")
            if dep["status"] not in ("RUNNING", "PENDING"):
                raise ApiError(
                    400,
                    f"Invalid Request, Current status {dep['status']} cannot be changed.",
                    "01010076",
                )
            if dep.get("targetStatus") == "STOPPED":
                return  # a stop under way
            set_fields(dep, targetStatus="STOPPED", lastOperation="UPDATE")
            self.store.save()
        self.logs.append(dep_id, "aicore: stop requested (targetStatus STOPPED)")
        threading.Thread(
            target=self._finish_stop,
            args=(group, dep_id),
            name=f"aicore-stop-{dep_id}",
            daemon=True,
        ).start()

    def _finish_stop(self, group: str, dep_id: str) -> None:
        if self.closing.wait(self.scaled(STOP_DELAY_S)):
            return  # the server stops it (stop_all); recover() finishes this stop on next start
        with self.store.lock:
            dep = self.store.in_group("deployments", group).get(dep_id)
            if dep is None or dep.get("targetStatus") != "STOPPED":
                return
            runner = self.runners.pop(dep_id, None)
        if runner is not None:
            runner.stop()
        with self.store.lock:
            dep = self.store.in_group("deployments", group).get(dep_id)
            if dep is None or dep.get("targetStatus") != "STOPPED":
                return
            spec = RunSpec.from_dict(dep["_run"])
            set_fields(
                dep,
                status="STOPPED",
                completionTime=iso(now()),
                statusMessage=None,
                statusDetails=None,
                details=details(spec, 0),
            )
            self.store.save()
        self.logs.append(dep_id, "aicore: predictor stopped; deployment STOPPED")
        log.info("deployment %s stopped", dep_id)

    def delete(self, group: str, dep_id: str, *, force: bool = False) -> dict[str, Any]:
        with self.store.lock:
            dep = self.stored(group, dep_id)
            if not force and dep["status"] not in ("STOPPED", "DEAD", "UNKNOWN"):
                raise ApiError(
                    412,
                    f"deployment {dep_id} is {dep['status']}: stop it first (PATCH targetStatus "
                    "STOPPED); only STOPPED, DEAD or UNKNOWN deployments can be deleted",
                    "PreconditionFailed",
                )
            set_fields(dep, targetStatus="DELETED", lastOperation="DELETE")
            runner = self.runners.pop(dep_id, None)
            self.store.save()
        threading.Thread(
            target=self._finish_delete,
            args=(group, dep_id, runner),
            name=f"aicore-delete-{dep_id}",
            daemon=True,
        ).start()
        return {"id": dep_id, "message": "Deletion scheduled"}

    def _finish_delete(self, group: str, dep_id: str, runner: Runner | None) -> None:
        if runner is not None:
            runner.stop()
        with self.store.lock:
            self.remove(group, dep_id)
            self.store.save()
        log.info("deployment %s deleted", dep_id)

    def bulk_modify(self, group: str, body: Mapping[str, Any]) -> dict[str, Any]:
        items = body.get("deployments")
        if not isinstance(items, list) or not 1 <= len(items) <= 100:
            raise bad("'deployments' must list 1 to 100 {id, targetStatus}", "InvalidField")
        # The request is checked as a whole first (AiDeploymentModificationRequestWithIdentifier:
        # an AiDeploymentId and STOPPED or DELETED), so a malformed item changes nothing and every
        # result names a real deployment id (AiDeploymentModificationResponseList).
        for item in items:
            if not (
                isinstance(item, Mapping)
                and isinstance(item.get("id"), str)
                and ID.fullmatch(item["id"])
                and item.get("targetStatus") in ("STOPPED", "DELETED")
            ):
                raise bad(
                    "each of 'deployments' must be {id: a deployment id, targetStatus: STOPPED "
                    f"or DELETED}}, not {str(item)[:80]}",
                    "InvalidField",
                )
        results: list[dict[str, Any]] = []
        for item in items:
            dep_id = item["id"]
            try:
                if item["targetStatus"] == "STOPPED":
                    self.stop(group, dep_id)
                    results.append({"id": dep_id, "message": "Deployment modification scheduled"})
                else:
                    results.append(self.delete(group, dep_id))
            except ApiError as exc:
                results.append({"id": dep_id, "error": {"code": exc.code, "message": exc.message}})
        return {"deployments": results}

    def remove(self, group: str, dep_id: str) -> None:
        """Forget a deployment and its files (caller holds the store lock and saves)."""
        dep = self.store.in_group("deployments", group).pop(dep_id, None)
        if dep and dep.get("_process"):
            kill_recorded(dep["_process"], self.runner_settings.builder)
        remove_tree(self.work_dir(dep_id))


@dataclass
class Events:
    """The runner's line to the service, for one deployment."""

    deployments: Deployments
    group: str
    dep_id: str
    runner: Runner | None = field(default=None)

    def log(self, line: str) -> None:
        self.deployments.logs.append(self.dep_id, line)

    def phase(self, message: str) -> None:
        assert self.runner is not None
        store = self.deployments.store
        with store.lock:
            dep = store.in_group("deployments", self.group).get(self.dep_id)
            status = dep["status"] if dep else None
        if status in ("UNKNOWN", "PENDING"):
            self.deployments.update_from_runner(
                self.group, self.dep_id, self.runner, status="PENDING", statusMessage=message
            )

    def pending(self, message: str, details: dict[str, Any]) -> None:
        assert self.runner is not None
        self.deployments.update_from_runner(
            self.group,
            self.dep_id,
            self.runner,
            status="PENDING",
            statusMessage=message,
            statusDetails=details,
        )

    def running(self, port: int) -> None:
        assert self.runner is not None
        self.deployments.update_from_runner(self.group, self.dep_id, self.runner, status="RUNNING")

    def dead(self, reason: str, message: str) -> None:
        assert self.runner is not None
        self.deployments.update_from_runner(
            self.group,
            self.dep_id,
            self.runner,
            status="DEAD",
            statusMessage=message,
            statusDetails={"reason": reason, "message": message},
        )

    def process(self, info: dict[str, Any] | None) -> None:
        self.deployments.set_process(self.group, self.dep_id, info)

    def object_store(self, name: str) -> ObjectStore | None:
        return self.deployments.object_stores.resolve(self.group, name)

    def docker_config(self, name: str) -> dict[str, Any] | None:
        return self.deployments.registry_secrets.docker_config(name)


# --- HTTP: /v2/lm/deployments ------------------------------------------------------------------

router = APIRouter(prefix="/v2/lm", dependencies=[Depends(auth)])


@router.post("/deployments", status_code=202)
def dep_create(
    response: Response,
    core: Core,
    group: GroupList,
    body: JsonBody,
) -> dict[str, Any]:
    return created(response, core, "deployments", core.deployments.create(group, body))


@router.patch("/deployments", status_code=202)
def dep_bulk(core: Core, group: GroupList, body: JsonBody) -> dict[str, Any]:
    return core.deployments.bulk_modify(group, body)


@router.get("/deployments/$count")
def dep_count(core: Core, group: GroupList, query: Query) -> PlainTextResponse:
    return PlainTextResponse(str(len(core.deployments.list_all(group, query))))


@router.get("/deployments")
def dep_query(core: Core, group: GroupList, query: Query) -> dict[str, Any]:
    return listing(core.deployments.list_all(group, query), query)


@router.get("/deployments/{dep_id}/logs")
def dep_logs(dep_id: str, core: Core, group: GroupItem, query: Query) -> dict[str, Any]:
    return core.deployments.read_logs(group, dep_id, query)


@router.get("/deployments/{dep_id}")
def dep_get(dep_id: str, core: Core, group: GroupItem, query: Query) -> dict[str, Any]:
    return core.deployments.get(group, dep_id, query)


@router.patch("/deployments/{dep_id}", status_code=202)
def dep_patch(dep_id: str, core: Core, group: GroupItem, body: JsonBody) -> dict[str, Any]:
    return core.deployments.modify(group, dep_id, body)


@router.delete("/deployments/{dep_id}", status_code=202)
def dep_delete(dep_id: str, core: Core, group: GroupItem) -> dict[str, Any]:
    return core.deployments.delete(group, dep_id)
