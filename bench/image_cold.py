"""The CPU image's cold build, this checkout against an earlier one, alternated round by round.

Each build starts from nothing a fresh machine would lack: a new image cache (so the Debian base
is made again, and buildah has no layers and an empty pip cache mount) in a folder of its own,
removed afterwards. What a fresh machine has after `make venv` stays: the host's uv cache, which
this checkout's build reuses (the lab's way since issue 14) and the earlier one's pip never read.
Each side runs its own labkit (``image.ensure_cpu_base`` then ``image.build``) with its own venv.
Under each build, the three longest silences in its output: where buildah commits a layer.

The earlier checkout is a git worktree with a venv of its own, e.g. the lab before issue 14:

    git worktree add ../before c280bfd
    (cd ../before && uv venv -p ../main/.venv/bin/python && uv pip install -e .)
    apt-get install debootstrap   # c280bfd made the base with it
    .venv/bin/python bench/image_cold.py --before ../before --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from labkit import image

ROOT = Path(__file__).resolve().parents[1]

# Run with each side's python in its checkout; the two labkits share this much of their API.
_CHILD = """
import json, shutil, time
from datetime import date
from labkit import image
from labkit.config import load_config

cfg = load_config()
builder = image.Builder("buildah", shutil.which("buildah"), image.image_dir(cfg) / "storage")
lines = []
start = time.monotonic()
on_line = lambda line: lines.append((time.monotonic() - start, line.strip()[:90]))
base = image.ensure_cpu_base(cfg, builder, on_line=on_line)
base_s = time.monotonic() - start
ref = f"localhost:5000/bench/aicore-vllm:{image.format_tag(date.today(), 1)}"
built = image.build(cfg, ref, variant="cpu", builder=builder, on_line=on_line)
gaps = sorted(
    ((b[0] - a[0], a[1], b[1]) for a, b in zip(lines, lines[1:])), reverse=True
)[:3]
print(json.dumps({
    "base_s": base_s, "build_s": built.build_seconds, "bytes": built.size_bytes, "gaps": gaps
}))
"""


def cold_build(checkout: Path) -> dict:
    """One cold build by ``checkout``'s labkit, in a new image cache removed afterwards."""
    python = checkout / ".venv" / "bin" / "python"
    if not python.is_file():
        raise SystemExit(f"{checkout} has no .venv: make one there (see this file's docstring)")
    cache = Path(tempfile.mkdtemp(prefix="bench-cold-", dir="/var/tmp"))
    env = dict(os.environ)
    env.update(
        LABKIT_IMAGE_CACHE_DIR=str(cache / "image"),  # the lab's image cache since issue 14
        LABKIT_LOCAL_DIR=str(cache / "local"),  # before it: <local dir>/image
    )
    storage_roots = [cache / "image" / "storage", cache / "local" / "image" / "storage"]
    try:
        proc = subprocess.run(
            [str(python), "-c", _CHILD], cwd=checkout, env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise SystemExit(f"the build in {checkout} failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        for storage in storage_roots:
            if storage.is_dir():
                builder = image.Builder("buildah", "buildah", storage)
                subprocess.run(builder.argv("rm", "--all"), capture_output=True)
                subprocess.run(builder.argv("rmi", "--all", "--force"), capture_output=True)
        shutil.rmtree(cache, ignore_errors=True)


def _commit(checkout: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(checkout), "log", "-1", "--format=%h %cs"], capture_output=True, text=True
    )
    return out.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the earlier checkout")
    parser.add_argument("--rounds", type=int, default=2, help="builds of each side (default 2)")
    args = parser.parse_args()
    if shutil.which("buildah") is None:
        raise SystemExit("buildah is not installed: make system")
    sides = {"before": args.before.resolve(), "after": ROOT}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(args.rounds):
        for name, checkout in sides.items():
            run = cold_build(checkout)
            runs[name].append(run)
            total = run["base_s"] + run["build_s"]
            print(
                f"round {r + 1}: {name:6} base {run['base_s']:6.1f} s  build {run['build_s']:6.1f} s"
                f"  total {total:6.1f} s  ({run['bytes'] / 1e9:.2f} GB)",
                flush=True,
            )
            for seconds, before, after in run["gaps"]:  # buildah's silences: its layer commits
                print(f"    {seconds:5.1f} s silent between {before!r} and {after!r}", flush=True)
    print(
        "\nCPU image, cold (no base, no layers, no pip cache; the host's uv cache as after make venv):"
    )
    medians = {}
    for name, checkout in sides.items():
        totals = [r["base_s"] + r["build_s"] for r in runs[name]]
        medians[name] = statistics.median(totals)
        print(f"  {name:6} {_commit(checkout):20} median total {medians[name]:6.1f} s")
    print(f"  after is {medians['before'] / medians['after']:.2f}x as fast")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
