"""Image names: the tag rule ``v<ddmmyy>-<NN>``, the next free tag of a day, and the checked
reference ``<registry>/<repository>/aicore-vllm:<tag>`` (Docker's reference grammar)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from labkit.errors import LabError

IMAGE_NAME = "aicore-vllm"
MAX_SEQ = 99

_TAG = re.compile(r"v([0-9]{2})([0-9]{2})([0-9]{2})-([0-9]{2})")
# Docker's reference grammar (distribution/reference): host components, path components.
_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY = re.compile(
    rf"(?P<host>{_HOST_PART}(?:\.{_HOST_PART})*|\[[0-9a-fA-F:.]+\])(?::(?P<port>[0-9]{{1,5}}))?"
)
_PATH_PART = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


class ImageError(LabError):
    """An image name, tag, Dockerfile, build or push the user can fix."""


def format_tag(day: date, seq: int) -> str:
    """The tag of the ``seq``-th image of ``day``: ``v<ddmmyy>-<NN>``."""
    if not 1 <= seq <= MAX_SEQ:
        raise ImageError(f"image number {seq} is out of range", f"use 1 to {MAX_SEQ}")
    return f"v{day:%d%m%y}-{seq:02d}"


def parse_tag(tag: str) -> tuple[date, int]:
    """The day and number a ``v<ddmmyy>-<NN>`` tag stands for; ImageError for any other tag."""
    match = _TAG.fullmatch(tag)
    if not match:
        raise ImageError(
            f"tag {tag!r} does not follow v<ddmmyy>-<NN>",
            "use e.g. v261126-01 (26 Nov 2026, first)",
        )
    dd, mm, yy, nn = (int(g) for g in match.groups())
    try:
        day = date(2000 + yy, mm, dd)
    except ValueError:
        raise ImageError(
            f"tag {tag!r} names no real day (dd={dd:02d} mm={mm:02d} yy={yy:02d})",
            "the date part is day, month, year: v<ddmmyy>",
        ) from None
    if nn == 0:
        raise ImageError(f"tag {tag!r} has number 00", "numbers start at 01")
    return day, nn


def is_lab_tag(tag: str) -> bool:
    """Whether ``tag`` follows the lab's convention."""
    try:
        parse_tag(tag)
    except ImageError:
        return False
    return True


def check_registry(registry: str) -> str:
    """``registry`` (host[:port]) if valid, else ImageError; a scheme or path is refused."""
    if "://" in registry or "/" in registry:
        raise ImageError(
            f"registry {registry!r} must be host[:port] only", "drop the scheme and any path"
        )
    match = _REGISTRY.fullmatch(registry)
    if not match or (match["port"] and not 0 < int(match["port"]) < 65536):
        raise ImageError(
            f"{registry!r} is not a registry host[:port]",
            "use e.g. localhost:5000 or myregistry.example.com",
        )
    host = match["host"]
    # Otherwise Docker reads the first part as a Docker Hub namespace, not a registry.
    if "." not in host and not match["port"] and host != "localhost" and host[0] != "[":
        raise ImageError(
            f"{registry!r} would be read as a Docker Hub namespace, not a registry",
            "give the registry's full host name (with a dot) or a port, e.g. docker.io",
        )
    return registry


def check_repository(repository: str) -> str:
    """The repository path (``org/team``) if valid: lowercase components separated by ``/``."""
    parts = repository.split("/")
    bad = [p for p in parts if not _PATH_PART.fullmatch(p)]
    if not repository or bad:
        raise ImageError(
            f"repository {repository!r} is not a valid path ({'empty' if not repository else repr(bad[0])})",
            "use lowercase letters and digits, separated by . _ - or /",
        )
    return repository


@dataclass(frozen=True)
class ImageRef:
    """``<registry>/<repository>/aicore-vllm:<tag>``, each part checked."""

    registry: str
    repository: str
    tag: str

    def __post_init__(self) -> None:
        check_registry(self.registry)
        check_repository(self.repository)
        parse_tag(self.tag)
        if len(self.name) > 255:
            raise ImageError(f"image name {self.name[:40]}... is over 255 characters", "shorten it")

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Split and check a full reference; ImageError says which part is wrong."""
        name, sep, tag = text.rpartition(":")
        if not sep or "/" in tag:
            raise ImageError(
                f"{text!r} has no tag", f"use <registry>/<repo>/{IMAGE_NAME}:v<ddmmyy>-<NN>"
            )
        registry, _, rest = name.partition("/")
        repository, _, image = rest.rpartition("/")
        if image != IMAGE_NAME or not repository:
            raise ImageError(
                f"{text!r} is not <registry>/<repo>/{IMAGE_NAME}:<tag>",
                f"the image name is always {IMAGE_NAME}, after a registry and a repository path",
            )
        return cls(registry, repository, tag)

    @property
    def path(self) -> str:
        """The repository path in the registry's API: ``<repository>/aicore-vllm``."""
        return f"{self.repository}/{IMAGE_NAME}"

    @property
    def name(self) -> str:
        """The reference without the tag."""
        return f"{self.registry}/{self.path}"

    @property
    def day(self) -> date:
        return parse_tag(self.tag)[0]

    @property
    def seq(self) -> int:
        return parse_tag(self.tag)[1]

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"


def next_tag(existing: Iterable[str], day: date) -> str:
    """The tag after the highest of ``day`` among ``existing`` (other tags ignored), from 01."""
    taken = [seq for d, seq in (_day_seq(t) for t in existing) if d == day]
    seq = max(taken, default=0) + 1
    if seq > MAX_SEQ:
        raise ImageError(
            f"all {MAX_SEQ} tags of {day:%d.%m.%Y} are taken",
            "delete old tags from the registry or tag with another day (--date)",
        )
    return format_tag(day, seq)


def _day_seq(tag: str) -> tuple[date | None, int]:
    try:
        return parse_tag(tag)
    except ImageError:
        return None, 0


def is_loopback(registry: str) -> bool:
    """Whether the registry is on this machine (plain HTTP, no TLS verification)."""
    match = _REGISTRY.fullmatch(registry)
    return is_loopback_name(match["host"].strip("[]") if match else "")


def is_loopback_name(host: str) -> bool:
    """Whether a host name (no port, no brackets) is this machine: localhost or a loopback IP."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
