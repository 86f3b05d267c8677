"""`labkit local up|down|status`: the local profile's stand-ins for the services a tenant has."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from html import escape

from labkit.config import Config


@dataclass
class ServiceStatus:
    """One local service: where it is and whether it answers."""

    name: str
    url: str
    healthy: bool
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _model_status(cfg: Config) -> ServiceStatus:
    from labkit.local.model import model_is_complete

    ready = model_is_complete(cfg.local_model_dir)
    detail = "built" if ready else "not built: run `labkit local up`"
    return ServiceStatus("model", cfg.local_model_dir.as_uri(), ready, detail)


def up(cfg: Config, *, progress: bool = True) -> list[ServiceStatus]:
    """Build or start everything the local profile needs; idempotent."""
    from labkit.local.model import ensure_default_model

    ensure_default_model(cfg.local_model_dir, progress=progress)
    return status(cfg)


def down(cfg: Config) -> list[ServiceStatus]:
    """Stop every local service (built artefacts such as the model stay)."""
    return status(cfg)


def status(cfg: Config) -> list[ServiceStatus]:
    """Each local service with its URL and health."""
    return [_model_status(cfg)]


def status_html(rows: list[ServiceStatus]) -> str:
    """A small table for notebooks."""
    body = "".join(
        f"<tr><td>{escape(s.name)}</td><td><code>{escape(s.url)}</code></td>"
        f"<td>{'✅' if s.healthy else '❌'}</td><td>{escape(s.detail)}</td></tr>"
        for s in rows
    )
    return f"<table><tr><th>service</th><th>url</th><th>ok</th><th></th></tr>{body}</table>"
