"""Naming rules the lab checks in several steps: git commits (Hub revisions), Hub repo ids.

AI Core's own rules (resource groups, secrets, scenario and executable ids) live beside the
AI Core client, in ``labkit.aicore`` and ``labkit.templates``, which cite SAP's documentation.
"""

from __future__ import annotations

import re

COMMIT = re.compile(r"[0-9a-f]{40}")  # a full git commit sha, as the Hub's revisions are pinned
SHA256 = re.compile(r"[0-9a-f]{64}")


def is_commit(value: str) -> bool:
    """Whether ``value`` is a full 40-hex git commit id (not a branch, tag or short sha)."""
    return bool(COMMIT.fullmatch(value))
