"""The predictors' processes and files: a predictor's process group (ended as the kubelet
ends a pod: SIGTERM, then SIGKILL), one recorded by an earlier run of the server (ended only
if its pid still names the same process), and the read-only models dir."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labkit.image import capture
from labkit.local.aicore.runspec import STOP_TIMEOUT_S
from labkit.util.procs import stop_group


def process_start_ticks(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def terminate_group(
    pgid: int, timeout: float = STOP_TIMEOUT_S, *, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """SIGTERM to the process group (as the kubelet sends it), then SIGKILL after ``timeout``;
    ``proc``, the group's leader when this process started it, is reaped."""
    stop_group(pgid, grace=timeout, proc=proc)


def kill_recorded(info: Mapping[str, Any], builder: Any = None) -> bool:
    """End a predictor recorded by an earlier run of the server (same pid and start time only:
    a reused pid is left alone); returns whether something was stopped."""
    pgid, start = info.get("pgid"), info.get("start")
    stopped = False
    if isinstance(pgid, int) and start is not None and process_start_ticks(pgid) == start:
        terminate_group(pgid, timeout=10)
        stopped = True
    if info.get("container") and builder is not None:
        capture(builder.argv("rm", str(info["container"])), env=builder.env())
    if info.get("tmp"):
        shutil.rmtree(str(info["tmp"]), ignore_errors=True)
    return stopped


def make_read_only(root: Path) -> None:
    """Files 0444 and directories 0555 below ``root`` (links untouched), as a read-only mount."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                path.chmod(0o444)
        for name in dirnames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                path.chmod(0o555)
    root.chmod(0o555)


def remove_tree(root: Path) -> None:
    """Delete a tree that :func:`make_read_only` protected."""
    if not root.exists():
        return
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.chmod(0o755)
    with contextlib.suppress(OSError):
        root.chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)
