"""The `labkit` command: the parser assembled from the command groups, and the entry point.

Contract (docs/architecture.md): with --json a command prints one JSON object on stdout; a user error
exits non-zero with one line on stderr (a traceback only with --debug).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from labkit import __version__
from labkit.cli import bench, deploy, download, env, image, query, run, size, template, upload
from labkit.cli.common import EXIT_USER_ERROR, common_options
from labkit.config import Config, load_config
from labkit.errors import LabError

# In the order `labkit --help` lists them: the steps, then running the lab and its environment.
GROUPS = (size, download, upload, image, deploy, template, query, bench, run, env)


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose usage error stays one line after the usage, whatever the
    arguments hold (argparse echoes a bad argument as it is, newlines included)."""

    def error(self, message: str) -> NoReturn:
        super().error(" ".join(message.split()))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (kept separate so --help text is testable)."""
    common = common_options()
    parser = _Parser(
        prog="labkit",
        description="Take an open LLM to a measured vLLM endpoint on SAP AI Core, one step at a time.",
        epilog="Settings come from options, then LABKIT_* variables, then .env. See README.md.",
    )
    parser.add_argument("--version", action="version", version=f"labkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_parsers(sub, common)
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
