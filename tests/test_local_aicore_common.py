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


def test_the_time_scale_reaches_the_server_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One setting, LABKIT_AICORE_TIME_SCALE: compressed by default, 'tenant' the real pace;
    the server reads it from the environment `labkit local up` hands it."""
    from labkit.config import DEFAULT_AICORE_TIME_SCALE, load_config
    from labkit.errors import ConfigError
    from labkit.local.aicore import server

    argv = ["--state-dir", "s", "--service-key", "k", "--port", "1", "--entrypoint", "e"]
    monkeypatch.delenv("LABKIT_AICORE_TIME_SCALE", raising=False)
    assert load_config().aicore_time_scale == DEFAULT_AICORE_TIME_SCALE < 1
    assert server.settings_from(server.parse_args(argv)).runner.time_scale == (
        DEFAULT_AICORE_TIME_SCALE
    )
    monkeypatch.setenv("LABKIT_AICORE_TIME_SCALE", "tenant")
    assert load_config().aicore_time_scale == 1.0
    runner = server.settings_from(server.parse_args(argv)).runner
    assert (runner.time_scale, runner.progress_deadline) == (1.0, 600.0)
    assert (
        server.settings_from(server.parse_args([*argv, "--time-scale", "0.5"])).runner.time_scale
        == 0.5
    )
    monkeypatch.setenv("LABKIT_AICORE_TIME_SCALE", "0")
    with pytest.raises(ConfigError):
        load_config()


def test_the_kubelets_back_off_scaled() -> None:
    waits = [common_mod.backoff_s(n, 1.0) for n in range(1, 8)]
    assert waits == [10, 20, 40, 80, 160, 300, 300]
    assert common_mod.backoff_s(1, 0.02) == pytest.approx(0.2)
