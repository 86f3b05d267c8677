"""The whole benchmark, as the notebook and the script run it: a session over the workload, the
engines (started on first use) and the results, and the notebook's way to open one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.bench.crosscheck import CrossCheck, vllm_bench_serve
from labkit.bench.engines import Worker, engine_threads, run_hf, run_offline
from labkit.bench.metrics import RunResult, RunTable
from labkit.bench.plan import Plan
from labkit.bench.proxy import ProxyComparison, compare_proxy
from labkit.bench.report import BenchReport, machine
from labkit.bench.server import (
    Target,
    deployment_target,
    local_predictor_url,
    run_server,
    server_target,
)
from labkit.bench.workload import MAX_PROMPT_TOKENS, Workload, build_workload
from labkit.config import Config
from labkit.errors import ConfigError, StepError
from labkit.state import State
from labkit.util.html import esc


@dataclass
class Skipped:
    """A part of the benchmark that did not run here, and why."""

    what: str
    reason: str

    def line(self) -> str:
        """One line for a terminal."""
        return f"{self.what}: skipped, {self.reason}"

    def _repr_html_(self) -> str:
        return f"<div><b>{esc(self.what)}</b>: skipped, {esc(self.reason)}</div>"


# --- the whole benchmark, as the notebook and the script run it ----------------------------------


class Bench:
    """One benchmark session: the workload, the engines (started on first use), the results."""

    def __init__(
        self,
        model_path: str | Path,
        workload: Workload,
        out_dir: str | Path,
        *,
        model_name: str | None = None,
        deployment: Target | None = None,
        direct: Target | None = None,
        dtype: str = "float32",
        load_format: str = "auto",
        hf_threads: int | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.workload = workload
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.model_name = model_name or self.model_path.name
        self.deployment = deployment
        self.direct = direct
        self.dtype = dtype
        self.load_format = load_format  # "dummy": random weights of the model's shape (a GPU run)
        self.hf_threads = hf_threads or engine_threads()
        self.progress = progress
        self.log = log  # gets one line per run and comparison as it ends (a terminal's progress)
        self.runs: list[RunResult] = []
        self.proxy: ProxyComparison | None = None
        self.crosscheck: CrossCheck | None = None
        self.notes: list[str] = []
        self._workers: dict[str, Worker] = {}

    @classmethod
    def open(
        cls,
        model_path: str | Path,
        out_dir: str | Path,
        *,
        num_requests: int,
        seed: int = 0,
        max_output_tokens: int | None = None,
        max_prompt_tokens: int = MAX_PROMPT_TOKENS,
        **kwargs: Any,
    ) -> Bench:
        """Sample the workload with the model's tokenizer and set up a session."""
        workload = build_workload(
            model_path,
            num_requests,
            seed=seed,
            max_output_tokens=max_output_tokens,
            max_prompt_tokens=max_prompt_tokens,
        )
        return cls(model_path, workload, out_dir, **kwargs)

    def _keep(self, run: RunResult) -> RunResult:
        self.runs.append(run)
        self._say(run)
        return run

    def _say(self, item: RunResult | ProxyComparison | CrossCheck | Skipped) -> None:
        if self.log is not None:
            self.log(item.line())

    def _worker(self, kind: str) -> Worker:
        if kind not in self._workers:
            args: dict[str, Any] = {"model": str(self.model_path), "seed": self.workload.seed}
            args["dtype"] = self.dtype
            if self.load_format != "auto":
                args["load_format"] = self.load_format
            if kind == "hf":
                args["threads"] = self.hf_threads
            self._workers[kind] = Worker(kind, args, log_path=self.out_dir / f"worker-{kind}.log")
        return self._workers[kind]

    def offline(self, n: int = 1, requests: int | None = None) -> RunResult:
        """vLLM offline batch over the workload (or its first ``requests``)."""
        wl = self.workload if requests is None else self.workload.head(requests)
        return self._keep(run_offline(self._worker("vllm"), wl, n=n, seed=self.workload.seed))

    def hf(self, mode: str = "single", n: int = 1, requests: int | None = None,
           batch_size: int = 8) -> RunResult:  # fmt: skip
        """HF generate over the first ``requests`` of the workload (all if None)."""
        wl = self.workload if requests is None else self.workload.head(requests)
        run = run_hf(self._worker("hf"), wl, mode=mode, n=n, batch_size=batch_size,
                     seed=self.workload.seed)  # fmt: skip
        return self._keep(run)

    def stop(self, kind: str | None = None) -> None:
        """Stop one worker ("vllm", "hf") or all, freeing their memory and cores."""
        for name in [kind] if kind else list(self._workers):
            worker = self._workers.pop(name, None)
            if worker:
                worker.close()

    def _target(self, via: str | None) -> Target:
        if via is None:  # the deployment URL when there is one, else the plain server
            via = "deployment" if self.deployment is not None else "direct"
        target = self.deployment if via == "deployment" else self.direct
        if target is None:
            raise StepError(
                f"no {via} target for the server runs",
                "give Bench a deployment (step 06's URL) or a direct server URL",
            )
        return target

    def server(self, concurrency: int, n: int = 1, via: str | None = None) -> RunResult:
        """The vLLM server over HTTP at one concurrency (via: deployment or direct)."""
        return self._keep(
            run_server(self._target(via), self.workload, concurrency, n=n, progress=self.progress)
        )

    def sweep(self, concurrencies: Iterable[int], n: int = 1, via: str | None = None) -> RunTable:
        """The server at each concurrency in turn."""
        return RunTable(self.server(c, n=n, via=via) for c in concurrencies)

    def compare_proxy(self, concurrency: int, rounds: int = 2) -> ProxyComparison | Skipped:
        """Deployment URL vs straight to the server, rounds interleaved (skipped, saying why,
        when one of the two cannot be reached from here)."""
        if self.deployment is None or self.direct is None or rounds < 1:
            why = (
                "no rounds asked for"
                if rounds < 1
                else "needs both the deployment URL and the server behind it"
            )
            self.notes.append(f"proxy comparison skipped: {why}")
            skipped = Skipped("deployment URL vs straight to the server", why)
            self._say(skipped)
            return skipped
        self.proxy, runs = compare_proxy(
            self._target("deployment"), self._target("direct"), self.workload,
            concurrency=concurrency, rounds=rounds, progress=self.progress,
        )  # fmt: skip
        for run in runs:
            self._keep(run)
        self._say(self.proxy)
        return self.proxy

    def cross_check(self, concurrency: int, via: str | None = None) -> CrossCheck:
        """``vllm bench serve`` on the same workload, next to our run at that concurrency."""
        target = self._target(via)
        ours = [r for r in self.runs
                if r.engine == f"vllm-server-{target.name}" and r.concurrency == concurrency and r.n == 1]  # fmt: skip
        self.crosscheck = vllm_bench_serve(
            target, self.workload, concurrency=concurrency, tokenizer=self.model_path,
            out_dir=self.out_dir, ours=ours[-1] if ours else None,
        )  # fmt: skip
        self._say(self.crosscheck)
        return self.crosscheck

    # step 08's parts, as the notebook's cells and `labkit bench` run them ----------------------

    def offline_runs(self, plan: Plan) -> RunTable:
        """vLLM offline with each n, on HF's requests and on all of them; then stop its worker."""
        table = RunTable(
            self.offline(n=n, requests=count) for n in plan.ns for count in plan.offline_requests
        )
        self.stop("vllm")
        return table

    def server_runs(self, plan: Plan) -> RunTable:
        """The server at each concurrency, then with parallel sampling at the highest."""
        table = self.sweep(plan.concurrencies)
        if plan.parallel_n > 1:
            table.append(self.server(plan.top, n=plan.parallel_n))
        return table

    def hf_runs(self, plan: Plan) -> RunTable:
        """HF one request at a time and in static batches, with each n; then stop its worker."""
        table = RunTable(
            self.hf(mode, n=n, requests=plan.hf_requests, batch_size=plan.hf_batch)
            for n in plan.ns
            for mode in ("single", "static")
        )
        self.stop("hf")
        return table

    def proxy_run(self, plan: Plan) -> ProxyComparison | Skipped:
        """Deployment URL vs straight to the server at the highest concurrency (or why not)."""
        return self.compare_proxy(plan.top, rounds=plan.proxy_rounds)

    def cross_check_run(self, plan: Plan) -> CrossCheck | Skipped:
        """``vllm bench serve`` at the highest concurrency, unless the plan leaves it out."""
        if not plan.cross_check:
            skipped = Skipped("vllm bench serve", "the cross-check is switched off")
            self._say(skipped)
            return skipped
        return self.cross_check(plan.top)

    def run(self, plan: Plan) -> BenchReport:
        """Every part of step 08 the plan's engines take, in the notebook's order: vLLM offline,
        the server, HF, then (with the server) the proxy comparison and the cross-check."""
        if "offline" in plan.engines:
            self.offline_runs(plan)
        if "server" in plan.engines:
            self.server_runs(plan)
        if "hf" in plan.engines:
            self.hf_runs(plan)
        if "server" in plan.engines:
            self.proxy_run(plan)
            self.cross_check_run(plan)
        return self.report()

    def report(self) -> BenchReport:
        """Everything measured so far."""
        return BenchReport(
            model=self.model_name,
            machine=machine(),
            workload=self.workload.summary(),
            runs=list(self.runs),
            proxy=self.proxy,
            crosscheck=self.crosscheck,
            notes=list(self.notes),
        )

    def save(self) -> BenchReport:
        """Write results.json and the two plots into the output folder; return the report."""
        report = self.report()
        report.save(self.out_dir / "results.json")
        report.plot_throughput(self.out_dir / "throughput.png")
        report.plot_latency(self.out_dir / "latency.png")
        return report

    def record(self, state: State) -> dict[str, Any]:
        """Save results and plots, and record the summary in the lab state (key "benchmark")."""
        report = self.save()
        files = {
            "results_file": str(self.out_dir / "results.json"),
            "plots": [str(self.out_dir / "throughput.png"), str(self.out_dir / "latency.png")],
            "table_markdown": report.to_markdown(),
        }
        return state.record("benchmark", {**report.summary(), **files})

    def close(self) -> None:
        """Stop every worker."""
        self.stop()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_ints(text: str, what: str = "concurrencies") -> list[int]:
    """ "1,4,8" -> [1, 4, 8]; each at least 1."""
    try:
        values = [int(part) for part in str(text).replace(" ", "").split(",") if part]
    except ValueError:
        raise ConfigError(f"{what} {text!r}", "write whole numbers separated by commas") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{what} {text!r}", "give at least one number, each 1 or more")
    return values


def open_bench(
    cfg: Config,
    state: State,
    plan: Plan | None = None,
    *,
    base_url: str = "",
    direct_url: str = "",
    model_dir: str = "",
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> Bench:
    """The notebook's session: the deployment of step 06 (or ``base_url``), the server behind it
    (``direct_url``, or the local AI Core's predictor), the model folder of step 02 (or
    ``model_dir``, or the local default model), and the plan's seeded workload."""
    plan = plan or Plan()
    notes: list[str] = []
    if base_url:
        deployment = None
        direct: Target | None = server_target(base_url)
        notes.append(f"server at {base_url}, no deployment URL: the proxy comparison is skipped")
    else:
        deployment = deployment_target(cfg, state)
        deploy = state.require("deploy")
        url = direct_url or local_predictor_url(cfg, str(deploy.get("deployment_id", "")))
        direct = server_target(url, deployment.model) if url else None
        if direct is None:
            notes.append(
                "the server behind the deployment URL is not reachable from here (a tenant's "
                "cluster): the proxy comparison is skipped"
            )
    folder = model_dir
    if not folder:
        download = state.get("download") or {}
        folder = download.get("snapshot_dir") or str(cfg.model_source)
    if not (Path(folder) / "config.json").is_file():
        raise StepError(
            f"no model folder at {folder}",
            "run notebooks/02_download_model.ipynb, or set MODEL_DIR to a model folder",
        )
    model_name = deployment.model if deployment else (direct.model if direct else Path(folder).name)
    bench = Bench.open(
        folder,
        out_dir or cfg.lab_dir / "benchmark",
        num_requests=plan.requests,
        seed=plan.seed,
        max_output_tokens=plan.max_output_tokens or None,
        max_prompt_tokens=plan.max_prompt_tokens,
        model_name=model_name,
        deployment=deployment,
        direct=direct,
        dtype=plan.dtype,
        progress=progress,
    )
    bench.notes.extend(notes)
    return bench
