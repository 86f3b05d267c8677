"""Why a deployment died or hangs: the table of known causes (image, secret, scheduling, crash
loop, memory, model files, server), each with its advice and its patterns on the logs, the status
message and the status details, beside the matcher that ranks the causes, and the reader that
turns a tenant's ``statusDetails`` (Kubernetes container states and events) into lines.

The patterns are a tenant's wording first: Kubernetes' kubelet and scheduler (ErrImagePull,
ImagePullBackOff, "Back-off pulling image", FailedScheduling "Insufficient nvidia.com/gpu",
CrashLoopBackOff), KServe's storage initializer, vLLM, and the lab's own image (its entrypoint runs
on a tenant too). A few match only the local AI Core's own sentences; they are marked so, each
beside the tenant's wording for the same cause."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from labkit.aicore.secrets import _short, redact

# Causes that keep a deployment PENDING on a tenant instead of turning it DEAD (SAP docs,
# Troubleshooting > Deployment: "Deployment remains in status PENDING"): the lab stops waiting
# for them after a bounded time (labkit.aicore.waiting).
BLOCKING = frozenset({"image", "secret", "scheduling", "crashloop"})


@dataclass(frozen=True)
class Cause:
    """A likely cause of a failed deployment, with the log line that points at it."""

    name: str
    summary: str
    advice: str
    evidence: str

    @property
    def blocking(self) -> bool:
        """A cause that keeps a deployment PENDING for good (a tenant does not turn it DEAD)."""
        return self.name in BLOCKING


# Each: name, summary, advice, patterns (case-insensitive) on the logs and the status message.
_CAUSES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "image",
        "the image cannot be pulled",
        "check the image parameter (the reference step 04 pushed), that the tag exists in the "
        "registry, and that imagePullSecrets names a docker registry secret with a working login",
        (
            # kubelet's wording, in a tenant's statusDetails/events (SAP docs, Troubleshooting >
            # Deployment: "Deployment remains in status PENDING ... check that your Docker image
            # can be downloaded"; Kubernetes docs, Images: ErrImagePull, ImagePullBackOff).
            r"ErrImagePull",
            r"ImagePullBackOff",
            r"InvalidImageName",
            r"ErrImageNeverPull",
            r"Back-off pulling image",
            r"Failed to pull image",
            r"failed to resolve reference",
            r"pull access denied",
            r"manifest unknown",
            r"manifest for .* not found",
            r"failed to pull",
            r"(?:cannot|can't|could not|unable to) pull",
            r"image .*(?:not found|does not exist|unknown)",
            r"repository does not exist",
            r"unauthorized: authentication required",
            # The local AI Core's own sentence ("image X cannot be pulled: ...").
            r"cannot be pulled",
        ),
    ),
    (
        "secret",
        "a secret is missing or wrong",
        "create the object store secret the artifact URL names (ai://<secret>/...) and the docker "
        "registry secret the template names, in this resource group, with valid keys",
        (
            # kubelet: FailedToRetrieveImagePullSecret "Unable to retrieve some image pull
            # secrets (<name>)", CreateContainerConfigError 'secret "<name>" not found' (SAP docs,
            # Troubleshooting > Deployment: "check that the Docker Registry secret exists").
            r"Unable to retrieve some image pull secrets",
            r"FailedToRetrieveImagePullSecret",
            r"secrets? .*(?:not found|missing|does not exist)",
            r"(?:no|unknown|missing) (?:object store|docker registry) secret",
            r"CreateContainerConfigError",
            r"couldn't find key",
            r"InvalidAccessKeyId",
            r"SignatureDoesNotMatch",
            r"NoCredentialsError",
            r"AccessDenied",
            r"\b403\b.*(?:s3|bucket|forbidden)",
        ),
    ),
    (
        "scheduling",
        "no node has the resources the resource plan asks for",
        "choose a resource plan your tenant's service plan offers and that is free now (a smaller "
        "GPU plan, or `starter` on a free tier), or try again later when GPUs are free",
        (
            # The scheduler's FailedScheduling event: "0/N nodes are available: N Insufficient
            # nvidia.com/gpu" (Kubernetes docs, Assigning Pods to Nodes / events).
            r"Insufficient (?:nvidia\.com/gpu|cpu|memory|ephemeral-storage)",
            r"FailedScheduling",
            r"\d+/\d+ nodes are available",
            r"Unschedulable",
        ),
    ),
    (
        "crashloop",
        "the predictor keeps crashing and Kubernetes restarts it with back-off",
        "read the error before each restart in its logs (`labkit deploy logs`): fix the template's "
        "parameters (step 05) or the image's runtime (step 04)",
        (
            # kubelet: waiting reason CrashLoopBackOff, "back-off ... restarting failed
            # container", and a container's restartCount (SAP docs: a crashing predictor ends
            # "dead or pending").
            r"CrashLoopBackOff",
            r"restarting failed container",
            r"restarted \d+ times",
        ),
    ),
    (
        "oom",
        "out of memory",
        "choose a larger resource plan, or lower maxModelLen / gpuMemoryUtilization (see step 01)",
        (
            r"OOMKilled",
            r"out of memory",
            r"OutOfMemoryError",
            r"Cannot allocate memory",
            r"\bMemoryError\b",
            r"exit code 137",
            r"exited with code (?:137|-9)\b",
            r"\bsignal 9\b|SIGKILL",
            r"No available memory for the cache blocks",
            r"larger than the maximum number of tokens that can be stored in KV cache",
            r"not enough (?:free )?memory",
            r"insufficient memory",
        ),
    ),
    (
        "model",
        "the model files are missing or unusable",
        "check the artifact URL against the uploaded object (step 03) and the object store "
        "secret's bucket and pathPrefix; the tar must hold the model as step 02 packaged it",
        (
            r"StorageInitializerError",
            r"NoSuchKey",
            # KServe's storage initializer on a tenant: "Failed to fetch model. No model found in
            # s3://..." (kserve/storage); the next three are the local AI Core's own sentences.
            r"No model found in",
            r"holds nothing",
            r"cannot fetch",
            r"cannot be unpacked",
            r"NoSuchBucket",
            r"no model in",
            r"no such (?:object|key)",
            r"(?:object|key|file|artifact|path) .*(?:not found|does not exist)",
            r"storage.initializer.*(?:fail|error)",
            r"Failed to (?:fetch|download|copy) (?:model|the model|artifact)",
            r"no snapshot",
            r"does not appear to have a file named",
            r"MODELS_DIR .* is not a directory",
            r"tarballs? .*(?:refus|invalid|unsafe|corrupt)",
            r"not a (?:valid )?tar",
        ),
    ),
    (
        "server",
        "the inference server did not start",
        "read the server's error above: fix the template's parameters (step 05: env, args, "
        "maxModelLen, dtype) or the image's runtime (step 04)",
        (
            r"entrypoint: error",  # the lab's image (runtime/entrypoint.py), on a tenant too
            r"ProgressDeadlineExceeded|RevisionFailed|ReadinessTimeout",  # Knative, KServe
            r"RunContainerError|ContainerExited|ContainerCannotRun",  # kubelet
            # The local AI Core's own sentences.
            r"exited with code \d+ before it was ready",
            r"did not answer .* within",
            r"^Traceback|\b\w+Error: ",
        ),
    ),
)


# What a cause names, found in its evidence: the image that cannot be pulled, the missing secret,
# the resource no node has free.
_SUBJECTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "image": (
        "the image {} cannot be pulled",
        (
            r'image "([^"\s]+)"',
            r"image ([\w.-]+(?::\d+)?/[\w./-]+(?::[\w.-]+)?(?:@sha256:[0-9a-f]+)?)",
            r"image ([\w./-]+:[\w.-]+)",
        ),
    ),
    "secret": (
        "the secret {} is missing or wrong",
        (r'secrets? "([^"\s]+)"', r"pull secrets? \(([^)\s]+)\)", r"secret '([^'\s]+)'"),
    ),
    "scheduling": ("no node has a free {} for the resource plan", (r"Insufficient ([\w./-]+)",)),
    "crashloop": (
        "the predictor keeps crashing ({}) and Kubernetes restarts it with back-off",
        (r"(restarted \d+ times)",),
    ),
}


def _subject(name: str, line: str) -> str:
    for pattern in _SUBJECTS.get(name, ("", ()))[1]:
        found = re.search(pattern, line, re.IGNORECASE)
        if found:
            return found.group(1).rstrip(".,;:")
    return ""


def diagnose(lines: Iterable[str]) -> list[Cause]:
    """Likely causes of a failed deployment from its log lines (and status message and details):
    the cause whose evidence comes last (closest to the failure) first, causes seen only in
    warnings last; a line counts for its first cause. A cause names what it found (the image,
    the secret) where a line of it says."""
    found: dict[str, tuple[int, int, Cause]] = {}
    subjects: dict[str, str] = {}
    for index, line in enumerate(lines):
        # A warning (say, a missing pull secret for a registry that needs none) rarely kills
        # a deployment by itself: it ranks after every cause an error line shows.
        weight = 0 if re.search(r"\bwarn(?:ing)?\b", line, re.IGNORECASE) else 1
        for name, summary, advice, patterns in _CAUSES:
            if any(re.search(p, line, re.IGNORECASE | re.MULTILINE) for p in patterns):
                subjects[name] = subjects.get(name) or _subject(name, line)
                if weight >= found.get(name, (0, -1, None))[0]:
                    found[name] = (weight, index, Cause(name, summary, advice, _short(line, 240)))
                break
    ranked = sorted(found.values(), key=lambda x: (-x[0], -x[1]))
    causes = []
    for _, _, cause in ranked:
        if subjects.get(cause.name):
            named = _SUBJECTS[cause.name][0].format(subjects[cause.name])
            cause = Cause(cause.name, named, cause.advice, cause.evidence)
        causes.append(cause)
    return causes


def detail_lines(details: Any) -> list[str]:
    """A deployment's ``statusDetails`` as lines for :func:`diagnose`: each object with a reason
    or a message as one line (prefixed by the key it sits under, such as ``waiting``), and a
    container's restart count as "<name> restarted N times". The AI API documents the object only
    as "current status details" (specs/AI_CORE_API.yaml, AiDeploymentStatusDetails), so any
    nesting is read; SAP's client hands it over with snake_case keys, a raw answer camelCase."""
    lines: list[str] = []

    def norm(key: Any) -> str:
        return str(key).replace("_", "").replace("-", "").lower()

    def walk(node: Any, where: str) -> None:
        if isinstance(node, Mapping):
            keys = {norm(k): v for k, v in node.items()}
            texts = [
                str(keys[k]).strip()
                for k in ("reason", "message", "statusmessage")
                if isinstance(keys.get(k), str) and str(keys[k]).strip()
            ]
            code = keys.get("exitcode")
            if texts and isinstance(code, int) and not isinstance(code, bool):
                texts.append(f"exit code {code}")
            if texts:
                lines.append(": ".join(([where] if where else []) + texts))
            count = keys.get("restartcount")
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                lines.append(f"{keys.get('name') or 'the container'} restarted {count} times")
            for key, value in node.items():
                if isinstance(value, Mapping | list | tuple):
                    walk(value, str(key))
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item, "" if where in ("events", "replicas", "containers") else where)
        elif isinstance(node, str) and node.strip():
            lines.append(node.strip())

    walk(details, "")
    return [redact(_short(line, 400)) for line in lines]
