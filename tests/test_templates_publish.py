"""labkit.templates.publish: the scenario id and publishing to git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from templates_common import (
    text,
)

from labkit import templates
from labkit.templates import TemplateError

# --- scenario, publishing -------------------------------------------------------------------------


def test_set_scenario_changes_only_the_label():
    out = templates.set_scenario(text(), "team-llms")
    assert templates.load(out)["metadata"]["labels"]["scenarios.ai.sap.com/id"] == "team-llms"
    assert out.replace('"team-llms"', '"labkit-vllm"') == text()
    assert templates.set_scenario(text(), "labkit-vllm") == text()
    with pytest.raises(TemplateError, match="scenario id"):
        templates.set_scenario(text(), "no spaces please")


def test_set_ids_sets_the_executable_id_its_annotation_and_the_scenario():
    """SAP Help, "Serving Templates": metadata.name is the executable id, unique in the tenant."""
    out = templates.set_ids(text(), executable="labkit-vllm-jane", scenario="labkit-vllm-jane")
    meta = templates.load(out)["metadata"]
    assert meta["name"] == "labkit-vllm-jane"
    assert meta["annotations"]["executables.ai.sap.com/name"] == "labkit-vllm-jane"
    assert meta["labels"]["scenarios.ai.sap.com/id"] == "labkit-vllm-jane"
    changed = [(a, b) for a, b in zip(text().splitlines(), out.splitlines(), strict=True) if a != b]
    assert changed == [
        ("  name: labkit-vllm", "  name: labkit-vllm-jane"),
        ('    executables.ai.sap.com/name: "labkit-vllm"',
         '    executables.ai.sap.com/name: "labkit-vllm-jane"'),
        ('    scenarios.ai.sap.com/id: "labkit-vllm"', '    scenarios.ai.sap.com/id: "labkit-vllm-jane"'),
    ]  # fmt: skip
    assert templates.set_ids(text(), executable="labkit-vllm", scenario="labkit-vllm") == text()
    assert templates.set_ids(text()) == text()
    numeric = templates.set_ids(text(), scenario="1234")  # stays a string, quoted
    assert templates.load(numeric)["metadata"]["labels"]["scenarios.ai.sap.com/id"] == "1234"
    with pytest.raises(TemplateError, match="executable id"):
        templates.set_ids(text(), executable="Labkit_vLLM")
    with pytest.raises(TemplateError, match=r"no metadata\.annotations"):
        templates.set_ids(text().replace("    executables.ai.sap.com/name:", "    x:"),
                          executable="labkit-vllm-jane")  # fmt: skip


def test_set_ids_keeps_any_layout_and_refuses_a_shared_anchor():
    flow = ("metadata: {name: old-name, annotations: {executables.ai.sap.com/name: 'Old'},\n"
            "  labels: {scenarios.ai.sap.com/id: old}}\n")  # fmt: skip
    assert templates.set_ids(flow, executable="new-name", scenario="new.scenario") == (
        'metadata: {name: new-name, annotations: {executables.ai.sap.com/name: "new-name"},\n'
        "  labels: {scenarios.ai.sap.com/id: new.scenario}}\n"
    )
    anchored = (
        "metadata:\n  name: &id labkit-vllm\n  annotations:\n"
        "    executables.ai.sap.com/name: labkit-vllm\n  labels:\n"
        "    scenarios.ai.sap.com/id: labkit-vllm\nspec:\n  other: *id\n"
    )
    with pytest.raises(TemplateError, match="more than the ids"):
        templates.set_ids(anchored, executable="labkit-vllm-jane")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def test_publish_commits_once_per_change(tmp_path):
    repo = tmp_path / "templates-git"
    first = templates.publish(text(), repo, "labkit/vllm-serving.yaml", "add the template")
    assert len(first) == 40 and git(repo, "rev-parse", "HEAD") == first
    assert git(repo, "branch", "--show-current") == "main"
    assert (repo / "labkit" / "vllm-serving.yaml").read_text() == text()
    again = templates.publish(text(), repo, "labkit/vllm-serving.yaml", "add the template")
    assert again == first and git(repo, "rev-list", "--count", "HEAD") == "1"
    changed = templates.set_scenario(text(), "team-llms")
    second = templates.publish(changed, repo, "labkit/vllm-serving.yaml", "scenario team-llms")
    assert second != first and git(repo, "rev-list", "--count", "HEAD") == "2"
    assert git(repo, "status", "--porcelain") == ""
    assert templates.published_executables(repo, "labkit") == {
        "labkit-vllm": "labkit/vllm-serving.yaml"
    }
    assert templates.published_executables(repo, "labkit", exclude="labkit/vllm-serving.yaml") == {}


def test_publish_never_uses_an_enclosing_repository(tmp_path):
    outer = tmp_path / "outer"
    outer.mkdir()
    git(outer, "init", "-q", "-b", "main")
    inner = outer / "nested" / "templates-git"
    templates.publish(text(), inner, "labkit/t.yaml", "nested")
    assert (inner / ".git").is_dir()
    assert git(outer, "rev-list", "--all") == ""  # nothing committed to the outer repo


@pytest.mark.parametrize("path", ["../escape.yaml", "/abs.yaml", "labkit/t.txt", ".git/x.yaml"])
def test_publish_refuses_bad_paths(tmp_path, path):
    with pytest.raises(TemplateError):
        templates.publish(text(), tmp_path / "repo", path, "x")


def test_publish_refuses_what_is_not_yaml(tmp_path):
    with pytest.raises(TemplateError, match="not valid YAML"):
        templates.publish("a: [b\n", tmp_path / "repo", "labkit/t.yaml", "x")
