"""labkit download vs snapshot_download vs `hf download`, on the same repo and local Hub, interleaved."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _timing import interleave, table

from labkit import hub
from labkit.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", default=None, help="repo id (default: the lab's model)")
    parser.add_argument("--revision", default="main")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()

    cfg = load_config()
    repo = args.repo or cfg.model_id
    endpoint = cfg.hub_endpoint
    sha, _ = hub.resolve_revision(repo, args.revision, endpoint=endpoint)
    scratch = Path(tempfile.mkdtemp(prefix="bench-download-"))
    hf_cli = Path(sys.executable).with_name("hf")

    def fresh(name: str, r: int) -> Path:
        path = scratch / f"{name}-{r}"
        shutil.rmtree(path, ignore_errors=True)
        return path

    def labkit_download(r: int) -> None:
        plan = hub.plan_download(
            repo, sha, endpoint=endpoint, cache_dir=fresh("labkit", r), fmt="all"
        )
        hub.download(plan, max_workers=args.workers, progress=False)

    def snapshot_download(r: int) -> None:
        from huggingface_hub import snapshot_download as sd

        sd(
            repo,
            revision=sha,
            cache_dir=fresh("snapshot", r),
            endpoint=endpoint,
            max_workers=args.workers,
        )

    def hf_download(r: int) -> None:
        subprocess.run(
            [str(hf_cli), "download", repo, "--revision", sha, "--cache-dir", str(fresh("hf", r)),
             "--max-workers", str(args.workers), "--quiet"],
            check=True, env={**os.environ, "HF_ENDPOINT": endpoint}, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    contenders = {
        "labkit download (+verify)": labkit_download,
        "snapshot_download": snapshot_download,
        "hf download": hf_download,
    }
    times = interleave(contenders, args.rounds)
    nbytes = sum(
        p.stat().st_size
        for p in (scratch / "labkit-0").rglob("*")
        if p.is_file() and not p.is_symlink()
    )
    print(
        f"{repo}@{sha[:7]} from {endpoint}: {nbytes / 1e6:.1f} MB, {args.rounds} interleaved rounds"
    )
    for name in ("snapshot_download", "hf download"):
        print()
        print(table({k: times[k] for k in ("labkit download (+verify)", name)}, nbytes, name))
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
