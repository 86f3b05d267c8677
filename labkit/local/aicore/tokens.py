"""The local AI Core's OAuth token endpoint and the bearer tokens every /v2 call must carry.

``POST /oauth/token``: client credentials (form fields or HTTP Basic) from the service key give
an HS256-signed JWT that expires after ``--token-ttl`` seconds (7200 by default: ``expires_in``
7199, as SAP's "Get an Auth Token" page shows); wrong credentials get 401. The signing key
lives with the state, so tokens stay valid across a restart.

The endpoint is a program of its own on its own port (``python -m labkit.local.aicore.tokens``,
started by :mod:`labkit.local.aicore.launch`), as a tenant's token endpoint is XSUAA's host, not
the AI API's: the service key's ``url`` names it and ``serviceurls.AI_API_URL`` the API, and a
key with the two swapped fails here as it does there. The API app checks the tokens with the
same key (``token.key`` in the state folder) and serves no ``/oauth/token`` itself.
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

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from labkit.local.aicore.common import ZONE_ID, ApiError
from labkit.local.aicore.deps import core_of
from labkit.util.fs import atomic_write_bytes

TOKEN_PATH = "/oauth/token"
# SAP Help, "Get an Auth Token": the answer carries "expires_in": 7199 (XSUAA's 12-hour default
# is not what an AI Core service key's client gets). SAP's client re-fetches under 60 minutes left.
DEFAULT_TOKEN_TTL_S = 7200


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


# The API app includes this router: it has no routes, since the token endpoint is the token
# app's alone (a tenant's AI API host answers no /oauth/token).
router = APIRouter()
token_router = APIRouter()


def _tokens_of(request: Request) -> Tokens:
    tokens = getattr(request.app.state, "tokens", None)
    return tokens if tokens is not None else core_of(request).tokens


@token_router.post(TOKEN_PATH)
async def token(request: Request) -> JSONResponse:
    tokens = _tokens_of(request)
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
    if creds is None or not tokens.credentials_ok(*creds):
        return JSONResponse(
            {"error": "unauthorized", "error_description": "Bad credentials"},
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="UAA/client"'},
        )
    return JSONResponse(tokens.issue(), headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _healthz(request: Request) -> dict[str, Any]:
    return {"status": "READY", "service": TOKEN_SERVICE}


TOKEN_SERVICE = "labkit-local-aicore-token"


def tokens_from(state_dir: Path, service_key_file: Path, issuer: str, ttl: int) -> Tokens:
    """The tokens of the service key in ``service_key_file``, signed with the state's key."""
    key = read_service_key(service_key_file)
    return Tokens(
        token_key(state_dir),
        str(key["clientid"]),
        SecretStr(str(key["clientsecret"])),
        issuer,
        ttl,
    )


def create_token_app(tokens: Tokens) -> FastAPI:
    """The token endpoint's own ASGI app (``POST /oauth/token``, ``/healthz``)."""
    app = FastAPI(
        title="labkit local AI Core token endpoint",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.tokens = tokens
    app.include_router(token_router)
    app.add_api_route("/healthz", _healthz, methods=["GET"])
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the token endpoint until SIGTERM (``python -m labkit.local.aicore.tokens``)."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m labkit.local.aicore.tokens", description=main.__doc__
    )
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--service-key", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-ttl", type=int, default=DEFAULT_TOKEN_TTL_S)
    args = parser.parse_args(argv)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    issuer = f"http://{args.host}:{args.port}{TOKEN_PATH}"
    app = create_token_app(tokens_from(args.state_dir, args.service_key, issuer, args.token_ttl))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
