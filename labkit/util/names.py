"""Naming rules the lab checks in several steps: git commits (Hub revisions), hashes, and AI
Core's names (resource groups, secrets, git repositories and applications) from SAP's spec.

The checks that turn a bad name into a user error live with their step (``labkit.aicore.names``,
``labkit.storage.naming``, ``labkit.image.registry``); the local AI Core and the template linter
use the same patterns.
"""

from __future__ import annotations

import re

COMMIT = re.compile(r"[0-9a-f]{40}")  # a full git commit sha, as the Hub's revisions are pinned
SHA256 = re.compile(r"[0-9a-f]{64}")


def is_commit(value: str) -> bool:
    """Whether ``value`` is a full 40-hex git commit id (not a branch, tag or short sha)."""
    return bool(COMMIT.fullmatch(value))


# AI Core's name patterns, from SAP's spec of the AI API (specs/AI_CORE_API.yaml): the client
# checks names before a call, the local AI Core refuses what the spec refuses, and the template
# linter checks the names a ServingTemplate refers to.
RESOURCE_GROUP_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9.-]{1,251}[a-zA-Z0-9]")  # resourceGroupId
# objectStoreSecrets: a DNS subdomain, at most 233 characters.
OBJECT_STORE_SECRET_NAME = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
OBJECT_STORE_SECRET_MAX = 233
# dockerRegistrySecrets, and imagePullSecrets in a template: at most 63 characters.
DOCKER_REGISTRY_SECRET_NAME = re.compile(r"[a-z0-9](?:_?[a-z0-9.\-]+)*[a-z0-9]")
DOCKER_REGISTRY_SECRET_MAX = 63
# ArgoCD repositories (1-51) and applications (3-54): lowercase letters, digits and '-'.
ARGO_NAME = re.compile(r"[a-z0-9-]+")
