"""The plan catalogue: AI Core resource plans and instance types, and the GPU types they use.

The shipped plans are ``labkit/resource_plans.toml`` (package data); a user TOML adds or
replaces plans and GPU types, and AI Core's instance types can be imported from the body of
GET /v2/admin/resources/instanceTypes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from labkit.errors import SizingError
from labkit.sizing.constants import _MAX_COUNT, _MAX_GIB, GB, GiB
from labkit.sizing.fields import show
from labkit.util.html import esc, table


@dataclass(frozen=True)
class GpuType:
    """A GPU model: memory the driver reports, compute capability, name tokens."""

    name: str
    usable_gib: float
    compute_capability: float
    memory_gb: float | None = None
    aliases: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class Plan:
    """A resource plan or instance type: GPUs (0 = CPU only), CPUs and RAM."""

    name: str
    order: float
    gpus: int = 0
    gpu: str | None = None
    cpus: float | None = None
    memory_bytes: int | None = None
    public: bool = True
    description: str = ""
    source: str = ""
    kind: str = "resourcePlan"  # or "instanceType": the pod label ai.sap.com/<kind> to use
    billable_units_per_hour: float | None = None

    @property
    def memory_gib(self) -> float | None:
        """RAM in GiB, when known."""
        return None if self.memory_bytes is None else self.memory_bytes / GiB

    @property
    def hardware(self) -> str:
        """A short description such as '4 x A10G' or 'CPU, 10.2 GiB RAM'."""
        if self.gpus:
            return f"{self.gpus} x {self.gpu or 'unknown GPU'}"
        return f"CPU, {self.memory_gib:.1f} GiB RAM" if self.memory_bytes else "CPU"


_PLAN_KEYS = {
    "name",
    "order",
    "gpus",
    "gpu",
    "cpus",
    "memory_gb",
    "memory_gib",
    "public",
    "description",
    "source",
}
_GPU_KEYS = {"usable_gib", "compute_capability", "memory_gb", "aliases", "source"}


@dataclass(frozen=True)
class Catalogue:
    """The plans sizing evaluates, smallest first, and the GPU types they use."""

    plans: tuple[Plan, ...]
    gpu_types: Mapping[str, GpuType]

    def __iter__(self) -> Iterator[Plan]:
        return iter(self.plans)

    def names(self) -> list[str]:
        """Plan names, smallest first."""
        return [p.name for p in self.plans]

    def get(self, name: str) -> Plan:
        """The plan called ``name``; SizingError listing the known names otherwise."""
        for p in self.plans:
            if p.name == name:
                return p
        raise SizingError(f"unknown plan {name!r}", f"use one of: {', '.join(self.names())}")

    def gpu_type(self, name: str | None) -> GpuType | None:
        """The GPU type called ``name`` (case-insensitive), or None."""
        if name is None:
            return None
        for key, gpu in self.gpu_types.items():
            if key.lower() == name.lower():
                return gpu
        return None

    def with_plans(
        self, plans: Iterable[Plan], gpu_types: Mapping[str, GpuType] | None = None
    ) -> Catalogue:
        """A catalogue with ``plans`` added (replacing same-named ones), sorted smallest first."""
        merged = {p.name: p for p in self.plans}
        merged.update({p.name: p for p in plans})
        gpus = {**self.gpu_types, **(gpu_types or {})}
        return Catalogue(tuple(sorted(merged.values(), key=lambda p: (p.order, p.name))), gpus)

    def with_instance_types(
        self, payload: Mapping[str, Any], *, gpu_types: Mapping[str, str] | None = None
    ) -> Catalogue:
        """Add AI Core instance types from the body of GET /v2/admin/resources/instanceTypes.

        The response (BckndInstanceTypeGetResponse) says how many GPUs but not which model:
        it is taken from ``gpu_types`` ({instance type: GPU type}) or from a GPU name inside
        the instance type's id; otherwise the type is listed but cannot fit.
        """
        types = payload.get("instanceTypes") if isinstance(payload, Mapping) else None
        if not isinstance(types, Mapping):
            raise SizingError(
                "the instance types payload has no 'instanceTypes' object",
                "pass the JSON body of GET /v2/admin/resources/instanceTypes",
            )
        new: list[Plan] = []
        for name, spec in types.items():
            if (
                not isinstance(spec, Mapping)
                or not {"memory", "cpu", "gpu", "billableUnitsPerHour"} <= spec.keys()
            ):
                raise SizingError(
                    f"instance type {name!r} lacks memory, cpu, gpu or billableUnitsPerHour",
                    "pass the JSON body of GET /v2/admin/resources/instanceTypes unchanged",
                )
            gpus = spec["gpu"]
            if not isinstance(gpus, int | float) or gpus < 0 or gpus != int(gpus):
                raise SizingError(
                    f"instance type {name!r} has gpu={gpus!r}", "expected a whole number of GPUs"
                )
            gpus = int(gpus)
            gpu = None
            if gpus:
                wanted = (gpu_types or {}).get(name)
                gpu_obj = self.gpu_type(wanted) if wanted else self._guess_gpu(name)
                if wanted and gpu_obj is None:
                    raise SizingError(
                        f"unknown GPU type {wanted!r} for instance type {name!r}",
                        f"use one of: {', '.join(self.gpu_types)} (or add it to a plans TOML)",
                    )
                gpu = gpu_obj.name if gpu_obj else None
            new.append(
                Plan(
                    name=str(name),
                    order=0.0,
                    gpus=gpus,
                    gpu=gpu,
                    cpus=float(spec["cpu"]),
                    memory_bytes=_parse_quantity(spec["memory"], name),
                    description=f"{gpus} GPU(s), {spec['cpu']} CPUs, {spec['memory']} RAM",
                    source="GET /v2/admin/resources/instanceTypes",
                    kind="instanceType",
                    billable_units_per_hour=float(spec["billableUnitsPerHour"]),
                )
            )
        return self.with_plans(self._place(new))

    def _guess_gpu(self, instance_type: str) -> GpuType | None:
        tokens = [t for t in re.split(r"[^a-z0-9]+", instance_type.lower()) if t]
        best: tuple[int, GpuType] | None = None
        for gpu in self.gpu_types.values():
            for alias in (gpu.name, *gpu.aliases):
                parts = [t for t in re.split(r"[^a-z0-9]+", alias.lower()) if t]
                n = len(parts)
                hit = any(tokens[i : i + n] == parts for i in range(len(tokens) - n + 1))
                if hit and (best is None or n > best[0]):
                    best = (n, gpu)
        return best[1] if best else None

    def _size_key(self, plan: Plan) -> tuple[float, float]:
        gpu = self.gpu_type(plan.gpu)
        if plan.gpus and gpu is None:
            return (math.inf, math.inf)
        return (plan.gpus * gpu.usable_gib if gpu else 0.0, float(plan.memory_bytes or 0))

    def _place(self, new: list[Plan]) -> list[Plan]:
        # Slot each new plan in after the largest existing plan that is no bigger, so
        # "smallest plan that fits" compares instance types with resource plans.
        placed = []
        ranked = sorted(
            new, key=lambda p: (self._size_key(p), p.billable_units_per_hour or 0.0, p.name)
        )
        for rank, plan in enumerate(ranked):
            key = self._size_key(plan)
            if key[0] == math.inf:
                order = 10_000.0 + rank
            else:
                below = [p.order for p in self.plans if self._size_key(p) <= key]
                order = max(below, default=0.0) + 0.5 + rank / 1000
            placed.append(dataclasses.replace(plan, order=order))
        return placed

    def _repr_html_(self) -> str:
        rows = [
            (
                esc(p.name),
                esc(p.hardware),
                "" if p.cpus is None else f"{p.cpus:g}",
                "" if p.memory_bytes is None else f"{p.memory_gib:.1f}",
                esc(p.kind),
                esc(p.description),
            )
            for p in self.plans
        ]
        head = ("plan", "hardware", "CPUs", "RAM GiB", "kind", "description")
        return table(head, rows, sections=True)


_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGTPE]i?|[kmgtpe]|)\s*$")
_SUFFIX = (
    {"": 1, "k": 10**3}
    | {unit: 1000 ** (i + 1) for i, unit in enumerate("KMGTPE")}
    | {unit + "i": 1024 ** (i + 1) for i, unit in enumerate("KMGTPE")}
)


def _parse_quantity(value: Any, where: str) -> int:
    """Bytes from a Kubernetes memory quantity such as "16Gi" or "64G"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) not in _SUFFIX:
        raise SizingError(
            f"cannot read memory {value!r} of {where!r}", 'expected a quantity like "16Gi"'
        )
    return int(float(match.group(1)) * _SUFFIX[match.group(2)])


def _problem(unknown: set[str]) -> str:
    return f"unknown keys {', '.join(sorted(unknown))}" if unknown else "missing keys"


def _plans_from_toml(
    data: Mapping[str, Any], origin: str, known_gpus: Mapping[str, GpuType]
) -> tuple[list[Plan], dict[str, GpuType]]:
    gpus: dict[str, GpuType] = {}
    for name, g in (data.get("gpus") or {}).items():
        unknown = set(g) - _GPU_KEYS
        if unknown or "usable_gib" not in g or "compute_capability" not in g:
            raise SizingError(
                f"GPU type {name!r} in {origin} is malformed ({_problem(unknown)})",
                f"give usable_gib and compute_capability; keys: {', '.join(sorted(_GPU_KEYS))}",
            )
        gpus[name] = GpuType(
            name=name,
            usable_gib=float(g["usable_gib"]),
            compute_capability=float(g["compute_capability"]),
            memory_gb=g.get("memory_gb"),
            aliases=tuple(g.get("aliases", ())),
            source=str(g.get("source", "")),
        )
    all_gpus = {k.lower(): v for k, v in {**known_gpus, **gpus}.items()}
    plans: list[Plan] = []
    for p in data.get("plans") or []:
        name = p.get("name")
        unknown = set(p) - _PLAN_KEYS
        if not name or unknown or "order" not in p:
            raise SizingError(
                f"plan {name or '(no name)'} in {origin} is malformed ({_problem(unknown)})",
                f"give name and order; allowed keys: {', '.join(sorted(_PLAN_KEYS))}",
            )
        n_gpus = int(p.get("gpus", 0))
        gpu = all_gpus.get(str(p.get("gpu", "")).lower())
        if n_gpus and gpu is None:
            raise SizingError(
                f"plan {name!r} in {origin} uses unknown GPU type {p.get('gpu')!r}",
                f"use one of {', '.join(sorted(g.name for g in all_gpus.values()))} or add [gpus]",
            )
        if "memory_gib" in p:
            memory = int(float(p["memory_gib"]) * GiB)
        elif "memory_gb" in p:
            memory = int(float(p["memory_gb"]) * GB)
        else:
            memory = None
        if not n_gpus and memory is None:
            raise SizingError(
                f"CPU plan {name!r} in {origin} has no memory_gb", "give its RAM as memory_gb"
            )
        plans.append(
            Plan(
                name=str(name),
                order=float(p["order"]),
                gpus=n_gpus,
                gpu=gpu.name if n_gpus and gpu else None,
                cpus=p.get("cpus"),
                memory_bytes=memory,
                public=bool(p.get("public", True)),
                description=str(p.get("description", "")),
                source=str(p.get("source", origin)),
            )
        )
    return plans, gpus


def _check_plans(plans: list[Plan], gpus: Mapping[str, GpuType], path: Path) -> None:
    """Numbers a plans file may well-type and still get impossible: NaN, inf, zero, negative."""

    def bad(what: str, hint: str) -> SizingError:
        return SizingError(f"plans file {path}: {what}", hint)

    for g in gpus.values():
        if not (math.isfinite(g.usable_gib) and 0 < g.usable_gib <= _MAX_GIB):
            raise bad(
                f"GPU type {g.name!r} has usable_gib {g.usable_gib}", "give its GiB, e.g. 22.3"
            )
        if not (math.isfinite(g.compute_capability) and 0 < g.compute_capability < 100):
            raise bad(
                f"GPU type {g.name!r} has compute_capability {g.compute_capability}",
                "give it as NVIDIA lists it, e.g. 8.6",
            )
    for p in plans:
        if not 0 <= p.gpus <= _MAX_COUNT:
            raise bad(f"plan {p.name!r} has {p.gpus} GPUs", "give gpus = 0 (CPU) or more")
        cpus_ok = p.cpus is None or (
            isinstance(p.cpus, int | float) and not isinstance(p.cpus, bool) and 0 <= p.cpus < 1e6
        )
        if not cpus_ok:
            raise bad(f"plan {p.name!r} has cpus = {show(p.cpus)}", "give the number of CPUs")
        if not math.isfinite(p.order):
            raise bad(f"plan {p.name!r} has order {p.order}", "give a finite number")
        if p.memory_bytes is not None and not 0 < p.memory_bytes <= _MAX_GIB * GiB:
            raise bad(
                f"plan {p.name!r} has {p.memory_bytes} bytes of memory",
                "give memory_gb as a positive number",
            )


def load_catalogue(extra: str | os.PathLike | None = None) -> Catalogue:
    """The shipped plan catalogue, plus the plans and GPU types of an optional user TOML."""
    shipped = tomllib.loads(
        resources.files("labkit").joinpath("resource_plans.toml").read_text(encoding="utf-8")
    )
    plans, gpus = _plans_from_toml(shipped, "resource_plans.toml", {})
    catalogue = Catalogue((), {}).with_plans(plans, gpus)
    if extra is not None:
        path = Path(extra)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        # ValueError: TOMLDecodeError, or an integer of over 4300 digits.
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise SizingError(
                f"cannot read plans file {path} ({exc})", "give a TOML file of [[plans]]"
            ) from exc
        try:
            more, more_gpus = _plans_from_toml(data, str(path), catalogue.gpu_types)
        except (AttributeError, TypeError, ValueError, OverflowError) as exc:  # a wrong type
            raise SizingError(
                f"plans file {path} is malformed ({type(exc).__name__}: {exc})",
                "give [gpus.NAME] tables and [[plans]] entries as labkit/resource_plans.toml does",
            ) from exc
        _check_plans(more, more_gpus, path)
        catalogue = catalogue.with_plans(more, more_gpus)
    return catalogue
