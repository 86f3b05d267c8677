"""The layering of docs/architecture.md, checked on the import graph (every import, also inside
functions): step packages never reach the local stand-ins, the helpers layer imports no step,
only the CLI imports the CLI, and the runtime stands alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABKIT = ROOT / "labkit"
# The front: what notebooks call. Nothing below it imports it.
FRONT = {"labkit.cli", "labkit.widgets"}
# Parts that may start or inspect the local profile's services (beside labkit.local itself).
MAY_USE_LOCAL = {"labkit.cli", "labkit.widgets", "labkit.envcheck", "labkit.local"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The labkit modules a file imports (absolute and relative imports, anywhere in the file)."""
    tree = ast.parse(path.read_text())
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in found if m == "labkit" or m.startswith("labkit.")}


def _within(name: str, parts: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in parts)


MODULES = {_module_name(p): p for p in sorted(LABKIT.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_the_layers_hold(module: str) -> None:
    imported = _imports(MODULES[module])
    if not _within(module, FRONT):
        assert not {m for m in imported if _within(m, FRONT)}, f"{module} imports the front"
    if not _within(module, MAY_USE_LOCAL):
        assert not {m for m in imported if _within(m, {"labkit.local"})}, (
            f"{module} is a step module and imports the local stand-ins"
        )
    if _within(module, {"labkit.util"}):
        assert all(_within(m, {"labkit.util"}) for m in imported), (
            f"{module} is in the helpers layer and imports a step: {sorted(imported)}"
        )


def test_the_runtime_imports_nothing_from_labkit() -> None:
    for path in (ROOT / "runtime").rglob("*.py"):
        assert not _imports(path), path


def test_the_checks_see_imports() -> None:
    # The walker finds relative and function-level imports (else every check above passes empty).
    assert "labkit.util.procs" in _imports(LABKIT / "local" / "daemon.py")
    cli = set().union(*(_imports(p) for m, p in MODULES.items() if _within(m, {"labkit.cli"})))
    assert any(_within(m, {"labkit.local"}) for m in cli)
