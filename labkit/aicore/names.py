"""AI Core's naming rules, checked before any call: resource group ids, git repository and
application names, deployment ttls. The patterns are AI Core's own (AI_CORE_API.yaml); the 40-hex
git commit rule is ``labkit.util.names.COMMIT``."""

from __future__ import annotations

import re

from labkit.errors import ConfigError
from labkit.util.names import ARGO_NAME, RESOURCE_GROUP_ID

_TTL = re.compile(r"[0-9]+[mMhHdD]")


def check_resource_group_name(name: str) -> str:
    """``name`` if AI Core takes it as a resource group id, else a ConfigError."""
    if not RESOURCE_GROUP_ID.fullmatch(name or ""):
        raise ConfigError(
            f"'{name}' is not a valid resource group id",
            "use 3-253 letters, digits, '.' and '-', starting and ending with a letter or digit",
        )
    return name


def check_ttl(ttl: str | None) -> str | None:
    """A deployment ttl as AI Core takes it (whole minutes, hours or days: 30m, 2h, 1d), or None."""
    if ttl in (None, ""):
        return None
    if not _TTL.fullmatch(ttl) or int(ttl[:-1]) == 0:
        raise ConfigError(
            f"ttl {ttl!r} is not a whole number of minutes, hours or days",
            "use e.g. 30m, 2h or 1d (or none)",
        )
    return ttl


def _check_argo_name(kind: str, name: str, lo: int, hi: int) -> str:
    """``name`` if AI Core takes it as a repository or application name (``lo``-``hi`` long)."""
    if not (lo <= len(name) <= hi and ARGO_NAME.fullmatch(name)):
        raise ConfigError(
            f"'{name}' is not a valid {kind} name",
            f"use {lo}-{hi} lowercase letters, digits and '-'",
        )
    return name
