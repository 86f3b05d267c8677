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


# Bounds on what a template may hold: a ServingTemplate is a few KiB, nests about ten levels and
# uses no aliases. Beyond these the reader refuses, so that a hostile file (a "billion laughs"
# of aliases, thousands of nested brackets, a device that never ends) cannot hang the linter or
# exhaust memory; Kubernetes' own YAML reader refuses excessive aliasing and nesting likewise.
MAX_TEMPLATE_CHARS = 1_048_576  # a file, or an inner string once rendered
MAX_DEPTH = 64  # nested collections
MAX_EXPANDED_NODES = 100_000  # nodes once aliases are expanded (when there are aliases)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (Kubernetes' YAML reader refuses them too), deep
    nesting, recursive aliases and aliases that expand beyond ``MAX_EXPANDED_NODES``."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"the YAML nests deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node | None) -> None:
    """Refuse recursive aliases and aliases that expand to more than MAX_EXPANDED_NODES nodes."""
    if root is None:
        return
    sizes: dict[int, int] = {}  # expanded size of each finished node
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_EXPANDED_NODES and len(sizes) < sizes[key]:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"the aliases expand to more than {MAX_EXPANDED_NODES} nodes: write the "
                    "values out instead",
                    node.start_mark,
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise yaml.composer.ComposerError(
                None, None, "an alias refers to a node that contains it", node.start_mark
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


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
    """Parse YAML strictly; yaml.YAMLError on bad syntax, duplicate keys or beyond the bounds."""
    if len(text) > MAX_TEMPLATE_CHARS:
        raise yaml.YAMLError(f"the YAML is larger than {MAX_TEMPLATE_CHARS} characters")
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
            # Read at most one byte past the bound: a device or a huge file is refused, not read.
            with path.open("rb") as fh:
                raw = fh.read(MAX_TEMPLATE_CHARS * 4 + 1)
            text = "" if len(raw) > MAX_TEMPLATE_CHARS * 4 else raw.decode("utf-8")
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8, a NUL in the path
            reason = getattr(exc, "strerror", None) or str(exc)
            raise TemplateError(
                f"cannot read the template {path} ({reason})", "check the path"
            ) from None
        # As text mode reads it (universal newlines).
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if len(raw) > MAX_TEMPLATE_CHARS * 4 or len(text) > MAX_TEMPLATE_CHARS:
            raise TemplateError(
                f"the template {path} is larger than {MAX_TEMPLATE_CHARS} characters",
                "a ServingTemplate is a few KiB; check that this is the right file",
            )
        return text, str(path)
    return source, "the template"


def shipped_template(cfg: Config) -> Path:
    """The lab's ServingTemplate file in the checkout."""
    return cfg.root / SHIPPED_TEMPLATE


@cache
def predictor_schema() -> dict[str, Any]:
    """KServe's InferenceServiceSpec subset (JSON Schema) the predictor is validated against."""
    text = resources.files("labkit").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)
