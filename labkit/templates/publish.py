"""Editing and publishing: set the scenario id in the template text, commit the template into
the git repository AI Core syncs (never pushing), and list the executables already there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from labkit.templates.load import TemplateError, load
from labkit.templates.parts import get_path
from labkit.templates.spec import SCENARIO_ID, SCENARIO_ID_LABEL

_GIT_TIMEOUT_S = 60


def set_scenario(text: str, scenario: str) -> str:
    """The template text with its scenario id label set to ``scenario`` (the rest untouched)."""
    if not SCENARIO_ID.fullmatch(scenario):
        raise TemplateError(
            f"scenario id {scenario!r} is invalid",
            "use 4-63 letters, digits, '-', '_' or '.', starting and ending alphanumeric",
        )
    pattern = re.compile(r"^(\s+" + re.escape(SCENARIO_ID_LABEL) + r":[ \t]*)(.*?)[ \t]*$", re.M)
    matches = pattern.findall(text)
    if len(matches) != 1:
        raise TemplateError(
            f"the template has {len(matches)} {SCENARIO_ID_LABEL} lines",
            "keep exactly one, under metadata.labels",
        )
    out = pattern.sub(lambda m: m.group(1) + json.dumps(scenario), text)
    if get_path(load(out), "metadata", "labels", SCENARIO_ID_LABEL) != scenario:
        raise TemplateError(
            f"{SCENARIO_ID_LABEL} is not under metadata.labels", "move the label there"
        )
    return out


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
