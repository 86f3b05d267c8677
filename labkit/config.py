"""One typed configuration for every step: parameters, then LABKIT_* variables, then .env."""

from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from labkit.errors import ConfigError
from labkit.util import html, names

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# moto takes any key pair; fixed ones keep the local object store secret stable between runs.
LOCAL_S3_CREDENTIALS = ("labkit-local", "labkit-local-secret")
# The local AI Core's pace: a tenant's durations (a 3-minute stop, minutes of early 404s, ...)
# times this factor. The default compresses them 50-fold with the same transitions; the preset
# "tenant" (1.0) is the real pace (docs/tenant.md).
DEFAULT_AICORE_TIME_SCALE = 0.02
AICORE_TIME_SCALE_PRESETS = {"tenant": 1.0}


def parse_time_scale(value: Any) -> float:
    """A time scale from a number or a preset name ("tenant": 1.0); ValueError otherwise."""
    if isinstance(value, str):
        text = value.strip().lower()
        value = AICORE_TIME_SCALE_PRESETS.get(text, text)
    scale = float(value)
    if not 0 < scale <= 100:
        raise ValueError(f"the time scale must be above 0 and at most 100, not {scale}")
    return scale


def read_service_key_file(path: Path) -> str:
    """The text of a service key file; a one-line ConfigError when it cannot be read as UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"cannot read the service key file {path} ({why})",
            "set LABKIT_AICORE_SERVICE_KEY_FILE to the JSON file BTP gave you",
        ) from None


def user_cache_dir() -> Path:
    """This user's cache folder on this machine: XDG_CACHE_HOME, else ~/.cache."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def find_root(start: Path | None = None) -> Path:
    """The lab's root: LABKIT_ROOT, else the nearest folder above ``start`` holding notebooks/."""
    if env := os.environ.get("LABKIT_ROOT"):
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return here


class Config(BaseSettings):
    """Where the lab runs and what it works on; secrets are SecretStr, masked in every repr."""

    model_config = SettingsConfigDict(
        env_prefix="LABKIT_",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
        # `LABKIT_BUCKET=` (as .env.example lists the names) means unset, not an empty name.
        env_ignore_empty=True,
    )

    profile: Literal["local", "aicore"] = Field(
        "local", description="local services or a real tenant"
    )
    root: Path = Field(default_factory=find_root, description="the lab's checkout")
    lab_dir: Path | None = Field(None, description="lab state and run folders")
    local_dir: Path | None = Field(None, description="the local services' programs, data and logs")
    local_model_dir: Path | None = Field(None, description="the default model built by local up")
    model_id: str = Field(DEFAULT_MODEL_ID, description="Hub repo id of the model to serve")
    revision: str = Field("main", description="branch, tag or commit to pin")
    resource_plan: str | None = Field(None, description="AI Core resource plan to size for")
    bucket: str = Field("labkit-models", description="S3 bucket for model tarballs")
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint (unset: the local S3 in the local profile, else AWS)"
    )
    registry: str = Field("localhost:5000", description="image registry host[:port]")
    image_repository: str = Field("labkit", description="repository path in the registry")
    registry_port: int = Field(
        5000, ge=1, le=65535, description="port of the local registry (docker-registry)"
    )
    registry_username: str | None = Field(None, description="registry user for push and the secret")
    registry_password: SecretStr | None = Field(
        None, description="registry password or token (never printed)"
    )
    docker_registry_secret: str = Field(
        "labkit-registry", description="AI Core docker registry secret for pulling the image"
    )
    image_builder: Literal["auto", "buildah", "podman", "docker"] = Field(
        "auto", description="image builder (auto: buildah, then podman, then docker)"
    )
    image_variant: Literal["cpu", "gpu"] | None = Field(
        None, description="image to build (default: cpu locally, gpu on a tenant)"
    )
    image_base: str | None = Field(
        None, description="GPU base image (default: the Dockerfile's pinned vllm-openai tag)"
    )
    debian_mirror: str = Field(
        "http://deb.debian.org/debian", description="Debian mirror for the CPU image's base"
    )
    image_wheels_dir: Path | None = Field(
        None, description="local wheels for the image build (default: pip's find-links folder)"
    )
    image_cache_dir: Path | None = Field(
        None,
        description="the image step's cache, shared by every checkout on this machine: the "
        "mmdebstrap base and the builder's storage (default: ~/.cache/labkit/image)",
    )
    resource_group: str = Field("default", description="AI Core resource group")
    aicore_service_key_file: Path | None = Field(None, description="service key JSON file")
    aicore_service_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "aicore_service_key", "LABKIT_AICORE_SERVICE_KEY", "AICORE_SERVICE_KEY"
        ),
        description="service key JSON as BTP gives it",
    )
    aicore_port: int = Field(8100, ge=1, le=65535, description="port of the local AI Core emulator")
    aicore_token_ttl: int = Field(
        7200,
        ge=60,
        le=366 * 86400,
        description="lifetime in s of the local AI Core's OAuth tokens (expires_in 7199, as "
        "SAP's 'Get an Auth Token' page shows)",
    )
    aicore_token_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="port of the local AI Core's token endpoint, a host of its own as XSUAA's "
        "is on a tenant (default: the API's port + 1)",
    )
    aicore_service_plan: str | None = Field(
        None,
        description="the tenant's AI Core service plan (free, standard, extended), to warn about "
        "a resource plan it lacks",
    )
    aicore_runner: Literal["auto", "buildah", "host"] = Field(
        "auto",
        description="how the local AI Core runs predictors (auto: the image with buildah if installed)",
    )
    aicore_start_timeout: float = Field(
        600.0,
        gt=0,
        allow_inf_nan=False,
        description="floor in s of the local AI Core's start-up deadline (storage initializer "
        "and predictor start; a tenant's is Knative's 600 s), so real downloads and vLLM starts "
        "have time at any time scale",
    )
    aicore_time_scale: float = Field(
        DEFAULT_AICORE_TIME_SCALE,
        description="the local AI Core's pace: a tenant's durations (stop, early 404s, back-off) "
        f"times this; {DEFAULT_AICORE_TIME_SCALE} compressed, 'tenant' (1.0) the real pace",
    )
    executable: str = Field(
        default_factory=names.default_lab_id,
        description="AI Core executable id of the lab's template (its metadata.name), unique in "
        "the whole tenant (default: labkit-vllm-<OS user>)",
    )
    scenario: str = Field(
        default_factory=names.default_lab_id,
        description="AI Core scenario id of the lab's template (default: labkit-vllm-<OS user>)",
    )
    template_repo_dir: Path | None = Field(
        None,
        description="git checkout that AI Core's application syncs (default: a local repo)",
    )
    template_repo_path: str = Field("labkit", description="folder of that repo the app syncs")
    template_repo_url: str | None = Field(
        None,
        description="git URL AI Core syncs (default: the local repo's path, or its origin remote)",
    )
    git_username: str | None = Field(
        None, description="user for AI Core's read access to that repo"
    )
    git_password: SecretStr | None = Field(
        None, description="token for AI Core's read access to that repo (never printed)"
    )
    s3_port: int = Field(9000, ge=1, le=65535, description="port of the local S3 (moto)")
    aws_region: str | None = Field(
        None, description="S3 region (default: AWS_REGION or the AWS profile's, else us-east-1)"
    )
    # The LABKIT_ names only: in the local profile a real AWS key in AWS_* must never travel to
    # moto or into the local AI Core's secrets; on a tenant, unset means boto3's own chain
    # (AWS_* variables, ~/.aws profiles, instance roles).
    aws_access_key_id: SecretStr | None = Field(
        None, description="S3 access key id (default: boto3's chain; local: a dummy key)"
    )
    aws_secret_access_key: SecretStr | None = Field(
        None, description="S3 secret access key (default: boto3's chain; local: a dummy key)"
    )
    object_store_secret: str = Field(
        "default", description="AI Core object store secret that points at the bucket"
    )
    s3_path_prefix: str = Field(
        "", description="pathPrefix of that secret: ai:// URLs are relative to it"
    )
    hf_endpoint: str | None = Field(
        None, description="Hub URL (default: the local mirror, or huggingface.co)"
    )
    hub_port: int = Field(8090, ge=1, le=65535, description="port of the local Hub mirror")
    hub_cache_dir: Path | None = Field(None, description="Hugging Face cache that downloads go to")
    hf_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("hf_token", "LABKIT_HF_TOKEN", "HF_TOKEN"),
        description="Hugging Face token for gated models",
    )

    @field_validator("executable")
    @classmethod
    def _executable(cls, value: str) -> str:
        if not names.is_executable_id(value):
            raise ValueError(
                f"{value!r} is not an executable id: use 4-64 lowercase letters and digits, "
                "hyphens the only separator, e.g. labkit-vllm-jane"
            )
        return value

    @field_validator("scenario")
    @classmethod
    def _scenario(cls, value: str) -> str:
        if not names.SCENARIO_ID.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a scenario id: use 4-63 letters, digits, '-', '_' or '.', "
                "starting and ending alphanumeric"
            )
        return value

    @field_validator("aicore_time_scale", mode="before")
    @classmethod
    def _time_scale(cls, value: Any) -> float:
        return parse_time_scale(value)

    def model_post_init(self, _context: Any) -> None:
        if self.lab_dir is None:
            self.lab_dir = self.root / ".lab"
        if self.local_dir is None:
            self.local_dir = self.lab_dir / "local"
        if self.local_model_dir is None:
            self.local_model_dir = self.local_dir / "models" / DEFAULT_MODEL_ID.split("/")[-1]
        if self.hub_cache_dir is None:
            self.hub_cache_dir = self.lab_dir / "hub-cache"
        if self.template_repo_dir is None:
            self.template_repo_dir = self.local_dir / "templates-git"
        if self.image_cache_dir is None:
            self.image_cache_dir = user_cache_dir() / "labkit" / "image"

    @property
    def state_file(self) -> Path:
        """The file that carries each step's result to the next."""
        return self.lab_dir / "state.json"

    @property
    def runs_dir(self) -> Path:
        """Where `labkit run` writes executed notebooks and reports."""
        return self.lab_dir / "runs"

    @property
    def hub_endpoint(self) -> str:
        """The Hub the steps talk to: set explicitly, else the local mirror, else HF_ENDPOINT or huggingface.co."""
        if self.hf_endpoint:
            return self.hf_endpoint.rstrip("/")
        if self.profile == "local":
            return f"http://127.0.0.1:{self.hub_port}"
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")

    @property
    def s3_endpoint(self) -> str | None:
        """The S3 endpoint URL: set explicitly, else the local moto, else None (AWS, by region)."""
        if self.s3_endpoint_url:
            return self.s3_endpoint_url.rstrip("/")
        if self.profile == "local":
            return f"http://127.0.0.1:{self.s3_port}"
        return None

    def s3_credentials(self) -> tuple[str, str] | None:
        """The S3 key pair (never printed): LABKIT_AWS_*, else a dummy pair locally, else None (boto3's chain)."""
        if self.aws_access_key_id is not None and self.aws_secret_access_key is not None:
            return (
                self.aws_access_key_id.get_secret_value(),
                self.aws_secret_access_key.get_secret_value(),
            )
        if self.profile == "local":
            return LOCAL_S3_CREDENTIALS
        return None

    def hub_token(self) -> str | None:
        """The Hugging Face token for API calls (never printed), or None."""
        return self.hf_token.get_secret_value() if self.hf_token else None

    @property
    def model_source(self) -> str:
        """What the steps read the model from: the local build, or the Hub repo id on a tenant."""
        if self.profile == "local" and self.model_id == DEFAULT_MODEL_ID:
            return str(self.local_model_dir)
        return self.model_id

    def service_key(self) -> dict[str, Any] | None:
        """The AI Core service key (from the variable or the file), parsed; None if neither is set."""
        if self.aicore_service_key is not None:
            text, origin = self.aicore_service_key.get_secret_value(), "AICORE_SERVICE_KEY"
        elif self.aicore_service_key_file is not None:
            text = read_service_key_file(self.aicore_service_key_file)
            origin = str(self.aicore_service_key_file)
        else:
            return None
        try:
            key = json.loads(text)
        except (ValueError, RecursionError):  # also huge integers and deep nesting
            raise ConfigError(
                f"the service key in {origin} is not JSON",
                "paste the service key exactly as the BTP cockpit shows it",
            ) from None
        if not isinstance(key, dict) or not {"clientid", "clientsecret", "url"} <= key.keys():
            raise ConfigError(
                f"the service key in {origin} lacks clientid, clientsecret or url",
                "use the AI Core service key JSON from the BTP cockpit",
            )
        return key

    def public(self) -> dict[str, Any]:
        """Every setting as plain data, secrets shown only as set/unset."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********" if value.get_secret_value() else ""
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out

    def effective(self) -> dict[str, str]:
        """What an unset setting with a profile-dependent default comes to here."""
        return {
            "s3_endpoint_url": self.s3_endpoint or "AWS S3 (by region)",
            "hf_endpoint": self.hub_endpoint,
            "resource_plan": "the smallest plan that fits",
        }

    def _repr_html_(self) -> str:
        effective = self.effective()
        rows = [
            [
                f"<code>{escape(k)}</code>",
                escape(str(v))
                if v is not None
                else f"<i>unset: {escape(effective[k])}</i>"
                if k in effective
                else "",
                escape(type(self).model_fields[k].description or ""),
            ]
            for k, v in self.public().items()
        ]
        return html.table(["setting", "value", "meaning"], rows)


def load_config(**params: Any) -> Config:
    """Build the configuration: ``params`` win over LABKIT_* variables, which win over .env.

    A parameter that is None or empty ("", a notebook parameter's literal default) is unset: the
    variable, the .env line or the default applies, as for an empty ``LABKIT_*`` variable."""
    params = {k: v for k, v in params.items() if v is not None and v != ""}
    root = Path(params["root"]) if "root" in params else find_root()
    try:
        return Config(_env_file=root / ".env", **params)
    except UnicodeDecodeError:
        raise ConfigError(
            f"{root / '.env'} is not UTF-8 text", "save it as UTF-8, or remove the broken lines"
        ) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "configuration"
        raise ConfigError(
            f"invalid setting {where}: {err['msg']}",
            f"fix LABKIT_{where.upper()} (environment or .env) or the notebook parameter",
        ) from None
