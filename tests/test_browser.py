"""The lab as a newcomer meets it: JupyterLab in a real Chromium (Playwright driving Debian's
chromium), "Run All" on 00, 01 and 07, no error output and no browser console errors; the 01
form changes what is recorded; the 07 chat box sends one request per question.

JupyterLab serves a copy of the notebooks (nothing is saved into the checkout) on a free port
with a token, and the kernels use a copy of the lab state, so the suite's own run of the lab is
untouched. 07 needs a running deployment: in the suite this test runs right after nbval's run
of 07 (``after_notebook``), before 99_cleanup deletes it; run alone, it runs the lab up to 07
first and cleans up after. On failure each page's screenshot lands in the run folder.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labkit import query
from labkit.config import load_config
from labkit.errors import LabError
from labkit.run import run_lab
from labkit.state import State
from labkit.util import net, procs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.after_notebook("07_query.ipynb"),
]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's, from `make system`
RUN_ALL_MS = 15 * 60 * 1000  # 07 loads a second engine for its offline batch
# JupyterLab settings for the test's server: no autosave, no news or update checks (no internet).
SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

# --- the lab behind the browser -------------------------------------------------------------------


def _serving(cfg) -> bool:
    """Whether the lab state holds a deployment that answers."""
    state = State(cfg.state_file)
    if (state.get("deploy") or {}).get("status") != "RUNNING":
        return False
    try:
        with query.connect(cfg, state) as client:
            client.metrics()
    except LabError:
        return False
    return True


@pytest.fixture(scope="module")
def run_dir(request: pytest.FixtureRequest) -> Path:
    """Where the screenshots of a failure go: the suite's run folder."""
    recorded = getattr(request.config, "_labkit_lab_run", None)
    folder = recorded.out_dir if recorded else load_config().runs_dir / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def lab_copy(tmp_path_factory: pytest.TempPathFactory, run_dir: Path) -> Iterator[Path]:
    """A lab dir holding a copy of the lab state with a running deployment."""
    cfg = load_config()
    ran_lab = not _serving(cfg)
    if ran_lab:  # run alone: the lab up to 07 gives the deployment
        run_lab(cfg, only=[f"{n:02d}" for n in range(8)], out_dir=run_dir / "lab", progress=False)
    lab = tmp_path_factory.mktemp("browser-lab")
    shutil.copy(cfg.state_file, lab / "state.json")
    yield lab
    if ran_lab:
        run_lab(cfg, only=["99"], out_dir=run_dir / "cleanup", progress=False)


@pytest.fixture(scope="module")
def jupyter(lab_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """JupyterLab on a free port with a token, over a copy of the notebooks; its base URL."""
    work = tmp_path_factory.mktemp("jupyter")
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    for name, values in SETTINGS.items():
        path = work / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = net.free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # plots inline, as for users
    env.update(
        LABKIT_LAB_DIR=str(lab_copy),
        JUPYTERLAB_SETTINGS_DIR=str(work / "settings"),
        JUPYTER_CONFIG_DIR=str(work / "config"),
        JUPYTER_RUNTIME_DIR=str(work / "runtime"),
    )
    argv = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={work / 'notebooks'}",
        "--LabApp.expose_app_in_browser=True",  # the test drives it through its commands
        *(["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
    ]
    with open(work / "jupyter.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(proc, url, token, work / "jupyter.log")
        yield f"{url}?token={token}"
    finally:
        procs.stop_group(proc.pid, proc=proc)


def _wait_for_server(proc: subprocess.Popen, url: str, token: str, log: Path) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/api/status", params={"token": token}, timeout=1).is_success:
                return
        except httpx.HTTPError:
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)
    pytest.fail(f"jupyter lab did not answer: {log.read_text()[-2000:]}")


# --- the browser ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed: run `make system` as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Notebook:
    """A notebook open in JupyterLab in the browser; console errors are collected."""

    def __init__(self, browser, base: str, name: str, run_dir: Path) -> None:
        self.name, self.run_dir = name, run_dir
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.set_default_timeout(180_000)  # a kernel start on a busy machine
        self.console: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.console.append(m.text))
        self.page.on("pageerror", lambda e: self.console.append(str(e)))
        url, token = base.split("?", 1)
        self.page.goto(f"{url}/lab/tree/{name}?reset&{token}")
        self.page.wait_for_function(f"""() => {{
            const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            return w && w.context && w.context.path === {json.dumps(name)}
                && w.sessionContext.session && w.sessionContext.session.kernel
                && w.sessionContext.session.kernel.status === 'idle'; }}""")  # fmt: skip

    def js(self, expression: str):
        return self.page.evaluate(f"() => {{ const w = window.jupyterapp.shell.currentWidget; "
                                  f"return {expression}; }}")  # fmt: skip

    @property
    def dirty(self) -> bool:
        return self.js("w.context.model.dirty")

    def run_all(self) -> dict:
        """Run all cells; the notebook as it stands when the kernel is done."""
        self.page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        return self.wait_done()

    def wait_done(self) -> dict:
        """Wait until no cell is queued or running and the kernel is idle; the notebook JSON."""
        self.page.wait_for_function("""() => {
            const w = window.jupyterapp.shell.currentWidget;
            const prompts = [...w.node.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
            return w.sessionContext.session.kernel.status === 'idle'
                && prompts.every(p => !p.textContent.includes('*')); }""", timeout=RUN_ALL_MS)  # fmt: skip
        return self.js("w.context.model.toJSON()")

    def run_code(self, source: str) -> str:
        """Add a cell at the end, run it, and return its text/plain result."""
        index = self.js("w.content.model.cells.length")
        self.js(f"(w.content.model.sharedModel.insertCell({index}, "
                f"{{cell_type: 'code', source: {json.dumps(source)}}}), "
                f"w.content.activeCellIndex = {index})")  # fmt: skip
        self.page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-cell')")
        outputs = self.wait_done()["cells"][index]["outputs"]
        assert outputs and outputs[0]["output_type"] == "execute_result", outputs
        return outputs[0]["data"]["text/plain"]

    def screenshot(self) -> None:
        self.page.screenshot(path=self.run_dir / f"browser-{Path(self.name).stem}.png",
                             full_page=True)  # fmt: skip


@pytest.fixture
def open_notebook(browser, jupyter: str, run_dir: Path, request: pytest.FixtureRequest):
    """Open notebooks in the browser; when the test fails, each one's screenshot goes into the
    run folder."""
    opened: list[Notebook] = []
    failed_before = request.session.testsfailed

    def open_(name: str) -> Notebook:
        opened.append(Notebook(browser, jupyter, name, run_dir))
        return opened[-1]

    yield open_
    for nb in opened:
        if request.session.testsfailed > failed_before:  # this test's call failed
            nb.screenshot()
        nb.page.close()


def assert_ran_cleanly(nb: Notebook, executed: dict) -> None:
    """Every code cell ran, none left an error output, and the browser logged no error."""
    cells = [c for c in executed["cells"] if c["cell_type"] == "code"]
    errors = [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"{nb.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    assert all(c["execution_count"] for c in cells), f"{nb.name}: cells left unrun"
    assert not nb.console, f"{nb.name}: browser console errors: {nb.console[:5]}"


# --- the tests ----------------------------------------------------------------------------------------


def test_setup_runs_in_the_browser_and_opens_unmodified(open_notebook) -> None:
    nb = open_notebook("00_setup.ipynb")
    assert not nb.dirty, "the notebook shows as modified right after opening"
    assert_ran_cleanly(nb, nb.run_all())


def test_the_sizing_form_changes_the_verdict_and_the_recorded_plan(open_notebook, lab_copy) -> None:
    nb = open_notebook("01_size_model.ipynb")
    assert_ran_cleanly(nb, nb.run_all())
    verdict = nb.page.locator(".labkit-plan")
    before = verdict.text_content()
    assert State(lab_copy / "state.json").require("size")["plan"] == before
    plan = "infer2.l" if before != "infer2.l" else "infer2.2xl"
    nb.page.locator(f"select:has(option:text-is('{plan}'))").select_option(plan)
    # The form records a sizing before its verdict shows it.
    nb.page.locator(f".labkit-plan:text-is('{plan}')").wait_for(state="attached")
    assert State(lab_copy / "state.json").require("size")["plan"] == plan
    assert plan in nb.page.locator(".labkit-recorded").text_content()
    assert not nb.console, nb.console


def test_the_chat_box_sends_one_request_per_question(open_notebook, lab_copy) -> None:
    nb = open_notebook("07_query.ipynb")
    assert_ran_cleanly(nb, nb.run_all())
    cfg = load_config(lab_dir=lab_copy)
    with query.connect(cfg, State(cfg.state_file)) as client:
        before = client.metrics().summary()["requests finished"]
        question = "What is the capital of Germany?"
        nb.page.get_by_placeholder("Ask the model and press Enter").fill(question)
        nb.page.get_by_role("button", name="Ask").click()
        # The kernel takes this cell after the messages of the typing and the click: whatever
        # they asked has been answered by the time it runs.
        asked, last, text = ast.literal_eval(
            nb.run_code("len(box.answers), box.answers[-1].prompt, box.text")
        )
        after = client.metrics().summary()["requests finished"]
    assert (asked, last) == (2, question)  # the headless question, then this one
    assert after - before == 1, f"{after - before} requests reached the deployment"
    shown = nb.page.locator(".labkit-answer").text_content()
    assert text.strip() and shown.strip() == text.strip()
    assert not nb.console, nb.console
