"""The local AI Core's ``/v2/admin`` resources: resource groups, object store secrets (per
resource group, listed as ``<name>-object-store-secret`` as on the service), docker registry
secrets, git repositories and applications (``/status``, ``/refresh``), instance types.

Secrets' credentials go to ``secrets.json`` only; ``state.json`` and every answer leave them out.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import SecretStr

from labkit.local.aicore.common import (
    DEFAULT_RESOURCE_GROUP,
    TENANT_ID,
    ZONE_ID,
    ApiError,
    bad,
    check_labels,
    check_text,
    iso,
    listing,
    log,
    missing,
    now,
    public,
)
from labkit.local.aicore.deps import Core, GroupDefault, JsonBody, Query, auth
from labkit.local.aicore.gitsync import GitSync, repo_reachable
from labkit.local.aicore.runspec import ObjectStore
from labkit.local.aicore.store import Store
from labkit.util import names as rules

if TYPE_CHECKING:
    from labkit.local.aicore.deployments import Deployments

# BckndResourceGroupLabel's key, as the spec writes it (its dots unescaped), at most 63 long.
_RG_LABEL_KEY = re.compile(r"ext.ai.sap.com/(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]){1,48}")
_RG_LABEL_KEY_MAX = 63
_REPO_NAME = re.compile(r"[a-z0-9\-]{1,51}")
_APP_NAME = re.compile(r"[a-z0-9\-]{3,54}")
_SECRET_SUFFIX = "-object-store-secret"


# --- resource groups ---------------------------------------------------------------------------


def new_resource_group(group: str, labels: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "resourceGroupId": group,
        "tenantId": TENANT_ID,
        "zoneId": ZONE_ID,
        "createdAt": iso(now()),
        "labels": labels,
        "status": "PROVISIONED",
        "statusMessage": "",
    }


class ResourceGroups:
    """Resource groups; ``default`` always exists. Deleting one deletes everything in it."""

    def __init__(self, store: Store, deployments: Deployments) -> None:
        self.store = store
        self.deployments = deployments
        with store.lock:
            groups = store.data["resourceGroups"]
            if DEFAULT_RESOURCE_GROUP not in groups:
                groups[DEFAULT_RESOURCE_GROUP] = new_resource_group(DEFAULT_RESOURCE_GROUP, [])
                store.save()

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

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        group = check_text(body, "resourceGroupId", pattern=rules.RESOURCE_GROUP_ID, max_len=253)
        assert group is not None
        labels = check_labels(
            body.get("labels"), _RG_LABEL_KEY, "labels", max_key_len=_RG_LABEL_KEY_MAX
        )
        with self.store.lock:
            groups = self.store.data["resourceGroups"]
            if group in groups:
                raise bad(f"resource group '{group}' already exists", "AlreadyExists")
            groups[group] = new_resource_group(group, labels)
            self.store.save()
        log.info("resource group %s created", group)
        return {"resourceGroupId": group, "tenantId": TENANT_ID, "zoneId": ZONE_ID}

    def list_all(self) -> list[dict[str, Any]]:
        return self.store.copies("resourceGroups")

    def get(self, group: str) -> dict[str, Any]:
        return self.store.copy_of("resourceGroups", group, f"resource group '{group}'")

    def patch(self, group: str, body: Mapping[str, Any]) -> None:
        labels = check_labels(
            body.get("labels"), _RG_LABEL_KEY, "labels", max_key_len=_RG_LABEL_KEY_MAX
        )
        with self.store.lock:
            found = self.store.data["resourceGroups"].get(group)
            if found is None:
                raise missing(f"resource group '{group}'")
            found["labels"] = labels
            self.store.save()

    def delete(self, group: str) -> dict[str, Any]:
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
            runner = self.deployments.runners.pop(dep_id, None)
            if runner is not None:
                runner.stop()
        with self.store.lock:
            for dep_id in deployments:
                self.deployments.remove(group, dep_id)
            for kind in ("objectStoreSecrets", "artifacts", "configurations", "deployments"):
                self.store.data[kind].pop(group, None)
            self.store.secrets["objectStore"].pop(group, None)
            del self.store.data["resourceGroups"][group]
            self.store.save()
            self.store.save_secrets()
        return {"id": group, "message": "Resource group deletion scheduled"}


# --- object store secrets ----------------------------------------------------------------------


def _object_store_body(
    body: Mapping[str, Any], *, for_post: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    name = check_text(
        body, "name", pattern=rules.OBJECT_STORE_SECRET_NAME if for_post else None, max_len=233
    )
    kind = check_text(body, "type")
    data = body.get("data")
    if not isinstance(data, Mapping) or not all(isinstance(v, str) for v in data.values()):
        raise bad("'data' must be an object of strings (the store's credentials)", "InvalidField")
    meta: dict[str, Any] = {"name": name, "type": kind}
    for key in ("bucket", "endpoint", "region", "pathPrefix", "verifyssl", "usehttps"):
        value = check_text(body, key, required=False)
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


def _object_store_status(meta: Mapping[str, Any]) -> dict[str, Any]:
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


class ObjectStoreSecrets:
    """Object store secrets of each resource group; the storage initializer resolves them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, group: str, body: Mapping[str, Any]) -> dict[str, Any]:
        meta, data = _object_store_body(body, for_post=True)
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

    def list_all(self, group: str) -> list[dict[str, Any]]:
        with self.store.lock:
            return [
                _object_store_status(m)
                for m in self.store.in_group("objectStoreSecrets", group).values()
            ]

    def _name(self, group: str, name: str) -> str:
        with self.store.lock:
            known = self.store.in_group("objectStoreSecrets", group)
            for candidate in (name, name.removesuffix(_SECRET_SUFFIX)):
                if candidate in known:
                    return candidate
        raise missing(f"object store secret '{name}' in resource group '{group}'")

    def get(self, group: str, name: str) -> dict[str, Any]:
        name = self._name(group, name)
        with self.store.lock:
            return _object_store_status(self.store.in_group("objectStoreSecrets", group)[name])

    def patch(self, group: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = self._name(group, name)
        meta, data = _object_store_body({**body, "name": name}, for_post=False)
        with self.store.lock:
            created = self.store.in_group("objectStoreSecrets", group)[name].get("createdAt")
            self.store.in_group("objectStoreSecrets", group)[name] = {**meta, "createdAt": created}
            self.store.secrets["objectStore"].setdefault(group, {})[name] = data
            self.store.save_secrets()
            self.store.save()
        return {"id": name, "message": "Secret has been modified"}

    def delete(self, group: str, name: str) -> dict[str, Any]:
        name = self._name(group, name)
        with self.store.lock:
            del self.store.in_group("objectStoreSecrets", group)[name]
            self.store.secrets["objectStore"].get(group, {}).pop(name, None)
            self.store.save_secrets()
            self.store.save()
        return {"id": name, "message": "Object Store Secret has been deleted"}

    def resolve(self, group: str, name: str) -> ObjectStore | None:
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


# --- docker registry secrets -------------------------------------------------------------------


def _docker_data(body: Mapping[str, Any]) -> dict[str, str]:
    data = body.get("data")
    if not isinstance(data, Mapping) or set(data) != {".dockerconfigjson"}:
        raise bad("'data' must hold exactly '.dockerconfigjson'", "InvalidField")
    text = data[".dockerconfigjson"]
    try:
        parsed = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, Mapping) or not isinstance(parsed.get("auths"), Mapping):
        raise bad("data['.dockerconfigjson'] must be a JSON object with 'auths'", "InvalidField")
    return {".dockerconfigjson": text}


class DockerRegistrySecrets:
    """Docker registry secrets (tenant-wide); predictors' imagePullSecrets name them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name = check_text(body, "name", pattern=rules.DOCKER_REGISTRY_SECRET_NAME, max_len=63)
        assert name is not None
        data = _docker_data(body)
        with self.store.lock:
            known = self.store.data["dockerRegistrySecrets"]
            if name in known:
                raise bad(f"docker registry secret '{name}' already exists", "AlreadyExists")
            known[name] = {"name": name, "createdAt": iso(now())}
            self.store.secrets["dockerRegistry"][name] = data
            self.store.save_secrets()
            self.store.save()
        log.info("docker registry secret %s created", name)
        # A tenant's answer, as SAP's BYOM sample recorded it (SAP-samples/btp-generative-ai-hub-
        # use-cases, 10-byom-oss-llm-ai-core/byom-oss-llm-code/00-init-config.ipynb, cell 11).
        return {"message": "secret has been created"}

    def list_all(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [{"name": n} for n in self.store.data["dockerRegistrySecrets"]]

    def get(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            if name not in self.store.data["dockerRegistrySecrets"]:
                raise missing(f"docker registry secret '{name}'")
        return {"name": name}

    def patch(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        data = _docker_data(body)
        with self.store.lock:
            if name not in self.store.data["dockerRegistrySecrets"]:
                raise missing(f"docker registry secret '{name}'")
            self.store.secrets["dockerRegistry"][name] = data
            self.store.save_secrets()
        return {"id": name, "message": "Secret has been modified"}

    def delete(self, name: str) -> dict[str, Any]:
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


# --- repositories and applications -------------------------------------------------------------


class Repositories:
    """Git repositories on-boarded for applications (on this machine: paths or file:// URLs)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def _view(repo: Mapping[str, Any]) -> dict[str, Any]:
        problem = repo_reachable(repo["url"])
        return {
            "name": repo["name"],
            "url": repo["url"],
            "status": "ERROR" if problem else "COMPLETED",
        }

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        url = check_text(body, "url")
        check_text(body, "username")
        check_text(body, "password")  # checked, never stored: local repositories need none
        assert url is not None
        name = check_text(body, "name", required=False, pattern=_REPO_NAME)
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
        # The tenant's wording (00-init-config.ipynb cell 14 of SAP's BYOM sample, and
        # SAP-samples/ai-core-samples 06_Cloud_Connector_Demo/demo.ipynb): with the full stop.
        return {"id": name, "message": "Repository has been on-boarded."}

    def list_all(self) -> list[dict[str, Any]]:
        with self.store.lock:
            repos = list(self.store.data["repositories"].values())
        return [self._view(r) for r in repos]

    def get(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            repo = self.store.data["repositories"].get(name)
        if repo is None:
            raise missing(f"repository '{name}'")
        return self._view(repo)

    def patch(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        username = check_text(body, "username")
        check_text(body, "password")
        with self.store.lock:
            repo = self.store.data["repositories"].get(name)
            if repo is None:
                raise missing(f"repository '{name}'")
            repo["username"] = username
            self.store.save()
        return {"id": name, "message": "Repository has been updated"}

    def delete(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            if self.store.data["repositories"].pop(name, None) is None:
                raise missing(f"repository '{name}'")
            self.store.save()
        return {"id": name, "message": "The repository has been off-boarded."}


class Applications:
    """ArgoCD applications: what to sync from which repository (the sync is :class:`GitSync`)."""

    def __init__(self, store: Store, sync: GitSync) -> None:
        self.store = store
        self.sync = sync

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        revision = check_text(body, "revision")
        path = check_text(body, "path")
        url = check_text(body, "repositoryUrl", required=False)
        repo_name = check_text(body, "repositoryName", required=False)
        name = check_text(body, "applicationName", required=False, pattern=_APP_NAME)
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
                "_dueAt": self.sync.first_due(),
                "_sync": {
                    "healthStatus": "Progressing",
                    "syncStatus": "Unknown",
                    "message": "sync scheduled",
                },
            }
            self.store.save()
        log.info("application %s created", name)
        self.sync.schedule(name)
        # The tenant's wording (00-init-config.ipynb cell 14 of SAP's BYOM sample).
        return {"id": name, "message": "Application has been successfully created."}

    def list_all(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [public(a) for a in self.store.data["applications"].values()]

    def get(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            app = self.store.data["applications"].get(name)
            if app is None:
                raise missing(f"application '{name}'")
            return public(app)

    def patch(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        fields = {k: check_text(body, k) for k in ("repositoryUrl", "revision", "path")}
        with self.store.lock:
            app = self.store.data["applications"].get(name)
            if app is None:
                raise missing(f"application '{name}'")
            app.update(fields)
            self.store.save()
        self.sync.schedule(name)
        return {"id": name, "message": "ArgoCD application has been updated"}

    def delete(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            if self.store.data["applications"].pop(name, None) is None:
                raise missing(f"application '{name}'")
            self.sync.apply(name, {})
            self.store.save()
        return {"id": name, "message": "ArgoCD application has been deleted"}

    def status(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            app = self.store.data["applications"].get(name)
            if app is None:
                raise missing(f"application '{name}'")
            sync = dict(app.get("_sync") or {})
            if not sync.get("syncFinishedAt"):
                # A tenant has no status for an application before its first sync (SAP's AI
                # Core set-up tutorial: "KeyError: 'operationState'" ... "wait for 3 minutes").
                raise ApiError(
                    404,
                    f"status of application '{name}' not found: its first sync has not run "
                    "yet (AI Core syncs about every 3 minutes); try again later",
                    "NotFound",
                )
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

    def refresh(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            if name not in self.store.data["applications"]:
                raise missing(f"application '{name}'")
        self.sync.schedule(name)
        return {"id": name, "message": "Refresh of ArgoCD application has been scheduled"}


# --- HTTP: /v2/admin ---------------------------------------------------------------------------

router = APIRouter(prefix="/v2/admin", dependencies=[Depends(auth)])


# admin: resource groups
@router.post("/resourceGroups", status_code=202)
def rg_create(core: Core, body: JsonBody) -> dict[str, Any]:
    return core.resource_groups.create(body)


@router.get("/resourceGroups")
def rg_query(core: Core, query: Query) -> dict[str, Any]:
    return listing(core.resource_groups.list_all(), query)


@router.get("/resourceGroups/{group}")
def rg_get(group: str, core: Core) -> dict[str, Any]:
    return core.resource_groups.get(group)


@router.patch("/resourceGroups/{group}")
def rg_patch(group: str, core: Core, body: JsonBody) -> Response:
    core.resource_groups.patch(group, body)
    return Response(status_code=202)


@router.delete("/resourceGroups/{group}", status_code=202)
def rg_delete(group: str, core: Core) -> dict[str, Any]:
    return core.resource_groups.delete(group)


# admin: object store secrets
@router.post("/objectStoreSecrets", status_code=202)
def oss_create(core: Core, group: GroupDefault, body: JsonBody) -> dict[str, Any]:
    return core.object_stores.create(group, body)


@router.get("/objectStoreSecrets")
def oss_query(core: Core, group: GroupDefault, query: Query) -> dict[str, Any]:
    return listing(core.object_stores.list_all(group), query)


@router.get("/objectStoreSecrets/{name}")
def oss_get(name: str, core: Core, group: GroupDefault) -> dict[str, Any]:
    return core.object_stores.get(group, name)


@router.patch("/objectStoreSecrets/{name}", status_code=202)
def oss_patch(name: str, core: Core, group: GroupDefault, body: JsonBody) -> dict[str, Any]:
    return core.object_stores.patch(group, name, body)


@router.delete("/objectStoreSecrets/{name}", status_code=202)
def oss_delete(name: str, core: Core, group: GroupDefault) -> dict[str, Any]:
    return core.object_stores.delete(group, name)


# admin: docker registry secrets
@router.post("/dockerRegistrySecrets", status_code=202)
def drs_create(core: Core, body: JsonBody) -> dict[str, Any]:
    return core.registry_secrets.create(body)


@router.get("/dockerRegistrySecrets")
def drs_query(core: Core, query: Query) -> dict[str, Any]:
    return listing(core.registry_secrets.list_all(), query)


@router.get("/dockerRegistrySecrets/{name}")
def drs_get(name: str, core: Core) -> dict[str, Any]:
    return core.registry_secrets.get(name)


@router.patch("/dockerRegistrySecrets/{name}", status_code=202)
def drs_patch(name: str, core: Core, body: JsonBody) -> dict[str, Any]:
    return core.registry_secrets.patch(name, body)


@router.delete("/dockerRegistrySecrets/{name}", status_code=202)
def drs_delete(name: str, core: Core) -> dict[str, Any]:
    return core.registry_secrets.delete(name)


# admin: repositories and applications
@router.post("/repositories")
def repo_create(core: Core, body: JsonBody) -> dict[str, Any]:
    return core.repositories.create(body)


@router.get("/repositories")
def repo_query(core: Core, query: Query) -> dict[str, Any]:
    return listing(core.repositories.list_all(), query)


@router.get("/repositories/{name}")
def repo_get(name: str, core: Core) -> dict[str, Any]:
    return core.repositories.get(name)


@router.patch("/repositories/{name}")
def repo_patch(name: str, core: Core, body: JsonBody) -> dict[str, Any]:
    return core.repositories.patch(name, body)


@router.delete("/repositories/{name}")
def repo_delete(name: str, core: Core) -> dict[str, Any]:
    return core.repositories.delete(name)


@router.post("/applications")
def app_create(core: Core, body: JsonBody) -> dict[str, Any]:
    return core.applications.create(body)


@router.get("/applications")
def app_query(core: Core, query: Query) -> dict[str, Any]:
    return listing(core.applications.list_all(), query)


@router.get("/applications/{name}/status")
def app_status(name: str, core: Core) -> dict[str, Any]:
    return core.applications.status(name)


@router.post("/applications/{name}/refresh", status_code=202)
def app_refresh(name: str, core: Core) -> dict[str, Any]:
    return core.applications.refresh(name)


@router.get("/applications/{name}")
def app_get(name: str, core: Core) -> dict[str, Any]:
    return core.applications.get(name)


@router.patch("/applications/{name}")
def app_patch(name: str, core: Core, body: JsonBody) -> dict[str, Any]:
    return core.applications.patch(name, body)


@router.delete("/applications/{name}")
def app_delete(name: str, core: Core) -> dict[str, Any]:
    return core.applications.delete(name)


def public_instance_types() -> dict[str, dict[str, Any]]:
    """The public resource plans (labkit/resource_plans.toml, from SAP Help "Choose an
    Instance") in the shape of BckndInstanceType: memory as a Kubernetes quantity in G (SAP
    publishes GB), CPUs, GPUs. SAP publishes no billable units per plan there: 0 (unverified)."""
    from labkit.sizing import load_catalogue

    types: dict[str, dict[str, Any]] = {}
    for plan in load_catalogue():
        if not plan.public or plan.kind != "resourcePlan":
            continue
        gb = round(plan.memory_bytes / 1e9) if plan.memory_bytes else None
        types[plan.name] = {
            "memory": f"{gb}G" if gb is not None else "",
            "cpu": plan.cpus if plan.cpus is not None else 0,
            "gpu": plan.gpus,
            "billableUnitsPerHour": plan.billable_units_per_hour or 0,
        }
    return types


@router.get("/resources/instanceTypes")
def instance_types() -> dict[str, Any]:
    # What a tenant lists here (SAP Help "Choose an Instance": GET .../resources/instanceType);
    # the local AI Core has the public resource plans, so it answers those.
    return {"instanceTypes": public_instance_types()}
