"""Images in the local registry for tests: the lab's CPU image, built (layers cached per machine,
one build at a time) and pushed to a repository of the caller's own; and a minimal one (a config
blob, no layers) pushed through the registry API v2, enough for anything that only looks the
manifest up (the local AI Core's pull check with the host runner, next-tag lookups), never run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.request
import uuid

from labkit import image
from labkit.config import Config
from labkit.local import registry as local_registry

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def put_minimal_image(base: str, name: str, tag: str) -> None:
    """Push ``name:tag`` to the registry at ``base`` (http://host:port)."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    start = urllib.request.Request(f"{base}/v2/{name}/blobs/uploads/", method="POST")
    with _OPENER.open(start, timeout=10) as resp:
        location = resp.headers["Location"]
    location = location if location.startswith("http") else base + location
    sep = "&" if "?" in location else "?"
    put = urllib.request.Request(f"{location}{sep}digest={digest}", data=config, method="PUT")
    put.add_header("Content-Type", "application/octet-stream")
    _OPENER.open(put, timeout=10).close()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": digest,
        },
        "layers": [],
    }
    req = urllib.request.Request(
        f"{base}/v2/{name}/manifests/{tag}", data=json.dumps(manifest).encode(), method="PUT"
    )
    req.add_header("Content-Type", manifest["mediaType"])
    _OPENER.open(req, timeout=10).close()


def build_prerequisites() -> str | None:
    """Why the CPU image cannot be built here, or None."""
    if shutil.which("buildah") is None:
        return "buildah is not installed (make system)"
    if shutil.which("skopeo") is None:
        return "skopeo is not installed (make system)"
    if os.geteuid() != 0:
        return "the CPU image's mmdebstrap base and buildah's chroot isolation need root"
    if local_registry.program() is None:
        return "docker-registry is not installed (make system)"
    return None


def build_and_push_cpu_image(cfg: Config, lines: list[str] | None = None) -> image.Image:
    """The CPU image built with buildah and pushed to a new repository ``labkit-test-<random>``
    of the local registry (started if needed); ``lines`` collects the build's output."""
    local_registry.up(cfg, progress=False)
    builder = image.find_builder(cfg, "buildah")
    host = local_registry.registry_host(cfg)
    ref = image.find_next_tag(host, f"labkit-test-{uuid.uuid4().hex[:8]}")
    on_line = lines.append if lines is not None else None
    built = image.build(cfg, ref, variant="cpu", builder=builder, on_line=on_line)
    print(f"\nbuild: {built.build_seconds:.0f} s, {built.size_bytes / 1e9:.2f} GB")
    return image.push(cfg, built, builder=builder)
