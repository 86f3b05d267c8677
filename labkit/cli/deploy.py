"""The `labkit deploy` command of step 06: deploy through AI Core, and look after the deployment.

Without an action it deploys (up); status, logs, stop, delete, list and cleanup act on the
recorded deployment, the resource group's deployments, or what the lab created.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from labkit.cli.common import emit
from labkit.config import Config

if TYPE_CHECKING:
    from labkit.state import State


def _cmd_deploy(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import aicore
    from labkit.state import State

    if args.resource_group:
        cfg.resource_group = aicore.check_resource_group_name(args.resource_group)
    state = State(cfg.state_file)
    if args.action == "up":
        return _deploy_up(args, cfg, state)
    return _look_after(args, cfg, state)


def _deploy_up(args: argparse.Namespace, cfg: Config, state: State) -> int:
    from labkit import aicore
    from labkit.errors import ConfigError

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
    emit(args, result.to_dict(), result.to_text())
    return 0


def _look_after(args: argparse.Namespace, cfg: Config, state: State) -> int:
    from labkit import aicore

    ai = aicore.connect(cfg)
    if args.action == "cleanup":
        report = aicore.cleanup(
            cfg,
            state,
            ai=ai,
            delete_setup=not args.keep_setup,
            delete_repository=args.delete_repository,
        )
        emit(args, report.to_dict(), report.to_text())
        return 0
    ai.check_resource_group()
    if args.action == "list":
        found = aicore.list_deployments(ai)
        text = "\n".join(f"{d.id}  {d.status:8} {d.scenario_id}  {d.deployment_url}" for d in found)
        emit(args, {"deployments": [d.to_dict() for d in found]}, text or "no deployments")
        return 0
    deployment_id = aicore.recorded_deployment_id(state, args.deployment_id)
    if args.action == "logs":
        lines = ai.logs_tail(deployment_id, args.tail)
        emit(args, {"deployment_id": deployment_id, "logs": lines}, "\n".join(lines))
        return 0
    if args.action == "delete":
        gone = aicore.delete(ai, deployment_id)
        data = {
            "deployment_id": deployment_id,
            "status": "DELETED",
            "deployment_url": "",
            "deleted": gone,
        }
        emit(args, data, f"{deployment_id} deleted" if gone else f"{deployment_id} was gone")
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
    emit(args, data, text)
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `deploy`."""
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
        help="cleanup: keep the application, secrets and resource group",
    )
    dep.add_argument(
        "--delete-repository",
        action="store_true",
        help="cleanup: also delete the git repository registration (kept by default: a tenant "
        "may refuse its name when it is on-boarded again)",
    )
    dep.set_defaults(func=_cmd_deploy)
