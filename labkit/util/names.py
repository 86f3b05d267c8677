"""Naming rules the lab checks in several steps: git commits (Hub revisions), hashes, and AI
Core's names (resource groups, secrets, git repositories and applications) from SAP's spec,
executable and scenario ids from SAP's serving template rules, and the lab's default ids.

The checks that turn a bad name into a user error live with their step (``labkit.aicore.names``,
``labkit.storage.naming``, ``labkit.image.registry``); the local AI Core and the template linter
use the same patterns.
"""

from __future__ import annotations

import getpass
import hashlib
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

# A ServingTemplate's metadata.name is the executable id, and its label scenarios.ai.sap.com/id the
# scenario id (SAP Help, "Serving Templates"): the executable id 4-64 lowercase letters and
# digits, hyphens the only separator; the scenario id 4-63 letters, digits, '-', '_' or '.'.
EXECUTABLE_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
EXECUTABLE_ID_LENGTH = (4, 64)
SCENARIO_ID = re.compile(r"[A-Za-z0-9][-_.A-Za-z0-9]{2,61}[A-Za-z0-9]")

# The lab's executable and scenario ids: this prefix and the OS user. SAP Help, "Serving
# Templates": "The executable ID must be unique among all executables available within the SAP
# AI Core main tenant", so two users of one tenant, each with a repository of their own, must not
# both publish "labkit-vllm" (SAP's tutorial template says the same: "please modify this to any
# value if you are not the only user of your SAP AI Core instance", SAP-samples/ai-core-samples,
# 02_ai_core/tutorials/01_create_your_first_machine_learning_project_using_sap_ai_core/
# 01_02_quick_start_for_your_first_ai_project_using_ai_core/hello_pipeline.yaml).
LAB_ID_PREFIX = "labkit-vllm"
USER_SUFFIX_MAX = 40  # prefix, hyphen and suffix stay within both ids' 63 characters


def is_executable_id(value: str) -> bool:
    """Whether ``value`` is a valid AI Core executable id (a ServingTemplate's metadata.name)."""
    low, high = EXECUTABLE_ID_LENGTH
    return low <= len(value) <= high and bool(EXECUTABLE_ID.fullmatch(value))


def user_suffix(user: str | None = None) -> str:
    """``user`` (default: this OS user) as an id part: lowercase letters and digits joined by
    single hyphens, at most ``USER_SUFFIX_MAX`` characters; a longer one is cut and ends in a
    hash of the whole name, so that it stays distinct. Always the same for the same name."""
    if user is None:
        try:
            user = getpass.getuser()
        except (OSError, KeyError, ImportError):  # no USER/LOGNAME and no passwd entry
            user = ""
    word = "-".join(re.findall(r"[a-z0-9]+", user.lower()))
    if len(word) > USER_SUFFIX_MAX:
        digest = hashlib.sha256(user.encode()).hexdigest()[:6]
        word = f"{word[: USER_SUFFIX_MAX - len(digest) - 1].rstrip('-')}-{digest}"
    return word or "user"


def default_lab_id(user: str | None = None) -> str:
    """The lab's default executable and scenario id: ``labkit-vllm-<user suffix>``."""
    return f"{LAB_ID_PREFIX}-{user_suffix(user)}"
