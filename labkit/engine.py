"""Engines in child processes: the one way the lab starts and stops vLLM (and transformers).

The notebook kernel never imports vLLM. Step 07's offline batch (``python -m labkit.query
offline``), step 08's engine workers (``python -m labkit.bench worker``) and its own vLLM server
run as children of the caller: offline (no Hub calls), without usage statistics, with a bounded
KV cache on CPU, in their own process group (``start_new_session``) so that vLLM's engine core and
workers stop with them, their output in a log file. This module is that mechanism: the
environment (``engine_env``), the start (``start_engine``) and the stop (``stop_engine``, the
one grace-period policy of ``labkit.util.procs``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from labkit.util import procs

# Every engine child: the model is on disk already, and nothing phones home.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}


def engine_env(kv_cache_gib: float = 1.0, *, quiet: bool = True) -> dict[str, str]:
    """What an engine child needs on top of ``os.environ``: offline, no usage statistics, and a
    KV cache of ``kv_cache_gib`` GiB on CPU (VLLM_CPU_KVCACHE_SPACE, unless already set);
    ``quiet`` also sets DO_NOT_TRACK and turns off the tokenizers' parallelism."""
    env = dict(OFFLINE_ENV)
    if quiet:
        env["DO_NOT_TRACK"] = "1"
        env["TOKENIZERS_PARALLELISM"] = "false"
    # Without it vLLM on CPU reserves most of the machine's memory for the KV cache.
    env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", f"{kv_cache_gib:g}")
    return env


def worker_env() -> dict[str, str]:
    """What the engines need on a CPU machine: a bounded KV cache, offline, no telemetry."""
    return engine_env()


def start_engine(
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str],
    append: bool = True,
    pipes: bool = False,
) -> subprocess.Popen:
    """``python ARGV`` in its own process group, its output into ``log`` (appended, or written
    anew). With ``pipes`` its stdin and stdout stay with the caller for a line protocol (text)
    and only its stderr goes to the log; else stdout and stderr both go to the log."""
    with open(log, "ab" if append else "wb") as sink:
        return subprocess.Popen(
            [sys.executable, *argv],
            stdin=subprocess.PIPE if pipes else None,
            stdout=subprocess.PIPE if pipes else sink,
            stderr=sink if pipes else subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,  # its own group: stopping it ends vLLM's engine processes too
            text=pipes,
        )


def stop_engine(proc: subprocess.Popen) -> int | None:
    """Stop the child and everything it started (its process group): SIGTERM, a grace period,
    SIGKILL; the child's exit code. No-op for a child already gone."""
    return procs.stop_group(proc.pid, proc=proc)
