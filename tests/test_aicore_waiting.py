"""Step 06, labkit.aicore.waiting: bounded waits for RUNNING (fake AI Core, fake clock)."""

from __future__ import annotations

import pytest
from aicore_fakes import FakeAI, FakeClock, one_line

from labkit import aicore
from labkit.aicore import DeploymentFailed, DeploymentInfo

# --- bounded waits (fake AI Core, fake clock) ----------------------------------------------------


def test_wait_running_polls_until_running_and_returns_the_url():
    clock = FakeClock()
    ai = FakeAI(["UNKNOWN", "PENDING", "PENDING", "RUNNING"])
    info = aicore.wait_running(ai, "d1", timeout=60, poll=5, clock=clock, sleep=clock.sleep)
    assert info.status == "RUNNING" and info.deployment_url.endswith("/d1")
    assert clock.sleeps == [5, 5, 5]


def test_a_dead_deployment_fails_at_once_with_the_logs_and_the_cause():
    clock = FakeClock()
    logs = ["storage-initializer: downloading", "failed to pull image: manifest unknown"]
    ai = FakeAI(["PENDING", "DEAD"], logs=logs)
    with pytest.raises(DeploymentFailed) as exc:
        aicore.wait_running(ai, "d1", timeout=600, poll=5, clock=clock, sleep=clock.sleep)
    text = one_line(exc.value)
    assert "d1 is DEAD" in text and "image cannot be pulled" in text
    assert exc.value.logs == logs and exc.value.causes[0].name == "image"
    assert clock.now == 5  # no waiting after DEAD
    data = exc.value.to_dict()
    assert data["status"] == "DEAD" and data["logs_tail"] == logs
    assert "likely causes" in exc.value.report()


def test_the_wait_is_bounded_by_the_timeout():
    clock = FakeClock()
    ai = FakeAI(["PENDING"])
    with pytest.raises(DeploymentFailed) as exc:
        aicore.wait_running(ai, "d1", timeout=12, poll=5, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [5, 5, 2] and clock.now == 12
    assert "still PENDING after 12 s" in one_line(exc.value)


def test_a_new_deployment_answering_404_is_waited_for():
    clock = FakeClock()
    ai = FakeAI([None, None, "PENDING", "RUNNING"])
    info = aicore.wait_running(ai, "d1", timeout=600, poll=5, clock=clock, sleep=clock.sleep)
    assert info.status == "RUNNING" and clock.now == 15


def test_a_404_that_lasts_is_bounded_and_scaled():
    clock = FakeClock()
    ai = FakeAI([None], time_scale=0.02)
    with pytest.raises(aicore.AICoreError) as exc:
        aicore.wait_running(ai, "d1", clock=clock, sleep=clock.sleep)
    assert "d1 is still not found" in one_line(exc.value)
    # A failure window never shrinks below 30 s; the polls are short at a compressed scale.
    assert clock.now == pytest.approx(30.0) and max(clock.sleeps) <= aicore.MIN_POLL_S


def test_a_pending_deployment_without_a_blocking_cause_waits_for_the_timeout():
    clock = FakeClock()
    pending = DeploymentInfo("d1", "PENDING", status_message="Deployment is pending",
                             status_details={"reason": "ContainerCreating"})  # fmt: skip
    ai = FakeAI([pending])
    with pytest.raises(DeploymentFailed) as exc:
        aicore.wait_running(ai, "d1", timeout=900, poll=5, clock=clock, sleep=clock.sleep)
    assert clock.now == 900 and "still PENDING after 900 s" in one_line(exc.value)


def test_a_blocking_cause_that_clears_resets_the_stuck_bound():
    clock = FakeClock()
    pulling = DeploymentInfo("d1", "PENDING", status_details={"events": [
        {"reason": "Failed", "message": 'Back-off pulling image "r.example/x:1"'}]})  # fmt: skip
    ai = FakeAI([pulling] * 4 + ["PENDING"] + [pulling] * 4 + ["RUNNING"])
    info = aicore.wait_running(ai, "d1", poll=5, stuck=30, clock=clock, sleep=clock.sleep)
    assert info.status == "RUNNING"
