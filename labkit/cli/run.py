"""The `labkit run` command: execute the lab's notebooks headless with papermill."""

from __future__ import annotations

import argparse
from pathlib import Path

from labkit.cli.common import emit
from labkit.config import Config


def _cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    from labkit.run import run_lab

    report = run_lab(
        cfg,
        out_dir=args.out,
        only=args.only,
        # Text as typed: labkit.run converts it to the type each notebook declares.
        parameters=dict(args.parameter or []),
        progress=not args.json,
        resume=args.resume,
    )
    text = "\n".join(f"{n.status:6} {n.seconds:7.1f}s  {n.notebook}" for n in report.notebooks)
    emit(args, report.to_dict(), f"{text}\nexecuted notebooks and report.md in {report.out_dir}")
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `run`."""
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
