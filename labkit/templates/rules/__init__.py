"""Linting a ServingTemplate: a registry of rules, one module per rule family.

- ``sap``: SAP's rules for AI Core templates (names, labels, annotations, string parameters,
  artifact names, placeholders, inner strings, autoscaling, resource plan)
- ``kserve``: KServe's schema and Knative's reserved names and ports, the kserve-container
- ``runtime``: the runtime's settings (runtime/entrypoint.py) and ARG
- ``lab``: cross-checks with the lab state (given a ``LintContext``)

Each rule's table entry (code, level, what it requires, citation) sits beside its check
(``registry.check``); ``linter`` runs the checks in a fixed order; ``report`` holds the
findings. ``RULES`` is the rule table, code -> what the rule requires.
"""

from labkit.templates.rules.context import LintContext, RevisionCheck
from labkit.templates.rules.linter import lint, lint_folder
from labkit.templates.rules.registry import table
from labkit.templates.rules.report import Finding, LintReport

RULES: dict[str, str] = table()

__all__ = [
    "RULES",
    "Finding",
    "LintContext",
    "LintReport",
    "RevisionCheck",
    "lint",
    "lint_folder",
]
