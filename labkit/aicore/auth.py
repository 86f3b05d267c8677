"""Authentication: the AI Core service key (from AICORE_SERVICE_KEY, its file, the local AI Core
or the SDK's own sources), parsed with its secrets masked, and the OAuth client-credentials token
it buys (cached, refreshed early, fetched with timeouts and one-line errors)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from labkit.aicore.errors import AICoreError
from labkit.aicore.secrets import MASK, _short, register_secret
from labkit.config import Config, read_service_key_file
from labkit.errors import ConfigError, LabError, ServiceError

_HTTP_TIMEOUT = (10.0, 30.0)


# --- service key ---------------------------------------------------------------------------------


@dataclass(repr=False)
class ServiceKey:
    """What the lab needs from an AI Core service key; the client secret and x509 key stay masked."""

    client_id: str
    auth_url: str  # the full token URL, .../oauth/token
    api_url: str  # serviceurls.AI_API_URL, without /v2
    origin: str
    client_secret: SecretStr | None = None
    certificate: SecretStr | None = None
    key: SecretStr | None = None
    identityzone: str = ""

    @property
    def base_url(self) -> str:
        """The AI API base the SDK takes: ``AI_API_URL/v2``."""
        return _v2(self.api_url)

    @property
    def auth(self) -> str:
        """How the key authenticates: ``client secret`` or ``x509``."""
        return "client secret" if self.client_secret is not None else "x509"

    def public(self) -> dict[str, Any]:
        """The key's non-secret parts, safe to print."""
        return {
            "origin": self.origin,
            "client_id": self.client_id,
            "auth_url": self.auth_url,
            "api_url": self.api_url,
            "identityzone": self.identityzone,
            "auth": self.auth,
            "secret": MASK,
        }

    def __repr__(self) -> str:
        return f"ServiceKey({json.dumps(self.public())})"

    __str__ = __repr__


def _v2(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v2") else url + "/v2"


def _token_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/oauth/token") else url + "/oauth/token"


_KEY_HINT = "use a service key of an SAP AI Core instance, as the BTP cockpit shows it"
# The fields the lab reads; each is text in a BTP service key (never echoed: some are secrets).
_TEXT_FIELDS = ("clientid", "clientsecret", "url", "certurl", "certificate", "key", "identityzone")


def _json_object(data: str | bytes | Mapping[str, Any], origin: str) -> Mapping[str, Any]:
    """The key's JSON object (unwrapped from ``credentials``), or a one-line ConfigError."""
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"the service key in {origin} is not UTF-8 text", _KEY_HINT) from None
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except (
            ValueError,
            RecursionError,
        ):  # also integers past Python's digit limit, deep nesting
            raise ConfigError(
                f"the service key in {origin} is not JSON",
                "paste the service key exactly as the BTP cockpit shows it",
            ) from None
    if isinstance(data, Mapping) and isinstance(data.get("credentials"), Mapping):
        data = data["credentials"]  # `cf service-key` and some exports wrap it
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the service key in {origin} is not a JSON object",
            "use the AI Core service key JSON from the BTP cockpit",
        )
    return data


def _text(data: Mapping[str, Any], name: str, origin: str) -> str:
    """A text field of the key, stripped ("" when absent or null); never echoes the value."""
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(
            f"the service key in {origin} has {name} of type {type(value).__name__}, not text",
            _KEY_HINT,
        )
    return value.strip()


def _http_url(value: str, name: str, origin: str) -> str:
    """``value`` if it is an http(s) URL with a host, else a ConfigError naming the field."""
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port or IPv6 literal
        ok = False
    if not ok or any(c.isspace() for c in value):
        raise ConfigError(
            f"the service key in {origin} has a {name} that is not an http(s) URL with a host",
            _KEY_HINT,
        )
    return value


def parse_service_key(
    data: str | bytes | Mapping[str, Any], origin: str = "the service key"
) -> ServiceKey:
    """A service key as BTP gives it (JSON text or dict, also wrapped in ``credentials``)."""
    data = _json_object(data, origin)
    fields = {name: _text(data, name, origin) for name in _TEXT_FIELDS}
    urls = data.get("serviceurls")
    if urls is not None and not isinstance(urls, Mapping):
        raise ConfigError(
            f"the service key in {origin} has serviceurls of type {type(urls).__name__}, "
            "not an object",
            _KEY_HINT,
        )
    api_url = _text(urls, "AI_API_URL", origin) if urls is not None else ""
    x509 = bool(fields["certificate"] and fields["key"])
    missing = [] if fields["clientid"] else ["clientid"]
    if not (fields["url"] or (x509 and fields["certurl"])):
        missing.append("url")
    if not api_url:
        missing.append("serviceurls.AI_API_URL")
    if not fields["clientsecret"] and not x509:
        missing.append("clientsecret (or certificate and key)")
    if missing:
        raise ConfigError(f"the service key in {origin} lacks {', '.join(missing)}", _KEY_HINT)
    register_secret(fields["clientsecret"], fields["key"])
    auth_field = "certurl" if x509 and fields["certurl"] else "url"
    auth = _http_url(fields[auth_field], auth_field, origin)
    api_url = _http_url(api_url, "serviceurls.AI_API_URL", origin)
    secret = fields["clientsecret"]
    return ServiceKey(
        client_id=fields["clientid"],
        auth_url=_token_url(auth),
        api_url=api_url.rstrip("/").removesuffix("/v2"),
        origin=origin,
        client_secret=SecretStr(secret) if secret else None,
        certificate=SecretStr(fields["certificate"]) if x509 else None,
        key=SecretStr(fields["key"]) if x509 else None,
        identityzone=fields["identityzone"],
    )


def local_service_key_file(cfg: Config) -> Path:
    """Where the local AI Core writes its service key."""
    return cfg.local_dir / "aicore-service-key.json"


def load_service_key(cfg: Config) -> ServiceKey:
    """The service key: the variable, the file, the local AI Core's (local profile), or the SDK's variables."""
    if cfg.profile == "local":
        # Never a tenant's key from AICORE_SERVICE_KEY here: the local profile must not deploy
        # to a real tenant by accident. An explicit key file still wins.
        path = cfg.aicore_service_key_file or local_service_key_file(cfg)
        if not path.is_file():
            raise ServiceError(
                f"no service key of the local AI Core at {path}",
                "start the local services with `labkit local up`",
            )
        return parse_service_key(read_service_key_file(path), str(path))
    if cfg.aicore_service_key is not None:
        return parse_service_key(cfg.aicore_service_key.get_secret_value(), "AICORE_SERVICE_KEY")
    if cfg.aicore_service_key_file is not None:
        path = cfg.aicore_service_key_file
        return parse_service_key(read_service_key_file(path), str(path))
    return _sdk_env_key()


def _sdk_env_key() -> ServiceKey:
    """The SDK's own sources: AICORE_CLIENT_ID/... variables, ~/.aicore/config.json, VCAP_SERVICES."""
    from ai_core_sdk.credentials import fetch_credentials

    try:
        creds = fetch_credentials()
    except (ValueError, KeyError, FileNotFoundError, RecursionError):
        raise ConfigError(
            "no AI Core service key found",
            "set AICORE_SERVICE_KEY to the service key JSON (or LABKIT_AICORE_SERVICE_KEY_FILE to "
            "its file), or the SDK's AICORE_CLIENT_ID, AICORE_CLIENT_SECRET, AICORE_AUTH_URL and "
            "AICORE_BASE_URL",
        ) from None
    except (OSError, AttributeError, TypeError) as exc:
        # The SDK trips over its own sources: AICORE_CONFIG naming a folder, VCAP_SERVICES that
        # is JSON but not an object of service lists, ...
        raise ConfigError(
            f"the AI Core SDK cannot read its credentials ({type(exc).__name__})",
            "fix or unset AICORE_CONFIG, AICORE_HOME and VCAP_SERVICES, or set AICORE_SERVICE_KEY "
            "to the service key JSON",
        ) from None
    cert, key = creds.get("cert_str"), creds.get("key_str")
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if creds.get("cert_file_path") and creds.get("key_file_path"):
            cert = Path(creds["cert_file_path"]).read_text()
            key = Path(creds["key_file_path"]).read_text()
    data = {
        "clientid": creds.get("client_id"),
        "clientsecret": creds.get("client_secret"),
        "certificate": cert,
        "key": key,
        "url": creds.get("auth_url"),
        "serviceurls": {"AI_API_URL": creds.get("base_url")},
    }
    return parse_service_key(data, "the AICORE_* variables")


# --- token ---------------------------------------------------------------------------------------


class _Token:
    """OAuth client-credentials token for the SDK's ``token_creator``: cached, refreshed early,
    fetched with timeouts (the SDK's own authenticator posts without one, so a silent token
    endpoint would hang the lab) and with one-line errors."""

    def __init__(self, key: ServiceKey, *, local: bool) -> None:
        self._key = key
        self._local = local
        self._value: SecretStr | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<token for {self._key.client_id} from {self._key.auth_url}>"

    def __call__(self) -> str:
        with self._lock:
            if self._value is None or time.time() > self._expires:
                self._fetch()
            assert self._value is not None
            return "Bearer " + self._value.get_secret_value()

    def _fetch(self) -> None:
        import requests

        key = self._key
        data = {"grant_type": "client_credentials", "client_id": key.client_id}
        try:
            if key.client_secret is not None:
                data["client_secret"] = key.client_secret.get_secret_value()
                answer = requests.post(key.auth_url, data=data, timeout=_HTTP_TIMEOUT)
            else:
                answer = self._post_x509(data)
        except requests.RequestException as exc:
            raise _unreachable(
                key.auth_url, exc, local=self._local, what="token endpoint"
            ) from None
        if answer.status_code in (400, 401, 403):
            raise AICoreError(
                f"the token endpoint {key.auth_url} refused the client id and "
                f"{'secret' if key.client_secret is not None else 'certificate'} "
                f"of {key.origin} ({answer.status_code})",
                "start the local services again (`labkit local up` writes a fresh key)"
                if self._local
                else "use a current service key of the AI Core instance (BTP cockpit > instance > "
                "Service Keys)",
            )
        if answer.status_code // 100 != 2:
            raise AICoreError(
                f"the token endpoint {key.auth_url} answered {answer.status_code}: "
                f"{_short(answer.text)}",
                "try again later; if it persists, check the service key's url",
            )
        try:
            payload = answer.json()
            token = str(payload["access_token"])
            lifetime = float(payload.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise AICoreError(
                f"the token endpoint {key.auth_url} answered without an access token",
                "check that the service key's url is the XSUAA of the AI Core instance",
            ) from None
        register_secret(token)
        self._value = SecretStr(token)
        # Refresh well before expiry: a poll loop must never send a token about to lapse.
        self._expires = time.time() + max(30.0, min(lifetime * 0.8, lifetime - 300.0))

    def _post_x509(self, data: dict[str, str]) -> Any:
        import requests

        assert self._key.certificate is not None and self._key.key is not None
        with tempfile.TemporaryDirectory(prefix="labkit-x509-") as folder:
            paths = []
            for name, value in (("cert.pem", self._key.certificate), ("key.pem", self._key.key)):
                path = Path(folder) / name
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(value.get_secret_value().replace("\\n", "\n"))
                paths.append(str(path))
            return requests.post(
                self._key.auth_url, data=data, cert=(paths[0], paths[1]), timeout=_HTTP_TIMEOUT
            )


def _unreachable(url: str, exc: BaseException, *, local: bool, what: str) -> LabError:
    reason = type(exc).__name__
    if local:
        return ServiceError(
            f"the local AI Core's {what} {url} is unreachable ({reason})",
            "start the local services with `labkit local up`",
        )
    return AICoreError(
        f"AI Core's {what} {url} is unreachable ({reason})",
        "check the network and the service key's url / serviceurls.AI_API_URL",
    )
