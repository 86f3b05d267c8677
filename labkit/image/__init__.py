"""Step 04: the inference-server image, `<registry>/<repo>/aicore-vllm:v<ddmmyy>-<NN>`.

Tag rules, the next free tag of a day (from the registry's HTTP API v2), hadolint on the
Dockerfile, a build and push with whatever builder the machine has (buildah without a daemon,
podman, or a Docker engine), the pushed digest, and the `.dockerconfigjson` body of AI Core's
docker registry secret, its password masked everywhere but in ``body()``.

The CPU variant starts from a Debian base made here with mmdebstrap (no registry needed), kept
as a tarball and as an image in the machine's image cache (``builder.image_dir``,
LABKIT_IMAGE_CACHE_DIR); buildah and podman keep their layers there too, so a second build, from
any checkout, reuses them.

Modules: ``tags`` (tag rules and references), ``registry`` (the registry API, login and AI
Core's secret), ``hadolint`` (the Dockerfile linted), ``builder`` (which builder, its command
lines, running tools), ``base`` (the CPU base image), ``building`` (build args and the build),
``remote`` (push, and what the registry holds), ``plan`` (step 04's plan), ``run`` (running the
image locally: the smoke test).
"""

from __future__ import annotations

from labkit.image.base import (
    BASE_PACKAGES,
    BASE_REPOSITORY,
    BASE_SUITE,
    base_packages_key,
    cpu_base_ref,
    ensure_cpu_base,
)
from labkit.image.builder import (
    BUILDERS,
    Builder,
    OnLine,
    available_builder,
    capture,
    find_builder,
    image_dir,
    image_exists,
)
from labkit.image.building import (
    DEFAULT_CA_BUNDLE,
    BuildProgress,
    Image,
    Variant,
    build,
    build_options,
    ca_bundle,
    default_variant,
    dockerfile_args,
    gpu_build_command,
    image_size,
    pins,
    runtime_dir,
    uv_cache_dir,
    wheels_dir,
)
from labkit.image.hadolint import LintFinding, LintReport, hadolint_exe, lint
from labkit.image.plan import BuildPlan, build_and_push, plan_build
from labkit.image.registry import (
    MASK,
    DockerRegistrySecret,
    RegistryClient,
    credentials,
    find_next_tag,
    list_tags,
    registry_address,
    registry_secret,
)
from labkit.image.remote import RemoteImage, inspect, push, skopeo_exe
from labkit.image.run import (
    Container,
    SmokeResult,
    image_command,
    image_config,
    smoke_test,
    start_container,
)
from labkit.image.tags import (
    IMAGE_NAME,
    MAX_SEQ,
    ImageError,
    ImageRef,
    check_registry,
    check_repository,
    format_tag,
    is_lab_tag,
    is_loopback,
    next_tag,
    parse_tag,
)

__all__ = [
    "BASE_PACKAGES",
    "BASE_REPOSITORY",
    "BASE_SUITE",
    "BUILDERS",
    "DEFAULT_CA_BUNDLE",
    "IMAGE_NAME",
    "MASK",
    "MAX_SEQ",
    "BuildPlan",
    "BuildProgress",
    "Builder",
    "Container",
    "DockerRegistrySecret",
    "Image",
    "ImageError",
    "ImageRef",
    "LintFinding",
    "LintReport",
    "OnLine",
    "RegistryClient",
    "RemoteImage",
    "SmokeResult",
    "Variant",
    "available_builder",
    "base_packages_key",
    "build",
    "build_and_push",
    "build_options",
    "ca_bundle",
    "capture",
    "check_registry",
    "check_repository",
    "cpu_base_ref",
    "credentials",
    "default_variant",
    "dockerfile_args",
    "ensure_cpu_base",
    "find_builder",
    "find_next_tag",
    "format_tag",
    "gpu_build_command",
    "hadolint_exe",
    "image_command",
    "image_config",
    "image_dir",
    "image_exists",
    "image_size",
    "inspect",
    "is_lab_tag",
    "is_loopback",
    "lint",
    "list_tags",
    "next_tag",
    "parse_tag",
    "pins",
    "plan_build",
    "push",
    "registry_address",
    "registry_secret",
    "runtime_dir",
    "skopeo_exe",
    "smoke_test",
    "start_container",
    "uv_cache_dir",
    "wheels_dir",
]
