"""Contract tests: the lab's client (SAP's client inside) against what a real tenant answers, as
written down in tests/tenant/*.json from SAP's documentation and the saved outputs of SAP's sample
notebooks. Every HTTP request is answered in-process from those facts (aicore_fakes.TenantReplay);
a fake clock stands in for the minutes a tenant takes."""

from __future__ import annotations

import copy
import time

import pytest
from aicore_fakes import FakeClock, one_line, tenant_ai, tenant_fixture

from labkit import aicore
from labkit.aicore import AICoreError, DeploymentFailed

DEP = tenant_fixture("deployments")
APPS = tenant_fixture("applications")
DID = DEP["create"]["body"]["id"]
ONE = rf"/deployments/{DID}$"
LOGS = rf"/deployments/{DID}/logs$"
NO_LOGS = [{"status": 200, "body": {"data": {"result": []}}}]
EXECUTABLE = {
    "id": "labkit-vllm", "name": "labkit-vllm", "scenarioId": "labkit-vllm", "versionId": "0.1.0",
    "deployable": True, "createdAt": "2024-05-02T09:14:40Z", "modifiedAt": "2024-05-02T09:14:40Z",
    "parameters": [{"name": "image", "type": "string", "default": ""}],
    "inputArtifacts": [{"name": "model"}],
}  # fmt: skip
APP_STATUS = r"/admin/applications/labkit-templates/status$"
APP_ROUTES = {
    ("POST", r"/admin/applications/labkit-templates/refresh$"): [
        {"status": 202, "body": {"id": "labkit-templates", "message": "Refresh scheduled"}}
    ],
    ("GET", r"/scenarios/labkit-vllm/executables/labkit-vllm$"): [
        {"status": 200, "body": EXECUTABLE}
    ],
}


# --- the token --------------------------------------------------------------------------------


def test_the_token_answer_is_used_and_kept_for_most_of_its_7199_s(monkeypatch):
    ai, replay = tenant_ai(monkeypatch, {})
    first = ai.token()
    assert first == "Bearer " + tenant_fixture("token")["answer"]["access_token"]
    assert ai.token() == first and replay.count("POST", r"/oauth/token$") == 1
    left = ai._token._expires - time.time()
    assert 5000 < left < 7199  # refreshed before it lapses, not after an hour


# --- a deployment right after its creation (item 3) -------------------------------------------


def test_the_wait_goes_through_the_404s_of_a_new_deployment_to_running(monkeypatch):
    ai, replay = tenant_ai(monkeypatch, {("GET", ONE): copy.deepcopy(DEP["start_up"]["answers"])})
    clock = FakeClock()
    info = aicore.wait_running(ai, DID, poll=DEP["poll_s"], clock=clock, sleep=clock.sleep)
    assert info.status == "RUNNING" and info.deployment_url.endswith(f"/deployments/{DID}")
    assert replay.count("GET", ONE) == len(DEP["start_up"]["answers"])


def test_a_deployment_that_never_appears_fails_after_a_bounded_wait(monkeypatch):
    ai, _ = tenant_ai(monkeypatch, {("GET", ONE): [DEP["not_found_right_after_create"]]})
    clock = FakeClock()
    with pytest.raises(AICoreError) as exc:
        aicore.wait_running(ai, DID, poll=DEP["poll_s"], clock=clock, sleep=clock.sleep)
    assert "still not found" in one_line(exc.value)
    assert aicore.APPEAR_S <= clock.now < aicore.DEFAULT_TIMEOUT_S


# --- a deployment stuck in PENDING (items 4 and 5) --------------------------------------------


@pytest.mark.parametrize("case", DEP["stuck_pending"], ids=lambda c: c["explains"])
def test_a_stuck_pending_deployment_fails_with_its_cause_after_a_bounded_time(monkeypatch, case):
    ai, _ = tenant_ai(monkeypatch, {("GET", ONE): [case["answer"]], ("GET", LOGS): NO_LOGS})
    clock = FakeClock()
    with pytest.raises(DeploymentFailed) as exc:
        aicore.wait_running(ai, DID, poll=DEP["poll_s"], clock=clock, sleep=clock.sleep)
    text = one_line(exc.value)
    assert f"{DID} is stuck in PENDING" in text and case["names"] in text
    assert exc.value.causes[0].name == case["explains"]
    assert clock.now == pytest.approx(aicore.STUCK_PENDING_S)  # not the 1800 s timeout


def test_the_time_scale_shortens_the_bound_on_a_stuck_deployment(monkeypatch):
    image = DEP["stuck_pending"][0]
    ai, _ = tenant_ai(monkeypatch, {("GET", ONE): [image["answer"]], ("GET", LOGS): NO_LOGS},
                      time_scale=0.02)  # fmt: skip
    clock = FakeClock()
    with pytest.raises(DeploymentFailed):
        aicore.wait_running(ai, DID, clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(aicore.STUCK_PENDING_S * 0.02)
    assert max(clock.sleeps) <= aicore.DEFAULT_POLL_S * 0.02 + aicore.MIN_POLL_S


def test_a_crash_loop_points_at_the_error_in_its_logs(monkeypatch):
    crash = next(c for c in DEP["stuck_pending"] if c["explains"] == "crashloop")
    logs = {"status": 200, "body": {"data": {"result": [
        {"timestamp": "2024-05-02T09:31:50+00:00", "msg": "INFO loading the model"},
        {"timestamp": "2024-05-02T09:31:51+00:00",
         "msg": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"},
    ]}}}  # fmt: skip
    ai, _ = tenant_ai(monkeypatch, {("GET", ONE): [crash["answer"]], ("GET", LOGS): [logs]})
    clock = FakeClock()
    with pytest.raises(DeploymentFailed) as exc:
        aicore.wait_running(ai, DID, poll=DEP["poll_s"], clock=clock, sleep=clock.sleep)
    assert [c.name for c in exc.value.causes][:2] == ["crashloop", "oom"]
    assert "its logs point at: out of memory" in one_line(exc.value)


# --- stop and delete (items 1 and 9) ----------------------------------------------------------


def test_a_tenant_stop_of_three_minutes_fits_the_stop_timeout(monkeypatch):
    stop = DEP["stop"]
    assert aicore.DEFAULT_STOP_TIMEOUT_S > stop["observed_s"] == aicore.TENANT_STOP_S
    assert len(stop["answers"]) * DEP["poll_s"] >= stop["observed_s"]
    gets = [{"status": 200, "body": {**stop["answers"][0]["body"], "targetStatus": "RUNNING"}},
            *copy.deepcopy(stop["answers"]), DEP["gone"]]  # fmt: skip
    ai, replay = tenant_ai(monkeypatch, {("GET", ONE): gets, ("PATCH", ONE): [stop["patch"]],
                                         ("DELETE", ONE): [DEP["delete"]]})  # fmt: skip
    assert aicore.delete(ai, DID, poll=0) is True
    assert replay.count("PATCH", ONE) == 1 and replay.count("DELETE", ONE) == 1
    assert replay.count("GET", ONE) == len(gets)


def test_an_unknown_deployment_is_deleted_without_a_stop(monkeypatch):
    unknown = copy.deepcopy(DEP["start_up"]["answers"][2])  # UNKNOWN
    ai, replay = tenant_ai(monkeypatch, {
        ("GET", ONE): [unknown, DEP["gone"]],
        ("PATCH", ONE): [DEP["stop_unknown"]],
        ("DELETE", ONE): [DEP["delete"]],
    })  # fmt: skip
    assert aicore.delete(ai, DID, poll=0) is True
    assert replay.count("PATCH", ONE) == 0 and replay.count("DELETE", ONE) == 1


def test_a_stop_refused_because_the_status_changed_is_survived(monkeypatch):
    running = DEP["start_up"]["answers"][-1]
    unknown = DEP["start_up"]["answers"][2]
    ai, replay = tenant_ai(monkeypatch, {
        ("GET", ONE): [running, unknown, DEP["gone"]],  # an interrupted start fell back to UNKNOWN
        ("PATCH", ONE): [DEP["stop_unknown"]],
        ("DELETE", ONE): [DEP["delete"]],
    })  # fmt: skip
    assert aicore.delete(ai, DID, poll=0) is True
    assert replay.count("PATCH", ONE) == 1 and replay.count("DELETE", ONE) == 1


def test_a_stop_refused_for_a_running_deployment_is_still_an_error(monkeypatch):
    running = DEP["start_up"]["answers"][-1]
    ai, _ = tenant_ai(monkeypatch, {("GET", ONE): [running], ("PATCH", ONE): [DEP["stop_unknown"]]})
    with pytest.raises(AICoreError) as exc:
        aicore.stop(ai, DID, poll=0)
    assert "cannot be changed" in one_line(exc.value) and exc.value.status_code == 400


def test_the_logs_answer_is_read_oldest_first(monkeypatch):
    ai, _ = tenant_ai(monkeypatch, {("GET", LOGS): [DEP["logs"]]})
    lines = ai.logs_tail(DID)
    assert lines[0].endswith("vLLM API server version 0.4.1")
    assert lines[-1].startswith("INFO:     Uvicorn running")


# --- the templates' sync (items 2 and 6) ------------------------------------------------------


def _sync(ai, clock, **kwargs):
    return aicore.sync_templates(ai, "labkit-templates", scenario_id="labkit-vllm",
                                 executable_id="labkit-vllm", needs=["image"], poll=20,
                                 clock=clock, sleep=clock.sleep, **kwargs)  # fmt: skip


def test_the_sync_waits_through_the_404_before_the_first_sync(monkeypatch):
    statuses = [APPS["status_not_found_before_first_sync"]] * 4 + [
        APPS["status_unknown_before_first_sync"], APPS["status_synced"]]  # fmt: skip
    ai, replay = tenant_ai(monkeypatch, {("GET", APP_STATUS): copy.deepcopy(statuses),
                                         **APP_ROUTES})  # fmt: skip
    clock = FakeClock()
    commit = APPS["status_synced"]["body"]["source"]["revision"]
    done = _sync(ai, clock, commit=commit)
    assert done.sync_status == "Synced" and done.input_artifacts == ["model"]
    assert replay.count("GET", APP_STATUS) == len(statuses)


def test_an_application_without_a_status_fails_after_a_bounded_wait(monkeypatch):
    ai, _ = tenant_ai(monkeypatch, {("GET", APP_STATUS): [APPS["status_not_found_before_first_sync"]],
                                    **APP_ROUTES})  # fmt: skip
    clock = FakeClock()
    with pytest.raises(AICoreError) as exc:
        _sync(ai, clock, commit="a" * 40, timeout=3600)
    assert "no sync status" in one_line(exc.value)
    assert aicore.FIRST_SYNC_S <= clock.now < 3600


@pytest.mark.parametrize("case", APPS["sync_failures"], ids=lambda c: c["explains"])
def test_a_tenant_sync_message_fails_fast_even_when_healthy(monkeypatch, case):
    ai, _ = tenant_ai(monkeypatch, {("GET", APP_STATUS): [case],
                                    ("GET", r"/executables/labkit-vllm$"): [{"status": 404, "body":
                                     {"error": {"code": "1", "message": "Executable not found"}}}],
                                    **{k: v for k, v in APP_ROUTES.items() if "refresh" in k[1]}})  # fmt: skip
    clock = FakeClock()
    with pytest.raises(AICoreError) as exc:
        _sync(ai, clock)
    assert case["explains"] in one_line(exc.value)
    assert clock.now <= 20  # one poll, not the 600 s timeout


# --- a deleted repository's name (item 11) ----------------------------------------------------


def test_a_refused_repository_name_says_what_to_do(monkeypatch):
    # Reported from a tenant run, unverified (docs/tenant.md, item 11): on-boarding under the
    # name of a deleted repository answered "Repository ... not found for tenant".
    refusal = {"status": 400, "body": {"error": {
        "code": "01000000", "message": "Repository labkit-templates not found for tenant 5a1b2c3d"}}}  # fmt: skip
    ai, replay = tenant_ai(monkeypatch, {
        ("GET", r"/admin/repositories$"): [{"status": 200, "body": {"count": 0, "resources": []}}],
        ("POST", r"/admin/repositories$"): [refusal],
    })  # fmt: skip
    with pytest.raises(AICoreError) as exc:
        aicore.ensure_repository(ai, "https://github.com/example/templates", "labkit-templates")
    text = one_line(exc.value)
    assert "refused to on-board the repository 'labkit-templates' again" in text
    assert "--repository <new name>" in text and replay.count("POST", r"/admin/repositories$") == 1
