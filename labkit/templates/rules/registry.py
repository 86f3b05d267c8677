"""The lint rules' registry: each rule's table entry (code, level, what it requires, where that is
documented) is declared with ``@check`` beside the function that checks it.

The linter runs the checks stage by stage (``STAGES``), each stage's checks in the order they were
defined, so findings always come out in one fixed order. The rule table (``table()``, exported as
``RULES``) lists the rules in ``TABLE_ORDER``, by topic rather than by run order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labkit.templates.rules.linter import Linter

ERROR = "error"  # AI Core, KServe or vLLM would fail
WARNING = "warning"  # it runs, but not as meant

# The stages in run order; the linter decides which run (see linter.STAGE_RUNS).
STAGES = (
    "template",  # the ServingTemplate's own fields: metadata, inputs, placeholders, inner strings
    "spec",  # the rendered predictor spec against KServe's schema
    "predictor",  # the predictor (when the spec has one): its kserve-container
    "container",  # the kserve-container (when there is one): image, ports, env, volumes
    "runtime",  # the runtime's settings in the kserve-container's env
    "pod",  # the pod's annotations and labels: autoscaling, resource plan
    "lab",  # cross-checks with the lab state (given a LintContext)
)

# The order of the rule table: the file, the template's metadata and inputs, placeholders and
# bindings, the inner strings and pod labels, KServe's predictor, the runtime, the lab state.
TABLE_ORDER = (
    "yaml-parse",
    "api-version",
    "kind",
    "executable-id",
    "executable-id-unique",
    "executable-id-label",
    "annotations-required",
    "labels-required",
    "scenario-id",
    "metadata-strings",
    "parameters",
    "parameter-name",
    "parameter-type",
    "parameter-description",
    "artifact-name",
    "placeholder-syntax",
    "placeholder-undeclared",
    "placeholder-unused",
    "placeholder-location",
    "binding-unknown",
    "template-api-version",
    "inner-string",
    "inner-yaml",
    "resource-label",
    "resource-plan",
    "autoscaling",
    "autoscaling-llm",
    "predictor-schema",
    "kserve-container",
    "container-port",
    "replicas",
    "image-pinned",
    "image-pull-secret",
    "storage-uri",
    "models-dir",
    "reserved-env",
    "env-duplicate",
    "env-value",
    "revision-pinned",
    "vllm-args",
    "vllm-args-override",
    "dev-shm",
    "lab-state",
    "scenario",
    "model-id",
    "revision",
    "revision-unverified",
    "image-tag",
    "image-missing",
    "image-state",
    "sizing-plan",
    "tensor-parallel",
    "tensor-parallel-idle",
    "dtype",
    "max-model-len",
)


@dataclass(frozen=True)
class Rule:
    """One rule's table entry."""

    code: str
    level: str  # ERROR or WARNING: every finding of the rule has this level
    doc: str  # what the rule requires (the rule table's text)
    cite: str | None = None  # where the requirement is documented, when it is not the lab's own


def rule(code: str, level: str, doc: str, *, cite: str | None = None) -> Rule:
    """A rule's table entry, for ``@check`` or ``declare``."""
    if level not in (ERROR, WARNING):
        raise ValueError(f"rule {code}: level {level!r} is neither {ERROR} nor {WARNING}")
    return Rule(code, level, doc, cite)


CheckFn = Callable[["Linter"], None]


@dataclass(frozen=True)
class Check:
    """A check function, the stage it runs in and the rules whose findings it adds."""

    fn: CheckFn
    stage: str
    rules: tuple[Rule, ...]

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(r.code for r in self.rules)


_CHECKS: list[Check] = []
_RULES: dict[str, Rule] = {}


def declare(*rules: Rule) -> None:
    """Register rules; each code once."""
    for r in rules:
        if r.code in _RULES:
            raise ValueError(f"rule {r.code} is declared twice")
        _RULES[r.code] = r


def check(stage: str, *rules: Rule) -> Callable[[CheckFn], CheckFn]:
    """Register the decorated function as the check of ``rules``, run in ``stage``."""
    if stage not in STAGES:
        raise ValueError(f"unknown lint stage {stage!r}")

    def register(fn: CheckFn) -> CheckFn:
        declare(*rules)
        _CHECKS.append(Check(fn, stage, tuple(rules)))
        return fn

    return register


def checks() -> list[Check]:
    """The registered checks in run order: by stage, then in the order they were defined."""
    return sorted(_CHECKS, key=lambda c: STAGES.index(c.stage))


def lookup(code: str) -> Rule:
    """The rule with this code (KeyError for an undeclared one)."""
    return _RULES[code]


def rules() -> list[Rule]:
    """Every declared rule in table order."""
    if set(TABLE_ORDER) != set(_RULES) or len(TABLE_ORDER) != len(_RULES):
        raise RuntimeError("TABLE_ORDER must list each declared lint rule exactly once")
    return [_RULES[code] for code in TABLE_ORDER]


def table() -> dict[str, str]:
    """The rule table: code -> what the rule requires, in table order."""
    return {r.code: r.doc for r in rules()}
