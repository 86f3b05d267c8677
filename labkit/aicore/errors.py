"""AI Core's errors: a request AI Core refused, and a deployment that died or never came up (it
carries its logs tail and the likely causes, as text for a terminal and as data for --json)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from labkit.aicore.diagnosis import Cause
from labkit.aicore.results import DeploymentInfo
from labkit.errors import LabError


class AICoreError(LabError):
    """AI Core refused a request or answered something the lab cannot use; a refusal keeps its
    HTTP status and AI Core's own message, for the callers that survive one."""

    status_code: int | None = None
    server_message: str = ""


class DeploymentFailed(AICoreError):
    """The deployment went DEAD or did not reach RUNNING in time; carries its logs and the likely causes."""

    def __init__(
        self,
        message: str,
        hint: str,
        *,
        info: DeploymentInfo | None = None,
        logs: Sequence[str] = (),
        causes: Sequence[Cause] = (),
    ) -> None:
        super().__init__(message, hint)
        self.info = info
        self.logs = list(logs)
        self.causes = list(causes)

    def report(self) -> str:
        """The logs tail and the likely causes, as text for a terminal."""
        lines = [str(self), "", "likely causes:" if self.causes else "no known cause in the logs"]
        lines += [f"  - {c.summary}: {c.advice}\n      {c.evidence}" for c in self.causes]
        if self.logs:
            lines += ["", f"last {len(self.logs)} log lines:", *(f"  {line}" for line in self.logs)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The failure as data (for --json)."""
        info = self.info.to_dict() if self.info else {}
        return {
            "deployment_id": info.get("id", ""),
            "status": info.get("status", ""),
            "deployment_url": info.get("deployment_url", ""),
            "error": str(self),
            "causes": [asdict(c) for c in self.causes],
            "logs_tail": self.logs,
        }
