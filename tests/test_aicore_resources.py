"""Step 06, labkit.aicore.resources: get-or-create naming (configurations follow their bindings)."""

from __future__ import annotations

from labkit import aicore


def test_configuration_names_follow_the_bindings():
    a = aicore.configuration_name("labkit-vllm", {"image": "x"}, {"model": "a1"})
    assert a == aicore.configuration_name("labkit-vllm", {"image": "x"}, {"model": "a1"})
    assert a != aicore.configuration_name("labkit-vllm", {"image": "y"}, {"model": "a1"})
    assert a.startswith("labkit-vllm-")
