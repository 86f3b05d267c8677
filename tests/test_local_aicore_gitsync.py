"""The local AI Core's git sync (labkit.local.aicore.gitsync): templates from git become
scenarios and executables, lint errors are reported, removed templates are pruned."""

from __future__ import annotations

from pathlib import Path

import aicore_emulator
import pytest
import yaml
from aicore_emulator import (
    EXECUTABLE,
    SCENARIO,
    TEMPLATE,
    Emulator,
    git_repo,
    onboard,
    synced,
    validate,
    wait_for,
)

from labkit.local.aicore import gitsync as gitsync_mod

# The fixtures of tests/aicore_emulator.py this file uses.
emulator = aicore_emulator.emulator


def test_the_shipped_template_becomes_scenario_and_executable() -> None:
    scenario, exe = gitsync_mod.executable_from(yaml.safe_load(TEMPLATE.read_text()))
    assert scenario["id"] == exe["scenarioId"] == SCENARIO and exe["id"] == EXECUTABLE
    assert exe["deployable"] is True and exe["versionId"] == "1.0.0"
    params = {p["name"]: p for p in exe["parameters"]}
    assert {"image", "modelId", "revision", "resourcePlan", "args"} <= set(params)
    assert params["resourcePlan"]["default"] == "infer.s" and "default" not in params["image"]
    assert all(p["type"] == "string" for p in exe["parameters"])
    assert (
        exe["inputArtifacts"][0]["name"] == "model" and exe["inputArtifacts"][0]["kind"] == "model"
    )


def test_applications_sync_templates_and_report_lint_errors(
    emulator: Emulator, tmp_path: Path
) -> None:
    from ai_api_client_sdk.exception import AIAPINotFoundException

    client, repo, _ = onboard(emulator, tmp_path)
    status = client.applications.get_status("labkit-app")
    assert (status.sync_status, status.health_status) == ("Synced", "Healthy")
    assert [r.status for r in status.sync_resources_status] == ["Synced"]
    validate(
        emulator.get("/v2/admin/applications/labkit-app/status", group=None).json(),
        "/admin/applications/{applicationName}/status",
        "get",
        200,
    )
    validate(
        emulator.get("/v2/admin/applications", group=None).json(), "/admin/applications", "get", 200
    )
    validate(
        emulator.get("/v2/admin/repositories", group=None).json(), "/admin/repositories", "get", 200
    )
    assert client.repositories.get("lab-templates").status.value == "COMPLETED"
    assert client.applications.get("labkit-app").repository_url == str(repo)

    scenarios = client.scenario.query()
    assert [s.id for s in scenarios.resources] == [SCENARIO]
    exe = client.executable.get(SCENARIO, EXECUTABLE)
    assert exe.deployable and {"image", "modelId"} <= {p.name for p in exe.parameters}
    validate(
        emulator.get(f"/v2/lm/scenarios/{SCENARIO}").json(),
        "/lm/scenarios/{scenarioId}",
        "get",
        200,
    )
    validate(emulator.get("/v2/lm/scenarios").json(), "/lm/scenarios", "get", 200)
    validate(
        emulator.get(f"/v2/lm/scenarios/{SCENARIO}/executables").json(),
        "/lm/scenarios/{scenarioId}/executables",
        "get",
        200,
    )
    validate(
        emulator.get(f"/v2/lm/scenarios/{SCENARIO}/executables/{EXECUTABLE}").json(),
        "/lm/scenarios/{scenarioId}/executables/{executableId}",
        "get",
        200,
    )
    validate(
        emulator.get(f"/v2/lm/scenarios/{SCENARIO}/versions").json(),
        "/lm/scenarios/{scenarioId}/versions",
        "get",
        200,
    )

    # A second template that step 05's linter rejects: reported, while the valid one stays.
    broken = yaml.safe_load(TEMPLATE.read_text())
    broken["metadata"]["name"] = "broken_template"
    del broken["metadata"]["labels"]["ai.sap.com/version"]
    head2 = git_repo(repo, {"labkit/broken.yaml": yaml.safe_dump(broken)})
    client.applications.refresh("labkit-app")
    status = wait_for(
        lambda: synced(client, "labkit-app", head2), "the sync of the broken template"
    )
    assert (status.sync_status, status.health_status) == ("OutOfSync", "Degraded")
    failed = [r for r in status.sync_resources_status if r.status == "SyncFailed"]
    assert [r.name for r in failed] == ["broken_template"]
    assert "broken.yaml" in failed[0].message and "ai.sap.com/version" in failed[0].message
    assert client.executable.get(SCENARIO, EXECUTABLE).id == EXECUTABLE

    # Removing the template from git removes its executable (and the empty scenario).
    head3 = git_repo(repo, {"labkit/broken.yaml": "", "labkit/vllm-serving.yaml": ""})
    client.applications.refresh("labkit-app")
    wait_for(lambda: synced(client, "labkit-app", head3), "the sync of the empty folder")
    with pytest.raises(AIAPINotFoundException):
        client.executable.get(SCENARIO, EXECUTABLE)
    assert client.scenario.query().count == 0

    bad_repo = emulator.post(
        "/v2/admin/applications",
        {"repositoryUrl": "/nowhere", "revision": "HEAD", "path": "x"},
        group=None,
    )
    assert bad_repo.status_code == 400 and "not on-boarded" in bad_repo.json()["error"]["message"]
    again = emulator.post(
        "/v2/admin/repositories",
        {"name": "other", "url": str(repo), "username": "u", "password": "p"},
        group=None,
    )
    assert again.status_code == 409
    client.applications.delete("labkit-app")
    client.repositories.delete("lab-templates")
