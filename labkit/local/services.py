"""`labkit local up|down|status`: the local profile's stand-ins for the services a tenant has.

Each entry is a module of labkit.local with ``up(cfg, progress)``, ``down(cfg)`` and
``status(cfg) -> ServiceStatus``; they start in this order and stop in reverse.
"""

from __future__ import annotations

import importlib
from html import escape
from types import ModuleType

from labkit.config import Config
from labkit.local.daemon import ServiceStatus
from labkit.util import html

SERVICES = ["model", "hub", "s3", "registry", "aicore"]


def _modules() -> list[ModuleType]:
    return [importlib.import_module(f"labkit.local.{name}") for name in SERVICES]


def up(cfg: Config, *, progress: bool = True) -> list[ServiceStatus]:
    """Build or start everything the local profile needs; idempotent."""
    for module in _modules():
        module.up(cfg, progress=progress)
    return status(cfg)


def down(cfg: Config) -> list[ServiceStatus]:
    """Stop every local service; built artefacts (the model, the Hub's repos) stay."""
    for module in reversed(_modules()):
        module.down(cfg)
    return status(cfg)


def status(cfg: Config) -> list[ServiceStatus]:
    """Each local service with its URL and health."""
    return [module.status(cfg) for module in _modules()]


def status_html(rows: list[ServiceStatus]) -> str:
    """A small table for notebooks."""
    return html.table(
        ["service", "url", "ok", ""],
        [
            [
                escape(s.name),
                f"<code>{escape(s.url)}</code>",
                html.mark(s.healthy, "running", "down"),
                escape(s.detail),
            ]
            for s in rows
        ],
    )
