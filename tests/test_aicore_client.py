"""Step 06, labkit.aicore.client: deployment URLs, and a missing local AI Core through the CLI."""

from __future__ import annotations

import pytest

from labkit import aicore
from labkit.errors import LabError


def test_inference_url_and_a_missing_url():
    assert (
        aicore.inference_url("http://h/v2/inference/deployments/d1/", "/v1/models")
        == "http://h/v2/inference/deployments/d1/v1/models"
    )
    with pytest.raises(LabError):
        aicore.inference_url("", "/v1/models")


def test_cli_status_without_a_recorded_deployment_is_one_line(lab_env, capsys, tmp_path,
                                                              monkeypatch):  # fmt: skip
    from labkit.cli import main

    monkeypatch.setenv("LABKIT_LOCAL_DIR", str(tmp_path / "nolocal"))
    assert main(["deploy", "status"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("labkit: error:") and "\n" not in err and "labkit local up" in err
    assert main(["deploy", "--ttl", "5x", "--json"]) == 2
    assert "ttl '5x'" in capsys.readouterr().err
