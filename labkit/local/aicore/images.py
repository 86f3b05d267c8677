"""Image references and the registry check the local AI Core's runner makes before it runs a
predictor: the manifest is looked up with the credentials of the template's
``imagePullSecrets`` as a kubelet pull would. A failure is ``ErrImagePull`` with a message in
the shape containerd gives the kubelet (unverified against a tenant: docs/tenant.md, item 4);
the runner keeps the deployment PENDING and retries.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labkit.image.tags import is_loopback_name
from labkit.local.aicore.runspec import RunFailed
from labkit.local.daemon import LOOPBACK

_REGISTRY_TIMEOUT_S = 15.0
_MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


@dataclass(frozen=True)
class ImageName:
    """An image reference split the way registries read it."""

    registry: str
    path: str
    reference: str  # tag or digest

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.registry)

    def __str__(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.registry}/{self.path}{sep}{self.reference}"


def parse_image(text: str) -> ImageName:
    """Split ``[registry/]path[:tag|@digest]`` (Docker's defaults: docker.io, library/, latest)."""
    text = text.strip()
    if not text or any(c.isspace() for c in text):
        raise RunFailed("InvalidImageName", f"image {text!r} is not an image reference")
    name, _, digest = text.partition("@")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = "docker.io", name if "/" in name else f"library/{name}"
    tag = "latest"
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
    if not path or not re.fullmatch(r"[a-z0-9]+(?:[._/-]+[a-z0-9]+)*", path):
        raise RunFailed("InvalidImageName", f"image {text!r} has an invalid repository path")
    return ImageName(registry, path, digest or tag)


def is_loopback_host(registry: str) -> bool:
    """Whether ``host[:port]`` names this machine (plain HTTP, as labkit.image treats it)."""
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    return is_loopback_name(host.strip("[]"))


def _registry_login(image: ImageName, auths: Mapping[str, Any]) -> tuple[str, str] | None:
    """The user and password for the image's registry from merged ``.dockerconfigjson`` auths."""
    keys = [image.registry, f"https://{image.registry}", f"http://{image.registry}"]
    if image.registry in ("docker.io", "index.docker.io"):
        keys += ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
    for key in keys:
        entry = auths.get(key) or auths.get(key.rstrip("/"))
        if not isinstance(entry, Mapping):
            continue
        if entry.get("username") and entry.get("password") is not None:
            return str(entry["username"]), str(entry["password"])
        if entry.get("auth"):
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                user, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
                return user, password
    return None


def check_image(image: ImageName, auths: Mapping[str, Any]) -> str:
    """Look the manifest up in the registry as a kubelet pull would; returns its digest."""
    host = (
        "registry-1.docker.io"
        if image.registry in ("docker.io", "index.docker.io")
        else image.registry
    )
    url = f"{'http' if image.loopback else 'https'}://{host}/v2/{image.path}/manifests/{image.reference}"
    login = _registry_login(image, auths)
    headers = {"Accept": _MANIFEST_TYPES}
    if login:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(login).encode()).decode()
    opener = LOOPBACK if image.loopback else urllib.request.build_opener()
    for attempt in range(2):
        request = urllib.request.Request(url, headers=headers, method="HEAD")
        try:
            with opener.open(request, timeout=_REGISTRY_TIMEOUT_S) as resp:
                return resp.headers.get("Docker-Content-Digest", "")
        except urllib.error.HTTPError as exc:
            challenge = exc.headers.get("WWW-Authenticate", "")
            if exc.code == 401 and attempt == 0 and challenge.lower().startswith("bearer "):
                headers["Authorization"] = (
                    f"Bearer {_bearer_token(opener, challenge, image, login)}"
                )
                continue
            if exc.code == 404:
                raise _pull_error(image, "NotFound", f"{image}: not found") from None
            if exc.code in (401, 403):
                raise _pull_error(
                    image,
                    "Unknown",
                    "pull access denied, repository does not exist or may require "
                    f"authorization: server message: {exc.code} {exc.reason}",
                ) from None
            raise _pull_error(
                image, "Unknown", f"unexpected status from HEAD request to {url}: {exc.code}"
            ) from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _pull_error(
                image, "Unknown", f'failed to do request: Head "{url}": {reason}'
            ) from None
    raise _pull_error(image, "Unknown", "failed to authorize: the registry refused the token")


def _pull_error(image: ImageName, code: str, why: str) -> RunFailed:
    """A failed pull, worded as containerd tells the kubelet (the events' wording)."""
    return RunFailed(
        "ErrImagePull",
        f'rpc error: code = {code} desc = failed to pull and unpack image "{image}": '
        f'failed to resolve reference "{image}": {why}',
    )


def _bearer_token(
    opener: urllib.request.OpenerDirector,
    challenge: str,
    image: ImageName,
    login: tuple[str, str] | None,
) -> str:
    fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    query = urllib.parse.urlencode(
        {"service": fields.get("service", ""), "scope": f"repository:{image.path}:pull"}
    )
    headers = {}
    if login:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(login).encode()).decode()
    try:
        request = urllib.request.Request(f"{fields.get('realm', '')}?{query}", headers=headers)
        with opener.open(request, timeout=_REGISTRY_TIMEOUT_S) as resp:
            data = json.load(resp)
    except (OSError, ValueError) as exc:
        raise _pull_error(image, "Unknown", f"failed to fetch oauth token: {exc}") from None
    return str(data.get("token") or data.get("access_token") or "")
