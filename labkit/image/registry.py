"""The registry: its address and login from the configuration, the few calls of its HTTP API v2
the lab needs (ping, tags), and AI Core's docker registry secret with the password masked."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from labkit.config import Config
from labkit.image.tags import (
    IMAGE_NAME,
    ImageError,
    ImageRef,
    check_registry,
    check_repository,
    is_loopback,
    next_tag,
)
from labkit.util import names
from labkit.util.html import esc

MASK = "********"
_HTTP_TIMEOUT_S = 30.0


def registry_address(cfg: Config) -> str:
    """The registry to use: LABKIT_REGISTRY; in the local profile, if unset, the local registry."""
    if cfg.profile == "local" and "registry" not in cfg.model_fields_set:
        return f"localhost:{cfg.registry_port}"
    return check_registry(cfg.registry)


def credentials(cfg: Config) -> tuple[str, SecretStr] | None:
    """The registry login from the configuration, or None (anonymous)."""
    if cfg.registry_username and cfg.registry_password is not None:
        return cfg.registry_username, cfg.registry_password
    return None


class RegistryClient:
    """The few calls of the registry HTTP API v2 the lab needs, with Basic or Bearer auth."""

    def __init__(
        self,
        registry: str,
        login: tuple[str, SecretStr] | None = None,
        *,
        timeout: float = _HTTP_TIMEOUT_S,
    ) -> None:
        self.registry = check_registry(registry)
        self.login = login
        self.timeout = timeout
        host = "registry-1.docker.io" if registry in ("docker.io", "index.docker.io") else registry
        self.base = f"{'http' if is_loopback(registry) else 'https'}://{host}"
        handlers: list[urllib.request.BaseHandler] = []
        if is_loopback(registry):
            handlers.append(urllib.request.ProxyHandler({}))  # never through a proxy
        self._opener = urllib.request.build_opener(*handlers)
        self._token: str | None = None

    def ping(self) -> None:
        """GET /v2/ with the login: ImageError when unreachable or the login is refused."""
        self._get("/v2/", scope="")

    def tags(self, path: str) -> list[str]:
        """Every tag of ``<registry>/<path>``; [] when the repository does not exist yet."""
        url: str | None = f"/v2/{path}/tags/list?n=1000"
        found: list[str] = []
        while url:
            try:
                body, headers = self._get(url, scope=f"repository:{path}:pull")
            except _NotFound:
                return found
            found += json.loads(body or b"{}").get("tags") or []
            url = _next_link(headers.get("Link", ""))
        return found

    def _get(self, url: str, *, scope: str) -> tuple[bytes, Mapping[str, str]]:
        # Links from the registry are followed on the registry only: the login goes nowhere else.
        parts = urllib.parse.urlsplit(url)
        full = self.base + parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in range(2):
            request = urllib.request.Request(full, headers=self._auth_header())
            try:
                with self._opener.open(request, timeout=self.timeout) as resp:
                    return resp.read(), resp.headers
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    raise _NotFound from None
                if exc.code == 401 and attempt == 0:
                    self._answer_challenge(exc.headers.get("WWW-Authenticate", ""), scope)
                    continue
                if exc.code in (401, 403):
                    raise self._refused(exc.code) from None
                raise ImageError(
                    f"registry {self.registry} answered {exc.code} to {url.split('?')[0]}",
                    "check the registry address and that it speaks the Docker registry API v2",
                ) from None
            except (OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                hint = (
                    "run `labkit local up`"
                    if is_loopback(self.registry)
                    else "check the address and the network"
                )
                raise ImageError(
                    f"cannot reach registry {self.registry} ({reason})", hint
                ) from None
        raise self._refused(401)

    def _auth_header(self) -> dict[str, str]:
        if self._token:
            return {"Authorization": f"Bearer {self._token}"}
        if self.login:
            return {"Authorization": f"Basic {_basic(*self.login)}"}
        return {}

    def _answer_challenge(self, challenge: str, scope: str) -> None:
        kind, _, params = challenge.partition(" ")
        if kind.lower() == "basic":
            if not self.login:
                raise self._refused(401)
            return  # the Basic header is sent already; the retry tells whether it is right
        if kind.lower() != "bearer":
            raise self._refused(401)
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        query = {"service": fields.get("service", "")}
        if scope:
            query["scope"] = scope
        url = f"{fields.get('realm', '')}?{urllib.parse.urlencode(query)}"
        headers = {"Authorization": f"Basic {_basic(*self.login)}"} if self.login else {}
        try:
            with self._opener.open(
                urllib.request.Request(url, headers=headers), timeout=self.timeout
            ) as resp:
                data = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise self._refused(exc.code) from None
        except (OSError, ValueError) as exc:
            raise ImageError(
                f"cannot get a token for {self.registry} from {fields.get('realm')} ({exc})",
                "check the network",
            ) from None
        self._token = data.get("token") or data.get("access_token")

    def _refused(self, code: int) -> ImageError:
        if self.login:
            return ImageError(
                f"registry {self.registry} refused the login of {self.login[0]!r} ({code})",
                "check LABKIT_REGISTRY_USERNAME and LABKIT_REGISTRY_PASSWORD (a token works as password)",
            )
        return ImageError(
            f"registry {self.registry} needs a login ({code})",
            "set LABKIT_REGISTRY_USERNAME and LABKIT_REGISTRY_PASSWORD",
        )


class _NotFound(Exception):
    pass


def _next_link(link: str) -> str | None:
    match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
    return match.group(1) if match else None


def _basic(username: str, password: SecretStr) -> str:
    return base64.b64encode(f"{username}:{password.get_secret_value()}".encode()).decode()


def list_tags(
    registry: str,
    repository: str,
    *,
    login: tuple[str, SecretStr] | None = None,
    timeout: float = _HTTP_TIMEOUT_S,
) -> list[str]:
    """Every tag of ``<registry>/<repository>/aicore-vllm`` (none when it does not exist yet)."""
    check_repository(repository)
    return RegistryClient(registry, login, timeout=timeout).tags(f"{repository}/{IMAGE_NAME}")


def find_next_tag(
    registry: str,
    repository: str,
    day: date | None = None,
    *,
    login: tuple[str, SecretStr] | None = None,
) -> ImageRef:
    """The next free ``v<ddmmyy>-<NN>`` of ``day`` (default today) in the registry."""
    day = day or date.today()
    tags = list_tags(registry, repository, login=login)
    return ImageRef(registry, repository, next_tag(tags, day))


@dataclass(repr=False)
class DockerRegistrySecret:
    """AI Core's docker registry secret (POST /v2/admin/dockerRegistrySecrets); password masked."""

    name: str
    registry: str
    username: str
    password: SecretStr

    def dockerconfigjson(self, *, reveal: bool = False) -> str:
        """The ``.dockerconfigjson`` text; with the real password only when ``reveal``."""
        if reveal:
            password, auth = self.password.get_secret_value(), _basic(self.username, self.password)
        else:
            password, auth = MASK, MASK
        entry = {"username": self.username, "password": password, "auth": auth}
        return json.dumps({"auths": {self.registry: entry}}, separators=(",", ":"))

    def body(self) -> dict[str, Any]:
        """The request body with the real password: send it, never print it."""
        return {
            "name": self.name,
            "data": {".dockerconfigjson": self.dockerconfigjson(reveal=True)},
        }

    def public(self) -> dict[str, Any]:
        """The same body with the password masked: safe to print, log and store."""
        return {"name": self.name, "data": {".dockerconfigjson": self.dockerconfigjson()}}

    to_dict = public

    def __repr__(self) -> str:
        return (
            f"DockerRegistrySecret(name={self.name!r}, registry={self.registry!r}, "
            f"username={self.username!r}, password='{MASK}')"
        )

    __str__ = __repr__

    def _repr_html_(self) -> str:
        return (
            f"<b>docker registry secret</b> <code>{esc(self.name)}</code>: "
            f"<code>{esc(self.username)}</code> @ <code>{esc(self.registry)}</code>, "
            "password masked"
        )


def registry_secret(
    registry: str,
    username: str,
    password: SecretStr | str,
    *,
    name: str = "labkit-registry",
    verify: bool = True,
) -> DockerRegistrySecret:
    """Log in (checked against the registry's /v2/ unless ``verify`` is off) and return the secret."""
    check_registry(registry)
    if (
        not names.DOCKER_REGISTRY_SECRET_NAME.fullmatch(name)
        or len(name) > names.DOCKER_REGISTRY_SECRET_MAX
    ):
        raise ImageError(
            f"{name!r} is not a valid AI Core secret name",
            "use up to 63 lowercase letters, digits, '.', '-' (and single '_'), "
            "starting and ending with a letter or digit",
        )
    if not username:
        raise ImageError("no registry user given", "set LABKIT_REGISTRY_USERNAME or --username")
    password = password if isinstance(password, SecretStr) else SecretStr(password)
    if not password.get_secret_value():
        raise ImageError(
            "no registry password given",
            "set LABKIT_REGISTRY_PASSWORD or pipe it to --password-stdin",
        )
    if verify:
        RegistryClient(registry, (username, password)).ping()
    return DockerRegistrySecret(name, registry, username, password)


@contextlib.contextmanager
def _auth_dir(registry: str, login: tuple[str, SecretStr] | None) -> Iterator[Path | None]:
    """A private folder with ``config.json`` (= auth.json) holding the login; removed afterwards."""
    if login is None:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="labkit-auth-"))
    try:
        secret = DockerRegistrySecret("push", registry, *login)
        path = folder / "config.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret.dockerconfigjson(reveal=True))
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
