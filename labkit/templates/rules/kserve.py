"""KServe's and Knative's rules for the rendered predictor: the InferenceServiceSpec schema
(``kserve_predictor.schema.json``), the kserve-container and its image, one port that Knative
does not reserve, replicas, pull secrets, env names Knative or vLLM reserve, the model artifact
at STORAGE_URI and /mnt/models, and a memory-backed /dev/shm when tensor parallelism is on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from labkit.templates.load import predictor_schema
from labkit.templates.parts import UNBOUND, as_list, env_entries, get_path, is_known, unbound
from labkit.templates.rules.registry import ERROR, WARNING, check, rule
from labkit.templates.rules.runtime import whole_number
from labkit.templates.spec import (
    MODELS_MOUNT,
    PREDICTOR_CONTAINER,
    RESERVED_ENV,
    RESERVED_PORTS,
    SECRET_NAME,
)

if TYPE_CHECKING:
    from labkit.templates.rules.linter import Linter

KSERVE_SCHEMA = "KServe InferenceServiceSpec v1beta1 (labkit/kserve_predictor.schema.json)"
KNATIVE_ENV = "Knative Serving pkg/apis/serving/k8s_validation.go reservedEnvVars"
KNATIVE_PORTS = "Knative Serving pkg/apis/serving/k8s_validation.go reservedPorts"


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """A reference as (name, tag or None, digest or None)."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest or None
    return name, None, digest or None


@check(
    "spec",
    rule(
        "predictor-schema",
        ERROR,
        "spec validates against KServe's InferenceServiceSpec (v1beta1)",
        cite=KSERVE_SCHEMA,
    ),
)
def predictor_schema_valid(lt: Linter) -> None:
    if lt.spec is None:
        return
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(predictor_schema())
    problems = []
    for err in validator.iter_errors(lt.spec):
        if isinstance(err.instance, str) and UNBOUND in err.instance:
            continue  # an unbound parameter stands in here; its binding decides
        path = "spec"
        for part in err.absolute_path:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        problems.append((path, err.message))
    for path, message in sorted(problems)[:20]:
        lt.emit(
            "predictor-schema",
            f"{path}: {message} (KServe InferenceServiceSpec v1beta1: check the field's name "
            "and type)",
        )


@check(
    "predictor",
    rule(
        "kserve-container",
        ERROR,
        "the predictor has a container named kserve-container with an image",
        cite=KSERVE_SCHEMA,
    ),
)
def kserve_container(lt: Linter) -> None:
    if lt.container is None:
        lt.emit(
            "kserve-container",
            f"the predictor has no container named {PREDICTOR_CONTAINER}: rename the serving "
            f"container to {PREDICTOR_CONTAINER} (KServe's custom predictor)",
        )
    elif not lt.container.get("image"):
        lt.emit("kserve-container", f"{PREDICTOR_CONTAINER} has no image: set image")


@check(
    "container",
    rule("image-pinned", WARNING, "the image names a tag or digest other than latest"),
)
def image_pinned(lt: Linter) -> None:
    image = lt.container.get("image")
    if not image or not is_known(image):
        return
    _, tag, digest = split_image(str(image))
    if not digest and (tag is None or tag == "latest"):
        lt.emit(
            "image-pinned",
            f"image {image} has {'the tag latest' if tag else 'no tag'}: pin a tag "
            "(v<ddmmyy>-<NN>) or a digest so every replica runs the same build",
        )


@check(
    "container",
    rule(
        "container-port",
        ERROR,
        "kserve-container declares exactly one port, not one Knative reserves",
        cite=KNATIVE_PORTS,
    ),
)
def container_port(lt: Linter) -> None:
    ports = lt.container.get("ports")
    if not isinstance(ports, list) or len(ports) != 1:
        count = len(ports) if isinstance(ports, list) else 0
        lt.emit(
            "container-port",
            f"{PREDICTOR_CONTAINER} declares {count} ports: declare exactly one "
            "(Knative routes to one port and passes it as $PORT)",
        )
    elif isinstance(ports[0], dict):
        number = ports[0].get("containerPort")
        if isinstance(number, int) and number in RESERVED_PORTS:
            lt.emit(
                "container-port",
                f"containerPort {number} is reserved by Knative's queue-proxy: use e.g. 8080",
            )
        if ports[0].get("name") not in (None, "", "h2c", "http1"):
            lt.emit(
                "container-port",
                f"port name {ports[0].get('name')!r}: Knative accepts only h2c or http1 (or none)",
            )


@check(
    "container",
    rule("replicas", ERROR, "minReplicas is at most maxReplicas", cite=KSERVE_SCHEMA),
)
def replicas(lt: Linter) -> None:
    minimum, maximum = lt.predictor.get("minReplicas"), lt.predictor.get("maxReplicas")
    if isinstance(minimum, int) and isinstance(maximum, int) and maximum != 0 and minimum > maximum:
        lt.emit(
            "replicas",
            f"minReplicas {minimum} is above maxReplicas {maximum}: raise maxReplicas",
        )


@check(
    "container",
    rule("image-pull-secret", ERROR, "image pull secret names are valid secret names"),
)
def image_pull_secret(lt: Linter) -> None:
    for s in as_list(lt.predictor.get("imagePullSecrets")):
        name = s.get("name") if isinstance(s, dict) else None
        if is_known(name) and not (isinstance(name, str) and SECRET_NAME.fullmatch(name)):
            lt.emit(
                "image-pull-secret",
                f"image pull secret {name!r} is not a secret name: use the name of the "
                "docker registry secret you created in AI Core (lowercase, digits, '.', '-')",
            )


def _env_names(lt: Linter) -> list[Any]:
    return [e.get("name") for e in env_entries(lt.container)]


@check("container", rule("env-duplicate", WARNING, "no env var is set twice"))
def env_duplicate(lt: Linter) -> None:
    names = _env_names(lt)
    for dup in sorted({n for n in names if isinstance(n, str) and names.count(n) > 1}):
        lt.emit("env-duplicate", f"env {dup} is set {names.count(dup)} times: keep one")


@check(
    "container",
    rule(
        "reserved-env",
        ERROR,
        "no env var Knative or vLLM reserves (PORT, K_*, VLLM_PORT)",
        cite=KNATIVE_ENV,
    ),
)
def reserved_env(lt: Linter) -> None:
    names = _env_names(lt)
    for name in RESERVED_ENV:
        if name in names:
            why = (
                "vLLM reads VLLM_PORT as an internal port; the API port comes from $PORT"
                if name == "VLLM_PORT"
                else "Knative reserves it and refuses the deployment; it sets PORT to the "
                "containerPort itself"
            )
            lt.emit("reserved-env", f"env {name} is set: remove it ({why})")


@check(
    "container",
    rule("storage-uri", ERROR, "STORAGE_URI is exactly one input artifact placeholder"),
)
def storage_uri(lt: Linter) -> None:
    storage = [e for e in env_entries(lt.container) if e.get("name") == "STORAGE_URI"]
    refs = {unbound("artifacts", a) for a in lt.artifacts}
    if not storage:
        lt.emit(
            "storage-uri",
            "kserve-container has no STORAGE_URI env: add STORAGE_URI with the value "
            '"{{inputs.artifacts.<name>}}" so KServe fetches the model into /mnt/models',
        )
    elif not isinstance(storage[0].get("value"), str) or storage[0]["value"] not in refs:
        lt.emit(
            "storage-uri",
            f"STORAGE_URI is {storage[0].get('value')!r}: set it to exactly one input artifact "
            'placeholder, "{{inputs.artifacts.<name>}}"',
        )


@check(
    "container",
    rule("models-dir", ERROR, "the model stays where KServe puts it (/mnt/models)"),
)
def models_dir(lt: Linter) -> None:
    mounts = [
        m
        for c in as_list(lt.predictor.get("containers"))
        if isinstance(c, dict)
        for m in as_list(c.get("volumeMounts"))
        if isinstance(m, dict)
    ]
    if any(str(m.get("mountPath", "")).rstrip("/") == MODELS_MOUNT for m in mounts):
        lt.emit(
            "models-dir",
            f"a volume is mounted at {MODELS_MOUNT}: remove it; KServe's storage "
            "initializer owns that path",
        )
    models = lt.value("MODELS_DIR")
    if models and models.rstrip("/") != MODELS_MOUNT:
        lt.emit(
            "models-dir",
            f"MODELS_DIR is {models}: KServe puts the model at {MODELS_MOUNT}; remove it",
        )


def has_memory_shm(predictor: Mapping[str, Any], container: Mapping[str, Any]) -> bool:
    """Whether the container mounts a memory-backed emptyDir at /dev/shm."""
    memory = {
        v.get("name")
        for v in as_list(predictor.get("volumes"))
        if isinstance(v, dict)
        and isinstance(v.get("name"), str)
        and get_path(v, "emptyDir", "medium") == "Memory"
    }
    return any(
        isinstance(m, dict)
        and str(m.get("mountPath", "")).rstrip("/") == "/dev/shm"
        and isinstance(m.get("name"), str)
        and m.get("name") in memory
        for m in as_list(container.get("volumeMounts"))
    )


# vLLM docs, "Deploying with Docker": "vLLM uses PyTorch, which uses shared memory to share data
# between processes under the hood, particularly for tensor parallel inference"; a pod's /dev/shm
# is 64 MiB unless an emptyDir with medium Memory is mounted there (Kubernetes docs, Volumes:
# emptyDir). Only tensor parallelism needs it, and it counts against the pod's memory.
VLLM_SHM = 'vLLM docs, "Deploying with Docker" (shared memory for tensor parallel inference)'


@check(
    "container",
    rule("dev-shm", WARNING, "tensor parallelism has a memory-backed /dev/shm", cite=VLLM_SHM),
)
def dev_shm(lt: Linter) -> None:
    shards = lt.env.get("NUM_SHARD")
    wants_shm = shards is not None and (
        not is_known(shards) or (whole_number(str(shards)) or 0) > 1
    )
    if wants_shm and not has_memory_shm(lt.predictor, lt.container):
        lt.emit(
            "dev-shm",
            "NUM_SHARD may exceed 1 but /dev/shm is not memory-backed: mount an emptyDir "
            "with medium: Memory at /dev/shm (tensor-parallel workers exchange tensors "
            "there; the pod default is 64 MiB); in the lab's template bind volumes and "
            "volumeMounts, as step 05 does when numGpus > 1",
        )
