"""Step 06, labkit.aicore.diagnosis: the likely cause of a failed deployment from its logs."""

from __future__ import annotations

import pytest

from labkit.aicore import detail_lines, diagnose

# --- the diagnosis of a failed deployment --------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "cause"),
    [
        ("aicore: deployment failed: image localhost:5000/labkit/nope:v1 cannot be pulled: "
         "registry localhost:5000 has no such repository or tag (manifest unknown)", "image"),
        ("Back-off pulling image: ErrImagePull: pull access denied", "image"),
        ("the artifact ai://missing/models/x.tar names the object store secret 'missing', which "
         "does not exist in the deployment's resource group", "secret"),
        ("cannot fetch s3://b/k: the object store refused the secret's credentials "
         "(InvalidAccessKeyId)", "secret"),
        ("Container kserve-container was OOMKilled (exit code 137)", "oom"),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "oom"),
        ("ValueError: The model's max seq len (8192) is larger than the maximum number of tokens "
         "that can be stored in KV cache (4096)", "oom"),
        ("the artifact ai://default/models/nope.tar points at s3://labkit-models/models/nope.tar, "
         "where the object store holds nothing", "model"),
        ("entrypoint: error: no model in /mnt/models: expected models--<org>--<name>/", "model"),
        ("storage-initializer: NoSuchKey: The specified key does not exist.", "model"),
    ],
)  # fmt: skip
def test_diagnosis_names_the_cause_from_a_log_line(line, cause):
    found = diagnose(["INFO starting", line, "INFO shutting down"])
    assert [c.name for c in found][:1] == [cause]
    assert found[0].evidence and found[0].advice


def test_diagnosis_puts_the_cause_nearest_the_failure_first_and_ignores_healthy_logs():
    assert diagnose(["storage-initializer: done in 1.2 s", "INFO: Uvicorn running"]) == []
    found = diagnose(["failed to pull image x", "later: OOMKilled"])
    assert [c.name for c in found] == ["oom", "image"]


def test_a_warning_ranks_after_the_error_that_killed_the_deployment():
    found = diagnose(
        [
            "aicore: warning: imagePullSecret 'labkit-registry' does not exist",
            "entrypoint: error: MAX_MODEL_LEN='x': expected a positive whole number",
            "aicore: deployment failed: the predictor exited with code 2 before it was ready",
        ]
    )
    assert [c.name for c in found] == ["server", "secret"]
    assert "exited with code 2" in found[0].evidence


# --- a tenant's wording (Kubernetes, KServe), in the logs or in statusDetails -------------------


@pytest.mark.parametrize(
    ("line", "cause", "named"),
    [
        ('Failed to pull image "docker.io/me/vllm:v9": rpc error: code = NotFound desc = failed '
         'to pull and unpack image "docker.io/me/vllm:v9": not found', "image", "docker.io/me/vllm:v9"),
        ('waiting: ImagePullBackOff: Back-off pulling image "ghcr.io/me/vllm:v1"', "image",
         "ghcr.io/me/vllm:v1"),
        ("Unable to retrieve some image pull secrets (my-registry); attempting to pull the image "
         "may not succeed.", "secret", "my-registry"),
        ('Error: secret "my-registry" not found', "secret", "my-registry"),
        ("0/4 nodes are available: 4 Insufficient nvidia.com/gpu.", "scheduling", "nvidia.com/gpu"),
        ("back-off 5m0s restarting failed container=kserve-container pod=x", "crashloop", ""),
        ("RuntimeError: Failed to fetch model. No model found in s3://b/models/x.", "model", ""),
    ],
)  # fmt: skip
def test_diagnosis_knows_a_tenants_wording_and_names_the_culprit(line, cause, named):
    found = diagnose([line])
    assert found and found[0].name == cause
    assert named in found[0].summary


def test_status_details_become_lines_whatever_their_case_and_nesting():
    snake = {"replicas": [{"name": "kserve-container", "restart_count": 3,
                           "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "m"}},
                           "last_state": {"terminated": {"reason": "OOMKilled", "exit_code": 137}}}]}  # fmt: skip
    lines = detail_lines(snake)
    assert "kserve-container restarted 3 times" in lines
    assert "waiting: CrashLoopBackOff: m" in lines
    assert "terminated: OOMKilled: exit code 137" in lines
    assert detail_lines({"reason": "ErrImagePull", "message": "x"}) == ["ErrImagePull: x"]
    assert detail_lines({}) == [] and detail_lines("plain text") == ["plain text"]
    assert {c.name for c in diagnose(lines)} >= {"crashloop", "oom"}
