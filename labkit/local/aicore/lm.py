"""The local AI Core's ``/v2/lm`` catalogue: scenarios, versions and executables (from the synced
templates), artifacts, configurations (their bindings checked against the executable), and
``/meta``. Deployments are :mod:`labkit.local.aicore.deployments`'."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse, Response

from labkit.local.aicore.common import (
    API_VERSION,
    ID,
    LABEL_KEY,
    NAME,
    bad,
    check_labels,
    check_text,
    iso,
    listing,
    log,
    matches_search,
    missing,
    new_uuid,
    now,
    selected,
)
from labkit.local.aicore.deps import Core, GroupItem, GroupList, JsonBody, Query, auth, created
from labkit.local.aicore.store import Store

_ARTIFACT_URL = re.compile(r"([a-z0-9-]+)://.+")
_ARTIFACT_KINDS = ("model", "dataset", "resultset", "other")


def with_scenario(store: Store, obj: dict[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
    """``$expand=scenario``: the object with its scenario."""
    expand = query.get("$expand")
    if expand is None:
        return obj
    if expand != "scenario":
        raise bad("$expand takes only 'scenario'", "InvalidParameter")
    with store.lock:
        scenario = store.data["scenarios"].get(obj["scenarioId"])
    return {**obj, "scenario": dict(scenario) if scenario else None}


# --- scenarios and executables -----------------------------------------------------------------


class Scenarios:
    """Scenarios, their versions and executables, as the applications' last syncs left them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def list_all(self) -> list[dict[str, Any]]:
        return self.store.copies("scenarios")

    def get(self, sid: str) -> dict[str, Any]:
        return self.store.copy_of("scenarios", sid, f"scenario '{sid}'")

    def executables(self, sid: str, version: str | None = None) -> list[dict[str, Any]]:
        with self.store.lock:
            return [
                dict(e)
                for e in self.store.data["executables"].values()
                if e["scenarioId"] == sid and (version is None or e["versionId"] == version)
            ]

    def executable(self, sid: str, eid: str) -> dict[str, Any]:
        return self.store.copy_of(
            "executables", f"{sid}/{eid}", f"executable '{eid}' of scenario '{sid}'"
        )

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
        # Every version here is a MetaVersion, x.y.z (specs/AI_CORE_API.yaml).
        "extensions": {"resourceGroups": {"version": "1.0.0"}},
    }


# --- artifacts ---------------------------------------------------------------------------------


class Artifacts:
    """Artifacts registered in each resource group (the model's ``ai://`` URL)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, group: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = check_text(body, "name", pattern=NAME, max_len=256)
        kind = check_text(body, "kind")
        if kind not in _ARTIFACT_KINDS:
            raise bad(f"'kind' must be one of {', '.join(_ARTIFACT_KINDS)}", "InvalidField")
        url = check_text(body, "url", max_len=1024)
        if not _ARTIFACT_URL.match(url or ""):
            raise bad(
                f"'url' {url!r} is not <scheme>://<path>, e.g. ai://default/models/x",
                "InvalidField",
            )
        sid = check_text(body, "scenarioId", pattern=ID)
        description = check_text(body, "description", required=False, max_len=5000)
        labels = check_labels(body.get("labels"), LABEL_KEY, "labels")
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

    def list_all(self, group: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
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
                or not selected(labels, selectors)
                or not matches_search(query, a["name"], a.get("description"))
            ):
                continue
            out.append(with_scenario(self.store, dict(a), query))
        return out

    def get(self, group: str, art_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        with self.store.lock:
            found = self.store.in_group("artifacts", group).get(art_id)
            if found is None:
                raise missing(f"artifact '{art_id}' in resource group '{group}'")
            return with_scenario(self.store, dict(found), query)


# --- configurations ----------------------------------------------------------------------------


def _check_parameters(executable: Mapping[str, Any], params: list[Any]) -> list[dict[str, str]]:
    declared = {p["name"] for p in executable.get("parameters", [])}
    out_params, seen = [], set()
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
    return out_params


def _check_artifacts(
    group: str, executable: Mapping[str, Any], arts: list[Any], known: Mapping[str, Any]
) -> list[dict[str, str]]:
    declared_arts = {a["name"] for a in executable.get("inputArtifacts", [])}
    out_arts, seen = [], set()
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
    return out_arts


class Configurations:
    """Configurations of each resource group: an executable with its bindings."""

    def __init__(self, store: Store) -> None:
        self.store = store

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
        out_params = _check_parameters(executable, params)
        with self.store.lock:
            known = self.store.in_group("artifacts", group)
        return out_params, _check_artifacts(group, executable, arts, known)

    def create(self, group: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = check_text(body, "name", pattern=NAME, max_len=256)
        sid = check_text(body, "scenarioId", pattern=ID)
        eid = check_text(body, "executableId", pattern=ID)
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

    def list_all(self, group: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        executables = [e for e in (query.get("executableIds") or "").split(",") if e]
        with self.store.lock:
            items = list(self.store.in_group("configurations", group).values())
        return [
            with_scenario(self.store, dict(c), query)
            for c in items
            if not (query.get("scenarioId") and c["scenarioId"] != query["scenarioId"])
            and not (executables and c["executableId"] not in executables)
            and matches_search(query, c["name"])
        ]

    def get(self, group: str, conf_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        with self.store.lock:
            found = self.store.in_group("configurations", group).get(conf_id)
            if found is None:
                raise missing(f"configuration '{conf_id}' in resource group '{group}'")
            return with_scenario(self.store, dict(found), query)


# --- HTTP: /v2/lm ------------------------------------------------------------------------------

router = APIRouter(prefix="/v2/lm", dependencies=[Depends(auth)])


# lm: scenarios and executables
@router.get("/meta")
def meta_get() -> dict[str, Any]:
    return meta()


@router.get("/scenarios")
def sc_query(core: Core, group: GroupList) -> dict[str, Any]:
    items = core.scenarios.list_all()
    return {"count": len(items), "resources": items}


@router.get("/scenarios/{sid}")
def sc_get(sid: str, core: Core, group: GroupItem) -> dict[str, Any]:
    return core.scenarios.get(sid)


@router.get("/scenarios/{sid}/versions")
def sc_versions(sid: str, core: Core, group: GroupList) -> dict[str, Any]:
    items = core.scenarios.versions(sid)
    return {"count": len(items), "resources": items}


@router.get("/scenarios/{sid}/executables")
def ex_query(sid: str, core: Core, group: GroupList, query: Query) -> dict[str, Any]:
    items = core.scenarios.executables(sid, query.get("versionId"))
    return {"count": len(items), "resources": items}


@router.get("/scenarios/{sid}/executables/{eid}")
def ex_get(sid: str, eid: str, core: Core, group: GroupItem) -> dict[str, Any]:
    return core.scenarios.executable(sid, eid)


# lm: artifacts
@router.post("/artifacts", status_code=201)
def art_create(
    response: Response,
    core: Core,
    group: GroupList,
    body: JsonBody,
) -> dict[str, Any]:
    return created(response, core, "artifacts", core.artifacts.create(group, body))


@router.get("/artifacts/$count")
def art_count(core: Core, group: GroupList, query: Query) -> PlainTextResponse:
    return PlainTextResponse(str(len(core.artifacts.list_all(group, query))))


@router.get("/artifacts")
def art_query(core: Core, group: GroupList, query: Query) -> dict[str, Any]:
    return listing(core.artifacts.list_all(group, query), query)


@router.get("/artifacts/{art_id}")
def art_get(art_id: str, core: Core, group: GroupItem, query: Query) -> dict[str, Any]:
    return core.artifacts.get(group, art_id, query)


# lm: configurations
@router.post("/configurations", status_code=201)
def conf_create(
    response: Response,
    core: Core,
    group: GroupList,
    body: JsonBody,
) -> dict[str, Any]:
    return created(response, core, "configurations", core.configurations.create(group, body))


@router.get("/configurations/$count")
def conf_count(core: Core, group: GroupList, query: Query) -> PlainTextResponse:
    return PlainTextResponse(str(len(core.configurations.list_all(group, query))))


@router.get("/configurations")
def conf_query(core: Core, group: GroupList, query: Query) -> dict[str, Any]:
    return listing(core.configurations.list_all(group, query), query)


@router.get("/configurations/{conf_id}")
def conf_get(conf_id: str, core: Core, group: GroupItem, query: Query) -> dict[str, Any]:
    return core.configurations.get(group, conf_id, query)
