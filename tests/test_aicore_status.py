"""Step 06, labkit.aicore.status: the status view while waiting, in a terminal."""

from __future__ import annotations

import pytest
from aicore_fakes import FakeAI, FakeClock

from labkit import aicore
from labkit.aicore import DeploymentFailed


def test_status_view_prints_a_line_per_change_and_the_failure(capsys):
    view = aicore.StatusView("deployment d1", live=False)
    clock = FakeClock()
    ai = FakeAI(["PENDING", "PENDING", "DEAD"], logs=["OOMKilled"])
    with pytest.raises(DeploymentFailed):
        aicore.wait_running(ai, "d1", timeout=60, poll=1, view=view, clock=clock, sleep=clock.sleep)
    err = capsys.readouterr().err
    assert err.count("deployment d1: PENDING") == 1
    assert "DEAD" in err and "out of memory" in err and "OOMKilled" in err
