"""The CPU variant's base image: Debian made here with debootstrap (no registry needed), kept as a
tarball and as an image in the builder's storage under the image cache, made once per package list."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from labkit.config import Config
from labkit.errors import ServiceError
from labkit.image.builder import Builder, OnLine, _build_verb, _run, image_dir, image_exists

# The CPU base: Debian 12 (its python3 is 3.11, the torch +cpu wheel's ABI) with what vLLM needs
# at run time: a venv, libnuma, and a C++ compiler plus Python headers for torch.compile's kernels.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-dev", "g++", "libnuma1")
BASE_REPOSITORY = "localhost/labkit/debian-base"
_DEBOOTSTRAP_TIMEOUT_S = 1800


def base_packages_key(mirror: str, packages: Sequence[str] = BASE_PACKAGES) -> str:
    """A short hash of what the base holds: a change makes a new base, the old one stays cached."""
    text = "\n".join([BASE_SUITE, mirror.rstrip("/"), *sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cpu_base_ref(cfg: Config) -> str:
    """The local name of the CPU base image for the configured mirror and package list."""
    return f"{BASE_REPOSITORY}:{BASE_SUITE}-{base_packages_key(cfg.debian_mirror)}"


def ensure_cpu_base(cfg: Config, builder: Builder, *, on_line: OnLine | None = None) -> str:
    """The CPU base image in the builder's storage, made from a debootstrap tarball if missing."""
    ref = cpu_base_ref(cfg)
    if image_exists(builder, ref):
        return ref
    tarball = _debootstrap_tarball(cfg, on_line=on_line)
    context = Path(tempfile.mkdtemp(prefix="base-", dir=image_dir(cfg)))
    try:
        os.link(tarball, context / "rootfs.tar")
        (context / "Dockerfile").write_text(
            'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n', encoding="utf-8"
        )
        _run(
            builder.argv(*_build_verb(builder), "-t", ref, str(context)),
            env=builder.env(),
            on_line=on_line,
            what=f"{builder.name} (base image)",
        )
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return ref


def _debootstrap_tarball(cfg: Config, *, on_line: OnLine | None = None) -> Path:
    """Debian 12 minbase with BASE_PACKAGES as a tarball, made once per package list and mirror."""
    key = base_packages_key(cfg.debian_mirror)
    folder = image_dir(cfg) / "base"
    tarball = folder / f"{BASE_SUITE}-{key}.tar"
    if tarball.is_file():
        return tarball
    exe = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if exe is None:
        raise ServiceError(
            "the CPU image's base needs debootstrap, which is not installed",
            "install it (`apt-get install debootstrap`, or `make system`)",
        )
    if os.geteuid() != 0:
        raise ServiceError(
            "debootstrap must run as root to make the CPU image's base",
            "run the image step as root once (the base is cached), or use a Docker engine",
        )
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{BASE_SUITE}-", dir=folder))
    root = work / "rootfs"
    try:
        _run(
            [
                exe,
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                BASE_SUITE,
                str(root),
                cfg.debian_mirror,
            ],
            on_line=on_line,
            timeout=_DEBOOTSTRAP_TIMEOUT_S,
            what="debootstrap",
        )
        _slim_rootfs(root)
        partial = work / "rootfs.tar"
        _run(
            [
                "tar",
                "--numeric-owner",
                "--xattrs",
                "-C",
                str(root),
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "--exclude=./dev/*",
                "-cf",
                str(partial),
                ".",
            ],
            what="tar (base)",
        )
        partial.rename(tarball)
    finally:
        _unmount_below(work)  # a failed debootstrap can leave proc or sys mounted in the rootfs
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def _unmount_below(path: Path) -> None:
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    inside = [m.split()[1] for m in mounts if m.split()[1].startswith(f"{path}/")]
    for point in sorted(inside, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _slim_rootfs(root: Path) -> None:
    """Drop what a server image never reads: apt's caches and lists, docs, man pages."""
    for pattern in ("var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*"):
        for path in root.glob(pattern):
            if path.is_file():
                path.unlink()
    for sub in ("usr/share/man", "usr/share/info"):
        for path in (root / sub).glob("*"):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for path in (root / "usr/share/doc").rglob("*"):
        if (path.is_file() or path.is_symlink()) and path.name != "copyright":
            path.unlink()
