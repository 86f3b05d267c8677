"""Editing and publishing: set the executable and scenario ids in the template text, commit the
template into the git repository AI Core syncs (never pushing), and list the executables already
there.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from labkit.templates.load import TemplateError, load
from labkit.templates.parts import get_path
from labkit.templates.spec import EXECUTABLE_NAME_ANNOTATION, SCENARIO_ID, SCENARIO_ID_LABEL
from labkit.util import names

_GIT_TIMEOUT_S = 60


def _value_node(root: yaml.Node | None, path: tuple[str, ...]) -> yaml.ScalarNode | None:
    """The scalar node at ``path`` (mapping keys) in a composed document; None where absent."""
    node = root
    for key in path:
        if not isinstance(node, yaml.MappingNode):
            return None
        found = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key]
        node = found[-1] if found else None
    return node if isinstance(node, yaml.ScalarNode) else None


def _scalar(value: str, plain: bool) -> str:
    """``value`` as a YAML scalar: plain where it was plain and reads back as this string."""
    if plain and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)


def _set_values(text: str, changes: dict[tuple[str, ...], str]) -> str:
    """The template text with the scalar at each path set (the rest of the text untouched)."""
    before = load(text)  # refuse what is not a template (strict YAML, one mapping)
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    spans = []
    for path, value in changes.items():
        node = _value_node(root, path)
        if node is None:
            raise TemplateError(
                f"the template has no {'.'.join(path[:-1])} {path[-1]}",
                f"add {path[-1]} under {'.'.join(path[:-1])}",
            )
        spans.append((node.start_mark.index, node.end_mark.index, _scalar(value, not node.style)))
    out = text
    for start, end, new in sorted(spans, reverse=True):
        out = out[:start] + new + out[end:]
    for path, value in changes.items():
        target: Any = before
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    try:
        same = load(out) == before
    except TemplateError:
        same = False
    if not same:  # e.g. an id with an anchor that another value refers to
        raise TemplateError(
            "setting the ids changed more than the ids", "write the ids out without anchors"
        )
    return out


def set_ids(text: str, *, executable: str | None = None, scenario: str | None = None) -> str:
    """The template text with the executable id (``metadata.name`` and the annotation
    executables.ai.sap.com/name) and the scenario id (the label scenarios.ai.sap.com/id) set; the
    rest untouched. SAP Help, "Serving Templates": metadata.name is the executable id, "unique
    among all executables available within the SAP AI Core main tenant"."""
    changes: dict[tuple[str, ...], str] = {}
    if executable is not None:
        if not names.is_executable_id(executable):
            raise TemplateError(
                f"executable id {executable!r} is invalid",
                "use 4-64 lowercase letters and digits, hyphens the only separator",
            )
        changes[("metadata", "name")] = executable
        changes[("metadata", "annotations", EXECUTABLE_NAME_ANNOTATION)] = executable
    if scenario is not None:
        if not SCENARIO_ID.fullmatch(scenario):
            raise TemplateError(
                f"scenario id {scenario!r} is invalid",
                "use 4-63 letters, digits, '-', '_' or '.', starting and ending alphanumeric",
            )
        changes[("metadata", "labels", SCENARIO_ID_LABEL)] = scenario
    return _set_values(text, changes) if changes else text


def set_scenario(text: str, scenario: str) -> str:
    """The template text with its scenario id label set to ``scenario`` (the rest untouched)."""
    return set_ids(text, scenario=scenario)


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run git in ``repo`` (never a repository above it), bounded in time."""
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(repo.parent), "GIT_TERMINAL_PROMPT": "0"}
    try:
        proc = subprocess.run(
            ["git", "-c", "commit.gpgsign=false", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            env=env,
        )
    except FileNotFoundError:
        raise TemplateError("git is not installed", "install git (apt-get install git)") from None
    except subprocess.TimeoutExpired:
        raise TemplateError(
            f"git {args[0]} in {repo} took over {_GIT_TIMEOUT_S} s", "check the repository"
        ) from None
    if check and proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout).split())[:300]
        raise TemplateError(f"git {args[0]} failed in {repo} ({detail})", "check the repository")
    return proc


def _is_repo_root(repo: Path) -> bool:
    if not (repo / ".git").exists():
        return False
    proc = _git(repo, "rev-parse", "--show-toplevel", check=False)
    return proc.returncode == 0 and Path(proc.stdout.strip()).resolve() == repo.resolve()


def _checked_path(path_in_repo: str) -> Path:
    """``path_in_repo`` as a relative *.yaml path inside the repository; TemplateError if not."""
    rel = Path(path_in_repo)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0] == ".git":
        raise TemplateError(
            f"path in the repository {path_in_repo!r} is not a relative path inside it",
            "use e.g. labkit/vllm-serving.yaml",
        )
    if rel.suffix not in (".yaml", ".yml"):
        raise TemplateError(
            f"{path_in_repo} does not end in .yaml", "AI Core syncs only *.yaml/*.yml files"
        )
    return rel


def _commit_if_changed(repo: Path, rel: Path, message: str) -> None:
    """Stage ``rel`` and commit it when it differs from HEAD (or there is no HEAD yet)."""
    _git(repo, "add", "--", rel.as_posix())
    has_head = _git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode == 0
    staged = _git(repo, "diff", "--cached", "--quiet", "--", rel.as_posix(), check=False)
    if not has_head or staged.returncode != 0:
        identity = []
        if not _git(repo, "config", "user.email", check=False).stdout.strip():
            identity = ["-c", "user.name=labkit", "-c", "user.email=labkit@localhost"]
        _git(repo, *identity, "commit", "-q", "-m", message, "--", rel.as_posix())


def publish(template_text: str, repo_dir: Path, path_in_repo: str, message: str) -> str:
    """Write the template into the git repo AI Core syncs and commit it if it changed; HEAD's sha.

    Creates the repository (``git init -b main``) when ``repo_dir`` is not one. Never pushes: on a
    tenant, push the commit to the remote the AI Core application watches.
    """
    repo = Path(repo_dir).expanduser().resolve()
    rel = _checked_path(path_in_repo)
    load(template_text)  # refuse to publish what is not even YAML
    repo.mkdir(parents=True, exist_ok=True)
    if not _is_repo_root(repo):
        if (repo / ".git").exists():
            raise TemplateError(f"{repo}/.git is not a usable repository", "remove it or fix it")
        _git(repo, "init", "-q", "-b", "main")
    target = repo / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.read_text(encoding="utf-8") != template_text:
        target.write_text(template_text, encoding="utf-8")
    _commit_if_changed(repo, rel, message)
    return _git(repo, "rev-parse", "HEAD").stdout.strip()


def published_executables(
    repo_dir: Path | None, folder: str, *, exclude: str | None = None
) -> dict[str, str]:
    """Executable ids of the templates already in the synced folder (id -> path in the repo)."""
    if repo_dir is None:
        return {}
    base = Path(repo_dir) / folder
    found: dict[str, str] = {}
    if not base.is_dir():
        return found
    for path in sorted([*base.rglob("*.yaml"), *base.rglob("*.yml")]):
        rel = path.relative_to(repo_dir).as_posix()
        if exclude and rel == exclude.strip("/"):
            continue
        try:
            name = get_path(load(path), "metadata", "name")
        except TemplateError:
            continue
        if isinstance(name, str):
            found.setdefault(name, rel)
    return found
