"""What a ServingTemplate must respect, by who defines it: AI Core's API and naming rules, KServe's
and Knative's reserved names and ports, and the runtime's settings (runtime/entrypoint.py).

Constants only: the loader, the renderer and the lint rules all read them from here.
"""

from __future__ import annotations

import re
from pathlib import Path

from labkit.util import names

TEMPLATE_API_VERSION = "ai.sap.com/v1alpha1"
TEMPLATE_KIND = "ServingTemplate"
KSERVE_API_VERSION = "serving.kserve.io/v1beta1"
PREDICTOR_CONTAINER = "kserve-container"
MODELS_MOUNT = "/mnt/models"  # KServe's storage initializer puts the artifact here
SHIPPED_TEMPLATE = Path("templates") / "vllm-serving.yaml"
SCHEMA_FILE = "kserve_predictor.schema.json"
# The image value the lab binds when step 04 recorded no image (e.g. no builder on the machine):
# a valid reference whose tag says what is missing, so every check but the image's still runs.
PLACEHOLDER_IMAGE_TAG = "no-image-from-step-04"
PLACEHOLDER_ARTIFACT_URL = "ai://default/no-artifact-from-step-03"

SCENARIO_ID_LABEL = "scenarios.ai.sap.com/id"
VERSION_LABEL = "ai.sap.com/version"
EXECUTABLE_ID_LABEL = "executables.ai.sap.com/id"
SCENARIO_NAME_ANNOTATION = "scenarios.ai.sap.com/name"
EXECUTABLE_NAME_ANNOTATION = "executables.ai.sap.com/name"
RESOURCE_PLAN_LABEL = "ai.sap.com/resourcePlan"
INSTANCE_TYPE_LABEL = "ai.sap.com/instanceType"
REQUIRED_ANNOTATIONS = (SCENARIO_NAME_ANNOTATION, EXECUTABLE_NAME_ANNOTATION)
REQUIRED_LABELS = (SCENARIO_ID_LABEL, VERSION_LABEL)

# Knative Serving reserves these env names (pkg/apis/serving/k8s_validation.go reservedEnvVars);
# vLLM reads VLLM_PORT as an internal port, and a Kubernetes service named "vllm" injects a URI.
RESERVED_ENV = ("PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION", "VLLM_PORT")
# Knative's queue-proxy and metrics ports (reservedPorts in the same file).
RESERVED_PORTS = (8008, 8012, 8013, 8022, 9090, 9091)
# SAP Help, KServe Metadata Annotations: the metrics AI Core accepts.
AUTOSCALING_METRICS = ("concurrency", "rps")
# vLLM batches dozens of requests; a lower concurrency target starts a replica (minutes of
# model loading) for load that one server takes in its stride.
MIN_LLM_CONCURRENCY_TARGET = 8

# runtime/entrypoint.py's settings and how it checks them (tests compare with its ENV_FLAGS).
RUNTIME_ENV_KINDS = {
    "NUM_SHARD": "int",
    "DTYPE": "dtype",
    "TRUST_REMOTE_CODE": "bool",
    "MAX_MODEL_LEN": "size",
    "GPU_MEMORY_UTILIZATION": "fraction",
    "KV_CACHE_MEMORY_BYTES": "size",
    "KV_CACHE_DTYPE": "word",
    "MAX_NUM_BATCHED_TOKENS": "size",
    "MAX_NUM_SEQS": "int",
    "BLOCK_SIZE": "int",
    "QUANTIZATION": "word",
    "ENFORCE_EAGER": "bool",
}
RUNTIME_ENV_FLAGS = {
    "NUM_SHARD": "--tensor-parallel-size",
    "DTYPE": "--dtype",
    "TRUST_REMOTE_CODE": "--trust-remote-code",
    "MAX_MODEL_LEN": "--max-model-len",
    "GPU_MEMORY_UTILIZATION": "--gpu-memory-utilization",
    "KV_CACHE_MEMORY_BYTES": "--kv-cache-memory-bytes",
    "KV_CACHE_DTYPE": "--kv-cache-dtype",
    "MAX_NUM_BATCHED_TOKENS": "--max-num-batched-tokens",
    "MAX_NUM_SEQS": "--max-num-seqs",
    "BLOCK_SIZE": "--block-size",
    "QUANTIZATION": "--quantization",
    "ENFORCE_EAGER": "--enforce-eager",
}
DTYPES = ("auto", "bfloat16", "float", "float16", "float32", "half")
FLAG_ALIASES = {
    "-tp": "--tensor-parallel-size",
    "-q": "--quantization",
    "--device-memory-utilization": "--gpu-memory-utilization",
}
# vllm/config/model.py _FLOAT16_NOT_SUPPORTED_MODELS: vLLM refuses float16 for these.
FP16_UNSUPPORTED_MODEL_TYPES = ("gemma2", "gemma3", "gemma3_text", "glm4")

# AI Core's names (SAP Help: "Serving Templates", "API Schema Spec ai.sap.com/v1alpha1").
EXECUTABLE_ID = names.EXECUTABLE_ID
SCENARIO_ID = names.SCENARIO_ID
PARAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,256}")
ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_]{1,256}")
SECRET_NAME = names.DOCKER_REGISTRY_SECRET_NAME
# The runtime's values (runtime/entrypoint.py).
REPO_ID = re.compile(r"(?:[\w.-]+/)?[\w.-]+")
INT = re.compile(r"\d+")
SIZE = re.compile(r"\d+(?:\.\d+)?[kmgt]|\d+[KMGT]")
SIZE_MULT = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
SIZE_MULT.update({"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40})
BOOLS = ("true", "1", "yes", "false", "0", "no")
WORD = re.compile(r"[\w.-]+")
