"""Errors a user can cause and fix: each prints as one line that says what to do next."""

from __future__ import annotations


class LabError(Exception):
    """Base for user-facing errors; ``str()`` is one line: what went wrong, then what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = " ".join(message.split())
        self.hint = " ".join(hint.split())

    def __str__(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class ConfigError(LabError):
    """The configuration (parameters, LABKIT_* variables, .env) is invalid."""


class ModelError(LabError):
    """A model reference or model folder cannot be used."""


class SizingError(LabError):
    """Sizing inputs are inconsistent (unknown plan, bad override, ...)."""


class ServiceError(LabError):
    """A local or remote service is missing, not running or not answering."""


class StepError(LabError):
    """A lab step (notebook) failed or needs an earlier step first."""


class DiskError(LabError):
    """Not enough free disk for what a step is about to write."""


class StorageError(LabError):
    """The object store refused, cannot be reached, or holds something else at the key."""
