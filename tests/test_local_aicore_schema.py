"""SAP's AI API spec (specs/AI_CORE_API.yaml) fuzzed against the local AI Core with schemathesis.

Every operation the local AI Core serves gets generated path, query, header and body values
(valid and invalid ones), sent with the local service key's token and a resource group of the
test's own; each answer must be no server error, with a status code, a content type and a body
the spec documents. Two walls no request may cross are tested explicitly: the token (no request
without a valid one is served) and the resource group (an object of another group is not found).

The spec has no links, so there is no stateful (state machine) run; each operation is fuzzed on
its own with a fixed, derandomized budget (tests/conftest.py's profile, lowered below).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from aicore_emulator import EXECUTABLE, SCENARIO, Emulator, _spec_path, onboard, validate
from hypothesis import settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

GROUP = "fuzz-group"  # the resource group every generated request names
OTHER = "other-group"  # holds objects no request for GROUP may see or change
# Each operation is a request to the in-process server: a tenth of the profile's examples keeps
# the file well under a minute on a 2-core machine (about 50 operations).
EXAMPLES = 10
OTHER_IDS: dict[str, str] = {}  # what the fixture created in OTHER
# About 40 s of fuzzing plus 10 s of collection: `make test` and `make fuzz`, not `make check`
# (conftest.py's SLOW_MODULES skips the module's collection there).
pytestmark = pytest.mark.slow


def _normal(path: str) -> str:
    """A path with its parameters' names blanked, so the app's and the spec's paths compare."""
    return re.sub(r"\{[^}]+\}", "{}", path)


@functools.cache
def served() -> frozenset[tuple[str, str]]:
    """(METHOD, /v2-relative path, parameters blanked) of the local AI Core's AI API routes."""
    from fastapi.routing import APIRoute

    from labkit.local.aicore import admin, deployments, lm

    out = set()
    for router in (admin.router, deployments.router, lm.router):
        for route in router.routes:
            assert isinstance(route, APIRoute)
            out.update((m, _normal(route.path.removeprefix("/v2"))) for m in route.methods)
    return frozenset(out)


# Responses whose `id` echoes a name the caller chose. The spec types those ids as BckndId
# (4-64 of [\w.-]) while it accepts shorter or longer names for the same objects (resource
# groups 3-253, object store secrets from 1, repositories 1-51, applications 3-54), so an object
# the spec lets one create (e.g. application "abc") could not be deleted without a "violation".
# The spec contradicts itself there; these ids are checked as the names they echo (a string).
_ECHOED_NAME_IDS = (
    "BckndResourceGroupDeletionResponse",
    "BckndobjectStoreSecretDeletionResponse",
    "BckndobjectStoreSecretModificationResponse",
    "BcknddockerRegistrySecretDeletionResponse",
    "BcknddockerRegistrySecretModificationResponse",
    "BckndArgoCDRepositoryCreationResponse",
    "BckndArgoCDRepositoryDeletionResponse",
    "BckndArgoCDRepositoryModificationResponse",
    "BckndArgoCDApplicationDeletionResponse",
    "BckndArgoCDApplicationCreationResponse",
    "BckndArgoCDApplicationModificationResponse",
    "BckndArgoCDApplicationRefreshResponse",
)


def _load_spec() -> dict[str, Any]:
    """SAP's spec, with the echoed-name ids above checked as strings."""
    spec = yaml.safe_load(_spec_path().read_text(encoding="utf-8"))
    schemas = spec["components"]["schemas"]
    for name in _ECHOED_NAME_IDS:
        assert schemas[name]["properties"]["id"] == {"$ref": "#/components/schemas/BckndId"}
        schemas[name]["properties"]["id"] = {"type": "string", "minLength": 1}
    return spec


schema = schemathesis.openapi.from_dict(_load_spec()).include(
    lambda ctx: (ctx.operation.method.upper(), _normal(ctx.operation.path)) in served()
)


def _post(emu: Emulator, path: str, body: Any, group: str | None) -> httpx.Response:
    resp = emu.post(path, body, group)
    assert resp.status_code in (200, 201, 202), resp.text
    return resp


def _secret(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "S3",
        "bucket": "b",
        "endpoint": "127.0.0.1:9",
        "data": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "not-a-real-secret"},
    }


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A local AI Core with the shipped template synced, the resource groups GROUP and OTHER,
    and in OTHER an artifact, a configuration and an object store secret (in ``emu.other``)."""
    tmp = tmp_path_factory.mktemp("schema")
    emu = Emulator(tmp / "aicore").start()
    try:
        onboard(emu, tmp)
        for group in (GROUP, OTHER):
            _post(emu, "/v2/admin/resourceGroups", {"resourceGroupId": group}, None)
        _post(emu, "/v2/admin/objectStoreSecrets", _secret("other-store"), OTHER)
        art = _post(emu, "/v2/lm/artifacts", {
            "name": "other-model", "kind": "model", "url": "ai://other-store/m",
            "scenarioId": SCENARIO,
        }, OTHER).json()["id"]  # fmt: skip
        conf = _post(emu, "/v2/lm/configurations", {
            "name": "other-conf", "scenarioId": SCENARIO, "executableId": EXECUTABLE,
            "parameterBindings": [], "inputArtifactBindings": [{"key": "model", "artifactId": art}],
        }, OTHER).json()["id"]  # fmt: skip
        OTHER_IDS.update(artifact=art, configuration=conf, store="other-store")
        yield emu
    finally:
        emu.stop()


def _uvicorn_refused(response: Any) -> bool:
    """uvicorn's own answer to a request its HTTP parser refuses (control characters in the
    target): plain text, before the app sees it. SAP's gateway answers such requests itself too."""
    return response.status_code == 400 and response.text == "Invalid HTTP request received."


def content_type(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' content type check, except for the HTTP server's parser refusals."""
    if _uvicorn_refused(response):
        return None
    return content_type_conformance(ctx, response, case)


def no_other_group(ctx: Any, response: Any, case: Any) -> bool | None:
    """No answer for GROUP shows an object of OTHER."""
    leaked = [v for v in OTHER_IDS.values() if v in response.text]
    leaked = leaked if response.status_code < 300 else []
    assert not leaked, f"{case.method} {case.path} for {GROUP} shows {OTHER}'s {leaked}"
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type,
    response_schema_conformance,
    no_other_group,
]


@schema.parametrize()
@settings(max_examples=EXAMPLES)
def test_operation_conforms_to_spec(case: Any, emu: Emulator) -> None:
    case.headers = {
        **(case.headers or {}),
        "Authorization": f"Bearer {emu.token()}",
        "AI-Resource-Group": GROUP,
    }
    case.call_and_validate(base_url=emu.base + "/v2", checks=CHECKS)


# --- the walls ---------------------------------------------------------------------------------


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "abcd-1234", path)


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer not-a-token", "Basic dXNlcjpwYXNz"]
)
def test_no_operation_without_a_valid_token(emu: Emulator, authorization: str | None) -> None:
    """Every AI API route refuses a request without a valid bearer token with 401, before it
    looks at the resource group, the path or the body."""
    headers = {"AI-Resource-Group": GROUP}
    if authorization is not None:
        headers["Authorization"] = authorization
    with httpx.Client(base_url=emu.base + "/v2", headers=headers, trust_env=False) as http:
        for method, path in sorted(served()):
            body = {} if method in ("POST", "PATCH") else None
            resp = http.request(method, _concrete(path), json=body)
            assert resp.status_code == 401, (method, path, resp.status_code, resp.text)


def test_objects_of_another_resource_group_are_not_found(emu: Emulator) -> None:
    """OTHER's artifact, configuration and object store secret, asked for with GROUP: 404 for
    each read, change and delete; absent from GROUP's lists and counts; still there for OTHER."""
    art, conf, store = OTHER_IDS["artifact"], OTHER_IDS["configuration"], OTHER_IDS["store"]
    h = {"Authorization": f"Bearer {emu.token()}", "AI-Resource-Group": GROUP}
    for method, path, spec_path in [
        ("GET", f"/lm/artifacts/{art}", "/lm/artifacts/{artifactId}"),
        ("GET", f"/lm/configurations/{conf}", "/lm/configurations/{configurationId}"),
        ("GET", f"/admin/objectStoreSecrets/{store}", "/admin/objectStoreSecrets/{objectStoreName}"),
        ("DELETE", f"/admin/objectStoreSecrets/{store}", "/admin/objectStoreSecrets/{objectStoreName}"),
    ]:  # fmt: skip
        resp = httpx.request(method, emu.base + "/v2" + path, headers=h, trust_env=False)
        assert resp.status_code == 404, (method, path, resp.text)
        validate(resp.json(), spec_path, method.lower(), 404)
    patch = httpx.patch(
        f"{emu.base}/v2/admin/objectStoreSecrets/{store}",
        json=_secret(store),
        headers=h,
        trust_env=False,
    )
    assert patch.status_code == 404, patch.text
    # A configuration of GROUP cannot bind OTHER's artifact.
    bound = emu.post("/v2/lm/configurations", {
        "name": "c", "scenarioId": SCENARIO, "executableId": EXECUTABLE, "parameterBindings": [],
        "inputArtifactBindings": [{"key": "model", "artifactId": art}],
    }, GROUP)  # fmt: skip
    assert bound.status_code in (400, 404), bound.text
    for path in ("/lm/artifacts", "/lm/configurations", "/admin/objectStoreSecrets"):
        listed = emu.get("/v2" + path, GROUP)
        assert listed.status_code == 200 and art not in listed.text and conf not in listed.text
        assert f"{store}-object-store-secret" not in listed.text
    for path in ("/lm/artifacts", "/lm/configurations"):
        count = emu.get(f"/v2{path}/$count", GROUP).text
        assert count == str(emu.get("/v2" + path, GROUP).json()["count"])
    # Nothing above changed OTHER.
    assert emu.get(f"/v2/lm/artifacts/{art}", OTHER).status_code == 200
    assert emu.get(f"/v2/lm/configurations/{conf}", OTHER).status_code == 200
    assert emu.get(f"/v2/admin/objectStoreSecrets/{store}", OTHER).status_code == 200


# --- what the fuzzing found (regressions) -------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        {"id": {}, "targetStatus": "STOPPED"},  # found: the answer's id was "{}"
        {"id": "ab", "targetStatus": "STOPPED"},  # not an AiDeploymentId (4-64 of [\w.-])
        {"id": "abcd-1234", "targetStatus": "RUNNING"},
        {"id": "abcd-1234"},
        "abcd-1234",
    ],
)
def test_bulk_change_with_a_malformed_item_is_refused_whole(emu: Emulator, item: Any) -> None:
    """PATCH /lm/deployments with an item that is not {AiDeploymentId, STOPPED|DELETED}: 400
    for the request (nothing changes), not 202 with a result whose id is no deployment id."""
    resp = httpx.patch(
        f"{emu.base}/v2/lm/deployments",
        json={"deployments": [{"id": "abcd-1234", "targetStatus": "STOPPED"}, item]},
        headers={**emu.headers(GROUP), "Content-Type": "application/merge-patch+json"},
        trust_env=False,
    )
    assert resp.status_code == 400, resp.text
    validate(resp.json(), "/lm/deployments", "patch", 400)


def test_bulk_change_reports_each_unknown_deployment(emu: Emulator) -> None:
    resp = httpx.patch(
        f"{emu.base}/v2/lm/deployments",
        json={"deployments": [{"id": "abcd-1234", "targetStatus": "DELETED"}]},
        headers={**emu.headers(GROUP), "Content-Type": "application/merge-patch+json"},
        trust_env=False,
    )
    assert resp.status_code == 202, resp.text
    validate(resp.json(), "/lm/deployments", "patch", 202)
    assert resp.json()["deployments"][0]["id"] == "abcd-1234"
    assert resp.json()["deployments"][0]["error"]["code"] == "NotFound"


def test_resource_group_label_keys_are_at_most_63_long(emu: Emulator) -> None:
    """Found: a label key of 65 characters ("ext0ai0sap0com/" + 50 digits, which the spec's
    unescaped pattern matches) was stored, and every later answer with it broke the spec."""
    long_key = {"key": "ext0ai0sap0com/" + "0" * 50, "value": ""}
    created = emu.post(
        "/v2/admin/resourceGroups", {"resourceGroupId": "labels-rg", "labels": [long_key]}, None
    )
    assert created.status_code == 400 and "longer than 63" in created.text
    validate(created.json(), "/admin/resourceGroups", "post", 400)
    ok = {"key": "ext.ai.sap.com/" + "a" * 48, "value": "v"}  # 63 characters
    assert (
        emu.post(
            "/v2/admin/resourceGroups", {"resourceGroupId": "labels-rg", "labels": [ok]}, None
        ).status_code
        == 202
    )
    patched = httpx.patch(
        f"{emu.base}/v2/admin/resourceGroups/labels-rg",
        json={"labels": [long_key]},
        headers=emu.headers(None),
        trust_env=False,
    )
    assert patched.status_code == 400, patched.text
    got = emu.get("/v2/admin/resourceGroups/labels-rg", None).json()
    assert got["labels"] == [ok]
    validate(got, "/admin/resourceGroups/{resourceGroupId}", "get", 200)
