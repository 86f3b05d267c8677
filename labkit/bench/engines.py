"""Engines in worker subprocesses, the caller's side: a Worker loads vLLM offline or HF
``generate`` once, and runs workloads sent to it as JSON lines (the child is labkit.bench.worker).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labkit.bench.metrics import RequestRecord, RunResult
from labkit.bench.workload import TEMPERATURE, Request, Workload
from labkit.engine import start_engine, stop_engine, worker_env
from labkit.errors import ConfigError, StepError

WORKER_START_TIMEOUT = 600.0

# --- engines in worker subprocesses --------------------------------------------------------------


class Worker:
    """A subprocess that loads one engine once and runs workloads sent as JSON lines."""

    def __init__(
        self,
        kind: str,
        args: Mapping[str, Any],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        start_timeout: float = WORKER_START_TIMEOUT,
    ) -> None:
        self.kind = kind
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        child_env = {**os.environ, **worker_env(), **(env or {})}
        self.proc = start_engine(
            ["-m", "labkit.bench", "worker", kind, json.dumps(dict(args))],
            log=log_path,
            env=child_env,
            pipes=True,  # commands in on stdin, answers out on stdout, the rest to the log
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.info = self._read(start_timeout, "start")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read(self, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.0, left))
            except queue.Empty:
                self.close()
                raise StepError(
                    f"the {self.kind} worker did not {what} within {timeout:.0f} s",
                    f"see {self.log_path}; try a smaller workload",
                ) from None
            if line is None:
                self.close()
                raise StepError(
                    f"the {self.kind} worker exited ({self._tail()})", f"see {self.log_path}"
                )
            msg = json.loads(line)
            if "error" in msg:
                raise StepError(
                    f"the {self.kind} worker failed: {msg['error']}", f"see {self.log_path}"
                )
            return msg

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1][:200] if lines else "no log"

    def run(self, payload: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """Send one command and wait for its answer."""
        if self.proc.poll() is not None or self.proc.stdin is None:
            raise StepError(f"the {self.kind} worker is not running", f"see {self.log_path}")
        self.proc.stdin.write(json.dumps(dict(payload)) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout, "answer")

    def close(self) -> None:
        """Stop the worker and everything it started (its process group)."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "stop"}) + "\n")
                self.proc.stdin.flush()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        stop_engine(self.proc)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _payload(requests: Sequence[Request], n: int, **extra: Any) -> dict[str, Any]:
    return {
        "cmd": "run",
        "n": n,
        "requests": [
            {"index": r.index, "ids": list(r.prompt_token_ids), "max_tokens": r.output_tokens}
            for r in requests
        ],
        **extra,
    }


def _run_timeout(requests: Sequence[Request], n: int) -> float:
    # Generous: one token a second, as seen on a 2-core machine shared with other heavy jobs.
    return 120 + sum(r.output_tokens * n + r.prompt_tokens / 20 for r in requests)


def _records(answer: Mapping[str, Any]) -> list[RequestRecord]:
    return [RequestRecord(**r) for r in answer["records"]]


def run_offline(worker: Worker, workload: Workload, *, n: int = 1, seed: int = 0) -> RunResult:
    """vLLM's offline batch: every request handed to ``LLM.generate`` at once."""
    answer = worker.run(
        _payload(workload.requests, n, seed=seed, temperature=TEMPERATURE),
        _run_timeout(workload.requests, n),
    )
    return RunResult(
        engine="vllm-offline",
        label="vLLM offline batch (LLM.generate)",
        n=n,
        duration_s=float(answer["duration_s"]),
        records=_records(answer),
        batch_size=len(workload),
        notes=[f"dtype {worker.info.get('dtype')}"],
    )


def run_hf(
    worker: Worker,
    workload: Workload,
    *,
    mode: str = "single",
    n: int = 1,
    batch_size: int = 8,
    seed: int = 0,
) -> RunResult:
    """HF ``generate``: one request at a time (``single``) or static batches (``static``)."""
    if mode not in ("single", "static"):
        raise ConfigError(f"HF mode {mode!r}", "use 'single' or 'static'")
    size = 1 if mode == "single" else max(1, batch_size)
    answer = worker.run(
        _payload(workload.requests, n, batch_size=size, seed=seed, temperature=TEMPERATURE),
        _run_timeout(workload.requests, n) * (2 if mode == "static" else 1),
    )
    label = (
        "HF generate, one request at a time"
        if mode == "single"
        else f"HF generate, static batches of {size}"
    )
    return RunResult(
        engine=f"hf-{mode}",
        label=label,
        n=n,
        duration_s=float(answer["duration_s"]),
        records=_records(answer),
        batch_size=size,
        notes=[
            f"dtype {worker.info.get('dtype')}, "
            + (
                "on the GPU"
                if worker.info.get("device") == "cuda"
                else f"{worker.info.get('threads')} threads"
            )
        ],
    )


def engine_threads() -> int:
    """Compute threads vLLM's CPU engine takes here: all usable cores but one, which it keeps
    for its front end; HF gets the same, so both engines compute on the same cores."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (usable or 1) - 1)
