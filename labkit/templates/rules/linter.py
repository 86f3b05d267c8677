"""One lint run: the template and its context, the facts the checks share (declared inputs,
values, the rendered inner strings, the predictor, its kserve-container and env), and the
registered checks run stage by stage; ``lint`` and ``lint_folder`` are the entry points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from labkit.templates.load import TemplateError, load, parse_yaml, read_source, yaml_problem
from labkit.templates.parts import (
    as_str,
    declared,
    env_map,
    get_path,
    inner_strings,
    is_known,
    kserve_container,
    substitute,
    unbound,
)
from labkit.templates.rules import kserve, lab, runtime, sap  # noqa: F401  (registers the checks)
from labkit.templates.rules.context import LintContext
from labkit.templates.rules.registry import ERROR, Check, checks, declare, lookup, rule
from labkit.templates.rules.report import Finding, LintReport
from labkit.templates.spec import ARTIFACT_NAME, PARAM_NAME

if TYPE_CHECKING:
    from labkit.sizing import Catalogue

declare(rule("yaml-parse", ERROR, "the file is YAML (no duplicate keys) holding one mapping"))


@dataclass(frozen=True)
class Inner:
    """One inner string as lint renders it (unbound values stand in for missing bindings)."""

    where: str  # spec.template.metadata.labels, ...annotations or spec.template.spec
    text: Any  # the value in the template: a string when AI Core can read it
    data: dict[str, Any] | None  # the rendered mapping; None when ``problem`` is set
    problem: yaml.YAMLError | str | None  # "type" (no string), "mapping" (parses to no mapping)


class Linter:
    """One lint run: the rules in order, each adding findings."""

    def __init__(self, template: dict[str, Any], context: LintContext | None) -> None:
        self.t = template
        self.ctx = context
        self.errors: list[Finding] = []
        self.warnings: list[Finding] = []
        self._check: Check | None = None

    def emit(self, code: str, message: str) -> None:
        """Add a finding of rule ``code``, at the level its table entry gives."""
        if self._check is not None and code not in self._check.codes:
            raise AssertionError(f"{self._check.fn.__name__} does not declare rule {code}")
        target = self.errors if lookup(code).level == ERROR else self.warnings
        target.append(Finding(code, message))

    def run(self) -> None:
        for item in checks():
            if STAGE_RUNS[item.stage](self):
                self._check = item
                item.fn(self)
        self._check = None

    def value(self, name: str) -> str | None:
        """A runtime env var's rendered value; None when unset, empty or unbound."""
        v = self.env.get(name)
        if not is_known(v) or v is None:
            return None
        text = str(v).strip()
        return text or None

    # -- the declared inputs and their values

    @cached_property
    def params(self) -> dict[str, dict[str, Any]]:
        """The declared parameters with a valid name, first declaration of each."""
        found: dict[str, dict[str, Any]] = {}
        for p in declared(self.t, "parameters"):
            name = p.get("name") if isinstance(p, dict) else None
            if isinstance(name, str) and PARAM_NAME.fullmatch(name) and name not in found:
                found[name] = p
        return found

    @cached_property
    def artifacts(self) -> list[str]:
        """The declared input artifacts with a valid name, first declaration of each."""
        found: list[str] = []
        for a in declared(self.t, "artifacts"):
            name = a.get("name") if isinstance(a, dict) else None
            if isinstance(name, str) and ARTIFACT_NAME.fullmatch(name) and name not in found:
                found.append(name)
        return found

    @cached_property
    def values(self) -> dict[str, str]:
        """Each parameter's value: the context's binding, else the default, else a stand-in."""
        bound = dict(self.ctx.parameters) if self.ctx else {}
        values: dict[str, str] = {}
        for name, p in self.params.items():
            if name in bound:
                try:
                    values[name] = as_str(name, bound[name])
                except TemplateError:
                    values[name] = unbound("parameters", name)
            elif isinstance(p.get("default"), str):
                values[name] = p["default"]
            else:
                values[name] = unbound("parameters", name)
        return values

    # -- the inner strings, rendered

    @cached_property
    def inner(self) -> list[Inner]:
        """The inner strings present, rendered with ``values`` and parsed; [] without spec.template."""
        if not isinstance(get_path(self.t, "spec", "template"), dict):
            return []
        artifacts = {a: unbound("artifacts", a) for a in self.artifacts}
        found = []
        for where, text in inner_strings(self.t).items():
            optional = where != "spec.template.spec"
            if text is None and optional:
                continue
            if not isinstance(text, str):
                found.append(Inner(where, text, None, "type"))
                continue
            try:
                data = parse_yaml(substitute(text, self.values, artifacts, unbound))
            except yaml.YAMLError as exc:
                found.append(Inner(where, text, None, exc))
                continue
            if data is None and optional:
                data = {}
            if not isinstance(data, dict):
                found.append(Inner(where, text, None, "mapping"))
                continue
            found.append(Inner(where, text, data, None))
        return found

    def _parsed(self, suffix: str) -> dict[str, Any] | None:
        return next(
            (i.data for i in self.inner if i.where.endswith(suffix) and i.data is not None), None
        )

    @cached_property
    def pod_labels(self) -> dict[str, Any]:
        return self._parsed("labels") or {}

    @cached_property
    def pod_annotations(self) -> dict[str, Any]:
        return self._parsed("annotations") or {}

    @cached_property
    def labels_unreadable(self) -> bool:
        """The pod labels are no YAML mapping (reported as inner-yaml; no resource checks then)."""
        return any(
            i.where.endswith("labels") and i.problem not in (None, "type") for i in self.inner
        )

    @cached_property
    def spec(self) -> dict[str, Any] | None:
        """spec.template.spec rendered, when it is a mapping."""
        return next(
            (i.data for i in self.inner if i.where == "spec.template.spec" and i.data is not None),
            None,
        )

    @cached_property
    def predictor(self) -> dict[str, Any] | None:
        predictor = self.spec.get("predictor") if self.spec is not None else None
        return predictor if isinstance(predictor, dict) else None

    @cached_property
    def container(self) -> dict[str, Any] | None:
        """The predictor's kserve-container."""
        return kserve_container(self.predictor) if self.predictor is not None else None

    @cached_property
    def env(self) -> dict[str, Any]:
        """The kserve-container's env (name -> rendered value)."""
        return env_map(self.container) if self.container is not None else {}

    @cached_property
    def catalogue(self) -> Catalogue:
        if self.ctx is not None and self.ctx.catalogue is not None:
            return self.ctx.catalogue
        from labkit.sizing import load_catalogue

        return load_catalogue()


def _always(lt: Linter) -> bool:
    return True


# Which stages run: the container's checks need a kserve-container, the lab's a context.
STAGE_RUNS: dict[str, Callable[[Linter], bool]] = {
    "template": _always,
    "spec": _always,
    "predictor": lambda lt: lt.predictor is not None,
    "container": lambda lt: lt.container is not None,
    "runtime": lambda lt: lt.container is not None,
    "pod": _always,
    "lab": lambda lt: lt.ctx is not None,
}


def lint(
    template: Mapping[str, Any] | str | Path, *, context: LintContext | None = None
) -> LintReport:
    """Check a template against AI Core's, KServe's and the runtime's rules (and the lab state)."""
    source = str(template) if isinstance(template, Path) else ""
    if isinstance(template, Mapping):
        data: Any = dict(template)
    else:
        text, origin = read_source(template)
        source = source or ("" if origin == "the template" else origin)
        try:
            data = parse_yaml(text)
        except yaml.YAMLError as exc:
            return LintReport(
                [Finding("yaml-parse", f"not valid YAML ({yaml_problem(exc)}): fix the syntax")],
                source=source,
            )
    if not isinstance(data, dict):
        return LintReport(
            [
                Finding(
                    "yaml-parse",
                    "the file holds no YAML mapping: a ServingTemplate starts with apiVersion:",
                )
            ],
            source=source,
        )
    linter = Linter(data, context)
    linter.run()
    return LintReport(linter.errors, linter.warnings, source)


def lint_folder(folder: Path) -> dict[str, LintReport]:
    """Lint every *.yaml/*.yml under ``folder`` (as AI Core syncs it); ids must be unique."""
    folder = Path(folder)
    paths = sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")])
    owners: dict[str, str] = {}
    reports: dict[str, LintReport] = {}
    for path in paths:
        rel = path.relative_to(folder).as_posix()
        report = lint(path)
        reports[rel] = report
        try:
            name = get_path(load(path), "metadata", "name")
        except TemplateError:
            continue
        if not isinstance(name, str):
            continue
        if name in owners:
            report.errors.append(
                Finding(
                    "executable-id-unique",
                    f"executable id {name} is already used by {owners[name]}: give this "
                    "template another metadata.name",
                )
            )
        else:
            owners[name] = rel
    return reports
