"""Offline batch inference: ``vllm.LLM`` on the downloaded snapshot, in a child process
(``python -m labkit.query offline JOB OUT``) so the caller stays light and the engine's memory
is freed when it ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from labkit.engine import engine_env, start_engine, stop_engine
from labkit.query.common import OFFLINE_TIMEOUT_S, SAMPLE_PROMPTS, QueryError
from labkit.query.results import OfflineBatch

# --- offline batch inference ---------------------------------------------------------------------


def offline_batch(
    model_dir: str | Path,
    prompts: Sequence[str] = SAMPLE_PROMPTS,
    *,
    max_tokens: int = 64,
    temperature: float = 0.0,
    chat: bool = True,
    max_model_len: int = 2048,
    enforce_eager: bool = True,
    kv_cache_gib: float = 1.0,
    timeout: float = OFFLINE_TIMEOUT_S,
    log: Path | None = None,
    progress: bool = True,
) -> OfflineBatch:
    """Answer ``prompts`` with ``vllm.LLM`` on a local model folder, in a child process.

    The child loads the engine, generates, writes the result and exits, so its memory is freed
    and the notebook kernel never imports vLLM. On CPU the KV cache is ``kv_cache_gib`` GiB
    (VLLM_CPU_KVCACHE_SPACE) and the model runs eager (compiled CPU runs give wrong answers here).
    With ``progress`` a bar names the stage the child is in (it takes about a minute on CPU).
    """
    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise QueryError(
            f"{folder} is not a model folder (no config.json)",
            "pass the snapshot_dir the download step recorded (state key 'download')",
        )
    job = {
        "model": str(folder),
        "prompts": list(prompts),
        "max_tokens": max_tokens,
        "temperature": temperature,
        "chat": chat,
        "max_model_len": max_model_len,
        "enforce_eager": enforce_eager,
    }
    env = {**os.environ, **engine_env(kv_cache_gib, quiet=False)}
    with tempfile.TemporaryDirectory(prefix="labkit-offline-") as scratch:
        job_file, out_file = Path(scratch) / "job.json", Path(scratch) / "result.json"
        stages = Path(scratch) / "stages"
        job_file.write_text(json.dumps({**job, "stages": str(stages)}))
        log_path = log or Path(scratch) / "offline.log"
        # A short TMPDIR keeps vLLM's IPC socket paths under the 107-byte limit.
        env["TMPDIR"] = scratch
        argv = ["-m", "labkit.query", "offline", str(job_file), str(out_file)]
        with StageBar(stages, len(job["prompts"]), show=progress) as bar:
            code = _run_child(argv, env, log_path, timeout, on_wait=bar.update)
        text = log_path.read_text(errors="replace")
        if code != 0 or not out_file.is_file():
            last = [line for line in text.splitlines() if line.strip()][-1:] or ["no output"]
            raise QueryError(
                f"offline batch with vllm.LLM failed (exit {code}: {last[0][:200]})",
                "see the log" + (f" {log_path}" if log else "; pass log=PATH to keep it"),
            )
        result = json.loads(out_file.read_text())
    return OfflineBatch(log=str(log or ""), **result)


# What the child is doing, in order: it appends each stage's index to the stages file.
STAGES = ("starting Python and vLLM", "loading the model", "answering {n} prompts", "done")


class StageBar:
    """A progress bar over STAGES, read from the file the child appends stage indexes to."""

    def __init__(self, path: Path, prompts: int, *, show: bool = True) -> None:
        from tqdm.auto import tqdm

        self.path, self.prompts = path, prompts
        self.stage = 0
        self.description = self._name(0)
        self.bar = tqdm(
            total=len(STAGES) - 1, desc=self.description, disable=not show, unit="stage"
        )

    def _name(self, stage: int) -> str:
        return f"offline batch: {STAGES[stage].format(n=self.prompts)}"

    def update(self) -> None:
        """Move the bar to the child's latest stage."""
        try:
            marks = self.path.read_text().split()
        except OSError:
            return
        stage = min(max((int(m) for m in marks if m.isdigit()), default=0), len(STAGES) - 1)
        if stage > self.stage:
            self.description = self._name(stage)
            self.bar.update(stage - self.stage)
            self.bar.set_description(self.description)
            self.stage = stage

    def __enter__(self) -> StageBar:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.update()
        self.bar.close()


def _mark(job: dict, stage: int) -> None:
    """The child: note that ``stage`` of STAGES began (for the parent's StageBar)."""
    if job.get("stages"):
        with open(job["stages"], "a") as fh:
            fh.write(f"{stage}\n")


def _run_child(
    argv: list[str],
    env: dict[str, str],
    log_path: Path,
    timeout: float,
    on_wait: Callable[[], None] = lambda: None,
) -> int:
    """Run the child to its end (its exit code), calling ``on_wait`` about twice a second;
    past ``timeout``, stop it and say so."""
    proc = start_engine(argv, log=log_path, env=env, append=False)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return proc.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise
                on_wait()
    except subprocess.TimeoutExpired:
        stop_engine(proc)
        raise QueryError(
            f"offline batch did not finish within {timeout:.0f} s",
            f"fewer prompts or tokens, or a larger timeout (log: {log_path})",
        ) from None
    except BaseException:
        stop_engine(proc)
        raise


def _offline_main(job_file: str, out_file: str) -> int:
    """The child process of ``offline_batch``: load vllm.LLM, generate, write the result."""
    job = json.loads(Path(job_file).read_text())
    from vllm import LLM, SamplingParams

    _mark(job, 1)
    started = time.perf_counter()
    llm = LLM(
        model=job["model"],
        enforce_eager=job["enforce_eager"],
        max_model_len=job["max_model_len"],
    )
    load_s = time.perf_counter() - started
    _mark(job, 2)
    params = SamplingParams(temperature=job["temperature"], max_tokens=job["max_tokens"])
    started = time.perf_counter()
    if job["chat"]:
        conversations = [[{"role": "user", "content": p}] for p in job["prompts"]]
        outputs = llm.chat(conversations, params, use_tqdm=False)
    else:
        outputs = llm.generate(job["prompts"], params, use_tqdm=False)
    seconds = time.perf_counter() - started
    result = {
        "model": job["model"],
        "prompts": job["prompts"],
        "texts": [o.outputs[0].text for o in outputs],
        "load_s": load_s,
        "seconds": seconds,
        "prompt_tokens": sum(len(o.prompt_token_ids or []) for o in outputs),
        "output_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
    }
    Path(out_file).write_text(json.dumps(result))
    _mark(job, 3)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labkit.query offline JOB OUT``: the offline batch's child process."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 3 and args[0] == "offline":
        return _offline_main(args[1], args[2])
    print("usage: python -m labkit.query offline JOB.json OUT.json", file=sys.stderr)
    return 2
