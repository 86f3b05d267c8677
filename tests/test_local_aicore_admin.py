"""The local AI Core's /v2/admin resources (labkit.local.aicore.admin): resource groups, secrets,
repositories and applications, with SAP's client and against the official spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aicore_emulator
import httpx
import pytest
from aicore_emulator import (
    TEMPLATE,
    Emulator,
    git_repo,
    validate,
)

# The fixtures of tests/aicore_emulator.py this file uses.
emulator = aicore_emulator.emulator


def test_resource_group_header_is_enforced(emulator: Emulator) -> None:
    from ai_api_client_sdk.exception import AIAPIInvalidRequestException, AIAPINotFoundException

    missing = emulator.get("/v2/lm/deployments", group=None)
    assert missing.status_code == 400 and "AI-Resource-Group" in missing.json()["error"]["message"]
    validate(missing.json(), "/lm/deployments", "get", 400)
    unknown_list = emulator.get("/v2/lm/deployments", group="nope")
    assert unknown_list.status_code == 400
    unknown_item = emulator.get("/v2/lm/deployments/d0123456789abcde", group="nope")
    assert (
        unknown_item.status_code == 404
        and "resource group 'nope'" in unknown_item.json()["error"]["message"]
    )
    validate(unknown_item.json(), "/lm/deployments/{deploymentId}", "get", 404)
    with pytest.raises(AIAPIInvalidRequestException, match="does not exist"):
        emulator.client("nope").deployment.query()
    with pytest.raises(AIAPINotFoundException, match="resource group 'nope'"):
        emulator.client("nope").deployment.get("d0123456789abcde")

    client = emulator.client()
    created = client.resource_groups.create("team-a")
    assert created.resource_group_id == "team-a"
    assert client.resource_groups.get("team-a").status == "PROVISIONED"
    listing = emulator.get("/v2/admin/resourceGroups", group=None)
    validate(listing.json(), "/admin/resourceGroups", "get", 200)
    assert {g["resourceGroupId"] for g in listing.json()["resources"]} == {"default", "team-a"}
    assert emulator.client("team-a").deployment.query().count == 0
    dup = emulator.post("/v2/admin/resourceGroups", {"resourceGroupId": "team-a"}, group=None)
    assert dup.status_code == 400
    assert (
        emulator.post("/v2/admin/resourceGroups", {"resourceGroupId": "x"}, group=None).status_code
        == 400
    )
    client.resource_groups.delete("team-a")
    with pytest.raises(AIAPINotFoundException):
        client.resource_groups.get("team-a")


def test_secrets_are_kept_apart_and_never_listed(emulator: Emulator) -> None:
    from ai_api_client_sdk.exception import AIAPINotFoundException

    client = emulator.client()
    body = {
        "name": "default", "type": "S3", "bucket": "labkit-models", "endpoint": "127.0.0.1:9000",
        "region": "us-east-1", "path_prefix": "models", "usehttps": "0",
        "data": {"AWS_ACCESS_KEY_ID": "AKIA-TEST-ID", "AWS_SECRET_ACCESS_KEY": "very-secret-key"},
    }  # fmt: skip
    assert client.object_store_secrets.create(**body).message
    got = client.object_store_secrets.get("default")
    assert got.name == "default-object-store-secret"
    assert got.metadata["storage.ai.sap.com/pathPrefix"] == "models"
    assert got.metadata["serving.kubeflow.org/s3-endpoint"] == "127.0.0.1:9000"
    raw = emulator.get("/v2/admin/objectStoreSecrets")
    validate(raw.json(), "/admin/objectStoreSecrets", "get", 200)
    validate(
        emulator.get("/v2/admin/objectStoreSecrets/default").json(),
        "/admin/objectStoreSecrets/{objectStoreName}",
        "get",
        200,
    )
    assert "very-secret-key" not in raw.text
    dup = emulator.post("/v2/admin/objectStoreSecrets", {**body, "pathPrefix": "models"})
    assert dup.status_code == 400
    client.object_store_secrets.modify(
        **{**body, "data": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "rotated"}}
    )
    resolved = emulator.core.resolve_object_store("default", "default")
    assert resolved is not None and resolved.secret_access_key.get_secret_value() == "rotated"
    assert "rotated" not in repr(resolved) and resolved.endpoint_url == "http://127.0.0.1:9000"

    config = {
        "auths": {
            "localhost:5000": {
                "username": "u",
                "password": "registry-pass",
                "auth": "dTpyZWdpc3RyeS1wYXNz",
            }
        }
    }
    client.docker_registry_secrets.create(
        "labkit-registry", {".dockerconfigjson": json.dumps(config)}
    )
    assert client.docker_registry_secrets.get("labkit-registry").name == "labkit-registry"
    listing = emulator.get("/v2/admin/dockerRegistrySecrets", group=None)
    validate(listing.json(), "/admin/dockerRegistrySecrets", "get", 200)
    assert "registry-pass" not in listing.text
    bad = emulator.post(
        "/v2/admin/dockerRegistrySecrets",
        {"name": "x-y", "data": {".dockerconfigjson": "{}"}},
        group=None,
    )
    assert bad.status_code == 400

    state = (emulator.state / "state.json").read_text()
    assert (
        "very-secret-key" not in state and "rotated" not in state and "registry-pass" not in state
    )
    secrets_file = emulator.state / "secrets.json"
    assert secrets_file.stat().st_mode & 0o777 == 0o600 and "rotated" in secrets_file.read_text()

    client.object_store_secrets.delete("default")
    client.docker_registry_secrets.delete("labkit-registry")
    with pytest.raises(AIAPINotFoundException):
        client.object_store_secrets.get("default")
    assert "rotated" not in secrets_file.read_text()


def test_admin_write_answers_match_the_spec(emulator: Emulator, tmp_path: Path) -> None:
    base = emulator.base + "/v2"

    def call(method: str, path: str, body: Any = None, group: str | None = None) -> Any:
        resp = httpx.request(
            method, base + path, json=body, headers=emulator.headers(group), trust_env=False
        )
        assert resp.status_code < 300, resp.text
        return resp

    def check(
        method: str, path: str, spec_path: str, body: Any = None, group: str | None = None
    ) -> None:
        resp = call(method, path, body, group)
        validate(resp.json(), spec_path, method.lower(), resp.status_code)

    check(
        "POST",
        "/admin/resourceGroups",
        "/admin/resourceGroups",
        {"resourceGroupId": "team-b", "labels": [{"key": "ext.ai.sap.com/team", "value": "b"}]},
    )
    validate(
        call("GET", "/admin/resourceGroups/team-b").json(),
        "/admin/resourceGroups/{resourceGroupId}",
        "get",
        200,
    )
    assert call("PATCH", "/admin/resourceGroups/team-b", {"labels": []}).status_code == 202
    check("DELETE", "/admin/resourceGroups/team-b", "/admin/resourceGroups/{resourceGroupId}")
    secret = {
        "name": "store",
        "type": "S3",
        "bucket": "b",
        "data": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"},
    }
    check("POST", "/admin/objectStoreSecrets", "/admin/objectStoreSecrets", secret, "default")
    check(
        "PATCH",
        "/admin/objectStoreSecrets/store",
        "/admin/objectStoreSecrets/{objectStoreName}",
        secret,
        "default",
    )
    check(
        "DELETE",
        "/admin/objectStoreSecrets/store",
        "/admin/objectStoreSecrets/{objectStoreName}",
        None,
        "default",
    )
    docker = {"name": "regcred", "data": {".dockerconfigjson": json.dumps({"auths": {}})}}
    check("POST", "/admin/dockerRegistrySecrets", "/admin/dockerRegistrySecrets", docker)
    check(
        "PATCH",
        "/admin/dockerRegistrySecrets/regcred",
        "/admin/dockerRegistrySecrets/{dockerRegistryName}",
        {"data": docker["data"]},
    )
    validate(
        call("GET", "/admin/dockerRegistrySecrets/regcred").json(),
        "/admin/dockerRegistrySecrets/{dockerRegistryName}",
        "get",
        200,
    )
    check(
        "DELETE",
        "/admin/dockerRegistrySecrets/regcred",
        "/admin/dockerRegistrySecrets/{dockerRegistryName}",
    )
    repo = tmp_path / "git"
    git_repo(repo, {"labkit/vllm-serving.yaml": TEMPLATE.read_text()})
    check(
        "POST",
        "/admin/repositories",
        "/admin/repositories",
        {"name": "templates", "url": str(repo), "username": "u", "password": "p"},
    )
    validate(
        call("GET", "/admin/repositories/templates").json(),
        "/admin/repositories/{repositoryName}",
        "get",
        200,
    )
    check(
        "PATCH",
        "/admin/repositories/templates",
        "/admin/repositories/{repositoryName}",
        {"username": "u2", "password": "p2"},
    )
    app = {
        "repositoryName": "templates",
        "revision": "HEAD",
        "path": "labkit",
        "applicationName": "templates-app",
    }
    check("POST", "/admin/applications", "/admin/applications", app)
    validate(
        call("GET", "/admin/applications/templates-app").json(),
        "/admin/applications/{applicationName}",
        "get",
        200,
    )
    check(
        "POST",
        "/admin/applications/templates-app/refresh",
        "/admin/applications/{applicationName}/refresh",
    )
    check(
        "PATCH",
        "/admin/applications/templates-app",
        "/admin/applications/{applicationName}",
        {"repositoryUrl": str(repo), "revision": "main", "path": "labkit"},
    )
    check("DELETE", "/admin/applications/templates-app", "/admin/applications/{applicationName}")
    check("DELETE", "/admin/repositories/templates", "/admin/repositories/{repositoryName}")
    types = call("GET", "/admin/resources/instanceTypes").json()
    validate(types, "/admin/resources/instanceTypes", "get", 200)
    # The public resource plans (labkit/resource_plans.toml, SAP Help "Choose an Instance").
    assert types["instanceTypes"]["starter"] == {
        "memory": "3G",
        "cpu": 1,
        "gpu": 0,
        "billableUnitsPerHour": 0,
    }
    assert types["instanceTypes"]["infer.s"]["gpu"] == 1
    assert "infer2.l" not in types["instanceTypes"]  # team-internal plans stay out
    missing = httpx.get(
        base + "/admin/applications/nope", headers=emulator.headers(None), trust_env=False
    )
    assert missing.status_code == 404
    validate(missing.json(), "/admin/applications/{applicationName}", "get", 404)
