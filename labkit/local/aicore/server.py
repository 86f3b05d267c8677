"""The local AI Core: the part of SAP AI Core's AI API the lab uses, as a real HTTP server.

Paths, camelCase JSON bodies, status codes and statuses follow the official spec
(``AI_CORE_API.yaml``, paths relative to ``<AI_API_URL>/v2``), so SAP's own client
(``ai_core_sdk.AICoreV2Client``) drives it unchanged:

- ``POST /oauth/token``: client credentials (form fields or HTTP Basic) from the service key give
  an HS256-signed JWT that expires after ``--token-ttl`` seconds; wrong credentials get 401.
  The signing key lives with the state, so tokens stay valid across a restart
  (:mod:`labkit.local.aicore.tokens`).
- ``/v2/admin/...``: resource groups, git repositories and applications (``/status``,
  ``/refresh``), object store secrets (per resource group, listed as
  ``<name>-object-store-secret`` as on the service), docker registry secrets, instance types
  (:mod:`labkit.local.aicore.admin`; the applications' sync is :mod:`labkit.local.aicore.gitsync`).
- ``/v2/lm/...``: scenarios, versions and executables (from the synced templates), artifacts,
  configurations (:mod:`labkit.local.aicore.lm`), deployments (create, get, list, ``$count``, PATCH
  ``targetStatus: STOPPED`` or a new ``configurationId``, bulk PATCH, DELETE, ``/logs``;
  :mod:`labkit.local.aicore.deployments`), ``/meta``.
- ``/v2/inference/deployments/<id>/<path>``: proxied to the deployment's server, streaming chunk
  by chunk, after the token and ``AI-Resource-Group`` checks (:mod:`labkit.local.aicore.inference`).

State lives under ``--state-dir`` (:mod:`labkit.local.aicore.store`). This module is the program:
``python -m labkit.local.aicore.server`` runs the app (:mod:`labkit.local.aicore.app`) with
uvicorn until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from labkit.local.aicore.app import create_app
from labkit.local.aicore.common import PROGRESS_DEADLINE_S, log
from labkit.local.aicore.core import Settings
from labkit.local.aicore.gitsync import SYNC_INTERVAL_S
from labkit.local.aicore.runspec import RunnerSettings, has_gpu


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m labkit.local.aicore.server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--service-key", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-ttl", type=int, default=7200, help="token lifetime in seconds")
    parser.add_argument("--runner", choices=["auto", "buildah", "host"], default="auto")
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=PROGRESS_DEADLINE_S,
        help="floor in s of the start-up deadline (real downloads and vLLM starts)",
    )
    parser.add_argument(
        "--time-scale",
        type=_time_scale,
        default=None,
        help="a tenant's durations times this, or 'tenant' (1.0); default: "
        "LABKIT_AICORE_TIME_SCALE as the lab's configuration reads it",
    )
    parser.add_argument("--sync-interval", type=float, default=SYNC_INTERVAL_S)
    parser.add_argument("--entrypoint", type=Path, required=True, help="runtime/entrypoint.py")
    parser.add_argument("--python", default=sys.executable, help="interpreter for host mode")
    parser.add_argument("--image-storage", type=Path, help="buildah's storage (labkit.image's)")
    return parser.parse_args(argv)


def _time_scale(text: str) -> float:
    from labkit.config import parse_time_scale

    try:
        return parse_time_scale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def default_time_scale() -> float:
    """The time scale of the lab's configuration: LABKIT_AICORE_TIME_SCALE from the environment
    (inherited from `labkit local up`) or the lab's .env, else the compressed default."""
    from labkit.config import DEFAULT_AICORE_TIME_SCALE, load_config
    from labkit.errors import ConfigError

    try:
        return load_config().aicore_time_scale
    except ConfigError:
        return DEFAULT_AICORE_TIME_SCALE


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the command line; buildah is used when it is installed."""
    builder = None
    exe = shutil.which("buildah")
    if exe:  # also in host mode: containers of an earlier run in buildah mode get removed
        from labkit.image import Builder

        builder = Builder("buildah", exe, args.image_storage)
    runner = RunnerSettings(
        mode=args.runner,
        python=args.python,
        entrypoint=args.entrypoint,
        start_timeout=args.start_timeout,
        builder=builder,
        gpu=has_gpu(),
        time_scale=args.time_scale if args.time_scale is not None else default_time_scale(),
    )
    return Settings(
        state_dir=args.state_dir,
        port=args.port,
        host=args.host,
        service_key_file=args.service_key,
        runner=runner,
        token_ttl=args.token_ttl,
        sync_interval=args.sync_interval,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM."""
    import uvicorn

    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per proxied request
    settings = settings_from(args)
    log.info(
        "local AI Core on %s (state %s, runner %s, token lifetime %d s, time scale %g)",
        settings.base_url,
        settings.state_dir,
        args.runner if settings.runner.builder or args.runner == "host" else "host (no buildah)",
        settings.token_ttl,
        settings.runner.time_scale,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        backlog=2048,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
