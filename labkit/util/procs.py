"""Process groups: is anything of a group left, and stop it with one grace-period policy.

Programs the lab starts (vLLM, local services, builds) run in their own process group
(``start_new_session=True``) so that their workers stop with them. Stopping follows the
kubelet: SIGTERM, a grace period (``GRACE_S``, Kubernetes' default
``terminationGracePeriodSeconds`` of 30 s), then SIGKILL and a short wait for the kernel.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

GRACE_S = 30.0  # SIGTERM -> SIGKILL, as a pod's default terminationGracePeriodSeconds
KILL_WAIT_S = 5.0  # after SIGKILL, how long to wait for the group to be gone
POLL_S = 0.1


def pid_alive(pid: int) -> bool:
    """Whether a process runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return not is_zombie(pid)


def is_zombie(pid: int) -> bool:
    """Whether the process has exited and waits to be reaped (false when unknown)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (reaping the leader if it is our own child)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _wait_gone(pgid: int, seconds: float, proc: subprocess.Popen | None) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0)
        if not group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


def stop_group(
    pgid: int, *, grace: float = GRACE_S, proc: subprocess.Popen | None = None
) -> int | None:
    """SIGTERM the group, SIGKILL what is left after ``grace`` seconds; the leader's exit code.

    ``proc`` is the leader when this process started it (it is reaped, and its return code
    returned); without it the group is waited for by its pgid. No-op for a group already gone.
    """
    if signal_group(pgid, signal.SIGTERM) and not _wait_gone(pgid, grace, proc):
        signal_group(pgid, signal.SIGKILL)
        _wait_gone(pgid, KILL_WAIT_S, proc)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=KILL_WAIT_S)
        return proc.returncode
    return None
