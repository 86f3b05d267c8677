"""The CPU image's Debian base, made the two ways: debootstrap plus tar (the lab's way until
2026-12-07) and mmdebstrap straight to a tarball (the lab's way now, labkit.image.base), same
suite, package list and mirror, alternated round by round. Prints each round and the median
time ratio. Needs root and both programs (`apt-get install debootstrap mmdebstrap`).

    .venv/bin/python bench/image_base.py --rounds 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from labkit.config import load_config
from labkit.image.base import BASE_PACKAGES, BASE_SUITE, mmdebstrap_argv


def _debootstrap(mirror: str, work: Path) -> float:
    """debootstrap into a folder, then tar it (without /proc, /sys, /dev), as the lab did."""
    started = time.monotonic()
    root = work / "rootfs"
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", BASE_SUITE,
         str(root), mirror],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "--exclude=./proc/*",
         "--exclude=./sys/*", "--exclude=./dev/*", "-cf", str(work / "rootfs.tar"), "."],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.monotonic() - started


def _mmdebstrap(mirror: str, work: Path) -> float:
    """The command labkit.image.base runs."""
    started = time.monotonic()
    argv = mmdebstrap_argv("mmdebstrap", mirror, work / "rootfs.tar")
    subprocess.run(argv, check=True, capture_output=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each tool (default 2)")
    args = parser.parse_args()
    for exe in ("debootstrap", "mmdebstrap"):
        if shutil.which(exe) is None and shutil.which(exe, path="/usr/sbin:/sbin") is None:
            raise SystemExit(f"{exe} is not installed: apt-get install {exe}")
    mirror = load_config().debian_mirror
    times: dict[str, list[float]] = {"debootstrap + tar": [], "mmdebstrap": []}
    for r in range(args.rounds):
        for name, make in (("debootstrap + tar", _debootstrap), ("mmdebstrap", _mmdebstrap)):
            work = Path(tempfile.mkdtemp(prefix="bench-base-", dir="/var/tmp"))
            try:
                seconds = make(mirror, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            times[name].append(seconds)
            print(f"round {r + 1}: {name:18} {seconds:6.1f} s", flush=True)
    print(f"\nDebian {BASE_SUITE} minbase + {', '.join(BASE_PACKAGES)} from {mirror}:")
    for name, ts in times.items():
        print(f"  {name:18} median {statistics.median(ts):6.1f} s")
    ratio = statistics.median(times["debootstrap + tar"]) / statistics.median(times["mmdebstrap"])
    print(f"  mmdebstrap is {ratio:.2f}x as fast")


if __name__ == "__main__":
    main()
