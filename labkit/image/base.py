"""The CPU variant's base image: Debian made here with mmdebstrap (no registry needed), kept as a
tarball and as an image in the builder's storage under the image cache, made once per package list."""

from __future__ import annotations

import hashlib
import os
import shutil
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
_MMDEBSTRAP_TIMEOUT_S = 1800


def base_packages_key(mirror: str, packages: Sequence[str] = BASE_PACKAGES) -> str:
    """A short hash of what the base holds: a change makes a new base, the old one stays cached."""
    text = "\n".join([BASE_SUITE, mirror.rstrip("/"), *sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cpu_base_ref(cfg: Config) -> str:
    """The local name of the CPU base image for the configured mirror and package list."""
    return f"{BASE_REPOSITORY}:{BASE_SUITE}-{base_packages_key(cfg.debian_mirror)}"


def ensure_cpu_base(cfg: Config, builder: Builder, *, on_line: OnLine | None = None) -> str:
    """The CPU base image in the builder's storage, made from an mmdebstrap tarball if missing."""
    ref = cpu_base_ref(cfg)
    if image_exists(builder, ref):
        return ref
    tarball = _base_tarball(cfg, on_line=on_line)
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


def mmdebstrap_argv(exe: str, mirror: str, tarball: Path) -> list[str]:
    """The command that writes the base's tarball (bench/image_base.py times the same one)."""
    return [
        exe,
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("man", "info", "doc")),
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        BASE_SUITE,
        str(tarball),
        mirror,
    ]


def _base_tarball(cfg: Config, *, on_line: OnLine | None = None) -> Path:
    """Debian 12 minbase with BASE_PACKAGES as a tarball, made once per package list and mirror.

    mmdebstrap rather than debootstrap: apt downloads the packages in parallel and the tarball is
    written straight from the chroot, 1.5x as fast as debootstrap plus tar (bench/image_base.py).
    Docs and man pages are never unpacked (dpkg's path-exclude); apt's lists and caches are
    removed. The tarball appears under its name only once mmdebstrap has finished it."""
    key = base_packages_key(cfg.debian_mirror)
    folder = image_dir(cfg) / "base"
    tarball = folder / f"{BASE_SUITE}-{key}.tar"
    if tarball.is_file():
        return tarball
    exe = shutil.which("mmdebstrap")
    if exe is None:
        raise ServiceError(
            "the CPU image's base needs mmdebstrap, which is not installed",
            "install it (`apt-get install mmdebstrap`, or `make system`)",
        )
    folder.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkstemp(prefix=f".{BASE_SUITE}-", suffix=".tar", dir=folder)[1])
    try:
        _run(
            mmdebstrap_argv(exe, cfg.debian_mirror, partial),
            on_line=on_line,
            timeout=_MMDEBSTRAP_TIMEOUT_S,
            what="mmdebstrap",
        )
        partial.rename(tarball)  # complete, or not there at all
    finally:
        partial.unlink(missing_ok=True)
    return tarball
