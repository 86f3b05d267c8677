"""What every `labkit` command shares: the common options, the output contract, secret files.

Contract (docs/architecture.md): with --json a command prints one JSON object on stdout; a user error
exits non-zero with one line on stderr (a traceback only with --debug).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2


def common_options() -> argparse.ArgumentParser:
    """The options every command takes (--json, --debug, --profile), as a parent parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("--profile", choices=["local", "aicore"], help="override LABKIT_PROFILE")
    return common


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    """Print ``data`` as one JSON object with --json, else ``text``."""
    print(json.dumps(data, indent=2) if args.json else text)


def write_secret_body(path: Path, body: dict[str, Any]) -> None:
    """Write a secret's body with its real credentials to a file only its owner can read.

    The one place a key pair or password is written, for the deploy step (mode 600 when the
    file is created).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh, indent=2)
