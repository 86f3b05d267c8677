"""Session-wide test setup, loaded for every pytest run in this repository (tests/ and notebooks/).

- Tests never touch the user's lab state: LABKIT_LAB_DIR points at a temp dir, while the local
  services (started once by `labkit local up`) are shared through LABKIT_LOCAL_DIR.
- Tiers (README, "Running the tests"): every nbval item is a notebooks + integration + slow
  test, and a test that asks for the model, a local service or vLLM is an integration test
  whatever its own marks say, so `make check` (``-m "not (integration or notebooks or slow)"``)
  never waits for a service.
- One execution of the lab per run: nbval executes the numbered notebooks in lab order
  (``--nbval-lax``), and :class:`LabRun` records that execution the way `labkit run` would (the
  executed notebooks with their outputs, each notebook's status and time, report.md and
  report.json from labkit.run's own writer), so the full-run assertions in
  tests/test_notebooks.py read it instead of executing every notebook a second time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

# Fixtures (tests/conftest.py) that need the default model, a local service or vLLM.
INTEGRATION_FIXTURES = frozenset({"default_model", "local_hub", "default_tarball", "lab_run"})
# With pytest-xdist (`make test`) the lab's notebooks and these modules, whose tests read the lab's
# execution or its deployment, are one unit of work: one worker, in lab order (the browser test
# right after 07, the full-run test after the last notebook). See pytest_xdist_make_scheduler.
LAB_TESTS = frozenset({"test_notebooks.py", "test_browser.py"})
# Modules whose tests are all marked slow and whose collection alone takes seconds (schemathesis
# builds its coverage cases while collecting): not even imported when the marker expression
# leaves slow tests out (`make check`). pytest_itemcollected holds each to its slow mark.
SLOW_MODULES = frozenset({"test_local_aicore_schema.py"})


def pytest_configure(config: pytest.Config) -> None:
    # Set here rather than in a fixture: nbval's notebook items take no fixtures, and the
    # kernels they start inherit this process's environment.
    from labkit.config import load_config

    local_dir = load_config(root=ROOT).local_dir
    lab_dir = Path(tempfile.mkdtemp(prefix="labkit-test-"))
    config._labkit_lab_dir = lab_dir
    os.environ.update(
        LABKIT_ROOT=str(ROOT),
        LABKIT_LAB_DIR=str(lab_dir),
        LABKIT_LOCAL_DIR=str(local_dir),
        LABKIT_PROFILE="local",
        MPLBACKEND="Agg",
    )
    config._labkit_vllm_cores = _worker_cores()  # pytest_runtest_setup
    config._labkit_lab_run = LabRun(lab_dir / "runs" / "nbval")
    config.pluginmanager.register(config._labkit_lab_run, "labkit-lab-run")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # The run folder (executed notebooks, report, the browser test's screenshots) outlives a
    # failing session in the checkout's .lab/test-runs/ (gitignored); the test lab dir does not.
    lab_dir = getattr(session.config, "_labkit_lab_dir", None)
    runs = Path(lab_dir) / "runs" if lab_dir else None
    if exitstatus and session.testsfailed and runs and runs.is_dir() and any(runs.iterdir()):
        kept = ROOT / ".lab" / "test-runs" / time.strftime("%Y%m%d-%H%M%S")
        shutil.copytree(runs, kept, dirs_exist_ok=True)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"the failing run's folder is kept in {kept}")


def pytest_unconfigure(config: pytest.Config) -> None:
    lab_dir = getattr(config, "_labkit_lab_dir", None)
    if lab_dir:
        shutil.rmtree(lab_dir, ignore_errors=True)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under xdist, each worker's vLLM engines get cores of their own (VLLM_CPU_OMP_THREADS_BIND,
    inherited by every server, kernel and child the worker starts from here on).

    vLLM's "auto" binding pins every CPU engine's compute thread to the same core (core 0 of two,
    the other reserved for its API server), so two workers' engines shared one core while the
    other idled. The lab's worker (which runs a lab item first) takes the lower half of the CPUs,
    where the lab's deployment, started by `labkit local up` with "auto", also runs; the other
    worker the upper half. Set VLLM_CPU_OMP_THREADS_BIND yourself to choose."""
    config = item.config
    if config._labkit_vllm_cores is None:
        return
    if _is_lab_cell(item) or item.path.name in LAB_TESTS:
        config._labkit_lab_worker = True
    lab_cores, other_cores = config._labkit_vllm_cores
    lab_worker = getattr(config, "_labkit_lab_worker", False)
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = lab_cores if lab_worker else other_cores


def _worker_cores() -> tuple[str, str] | None:
    """The lab worker's and the other worker's cores, as VLLM_CPU_OMP_THREADS_BIND lists; None
    outside xdist, with fewer than two CPUs, or where the caller set the variable."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return None
    cpus = sorted(os.sched_getaffinity(0))
    half = len(cpus) // 2
    if half == 0:
        return None
    return ",".join(map(str, cpus[:half])), ",".join(map(str, cpus[half:]))


def _is_notebook_cell(item: pytest.Item) -> bool:
    return type(item).__name__ == "IPyNbCell"


def _notebook_name(item: pytest.Item) -> str:
    return Path(str(item.parent.path)).name


def _is_lab_cell(item: pytest.Item) -> bool:
    from labkit.run import NOTEBOOK_NAME

    return _is_notebook_cell(item) and bool(NOTEBOOK_NAME.match(_notebook_name(item)))


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name in SLOW_MODULES and config.option.markexpr:
        from _pytest.mark.expression import Expression

        wants_slow = Expression.compile(config.option.markexpr).evaluate(
            lambda name, **_: name == "slow"
        )
        if not wants_slow:
            return True
    return None


def pytest_itemcollected(item: pytest.Item) -> None:
    if item.path.name in SLOW_MODULES and not item.get_closest_marker("slow"):
        raise pytest.UsageError(f"{item.nodeid} is not marked slow: its module is in SLOW_MODULES")
    if _is_notebook_cell(item):
        for mark in ("notebooks", "integration", "slow"):
            item.add_marker(mark)
    elif INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
        item.add_marker("integration")
    if (
        item.get_closest_marker("after_lab_run") or item.get_closest_marker("after_notebook")
    ) and item.path.name not in LAB_TESTS:
        raise pytest.UsageError(
            f"{item.nodeid} reads the lab's execution: move it to one of the modules that run on "
            f"the lab's test worker ({', '.join(sorted(LAB_TESTS))}) or add its module there"
        )


@pytest.hookimpl(trylast=True)  # on the items that remain after `-m` and `-k`
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The full-run assertions read nbval's execution of the lab: they go after its last cell.
    lab_cells = [i for i in items if _is_lab_cell(i)]
    if lab_cells:
        after = [i for i in items if i.get_closest_marker("after_lab_run")]
        rest = [i for i in items if i not in after]
        last = rest.index(lab_cells[-1])
        items[:] = rest[: last + 1] + after + rest[last + 1 :]
        config._labkit_lab_run.expect({_notebook_name(i) for i in lab_cells})
        _place_after_notebooks(items, lab_cells)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items[:] = _longest_first(items)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadscope` with the lab as one scope: xdist hands out whole modules (a notebook's
    cells share one kernel), and the lab's notebooks plus the LAB_TESTS modules go to one worker
    in collection order. (xdist's own `loadgroup` marks cannot do this under pytest 9, which no
    longer reads the node id xdist rewrites; the scheduler sees node ids only, hence the paths.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    from labkit.run import NOTEBOOK_NAME

    class LabFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = Path(nodeid.split("::", 1)[0])
            if path.name in LAB_TESTS or NOTEBOOK_NAME.match(path.name):
                return "lab"
            return super()._split_scope(nodeid)

    return LabFirst(config, log)


def _longest_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """The order xdist hands out work in (with --no-loadscope-reorder): the lab first (its own
    worker, the longest chain), then the modules that use services or vLLM, then the quick ones,
    which fill the gaps at the end; collection order within each. Same on every worker."""
    heavy = {i.path for i in items if i.get_closest_marker("integration")}

    def rank(item: pytest.Item) -> int:
        if _is_lab_cell(item) or item.path.name in LAB_TESTS:
            return 0
        return 1 if item.path in heavy else 2

    return sorted(items, key=rank)


def _place_after_notebooks(items: list[pytest.Item], lab_cells: list[pytest.Item]) -> None:
    """``@pytest.mark.after_notebook("07_query.ipynb")``: right after that notebook's last cell
    in nbval's run of the lab, so the test sees what the lab has made by then (the running
    deployment of step 06, before 99_cleanup deletes it)."""
    movers: dict[str, list[pytest.Item]] = {}
    for item in items:
        if marker := item.get_closest_marker("after_notebook"):
            movers.setdefault(marker.args[0], []).append(item)
    for name, moving in movers.items():
        cells = [c for c in lab_cells if _notebook_name(c) == name]
        if cells:
            items[:] = [i for i in items if i not in moving]
            at = items.index(cells[-1]) + 1
            items[at:at] = moving


class LabRun:
    """nbval's execution of the lab notebooks, recorded as `labkit run` records its own: each
    executed notebook (outputs included) in ``out_dir``, each notebook's status and seconds, and
    the run report. ``report`` is None until every lab notebook nbval collected has run."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.expected: set[str] = set()
        self.report = None
        # notebook -> status, error, started (CallInfo.start of its first cell), done (NotebookRun)
        self._runs: dict[str, dict] = {}

    def expect(self, names: set[str]) -> None:
        self.expected = names

    def complete(self, names: set[str]) -> bool:
        """Whether nbval executed exactly the notebooks ``names`` in this run."""
        return self.report is not None and self.expected == names

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        if not _is_notebook_cell(item) or _notebook_name(item) not in self.expected:
            return
        name = _notebook_name(item)
        run = self._runs.setdefault(name, {"status": "ok", "error": "", "started": call.start})
        report = outcome.get_result()
        if call.when != "call":
            if report.failed and run["status"] == "ok":
                run.update(
                    status="failed", error=f"{call.when} failed: {report.longreprtext[:300]}"
                )
            return
        outputs = getattr(item, "test_outputs", None) or []
        item.cell.outputs = outputs
        item.cell.execution_count = item.cell_num + 1
        if report.failed and run["status"] == "ok":
            errors = [o for o in outputs if o.get("output_type") == "error"]
            why = f"{errors[0]['ename']}: {errors[0]['evalue']}" if errors else "cell failed"
            run.update(status="failed", error=" ".join(why.split()))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None):
        yield
        if not _is_notebook_cell(item) or _notebook_name(item) not in self.expected:
            return
        if nextitem is not None and nextitem.parent is item.parent:
            return
        self._write_notebook(item)

    def _write_notebook(self, item: pytest.Item) -> None:
        import nbformat

        from labkit.run import NotebookRun

        name = _notebook_name(item)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(item.parent.nb, self.out_dir / name)
        run = self._runs[name]
        run["done"] = NotebookRun(
            name,
            str(self.out_dir / name),
            run["status"],
            time.time() - run["started"],
            run["error"],
        )
        if self.expected <= {n for n, r in self._runs.items() if "done" in r}:
            self._write_report()

    def _write_report(self) -> None:
        from labkit.config import load_config
        from labkit.run import RunReport, write_report

        cfg = load_config()
        report = RunReport(str(self.out_dir), cfg.profile)
        report.notebooks = [self._runs[n]["done"] for n in sorted(self.expected)]
        write_report(cfg, report, self.out_dir)
        self.report = report
