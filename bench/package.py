"""labkit.package.write_tarball vs `tar -cf` of the same cache tree, interleaved, plus peak extra disk."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _timing import interleave, table

from labkit import hub, package
from labkit.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", default=None, help="repo id (default: the lab's model)")
    parser.add_argument("--revision", default="main")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    cfg = load_config()
    repo = args.repo or cfg.model_id
    scratch = Path(tempfile.mkdtemp(prefix="bench-package-"))
    cache = scratch / "cache"
    plan = hub.plan_download(repo, args.revision, endpoint=cfg.hub_endpoint, cache_dir=cache)
    snap = hub.download(plan, progress=False)
    folder = hub.repo_folder(cache, repo)
    (cache / "version.txt").write_text("1")
    before = shutil.disk_usage(scratch).used

    def labkit_package(r: int) -> None:
        package.write_tarball(
            cache, repo, snap.revision, scratch / f"labkit-{r}.tar", progress=False
        )

    def tar_cf(r: int) -> None:
        subprocess.run(
            [
                "tar",
                "-cf",
                str(scratch / f"tar-{r}.tar"),
                "-C",
                str(cache),
                folder.name,
                "version.txt",
            ],
            check=True,
        )

    times = interleave(
        {"labkit write_tarball (+sha256s)": labkit_package, "tar -cf": tar_cf}, args.rounds
    )
    size = (scratch / "labkit-0.tar").stat().st_size
    extra = (shutil.disk_usage(scratch).used - before) / args.rounds / 2
    print(f"{repo}@{snap.revision[:7]}: {size / 1e6:.1f} MB tar, {args.rounds} interleaved rounds")
    print(table(times, size, "tar -cf"))
    print(
        f"extra disk per tarball: {extra / 1e6:.1f} MB (the tar itself: {size / 1e6:.1f} MB; no staged copy)"
    )
    print("time ratio labkit / tar -cf (target <= 1.2): "
          f"{sorted(times['labkit write_tarball (+sha256s)'])[args.rounds // 2] / sorted(times['tar -cf'])[args.rounds // 2]:.2f}")  # fmt: skip
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
