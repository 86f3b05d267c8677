"""The local AI Core's OAuth token endpoint and the bearer tokens every /v2 call must carry.

``POST /oauth/token``: client credentials (form fields or HTTP Basic) from the service key give
an HS256-signed JWT that expires after ``--token-ttl`` seconds; wrong credentials get 401.
The signing key lives with the state, so tokens stay valid across a restart.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from labkit.local.aicore.common import ZONE_ID, ApiError
from labkit.local.aicore.deps import core_of
from labkit.util.fs import atomic_write_bytes

TOKEN_PATH = "/oauth/token"


def read_service_key(path: Path) -> dict[str, Any]:
    """The service key JSON the server checks client credentials against."""
    return json.loads(path.read_text(encoding="utf-8"))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Tokens:
    """OAuth client credentials -> HS256 JWTs, checked without any table (so a restart keeps
    them valid, as tokens of the real UAA outlive a restart of the AI API)."""

    def __init__(self, key: bytes, client_id: str, client_secret: SecretStr, issuer: str, ttl: int):
        self._key = key
        self.client_id = client_id
        self._secret = client_secret
        self.issuer = issuer
        self.ttl = ttl

    def credentials_ok(self, client_id: str, client_secret: str) -> bool:
        """Constant-time check of a client id and secret."""
        ok_id = hmac.compare_digest(client_id.encode(), self.client_id.encode())
        ok_secret = hmac.compare_digest(
            client_secret.encode(), self._secret.get_secret_value().encode()
        )
        return ok_id and ok_secret

    def issue(self, at: float | None = None) -> dict[str, Any]:
        """A token response as XSUAA gives it (``expires_in`` one second short of the lifetime)."""
        issued = int(at if at is not None else time.time())
        jti = secrets.token_hex(16)
        claims = {
            "jti": jti,
            "iss": self.issuer,
            "sub": self.client_id,
            "cid": self.client_id,
            "client_id": self.client_id,
            "azp": self.client_id,
            "grant_type": "client_credentials",
            "zid": ZONE_ID,
            "aud": [self.client_id],
            "scope": ["uaa.resource"],
            "iat": issued,
            "exp": issued + self.ttl,
        }
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return {
            "access_token": f"{header}.{payload}.{_b64url(signature)}",
            "token_type": "bearer",
            "expires_in": max(self.ttl - 1, 0),
            "scope": "uaa.resource",
            "jti": jti,
        }

    def check(self, authorization: str | None, at: float | None = None) -> dict[str, Any]:
        """The claims of a valid ``Bearer`` token; ApiError 401 otherwise."""
        if not authorization:
            raise ApiError(401, "no Authorization header: send 'Bearer <token>' from " + TOKEN_PATH)
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "the Authorization header must be 'Bearer <token>'")
        parts = token.strip().split(".")
        if len(parts) != 3:
            raise ApiError(401, "the bearer token is not a JWT")
        expected = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            signature = _b64url_decode(parts[2])
            claims = json.loads(_b64url_decode(parts[1]))
        except (ValueError, TypeError):
            raise ApiError(401, "the bearer token is malformed") from None
        if not hmac.compare_digest(signature, expected) or not isinstance(claims, dict):
            raise ApiError(401, "the bearer token was not issued by this AI Core")
        if claims.get("cid") != self.client_id:
            raise ApiError(401, "the bearer token belongs to another client")
        if float(claims.get("exp", 0)) <= (at if at is not None else time.time()):
            raise ApiError(401, "the bearer token has expired: get a new one from " + TOKEN_PATH)
        return claims


def token_key(state_dir: Path) -> bytes:
    """The tokens' signing key (``token.key``, 0600), made on first use and kept."""
    path = state_dir / "token.key"
    with contextlib.suppress(OSError):
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    key = secrets.token_bytes(32)
    atomic_write_bytes(path, key, mode=0o600)
    return key


# --- HTTP -------------------------------------------------------------------------------------


def client_credentials(request: Request, form: Mapping[str, str]) -> tuple[str, str] | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(auth[6:].strip()).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            return None
        # RFC 6749 2.3.1: both parts are form-urlencoded before they are joined.
        return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)
    if "client_id" in form and "client_secret" in form:
        return form["client_id"], form["client_secret"]
    return None


router = APIRouter()


@router.post(TOKEN_PATH)
async def token(request: Request) -> JSONResponse:
    core = core_of(request)
    raw = (await request.body()).decode("utf-8", "replace")
    form = {k: v[-1] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}
    for key, value in request.query_params.items():
        form.setdefault(key, value)
    if form.get("grant_type") != "client_credentials":
        return JSONResponse(
            {
                "error": "unsupported_grant_type",
                "error_description": "only grant_type=client_credentials",
            },
            status_code=400,
        )
    creds = client_credentials(request, form)
    if creds is None or not core.tokens.credentials_ok(*creds):
        return JSONResponse(
            {"error": "unauthorized", "error_description": "Bad credentials"},
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="UAA/client"'},
        )
    return JSONResponse(
        core.tokens.issue(), headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
    )
