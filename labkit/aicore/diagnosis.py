"""Why a deployment died: the table of known causes (image, secret, memory, model files, server),
each with its advice and its patterns on the logs and the status message, beside the matcher that
ranks the causes a deployment's logs show."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from labkit.aicore.secrets import _short


@dataclass(frozen=True)
class Cause:
    """A likely cause of a failed deployment, with the log line that points at it."""

    name: str
    summary: str
    advice: str
    evidence: str


# Each: name, summary, advice, patterns (case-insensitive) on the logs and the status message.
_CAUSES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "image",
        "the image cannot be pulled",
        "check the image parameter (the reference step 04 pushed), that the tag exists in the "
        "registry, and that imagePullSecrets names a docker registry secret with a working login",
        (
            r"ErrImagePull",
            r"ImagePullBackOff",
            r"InvalidImageName",
            r"pull access denied",
            r"manifest unknown",
            r"manifest for .* not found",
            r"failed to pull",
            r"cannot be pulled",
            r"(?:cannot|can't|could not|unable to) pull",
            r"image .*(?:not found|does not exist|unknown)",
            r"repository does not exist",
            r"unauthorized: authentication required",
        ),
    ),
    (
        "secret",
        "a secret is missing or wrong",
        "create the object store secret the artifact URL names (ai://<secret>/...) and the docker "
        "registry secret the template names, in this resource group, with valid keys",
        (
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
            r"entrypoint: error",
            r"exited with code \d+ before it was ready",
            r"did not answer .* within",
            r"ReadinessTimeout|CrashLoopBackOff|RunContainerError|ContainerExited",
            r"^Traceback|\b\w+Error: ",
        ),
    ),
)


def diagnose(lines: Iterable[str]) -> list[Cause]:
    """Likely causes of a failed deployment from its log lines (and status message): the cause
    whose evidence comes last (closest to the failure) first, causes seen only in warnings last;
    a line counts for its first cause."""
    found: dict[str, tuple[int, int, Cause]] = {}
    for index, line in enumerate(lines):
        # A warning (say, a missing pull secret for a registry that needs none) rarely kills
        # a deployment by itself: it ranks after every cause an error line shows.
        weight = 0 if re.search(r"\bwarn(?:ing)?\b", line, re.IGNORECASE) else 1
        for name, summary, advice, patterns in _CAUSES:
            if any(re.search(p, line, re.IGNORECASE | re.MULTILINE) for p in patterns):
                if weight >= found.get(name, (0, -1, None))[0]:
                    found[name] = (weight, index, Cause(name, summary, advice, _short(line, 240)))
                break
    ranked = sorted(found.values(), key=lambda x: (-x[0], -x[1]))
    return [cause for _, _, cause in ranked]
