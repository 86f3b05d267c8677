"""The `labkit` command: each step headless, for people, pipelines and other tools.

One module per command group (``size``, ``download``, ``upload``, ``image``, ``deploy``,
``template``, ``query``, ``bench``, ``run``, ``env``), each adding its subparsers; ``app`` assembles them into
``build_parser()`` and runs them in ``main()`` (the ``labkit`` console script).

Contract (docs/architecture.md): with --json a command prints one JSON object on stdout; a user error
exits non-zero with one line on stderr (a traceback only with --debug).
"""

from labkit.cli.app import build_parser, main
from labkit.cli.common import EXIT_USER_ERROR

__all__ = ["EXIT_USER_ERROR", "build_parser", "main"]
