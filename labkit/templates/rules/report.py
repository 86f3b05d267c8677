"""Lint results: a ``Finding`` (the rule it breaks, what to do) and the ``LintReport`` that
holds the errors and warnings as text, JSON (`labkit template lint --json`) and HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

from labkit.templates.load import TemplateError
from labkit.util.html import table


@dataclass(frozen=True)
class Finding:
    """One lint finding: the rule it breaks and what to do about it."""

    rule: str
    message: str

    def __post_init__(self) -> None:
        # One line a finding, whatever a template's value put in it (a name with a newline).
        lines = self.message.splitlines()
        if len(lines) > 1:
            object.__setattr__(self, "message", " ".join(lines))

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


@dataclass
class LintReport:
    """Errors (AI Core, KServe or vLLM would fail) and warnings (it runs, but not as meant)."""

    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    source: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    def rules(self) -> set[str]:
        """The rule ids of every finding."""
        return {f.rule for f in (*self.errors, *self.warnings)}

    def to_dict(self) -> dict[str, Any]:
        """The `labkit template lint --json` object."""
        return {
            "ok": self.ok,
            "errors": [f.to_dict() for f in self.errors],
            "warnings": [f.to_dict() for f in self.warnings],
        }

    def to_text(self) -> str:
        """One line a finding, then the verdict."""
        lines = [f"error   {f.rule}: {f.message}" for f in self.errors]
        lines += [f"warning {f.rule}: {f.message}" for f in self.warnings]
        verdict = "ok" if self.ok else "not ok"
        where = f"{self.source}: " if self.source else ""
        lines.append(
            f"{where}{verdict}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        )
        return "\n".join(lines)

    def raise_for_errors(self) -> LintReport:
        """Raise TemplateError naming the first error when there is any; else return self."""
        if self.errors:
            first = self.errors[0]
            raise TemplateError(
                f"the template has {len(self.errors)} lint error(s), first [{first.rule}] "
                f"{first.message}",
                "fix them and lint again",
            )
        return self

    def _repr_html_(self) -> str:
        rows = [
            (badge, f"<code>{escape(f.rule)}</code>", escape(f.message))
            for badge, items in (("❌ error", self.errors), ("⚠️ warning", self.warnings))
            for f in items
        ]
        head = (
            f"<b>{escape(self.source or 'template')}</b>: "
            f"{'✅ no errors' if self.ok else '❌ not deployable'}, "
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        )
        if not rows:
            return f"<p>{head}</p>"
        return f"<p>{head}</p>" + table(["level", "rule", "finding"], rows)
