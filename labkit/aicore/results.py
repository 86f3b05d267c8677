"""Results: a deployment as AI Core reports it, the objects the step stands on (and whether the
lab created each), and the step's result as the lab state records it; as data, text and HTML."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from html import escape
from typing import Any

from labkit.aicore.secrets import redact
from labkit.util import html

# Statuses from which a deployment never reaches RUNNING again (a stopped one cannot restart).
ENDED = ("DEAD", "STOPPING", "STOPPED", "COMPLETED")
ACTIVE = ("UNKNOWN", "PENDING", "RUNNING")
# Creation order; the clean-up goes backwards through it.
KINDS = (
    "resource_group",
    "repository",
    "application",
    "docker_registry_secret",
    "object_store_secret",
    "artifact",
    "configuration",
    "deployment",
)


@dataclass
class DeploymentInfo:
    """A deployment as AI Core reports it."""

    id: str
    status: str
    target_status: str = ""
    deployment_url: str = ""
    status_message: str = ""
    configuration_id: str = ""
    configuration_name: str = ""
    scenario_id: str = ""
    executable_id: str = ""
    ttl: str = ""
    created_at: str = ""
    # A tenant explains a PENDING deployment here (Kubernetes container states and events), not in
    # the logs (SAP docs, Troubleshooting > Deployment; specs/AI_CORE_API.yaml statusDetails).
    status_details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_sdk(cls, d: Any) -> DeploymentInfo:
        """From the SDK's Deployment object."""

        def text(name: str) -> str:
            value = getattr(d, name, None)
            value = getattr(value, "value", value)
            return "" if value is None else str(value)

        return cls(
            id=text("id"),
            status=text("status") or "UNKNOWN",
            target_status=text("target_status"),
            deployment_url=text("deployment_url"),
            status_message=redact(text("status_message")),
            configuration_id=text("configuration_id"),
            configuration_name=text("configuration_name"),
            scenario_id=text("scenario_id"),
            executable_id=text("executable_id"),
            ttl=text("ttl"),
            created_at=text("created_at"),
            status_details=_details(getattr(d, "status_details", None)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _repr_html_(self) -> str:
        rows = {k: v for k, v in self.to_dict().items() if v}
        rows["status"] = _badge(self.status)
        return _table(rows, raw={"status"})


@dataclass
class Resource:
    """One AI Core object the step needs: what it is, and whether the lab created it."""

    kind: str
    id: str
    action: str = "reused"  # what this run did: created, reused, updated, skipped, deleted, kept...
    created: bool = False  # the lab created it (this run or an earlier one)
    detail: str = ""
    resource_group: str = ""
    api_url: str = ""
    deleted: bool = False

    def key(self) -> tuple[str, str, str, str]:
        return (self.api_url, self.resource_group, self.kind, self.id)


class ResourceTable(list):
    """Resources as a table in a notebook and as lines in a terminal."""

    def to_text(self) -> str:
        return "\n".join(
            f"{r.kind:24} {r.action:9} {r.id}" + (f"  ({r.detail})" if r.detail else "")
            for r in self
        )

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        rows = (
            (
                escape(r.kind.replace("_", " ")),
                f"<code>{escape(r.id)}</code>",
                escape(r.action),
                escape(r.detail),
            )
            for r in self
        )
        return html.table(("object", "id", "this run", "detail"), rows)


@dataclass
class DeploymentResult:
    """The result of step 06: the deployment and every object it stands on."""

    deployment_id: str
    status: str
    deployment_url: str
    configuration_id: str
    artifact_id: str
    artifact_url: str
    scenario_id: str
    executable_id: str
    resource_group: str
    api_url: str
    ttl: str | None = None
    status_message: str = ""
    served_model_name: str = ""
    seconds: float = 0.0
    objects: list[Resource] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 1)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeploymentResult:
        """Back from the lab state."""
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known and k != "objects"}
        objects = [Resource(**_known(Resource, o)) for o in data.get("objects", [])]
        for name in known - {"objects", "ttl", "status_message", "served_model_name", "seconds"}:
            values.setdefault(name, "")
        return cls(**values, objects=objects)

    def __repr__(self) -> str:
        return f"DeploymentResult({self.deployment_id!r}, {self.status!r}, {self.deployment_url!r})"

    def to_text(self) -> str:
        lines = [
            f"deployment {self.deployment_id}: {self.status}",
            f"url: {self.deployment_url or '(none yet)'}",
            f"configuration {self.configuration_id}, artifact {self.artifact_id} ({self.artifact_url})",
            f"executable {self.executable_id} in scenario {self.scenario_id}, "
            f"resource group {self.resource_group} at {self.api_url}",
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = {
            "deployment": self.deployment_id,
            "status": _badge(self.status),
            "deployment URL": self.deployment_url,
            "configuration": self.configuration_id,
            "artifact": f"{self.artifact_id} ({self.artifact_url})",
            "executable": f"{self.executable_id} (scenario {self.scenario_id})",
            "resource group": self.resource_group,
            "AI API": self.api_url,
            "ttl": self.ttl or "",
        }
        return _table({k: v for k, v in rows.items() if v}, raw={"status"})


def _details(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    return {"message": str(value)} if value else {}


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k in cls.__dataclass_fields__}


def _table(rows: Mapping[str, Any], raw: Iterable[str] = ()) -> str:
    raw = set(raw)
    return html.fields((escape(str(k)), v if k in raw else escape(str(v))) for k, v in rows.items())


_COLOURS = {"RUNNING": "#2e7d32", "DEAD": "#c62828", "PENDING": "#ef6c00", "UNKNOWN": "#757575"}


def _badge(status: str) -> str:
    colour = _COLOURS.get(status, "#455a64")
    return (
        f"<span style='background:{colour};color:white;padding:1px 6px;border-radius:3px'>"
        f"{escape(status)}</span>"
    )
