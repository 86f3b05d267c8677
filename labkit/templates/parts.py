"""The parts of a template: its ``{{...}}`` placeholders and their textual substitution, the
declared parameters and artifacts, the inner YAML strings, the predictor's kserve-container and
its env. Shared by rendering, binding and linting.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from labkit.templates.load import MAX_TEMPLATE_CHARS, TemplateError, load
from labkit.templates.spec import PREDICTOR_CONTAINER

_REFERENCE = re.compile(r"\s*inputs\.(parameters|artifacts)\.([^\s{}]+)\s*")
UNBOUND = "__labkit_unbound_"

# --- placeholders --------------------------------------------------------------------------


@dataclass(frozen=True)
class Placeholder:
    """One ``{{...}}``: a parameter or artifact reference, or something AI Core cannot render."""

    text: str
    kind: str | None  # "parameters" | "artifacts" | None (not a reference)
    name: str


def _spans(text: str) -> Iterator[tuple[int, int]]:
    """The (start, end) of each ``{{...}}``, as the regex ``{{(.*?)}}`` finds them, in linear time.

    The regex would rescan the rest of the text from every unclosed ``{{`` (quadratic on a
    string of many); the first ``}}`` after an opening closes it, so one forward scan suffices.
    """
    pos = 0
    while (start := text.find("{{", pos)) >= 0:
        end = text.find("}}", start + 2)
        if end < 0:
            return
        yield start, end + 2
        pos = end + 2


def placeholders(text: str) -> list[Placeholder]:
    """Every ``{{...}}`` in ``text``, in order."""
    found = []
    for start, end in _spans(text):
        inside = text[start + 2 : end - 2]
        ref = _REFERENCE.fullmatch(inside)
        if ref:
            found.append(Placeholder(text[start:end], ref.group(1), ref.group(2)))
        else:
            found.append(Placeholder(text[start:end], None, inside.strip()))
    return found


def substitute(
    text: str, values: Mapping[str, str], artifacts: Mapping[str, str], on_missing: Callable
) -> str:
    """Replace each placeholder by its value as text (AI Core renders before it parses).

    yaml.YAMLError when the result would exceed MAX_TEMPLATE_CHARS (a long value used many
    times): it is refused before it is built.
    """
    parts: list[str] = []
    size = pos = 0
    for start, end in _spans(text):
        ref = _REFERENCE.fullmatch(text[start + 2 : end - 2])
        if not ref:
            value = on_missing(None, text[start + 2 : end - 2].strip())
        else:
            kind, name = ref.groups()
            table = values if kind == "parameters" else artifacts
            value = table[name] if name in table else on_missing(kind, name)
        parts += [text[pos:start], value]
        size += start - pos + len(value)
        pos = end
        if size > MAX_TEMPLATE_CHARS:
            raise yaml.YAMLError(
                f"the rendered text is larger than {MAX_TEMPLATE_CHARS} characters"
            )
    parts.append(text[pos:])
    return "".join(parts)


def unbound(kind: str | None, name: str) -> str:
    """The stand-in value lint renders for a parameter or artifact that has no value yet."""
    return f"{UNBOUND}{kind or 'other'}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}__"


def is_known(value: Any) -> bool:
    """Whether a rendered value is real (not a stand-in for an unbound parameter)."""
    return value is not None and not (isinstance(value, str) and UNBOUND in value)


# --- the parts of a template -----------------------------------------------------------------


def get_path(data: Any, *keys: str) -> Any:
    """``data[k1][k2]...``; None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def declared(template: Mapping[str, Any], kind: str) -> list[Any]:
    """The raw ``spec.inputs.<kind>`` list (``parameters`` or ``artifacts``); [] when absent."""
    items = get_path(template, "spec", "inputs", kind)
    return items if isinstance(items, list) else []


def parameter_names(template: Mapping[str, Any]) -> list[str]:
    """The declared parameter names, in order."""
    return [
        p["name"]
        for p in declared(template, "parameters")
        if isinstance(p, dict) and isinstance(p.get("name"), str)
    ]


def artifact_names(template: Mapping[str, Any]) -> list[str]:
    """The declared input artifact names, in order."""
    return [
        a["name"]
        for a in declared(template, "artifacts")
        if isinstance(a, dict) and isinstance(a.get("name"), str)
    ]


def as_str(key: str, value: Any) -> str:
    """A binding value as the string AI Core stores: numbers and booleans are converted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(
        f"the binding of {key} is a {type(value).__name__}", "parameter values are strings"
    )


def as_list(value: Any) -> list[Any]:
    """``value`` when it is a list, else [] (a field of the wrong type holds no items)."""
    return value if isinstance(value, list) else []


def kserve_container(predictor: Any) -> dict[str, Any] | None:
    """The predictor's container named kserve-container; None when there is none."""
    containers = predictor.get("containers") if isinstance(predictor, dict) else None
    if not isinstance(containers, list):
        return None
    for c in containers:
        if isinstance(c, dict) and c.get("name") == PREDICTOR_CONTAINER:
            return c
    return None


def env_entries(container: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The container's env entries that are mappings."""
    env = container.get("env") if container else None
    return [e for e in env if isinstance(e, dict)] if isinstance(env, list) else []


def env_map(container: Mapping[str, Any] | None) -> dict[str, Any]:
    """The container's env as name -> value (entries with a value only)."""
    return {
        e["name"]: e["value"]
        for e in env_entries(container)
        if isinstance(e.get("name"), str) and "value" in e
    }


def template_or_load(template: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """A template given as a mapping (copied) or loaded from text or a file."""
    if isinstance(template, Mapping):
        return dict(template)
    return load(template)


def inner_strings(template: Mapping[str, Any]) -> dict[str, Any]:
    """The inner YAML strings by their path: spec, metadata.labels, metadata.annotations."""
    tpl = get_path(template, "spec", "template")
    return {
        "spec.template.metadata.labels": get_path(tpl, "metadata", "labels"),
        "spec.template.metadata.annotations": get_path(tpl, "metadata", "annotations"),
        "spec.template.spec": get_path(tpl, "spec"),
    }
