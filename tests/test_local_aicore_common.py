"""The local AI Core's shared vocabulary (labkit.local.aicore.common): the AI API's time formats."""

from __future__ import annotations

import pytest

from labkit.local.aicore import common as common_mod


def test_time_helpers() -> None:
    assert [common_mod.ttl_seconds(t) for t in ("30m", "2H", "1d")] == [1800, 7200, 86400]
    with pytest.raises(ValueError):
        common_mod.ttl_seconds("1w")
    when = common_mod.parse_time("2021-05-19T00:00:14.347+00:00")
    assert common_mod.log_time(when) == "2021-05-19T00:00:14.347+00:00"
    assert common_mod.iso(common_mod.parse_time("2021-05-19T00:00:14Z")) == "2021-05-19T00:00:14Z"
