"""Notebook conventions (CONTRIBUTING.md): names, skeleton, parameters cell, no committed outputs."""

import ast
import json
import re
from pathlib import Path

import pytest

from labkit.run import NOTEBOOK_NAME, lab_notebooks

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_every_notebook_is_numbered_verb_object_or_the_template():
    bad = [p.name for p in ALL if not NOTEBOOK_NAME.match(p.name) and p.name != "_template.ipynb"]
    assert not bad, f"rename to NN_verb_object.ipynb: {bad}"
    assert (NOTEBOOKS / "_template.ipynb").exists()


def test_numbers_are_unique_and_contiguous():
    numbers = [int(p.name[:2]) for p in lab_notebooks(NOTEBOOKS)]
    steps = [n for n in numbers if n != 99]  # 99 is the clean-up, always last
    assert len(numbers) == len(set(numbers))
    assert steps == list(range(len(steps)))


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_committed_notebooks_carry_no_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; run nbstripout"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_skeleton(path):
    cells = json.loads(path.read_text())["cells"]
    text = ["".join(c["source"]) for c in cells]
    assert cells[0]["cell_type"] == "markdown" and re.match(r"# \S", text[0]), (
        "first cell: one # title"
    )
    headings = [
        t.splitlines()[0] for t, c in zip(text, cells, strict=True) if c["cell_type"] == "markdown"
    ]
    for section in ("## Overview", "## Prerequisites", "## Setup", "## Summary"):
        assert section in headings, f"{path.name} lacks {section}"
    assert "What's next" in text[-1]
    tagged = [
        i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    assert len(tagged) == 1, "exactly one cell tagged parameters"
    assert text.index(next(t for t in text if t.startswith("## Prerequisites"))) < tagged[0]
    assert tagged[0] < text.index(next(t for t in text if t.startswith("## Setup"))), (
        "parameters before Setup"
    )
    assert not any(
        c["cell_type"] == "code" and re.search(r"^\s*def ", "".join(c["source"]), re.M)
        for c in cells
    ), "no def in notebooks: put logic in labkit"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_parameters_are_typed_commented_literals(path):
    cell = next(
        c
        for c in json.loads(path.read_text())["cells"]
        if "parameters" in c.get("metadata", {}).get("tags", [])
    )
    source = "".join(cell["source"])
    for line in source.splitlines():
        assert "#" in line, f"comment every parameter: {line!r}"
    for node in ast.parse(source).body:
        assert isinstance(node, ast.AnnAssign), f"typed assignment only: {ast.unparse(node)}"
        assert isinstance(node.value, ast.Constant), f"literal only: {ast.unparse(node)}"
        name = node.target.id
        assert name.isupper(), f"parameter names are UPPER_CASE: {name}"
        assert not re.search(r"(TOKEN|PASSWORD|SECRET|_KEY)$", name), (
            f"secrets are never parameters: {name}"
        )
    # papermill --help-notebook and parameter injection must see every one of them.
    import papermill

    seen = set(papermill.inspect_notebook(str(path)))
    declared = {node.target.id for node in ast.parse(source).body}
    assert seen == declared, f"papermill cannot parse: {sorted(declared - seen)}"


LAUNCH_POST = "https://blog.vllm.ai/2023/06/20/vllm.html"
REFERENCES = (LAUNCH_POST, "https://docs.vllm.ai", "https://help.sap.com/docs/sap-ai-core")


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_whats_next_is_a_link_and_the_notebook_ends_with_references(path):
    last = "".join(json.loads(path.read_text())["cells"][-1]["source"])
    upcoming = last.split("### What's next", 1)[1].split("###", 1)[0]
    assert re.search(r"\[[^\]]+\.ipynb\]\([^)]+\.ipynb\)", upcoming), (
        f"{path.name}: link the next notebook, [NN_name.ipynb](NN_name.ipynb)"
    )
    references = last.split("### Resources and references", 1)
    assert len(references) == 2, f"{path.name} ends without '### Resources and references'"
    for url in REFERENCES:
        assert f"]({url})" in references[1], f"{path.name}: link {url}"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_a_notebook_opens_unmodified(path):
    # JupyterLab writes the kernel's language_info into the notebook when the kernel starts; one
    # that differs in any key marks the notebook modified, and closing it then asks to save.
    from ipykernel.ipkernel import IPythonKernel

    meta = json.loads(path.read_text())["metadata"]
    assert meta["kernelspec"] == {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    assert meta["language_info"] == IPythonKernel.language_info, (
        f"{path.name}: the kernel reports other language_info (after a Python upgrade, write "
        "ipykernel.ipkernel.IPythonKernel.language_info into every notebook's metadata)"
    )
