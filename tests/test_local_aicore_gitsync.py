"""The local AI Core's git sync (labkit.local.aicore.gitsync): templates from git become
scenarios and executables, lint errors are reported, removed templates are pruned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

from labkit import templates
from labkit.local.aicore import core as core_mod
from labkit.local.aicore import gitsync as gitsync_mod

FIXTURES = Path(__file__).parent / "tenant" / "templates"
# SAP's published serving templates (shapes re-typed in tests/tenant/templates): executable id
# -> scenario id; each syncs and runs on a tenant.
SAP_TEMPLATES = {
    "vllm": "vllm",
    "infinity": "byom-infinity-server",
    "transformer": "transformer",
    "ollama": "ollama",
    "llama.cpp": "byom-llama.cpp-server",
    "server-pipeline": "learning-datalines",
}

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

    # Removing the template from git removes its executable (and the empty scenario); the
    # folder stays (a README), since a missing path is an error on a tenant (see below).
    head3 = git_repo(
        repo,
        {
            "labkit/README.md": "no templates",
            "labkit/broken.yaml": "",
            "labkit/vllm-serving.yaml": "",
        },
    )
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


# --- what the sync enforces: AI Core's rules, not the lab's ---------------------------------------


@pytest.fixture
def quick_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An emulator whose first sync comes at once (0.18 s at this time scale)."""
    emu = Emulator(tmp_path / "aicore", time_scale=0.001).start()
    try:
        yield emu
    finally:
        emu.stop()


def test_sap_published_templates_sync_as_on_a_tenant(
    quick_emulator: Emulator, tmp_path: Path
) -> None:
    files = {f"sap/{p.name}": p.read_text() for p in sorted(FIXTURES.glob("*.yaml"))}
    assert len(files) == len(SAP_TEMPLATES)
    client, _, _ = _onboard_folder(quick_emulator, tmp_path, files, "sap")
    status = client.applications.get_status("sap-app")
    assert (status.sync_status, status.health_status) == ("Synced", "Healthy"), status.message
    for exe_id, scenario_id in SAP_TEMPLATES.items():
        exe = client.executable.get(scenario_id, exe_id)
        assert exe.id == exe_id and exe.deployable
    assert client.executable.get("vllm", "vllm").parameters[0].name == "modelName"
    assert client.executable.get("ollama", "ollama").parameters == []
    house = client.executable.get("learning-datalines", "server-pipeline")
    assert [a.name for a in house.input_artifacts] == ["housepricemodel"]


def test_the_labs_lint_stays_stricter_than_the_sync() -> None:
    """`labkit template lint` still refuses what the lab does not want (no STORAGE_URI, no
    parameters, a '.' in the id, kfserving-container); the sync's gate passes them."""
    refused = {}
    for path in sorted(FIXTURES.glob("*.yaml")):
        report = templates.lint(path.read_text())
        refused[path.stem] = {f.rule for f in report.errors}
        assert gitsync_mod.sync_problems(report) == [], path.name
    assert refused["house-price-server"] == {"kserve-container"}
    assert refused["llama.cpp"] == {"executable-id"}
    assert {"parameters", "storage-uri"} <= refused["ollama"]
    assert "storage-uri" in refused["vllm"]
    gate = gitsync_mod.sync_rules()
    assert {"labels-required", "annotations-required", "parameter-type", "inner-yaml"} <= gate
    assert not gate & {"storage-uri", "kserve-container", "predictor-schema", "executable-id"}


def test_the_sync_refuses_what_ai_core_refuses() -> None:
    doc = yaml.safe_load((FIXTURES / "vllm.yaml").read_text())
    doc["spec"]["inputs"]["parameters"][0]["default"] = 7  # parameters are strings
    del doc["metadata"]["annotations"]["executables.ai.sap.com/name"]
    found: gitsync_mod.Found = {}
    [entry] = gitsync_mod.sync_file(templates, "sap/vllm.yaml", yaml.safe_dump(doc), found)
    assert entry["status"] == "SyncFailed" and not found
    assert "parameter-type" in entry["message"] and "annotations-required" in entry["message"]


def _onboard_folder(
    emu: Emulator, tmp_path: Path, files: dict[str, str], path: str, revision: str = "HEAD"
):
    client = emu.client()
    repo = tmp_path / "tenant-git"
    head = git_repo(repo, files)
    client.repositories.create(name="tenant-repo", url=str(repo), username="git", password="x")
    client.applications.create(
        revision=revision, path=path, application_name="sap-app", repository_url=str(repo)
    )
    if revision == "HEAD":
        wait_for(lambda: synced(client, "sap-app", head), "the first sync")
    return client, repo, head


# --- timing and failures as on a tenant -----------------------------------------------------------


def test_status_is_404_until_the_first_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ai_api_client_sdk.exception import AIAPINotFoundException

    # 180 s x 0.01: the first sync comes after 1.8 s; until then the status is 404.
    emu = Emulator(tmp_path / "aicore", time_scale=0.01).start()
    try:
        assert emu.core.sync.first_sync == pytest.approx(1.8)
        client = emu.client()
        repo = tmp_path / "git"
        head = git_repo(repo, {"labkit/vllm-serving.yaml": TEMPLATE.read_text()})
        client.repositories.create(name="r1", url=str(repo), username="git", password="x")
        client.applications.create(
            revision="HEAD", path="labkit", application_name="new-app", repository_url=str(repo)
        )
        with pytest.raises(AIAPINotFoundException):
            client.applications.get_status("new-app")
        resp = emu.get("/v2/admin/applications/new-app/status", group=None)
        assert resp.status_code == 404 and "first sync" in resp.json()["error"]["message"]
        assert client.applications.get("new-app").application_name == "new-app"  # it exists
        with pytest.raises(AIAPINotFoundException):
            client.executable.get(SCENARIO, EXECUTABLE)
        status = wait_for(lambda: synced(client, "new-app", head), "the first sync")
        assert status.sync_status == "Synced"
        assert client.executable.get(SCENARIO, EXECUTABLE).id == EXECUTABLE
    finally:
        emu.stop()


def test_the_first_sync_window_follows_the_servers_time_scale(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "aicore", time_scale=1.0)  # the tenant's pace: 3 minutes
    assert core_mod.LocalAICore(emu.settings).sync.first_sync == gitsync_mod.FIRST_SYNC_S == 180


def test_sync_failures_read_as_on_a_tenant(quick_emulator: Emulator, tmp_path: Path) -> None:
    files = {"sap/vllm.yaml": (FIXTURES / "vllm.yaml").read_text()}
    client, repo, head = _onboard_folder(quick_emulator, tmp_path, files, "sap", revision="nope")
    status = wait_for(lambda: _finished(client, "sap-app"), "the failed first sync")
    # ArgoCD's words, at the application level, and neither Degraded nor SyncFailed.
    assert status.message == "Unable to resolve 'nope' to a commit SHA"
    assert (status.sync_status, status.health_status) == ("Unknown", "Unknown")
    assert status.sync_resources_status == []

    client.applications.delete("sap-app")
    client.applications.create(
        revision="HEAD", path="sap", application_name="sap-app", repository_url=str(repo)
    )
    wait_for(lambda: synced(client, "sap-app", head), "the sync")
    # The path goes away: the error is the app's; the templates synced before stay up.
    head2 = git_repo(repo, {"sap/vllm.yaml": "", "other/README.md": "moved"})
    client.applications.refresh("sap-app")
    status = wait_for(
        lambda: (s := _finished(client, "sap-app")) and "app path" in s.message and s,
        "the failed sync",
    )
    assert status.message == "rpc error: code = Unknown desc = sap: app path does not exist"
    assert (status.sync_status, status.health_status) == ("Unknown", "Healthy")
    assert status.source.revision == head  # the last synced commit, not head2
    assert head2 != head and client.executable.get("vllm", "vllm").id == "vllm"


def _finished(client: Any, app: str) -> Any:
    """The application's status once a sync ended without a commit (syncStatus Unknown)."""
    from ai_api_client_sdk.exception import AIAPINotFoundException

    try:
        status = client.applications.get_status(app)
    except AIAPINotFoundException:
        return None
    return status if status.sync_finished_at and status.sync_status == "Unknown" else None
