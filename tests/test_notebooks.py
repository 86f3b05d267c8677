"""Every notebook runs headless with papermill on the local profile; results land in the lab state."""

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import nbformat
import papermill
import pytest

from labkit import image, package
from labkit.config import LOCAL_S3_CREDENTIALS, load_config
from labkit.errors import StepError
from labkit.local.hub import MAIN_COMMIT
from labkit.run import RunReport, lab_notebooks, run_lab
from labkit.state import State

pytestmark = [pytest.mark.notebooks, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[1]


def _errors(path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return [
        o.get("ename", "")
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


@pytest.fixture(scope="session")
def lab_run(request: pytest.FixtureRequest, local_hub) -> RunReport:
    """The suite's one execution of the lab: nbval's, in lab order, recorded as `labkit run`
    records a run (conftest.LabRun); when nbval did not execute every lab notebook in this run
    (``pytest tests/test_notebooks.py`` alone), `labkit run` executes them here."""
    cfg = load_config()
    names = {p.name for p in lab_notebooks(cfg.root / "notebooks")}
    recorded = request.config._labkit_lab_run
    if recorded.complete(names):
        return recorded.report
    return run_lab(cfg, out_dir=cfg.lab_dir / "runs" / "papermill", progress=False)


@pytest.mark.after_lab_run
def test_the_lab_run_executes_every_notebook_and_records_results(lab_run: RunReport):
    cfg = load_config()
    report = lab_run
    run_dir = Path(report.out_dir)
    assert report.ok, [(n.notebook, n.error) for n in report.notebooks if n.status != "ok"]
    assert [n.notebook for n in report.notebooks] == [
        p.name for p in lab_notebooks(cfg.root / "notebooks")
    ]
    for n in report.notebooks:
        assert not _errors(n.output)
    state = State(cfg.state_file)
    assert state.get("setup")["ok"] is True
    size = state.get("size")
    assert size["fits"] is True
    assert size["kv_bytes_per_token"] == 23_040
    download = state.get("download")
    assert download["revision"] == MAIN_COMMIT
    assert package.verify_tarball(download["tar"]).sha256 == download["tar_sha256"]
    upload = state.get("upload")
    assert upload["artifact_url"] == (
        "ai://default/models/smollm2/6d86325/HuggingFaceTB--SmolLM2-135M-Instruct.tar"
    )
    assert upload["sha256"] == download["tar_sha256"]
    built = state.get("image")
    if image.available_builder(cfg) is None:
        assert built["reference"] == "" and built["note"]
    else:
        assert built["digest"].startswith("sha256:") and built["lint_ok"] is True
        assert built["tag"] == image.format_tag(date.today(), image.parse_tag(built["tag"])[1])
        assert "Paris" in built["smoke"]["answer"]
    template = state.get("template")
    assert template["lint"]["ok"] is True
    assert (template["executable_id"], template["scenario_id"]) == (cfg.executable, cfg.scenario)
    deploy = state.get("deploy")
    assert deploy["deployment_id"] and deploy["models"] == [download["repo_id"]]
    assert deploy["status"] == "DELETED"  # 99_cleanup ran last
    query = state.get("query")
    assert query["samples"] and all(s["answer"].strip() for s in query["samples"])
    assert len(query["generate"][0]["texts"]) == query["generate"][0]["n"]
    # Step 08 ran with the notebook's own parameters: every engine at n=1 and n=PARALLEL_N.
    defaults = {k: v["default"] for k, v in papermill.inspect_notebook(
        str(cfg.root / "notebooks" / "08_benchmark.ipynb")).items()}  # fmt: skip
    parallel_n = int(defaults["PARALLEL_N"])
    concurrencies = [int(c) for c in defaults["CONCURRENCIES"].strip("\"'").split(",")]
    bench = state.get("benchmark")
    engines = {(r["engine"], r["n"]) for r in bench["runs"]}
    for engine in ("vllm-offline", "hf-single", "hf-static", "vllm-server-deployment"):
        assert {(engine, 1), (engine, parallel_n)} <= engines, engine
    served = {(r["engine"], r["concurrency"]) for r in bench["runs"] if r["n"] == 1}
    assert {("vllm-server-deployment", c) for c in concurrencies} <= served
    assert ("vllm-server-direct", max(concurrencies)) in served  # the proxy comparison
    assert all(
        r["completed"] == r["requests"] and r["output_tokens_per_s"] > 0 for r in bench["runs"]
    )
    assert [r for r in bench["ratios"] if r["baseline"] != "TGI" and not r["ratio"]] == []
    assert bench["proxy"]["ratio"] > 0 and bench["crosscheck"]["ok"] is True
    assert bench["workload"]["requests"] == int(defaults["NUM_REQUESTS"])
    assert bench["workload"]["seed"] == int(defaults["SEED"])
    text = (run_dir / "report.md").read_text()
    assert "00_setup.ipynb" in text and deploy["deployment_id"] in text and "Paris" in text
    assert "| vLLM offline | HF one at a time |" in text and "launch post" in text
    for plot in bench["plots"]:  # copied beside the report, which shows them
        assert (run_dir / Path(plot).name).is_file()
        assert f"]({Path(plot).name})" in text
    # 06 shows the deployment URL and masks the token; 99 deleted it, and is safe to run twice.
    deployed = (run_dir / "06_deploy.ipynb").read_text()
    assert f"/v2/inference/deployments/{deploy['deployment_id']}" in deployed
    assert "Bearer ****" in deployed
    cleaned = nbformat.read(run_dir / "99_cleanup.ipynb", as_version=4)
    assert ">deleted<" in str(cleaned.cells)
    again = papermill.execute_notebook(
        str(cfg.root / "notebooks" / "99_cleanup.ipynb"),
        str(run_dir / "99_cleanup-again.ipynb"),
        cwd=str(cfg.root / "notebooks"),
        progress_bar=False,
    )
    assert "deleted before" in str(again.cells)
    # No secret of the run reaches an executed notebook, the state, the report or a log.
    service_key = json.loads((cfg.local_dir / "aicore-service-key.json").read_text())
    secrets = [LOCAL_S3_CREDENTIALS[1], service_key["clientsecret"]]
    jwt = re.compile(r"eyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]{10,}")
    written = [Path(n.output) for n in report.notebooks] + [run_dir / "99_cleanup-again.ipynb"]
    written += [run_dir / "report.md", cfg.state_file, *cfg.local_dir.glob("*.log")]
    written += [p for p in (cfg.local_dir / "aicore" / "deployments").rglob("*.log")]
    written += [p for p in (cfg.lab_dir / "benchmark").iterdir() if p.suffix != ".png"]
    for path in written:
        content = path.read_text(errors="replace")
        assert not any(secret in content for secret in secrets), path
        assert not jwt.search(content), f"a token in {path}"
    for name in ("06_deploy.ipynb", "99_cleanup.ipynb", "99_cleanup-again.ipynb"):
        assert set(re.findall(r"Bearer (.{4})", (run_dir / name).read_text())) <= {"****"}, name


def test_size_notebook_takes_injected_parameters(default_model, lab_env, tmp_path):
    cfg = load_config()
    papermill.execute_notebook(
        str(cfg.root / "notebooks" / "01_size_model.ipynb"),
        str(tmp_path / "01.ipynb"),
        parameters={"PLAN": "infer2.l", "MAX_MODEL_LEN": 4096},
        cwd=str(cfg.root / "notebooks"),
        progress_bar=False,
    )
    size = State(cfg.state_file).require("size")
    assert size["plan"] == "infer2.l"
    args = size["vllm_args"]
    assert args[args.index("--max-model-len") + 1] == "4096"


def test_a_failing_notebook_stops_the_run_and_is_named(tmp_path, lab_env, monkeypatch):
    root = tmp_path / "lab"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    for name, source in [("00_pass_step.ipynb", "x = 1"), ("01_fail_step.ipynb", "raise ValueError('boom')"),
                         ("02_never_runs.ipynb", "x = 2")]:  # fmt: skip
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nbformat.write(nb, root / "notebooks" / name)
    monkeypatch.setenv("LABKIT_ROOT", str(root))
    with pytest.raises(StepError, match="no notebook to run takes the parameter NOPE"):
        run_lab(load_config(), out_dir=tmp_path / "run", parameters={"NOPE": 1}, progress=False)
    with pytest.raises(StepError) as exc:
        run_lab(load_config(), out_dir=tmp_path / "run", progress=False)
    assert "01_fail_step.ipynb" in str(exc.value) and "boom" in str(exc.value)
    assert not (tmp_path / "run" / "02_never_runs.ipynb").exists()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| failed |" in report and "| ok |" in report
    assert "\n" not in str(exc.value) and "labkit run --resume" in str(exc.value)
    # Fixed, the run continues in the same folder from the notebook that failed.
    nb = nbformat.read(root / "notebooks" / "01_fail_step.ipynb", as_version=4)
    nb.cells[0].source = "x = 3"
    nbformat.write(nb, root / "notebooks" / "01_fail_step.ipynb")
    (tmp_path / "run" / "00_pass_step.ipynb").unlink()  # not executed again
    resumed = run_lab(load_config(), resume=True, progress=False)
    assert resumed.ok and resumed.out_dir == str(tmp_path / "run")
    assert [n.notebook for n in resumed.notebooks] == [
        "00_pass_step.ipynb",
        "01_fail_step.ipynb",
        "02_never_runs.ipynb",
    ]
    assert not (tmp_path / "run" / "00_pass_step.ipynb").exists()
    assert (tmp_path / "run" / "02_never_runs.ipynb").exists()
    assert "| failed |" not in (tmp_path / "run" / "report.md").read_text()
    with pytest.raises(StepError, match="no failed run to resume"):
        run_lab(load_config(), resume=True, progress=False)


def test_the_suites_lab_run_is_recorded_as_labkit_run_records_one(tmp_path: Path) -> None:
    """conftest.LabRun on a lab of two notebooks, the second failing: nbval executes them once, and
    the run folder holds both executed notebooks with their outputs and the run's report."""
    root = tmp_path / "lab"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "conftest.py", root / "conftest.py")
    (root / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\naddopts = "--nbval-lax --nbval-current-env -p no:cacheprovider"\n'
        'markers = ["notebooks: x", "integration: x", "slow: x", "after_lab_run: x",'
        ' "after_notebook: x"]\n'
    )
    cells = {"00_say_hello.ipynb": ["print('hello from 00')", "x = 1"],
             "01_fail_step.ipynb": ["print('before')", "raise ValueError('boom')"]}  # fmt: skip
    for name, sources in cells.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}  # fmt: skip
        nbformat.write(nb, root / "notebooks" / name)
    (root / "test_notebooks.py").write_text(  # conftest: where after_lab_run tests live
        "import json, pytest\n"
        "@pytest.mark.after_lab_run\n"
        "def test_reads(request):\n"
        "    run = request.config._labkit_lab_run\n"
        "    out = {'expected': sorted(run.expected), 'dir': str(run.out_dir),\n"
        "           'runs': [[n.notebook, n.status, n.error] for n in run.report.notebooks]}\n"
        f"    open({str(tmp_path / 'seen.json')!r}, 'w').write(json.dumps(out))\n"
        "    import shutil; shutil.copytree(run.out_dir, "
        f"{str(tmp_path / 'run')!r})\n"
        "@pytest.mark.after_notebook('00_say_hello.ipynb')\n"
        "def test_between(request):\n"
        "    runs = request.config._labkit_lab_run._runs\n"
        "    done = sorted(n for n, r in runs.items() if 'done' in r)\n"
        f"    open({str(tmp_path / 'between.json')!r}, 'w').write(json.dumps(done))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKIT_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "test_notebooks.py", "notebooks"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "1 failed, 5 passed" in done.stdout, done.stdout[-3000:]  # the raising cell fails
    # after_notebook: right after 00's last cell, before 01's first.
    assert json.loads((tmp_path / "between.json").read_text()) == ["00_say_hello.ipynb"]
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["expected"] == ["00_say_hello.ipynb", "01_fail_step.ipynb"]
    assert seen["runs"] == [["00_say_hello.ipynb", "ok", ""],
                            ["01_fail_step.ipynb", "failed", "ValueError: boom"]]  # fmt: skip
    run = tmp_path / "run"
    hello = nbformat.read(run / "00_say_hello.ipynb", as_version=4)
    assert hello.cells[0].outputs[0]["text"] == "hello from 00\n"
    assert [c.execution_count for c in hello.cells] == [1, 2]
    assert not _errors(run / "00_say_hello.ipynb") and _errors(run / "01_fail_step.ipynb")
    report = (run / "report.md").read_text()
    assert "| [00_say_hello.ipynb](00_say_hello.ipynb) | ok |" in report
    assert "| failed | " in report and "ValueError: boom" in report
    assert json.loads((run / "report.json").read_text())["ok"] is False
