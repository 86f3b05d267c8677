"""Image references as the local AI Core's runner reads them (labkit.local.aicore.images)."""

from __future__ import annotations

import pytest

from labkit.local.aicore import images as images_mod
from labkit.local.aicore.runspec import RunFailed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "localhost:5000/labkit/aicore-vllm:v261126-01",
            ("localhost:5000", "labkit/aicore-vllm", "v261126-01"),
        ),
        ("vllm/vllm-openai:v0.32.0", ("docker.io", "vllm/vllm-openai", "v0.32.0")),
        ("ubuntu", ("docker.io", "library/ubuntu", "latest")),
        ("ghcr.io/org/img@sha256:" + "a" * 64, ("ghcr.io", "org/img", "sha256:" + "a" * 64)),
        ("127.0.0.1:5000/x/y", ("127.0.0.1:5000", "x/y", "latest")),
    ],
)
def test_image_references_are_split_like_docker(text: str, expected: tuple[str, str, str]) -> None:
    image = images_mod.parse_image(text)
    assert (image.registry, image.path, image.reference) == expected
    assert image.loopback == expected[0].startswith(("localhost", "127."))


@pytest.mark.parametrize("text", ["", "has space:1", "UPPER/case:1"])
def test_invalid_image_references_are_refused(text: str) -> None:
    with pytest.raises(RunFailed) as err:
        images_mod.parse_image(text)
    assert err.value.reason == "InvalidImageName"
