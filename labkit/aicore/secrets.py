"""Secrets: masked everywhere, also in the SDK's debug logs. Every secret value the lab meets
(client secrets, tokens, object store and registry keys) is registered here; ``redact`` masks them
in any text, and a filter on the SDK's loggers masks them in its DEBUG output."""

from __future__ import annotations

import logging
import threading

from pydantic import SecretStr

MASK = "********"
_SDK_LOGGERS = ("ai-api-client-sdk", "ai_core_sdk")

_secrets: set[str] = set()
_redaction_installed = False
_lock = threading.Lock()


def register_secret(*values: str | SecretStr | None) -> None:
    """Remember secret values so that :func:`redact` and the SDK's loggers mask them."""
    for value in values:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text and len(text) >= 4:
            _secrets.add(text)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by a mask."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class _RedactFilter(logging.Filter):
    # The SDK logs request payloads (secret bodies included) when DEBUG=true.
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logger's problem, not ours
            return True
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def _install_redaction() -> None:
    global _redaction_installed
    with _lock:
        if _redaction_installed:
            return
        for name in _SDK_LOGGERS:
            logging.getLogger(name).addFilter(_RedactFilter())
        _redaction_installed = True


def _short(text: str, limit: int = 300) -> str:
    """``text`` redacted, on one line, at most ``limit`` characters (for error messages)."""
    text = " ".join(redact(str(text)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
