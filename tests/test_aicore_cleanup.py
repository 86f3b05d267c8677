"""Step 06 and 99, labkit.aicore.cleanup: the recorded state and the clean-up (fake AI Core)."""

from __future__ import annotations

from aicore_fakes import FakeAI

from labkit import aicore
from labkit.aicore import DeploymentResult, Resource
from labkit.config import load_config
from labkit.state import State

# --- the recorded state and the clean-up ---------------------------------------------------------


def _recorded(state: State) -> None:
    objects = [
        Resource("resource_group", "default", "reused", False, api_url="http://fake"),
        Resource("repository", "labkit-templates", "created", True, api_url="http://fake"),
        Resource("application", "labkit-templates", "created", True, api_url="http://fake"),
        Resource("object_store_secret", "default", "reused", False, resource_group="default",
                 api_url="http://fake"),
        Resource("artifact", "a1", "created", True, resource_group="default", api_url="http://fake"),
        Resource("configuration", "c1", "created", True, resource_group="default",
                 api_url="http://fake"),
        Resource("deployment", "d0", "created", True, resource_group="default",
                 api_url="http://fake"),
        Resource("deployment", "d1", "created", True, resource_group="default",
                 api_url="http://fake"),
    ]  # fmt: skip
    result = DeploymentResult("d1", "RUNNING", "http://fake/d1", "c1", "a1", "ai://default/m.tar",
                              "labkit-vllm", "labkit-vllm", "default", "http://fake",
                              objects=objects)  # fmt: skip
    state.record("deploy", result)


def test_cleanup_deletes_only_what_the_lab_created_and_is_safe_twice(tmp_path):
    state = State(tmp_path / "state.json")
    _recorded(state)
    ai = FakeAI()
    ai.deployments = {"d1": "RUNNING"}  # d0 is already gone (say, a ttl ended it)
    cfg = load_config(profile="local", lab_dir=tmp_path)
    report = aicore.cleanup(cfg, state, ai=ai, poll=0)
    actions = {(r.kind, r.id): (r.action, r.detail) for r in report.rows}
    assert actions[("deployment", "d1")] == ("deleted", "")
    assert actions[("deployment", "d0")][0] == "gone"
    assert (
        actions[("configuration", "c1")][0] == "kept"
        and "cannot delete" in actions[("configuration", "c1")][1]
    )
    assert actions[("artifact", "a1")][0] == "kept"
    assert actions[("object_store_secret", "default")] == ("kept", "the lab did not create it")
    assert actions[("resource_group", "default")][0] == "kept"
    assert "deleted application labkit-templates" in ai.calls
    # Issue 16, item 11: the repository stays (a tenant may refuse its name once deleted).
    assert "deleted repository labkit-templates" not in ai.calls
    assert actions[("repository", "labkit-templates")][0] == "kept"
    assert not any("objectstore" in c or "deleted rg" in c for c in ai.calls)
    assert [r.kind for r in report.rows][:2] == ["deployment", "deployment"]  # newest first
    recorded = state.get("deploy")
    assert recorded["status"] == "DELETED" and recorded["deployment_url"] == ""

    again = FakeAI()
    second = aicore.cleanup(cfg, State(tmp_path / "state.json"), ai=again)
    assert second.deleted == [] and not any(c.startswith("deleted") for c in again.calls)


def test_cleanup_deletes_the_repository_only_when_asked_and_after_the_application(tmp_path):
    state = State(tmp_path / "state.json")
    _recorded(state)
    ai = FakeAI()
    ai.deployments = {"d1": "DEAD"}
    cfg = load_config(profile="local", lab_dir=tmp_path)
    report = aicore.cleanup(cfg, state, ai=ai, delete_repository=True, poll=0)
    assert ("repository", "labkit-templates") in {(r.kind, r.id) for r in report.deleted}
    assert ai.calls.index("deleted application labkit-templates") < ai.calls.index(
        "deleted repository labkit-templates"
    )


def test_cleanup_can_keep_the_setup_and_does_nothing_without_a_record(tmp_path):
    state = State(tmp_path / "state.json")
    cfg = load_config(profile="local", lab_dir=tmp_path)
    assert aicore.cleanup(cfg, state, ai=FakeAI()).rows == []
    _recorded(state)
    ai = FakeAI()
    ai.deployments = {"d1": "DEAD"}
    report = aicore.cleanup(cfg, state, ai=ai, delete_setup=False, poll=0)
    assert {r.id for r in report.deleted} == {"d1"}
    assert not any(c.startswith("deleted") for c in ai.calls)


def test_cleanup_deletes_an_unknown_deployment_without_stopping_it(tmp_path):
    # A tenant refuses to stop an UNKNOWN deployment (400 "... cannot be changed"), and SAP's
    # troubleshooting page deletes it directly; FakeAI refuses the same way.
    state = State(tmp_path / "state.json")
    _recorded(state)
    ai = FakeAI()
    ai.deployments = {"d1": "UNKNOWN", "d0": "DEAD"}
    cfg = load_config(profile="local", lab_dir=tmp_path)
    report = aicore.cleanup(cfg, state, ai=ai, delete_setup=False, poll=0)
    assert {r.id for r in report.deleted} == {"d0", "d1"}
    assert not any(c.startswith("stop deployment") for c in ai.calls)
    assert "delete deployment d1" in ai.calls and ai.deployments == {}


def test_stop_waits_out_a_tenant_stop_and_leaves_other_statuses_alone():
    ai = FakeAI(stop_polls=9)  # RUNNING for 8 more reads after the stop, then STOPPED
    ai.deployments = {"d1": "RUNNING", "d2": "UNKNOWN", "d3": "STOPPING"}
    assert aicore.stop(ai, "d1", poll=0).status == "STOPPED"
    assert ai.calls.count("stop deployment d1") == 1
    assert aicore.stop(ai, "d2", poll=0).status == "UNKNOWN"
    assert "stop deployment d2" not in ai.calls
    ai.deployments["d3"] = "STOPPED"
    assert aicore.stop(ai, "d3", poll=0).status == "STOPPED"
    assert "stop deployment d3" not in ai.calls
