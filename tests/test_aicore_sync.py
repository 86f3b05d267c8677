"""Step 06, labkit.aicore.sync: the bounded wait for the templates' sync (fake AI Core, fake clock)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aicore_fakes import FakeAI, FakeClock, one_line

from labkit import aicore
from labkit.aicore import AICoreError


def test_the_sync_wait_is_bounded_and_names_what_the_scenario_has():
    clock = FakeClock()
    ai = FakeAI()
    status = SimpleNamespace(sync_status="Synced", health_status="Healthy", message="ok",
                             sync_finished_at="T1", source=SimpleNamespace(revision="HEAD"),
                             sync_resources_status=[])  # fmt: skip
    ai.client.applications = SimpleNamespace(get_status=lambda name: status,
                                             refresh=lambda name: None)  # fmt: skip
    ai.client.executable = SimpleNamespace(
        get=lambda scenario, exe: {}[exe],  # 404
        query=lambda scenario: SimpleNamespace(resources=[SimpleNamespace(id="other-exe")]),
    )
    with pytest.raises(AICoreError) as exc:
        aicore.sync_templates(ai, "app", scenario_id="s1", executable_id="mine", timeout=30,
                              poll=5, clock=clock, sleep=clock.sleep)  # fmt: skip
    assert clock.now == 30 and max(clock.sleeps) == 5
    text = one_line(exc.value)
    assert "no executable mine in scenario s1 after 30 s" in text and "other-exe" in text


def test_the_sync_waits_for_the_refresh_when_the_synced_commit_is_older():
    clock = FakeClock()
    ai = FakeAI()
    old, new = "a" * 40, "b" * 40
    statuses = [
        SimpleNamespace(sync_status="Synced", health_status="Healthy", message="", source=
                        SimpleNamespace(revision=rev), sync_finished_at=at,
                        sync_resources_status=[])
        for rev, at in ((old, "T1"), (old, "T1"), (old, "T1"), (new, "T2"))
    ]  # fmt: skip
    ai.client.applications = SimpleNamespace(get_status=lambda name: statuses.pop(0),
                                             refresh=lambda name: None)  # fmt: skip
    exe = SimpleNamespace(parameters=[SimpleNamespace(name="image", default="")],
                          input_artifacts=[SimpleNamespace(name="model")])  # fmt: skip
    ai.client.executable = SimpleNamespace(get=lambda scenario, executable: exe)
    done = aicore.sync_templates(ai, "app", scenario_id="s", executable_id="e", needs=["image"],
                                 commit=new, poll=5, clock=clock, sleep=clock.sleep)  # fmt: skip
    assert clock.sleeps == [5, 5] and done.input_artifacts == ["model"]
