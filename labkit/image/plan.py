"""Step 04's plan: the builder this machine has, the variant and the next free tag; then build and push."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from labkit.config import Config
from labkit.errors import ServiceError
from labkit.image.builder import Builder, OnLine, find_builder
from labkit.image.building import Image, Variant, build, default_variant
from labkit.image.registry import credentials, list_tags, registry_address
from labkit.image.remote import push
from labkit.image.tags import ImageError, ImageRef, check_repository, next_tag


@dataclass
class BuildPlan:
    """What step 04 does: the builder (None when the machine has none), variant and next tag."""

    ref: ImageRef
    variant: Variant
    builder: Builder | None
    taken: list[str]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": str(self.ref),
            "variant": self.variant,
            "builder": self.builder.name if self.builder else None,
            "taken": self.taken,
            "note": self.note,
        }

    def _repr_markdown_(self) -> str:
        how = f"with **{self.builder.name}**" if self.builder else f"**skipped**: {self.note}"
        tags = ", ".join(f"`{t}`" for t in self.taken[-8:]) or "none yet"
        return (
            f"Next image: `{self.ref}` ({self.variant}), built {how}.\n\n"
            f"Tags already in `{self.ref.registry}/{self.ref.path}`: {tags}"
        )


def plan_build(cfg: Config, day: date | None = None) -> BuildPlan:
    """The builder, variant and next free tag of ``day`` (default today) for this machine.

    A machine without a builder gets a plan with ``builder=None`` and the reason, so the lab
    goes on (the local AI Core then runs the runtime on the host)."""
    registry = registry_address(cfg)
    repository = check_repository(cfg.image_repository)
    builder, note = None, ""
    try:
        builder = find_builder(cfg)
    except (ServiceError, ImageError) as exc:
        note = str(exc)
    try:
        tags = list_tags(registry, repository, login=credentials(cfg))
    except (ServiceError, ImageError) as exc:
        if builder is not None:
            raise
        tags, note = [], f"{note}; {exc}"
    ref = ImageRef(registry, repository, next_tag(tags, day or date.today()))
    return BuildPlan(ref, default_variant(cfg), builder, sorted(tags), note)


def build_and_push(cfg: Config, plan: BuildPlan, *, on_line: OnLine | None = None) -> Image:
    """Build the plan's image and push it; the result carries the pushed digest."""
    if plan.builder is None:
        raise ImageError(f"cannot build here: {plan.note}", "install buildah (`make system`)")
    built = build(cfg, plan.ref, variant=plan.variant, builder=plan.builder, on_line=on_line)
    return push(cfg, built, builder=plan.builder, on_line=on_line)
