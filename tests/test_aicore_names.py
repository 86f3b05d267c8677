"""Step 06, labkit.aicore.names: AI Core's naming rules, checked before any call."""

from __future__ import annotations

import pytest

from labkit import aicore
from labkit.errors import ConfigError


def test_resource_group_and_ttl_are_checked_before_any_call():
    with pytest.raises(ConfigError):
        aicore.check_resource_group_name("a")
    assert aicore.check_resource_group_name("default") == "default"
    for bad in ("10", "1w", "0h", "1.5h"):
        with pytest.raises(ConfigError):
            aicore.check_ttl(bad)
    assert aicore.check_ttl("30m") == "30m" and aicore.check_ttl(None) is None
