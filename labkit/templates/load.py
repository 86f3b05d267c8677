"""Loading templates: strict YAML (no duplicate keys, as Kubernetes reads it), a template from a
file or text, the shipped template's path and KServe's predictor schema.

``TemplateError`` is the error of the whole step: a template, binding or repository to fix.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from labkit.errors import LabError
from labkit.templates.spec import SCHEMA_FILE, SHIPPED_TEMPLATE

if TYPE_CHECKING:
    from labkit.config import Config


class TemplateError(LabError):
    """A template, binding or template repository the user can fix."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (Kubernetes' YAML reader refuses them too)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a scalar", key_node.start_mark
            ) from None
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {first + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str) -> Any:
    """Parse YAML strictly; yaml.YAMLError on bad syntax or duplicate keys."""
    return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A one-line description of a YAML error with its line number."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return f"{where}{' '.join(str(problem).split())}"


def load(source: str | Path) -> dict[str, Any]:
    """A template as a dict, from YAML text or a file path; TemplateError when unreadable."""
    text, origin = read_source(source)
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise TemplateError(
            f"{origin} is not valid YAML ({yaml_problem(exc)})", "fix the syntax at that line"
        ) from None
    if not isinstance(data, dict):
        raise TemplateError(
            f"{origin} holds no YAML mapping", "a ServingTemplate starts with apiVersion: and kind:"
        )
    return data


def read_source(source: str | Path) -> tuple[str, str]:
    """The text of a template and a name for messages."""
    if isinstance(source, Path) or ("\n" not in source and source.endswith((".yaml", ".yml"))):
        path = Path(source)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise TemplateError(
                f"cannot read the template {path} ({reason})", "check the path"
            ) from None
    return source, "the template"


def shipped_template(cfg: Config) -> Path:
    """The lab's ServingTemplate file in the checkout."""
    return cfg.root / SHIPPED_TEMPLATE


@cache
def predictor_schema() -> dict[str, Any]:
    """KServe's InferenceServiceSpec subset (JSON Schema) the predictor is validated against."""
    text = resources.files("labkit").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)
