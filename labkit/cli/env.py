"""The lab's environment: `labkit local` (the local profile's services) and `labkit config`."""

from __future__ import annotations

import argparse

from labkit.cli.common import emit
from labkit.config import Config


def _cmd_local(args: argparse.Namespace, cfg: Config) -> int:
    from labkit.local import services

    action = {"up": services.up, "down": services.down, "status": services.status}[args.action]
    rows = action(cfg, progress=not args.json) if args.action == "up" else action(cfg)
    text = "\n".join(
        f"{s.name:9} {'ok' if s.healthy else 'DOWN':5} {s.url}  {s.detail}" for s in rows
    )
    emit(args, {"services": [s.to_dict() for s in rows]}, text)
    # A service whose program is not installed ("unavailable: ...", e.g. the registry without
    # Debian's docker-registry) does not fail `up`: the steps that need it say so themselves.
    ok = all(s.healthy or s.detail.startswith("unavailable:") for s in rows)
    return 0 if args.action == "down" or ok else 1


def _cmd_config(args: argparse.Namespace, cfg: Config) -> int:
    data = cfg.public()
    emit(args, data, "\n".join(f"{k:24} {'' if v is None else v}" for k, v in data.items()))
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `local` and `config`."""
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
