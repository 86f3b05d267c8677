"""`labkit template render|lint`."""

from __future__ import annotations

import json

from labkit_cli import labkit
from templates_common import (
    CPU_BINDINGS,
    GOLDEN,
    SHIPPED,
    URL,
    _lab_state,
    sub,
    text,
)

from labkit import templates

# --- CLI ------------------------------------------------------------------------------------------


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `labkit ARGS` in this process: (exit code, stdout, stderr)."""
    from labkit.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_lint_json_contract(tmp_path):
    """The console script itself: one JSON object on stdout, exit 0 / 1 / 2."""
    ok = labkit("template", "lint", str(SHIPPED), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"ok": True, "errors": [], "warnings": []}
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(sub(text(), "- name: kserve-container", "- name: vllm"))
    bad = labkit("template", "lint", str(bad_file), "--json")
    assert bad.returncode == 1
    out = json.loads(bad.stdout)
    assert out["ok"] is False and set(out) == {"ok", "errors", "warnings"}
    assert {"rule", "message"} == set(out["errors"][0])
    assert "kserve-container" in {e["rule"] for e in out["errors"]}


def test_cli_lint_text_and_user_errors(capsys, tmp_path):
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(sub(text(), "- name: kserve-container", "- name: vllm"))
    code, out, _ = cli(capsys, "template", "lint", str(bad_file))
    assert code == 1 and "error   kserve-container:" in out and "not ok" in out
    code, out, err = cli(capsys, "template", "lint", str(tmp_path / "nope.yaml"), "--json")
    assert code == 2 and out == ""
    assert err.startswith("labkit: error: cannot read the template")
    assert len(err.strip().splitlines()) == 1
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: [unclosed\n")
    code, out, err = cli(capsys, "template", "lint", str(broken), "--json")
    assert code == 1 and json.loads(out)["errors"][0]["rule"] == "yaml-parse"


def test_cli_lint_with_bindings(capsys):
    code, out, _ = cli(capsys, "template", "lint", str(SHIPPED), "--set", "numGpus=3",
                       "--set", "resourcePlan=infer2.4xl", "--json")  # fmt: skip
    assert code == 0  # warnings alone pass
    # Tensor parallelism without the /dev/shm bindings step 05 adds for it: dev-shm warns.
    assert {w["rule"] for w in json.loads(out)["warnings"]} == {"tensor-parallel-idle", "dev-shm"}
    shm = [
        a for k, v in templates.with_shm({"numGpus": "3"}).items() for a in ("--set", f"{k}={v}")
    ]
    code, out, _ = cli(capsys, "template", "lint", str(SHIPPED), *shm,
                       "--set", "resourcePlan=infer2.4xl", "--json")  # fmt: skip
    assert code == 0 and {w["rule"] for w in json.loads(out)["warnings"]} == {
        "tensor-parallel-idle"
    }
    code, out, _ = cli(capsys, "template", "lint", str(SHIPPED), "--set", "dtype=bf16", "--json")
    assert code == 1 and "env-value" in {e["rule"] for e in json.loads(out)["errors"]}
    code, _, err = cli(capsys, "template", "lint", str(SHIPPED), "--set", "novalue")
    assert code == 2 and "KEY=VALUE" in err


def test_cli_lint_with_the_lab_state(capsys, lab_env, tmp_path, monkeypatch):
    from labkit.config import load_config

    monkeypatch.setenv("LABKIT_TEMPLATE_REPO_DIR", str(tmp_path / "git"))
    monkeypatch.setenv("LABKIT_EXECUTABLE", "labkit-vllm-jane")
    monkeypatch.setenv("LABKIT_SCENARIO", "labkit-vllm-jane")
    _lab_state(load_config())
    # The file says labkit-vllm; with --lab-state it is linted with the lab's ids, as step 05
    # publishes it (else the scenario check would fail).
    published = templates.set_ids(
        text(), executable="labkit-vllm-jane", scenario="labkit-vllm-jane"
    )
    # Already published under its own name: that copy is this template, not a clash.
    templates.publish(published, tmp_path / "git", "labkit/vllm-serving.yaml", "publish")
    args = [a for k, v in CPU_BINDINGS.items() for a in ("--set", f"{k}={v}")]
    code, out, _ = cli(capsys, "template", "lint", str(SHIPPED), "--lab-state", *args, "--json")
    assert code == 0 and json.loads(out) == {"ok": True, "errors": [], "warnings": []}
    code, out, _ = cli(capsys, "template", "lint", str(SHIPPED), "--lab-state", *args,
                       "--set", "revision=" + "b" * 40, "--json")  # fmt: skip
    assert code == 1 and "revision" in {e["rule"] for e in json.loads(out)["errors"]}
    templates.publish(text(), tmp_path / "git", "labkit/other-user.yaml", "another user's")
    code, out, _ = cli(capsys, "template", "lint", str(SHIPPED), "--lab-state", *args, "--json")
    assert code == 0, out  # labkit-vllm is not the lab's id: no clash
    templates.publish(published, tmp_path / "git", "labkit/copy.yaml", "a copy")
    code, out, _ = cli(capsys, "template", "lint", str(SHIPPED), "--lab-state", *args, "--json")
    assert code == 1 and "executable-id-unique" in {e["rule"] for e in json.loads(out)["errors"]}
    monkeypatch.setenv("LABKIT_SCENARIO", "another-scenario")  # the file as is when ids fail
    broken = tmp_path / "no-labels.yaml"
    broken.write_text(text().replace('    scenarios.ai.sap.com/id: "labkit-vllm"\n', ""))
    code, out, _ = cli(capsys, "template", "lint", str(broken), "--lab-state", *args, "--json")
    assert code == 1 and "labels-required" in {e["rule"] for e in json.loads(out)["errors"]}


def test_cli_render(capsys):
    args = ["template", "render", str(SHIPPED), "--artifact", f"model={URL}"]
    args += [a for k, v in CPU_BINDINGS.items() for a in ("--set", f"{k}={v}")]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    assert out == (GOLDEN / "vllm-serving.cpu.yaml").read_text()
    code, out, _ = cli(capsys, *args, "--json")
    assert code == 0 and json.loads(out)["resource_plan"] == "basic"
    code, out, err = cli(capsys, "template", "render", str(SHIPPED), "--artifact", f"model={URL}")
    assert code == 2 and out == "" and "have no default and no binding" in err
