"""Step 06, labkit.aicore.secrets: registered secrets are masked, also in the SDK's debug logs."""

from __future__ import annotations

import logging

from labkit import aicore
from labkit.aicore.secrets import _install_redaction


def test_sdk_debug_logs_never_show_registered_secrets(caplog, monkeypatch):
    aicore.register_secret("AKIA-very-secret-key")
    _install_redaction()
    caplog.set_level(logging.DEBUG, logger="ai-api-client-sdk")
    logging.getLogger("ai-api-client-sdk").debug(
        "Sending post request with payload: %s",
        {"data": {"AWS_SECRET_ACCESS_KEY": "AKIA-very-secret-key"}},
    )
    assert "AKIA-very-secret-key" not in caplog.text
    assert aicore.MASK in caplog.text
    assert aicore.redact("x AKIA-very-secret-key y") == f"x {aicore.MASK} y"
