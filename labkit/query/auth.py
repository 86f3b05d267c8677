"""Bearer tokens: a JWT kept until near its expiry, an opaque one asked for every time."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterator

import httpx

from labkit.query.common import QueryError

# Ask the token provider again this long before the token's own expiry.
REFRESH_MARGIN_S = 60.0
_BEARER = re.compile(r"^\s*bearer\s+", re.I)


# --- auth ----------------------------------------------------------------------------------------


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds) of a JWT, or None for an opaque token."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return float(payload["exp"])
    except (ValueError, KeyError, TypeError):
        return None


class TokenAuth(httpx.Auth):
    """Bearer auth that asks a token provider per request and keeps a JWT until near its expiry.

    The provider returns a token, with or without the ``Bearer `` prefix (SAP's SDK and
    ``labkit.aicore`` return it with). A JWT is reused until ``margin`` seconds before its
    ``exp``; an opaque token is asked for on every request (such providers cache it
    themselves). A 401 answer makes one retry with a freshly asked token.
    """

    def __init__(
        self,
        provider: Callable[[], str],
        *,
        margin: float = REFRESH_MARGIN_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._provider = provider
        self._margin = margin
        self._clock = clock
        self._token: str | None = None
        self._expires: float | None = None
        self._lock = threading.Lock()
        self.calls = 0  # how often the provider was asked

    def __repr__(self) -> str:
        return f"TokenAuth(calls={self.calls}, token='********')"

    def token(self, *, refresh: bool = False) -> str:
        """The current token (no prefix), asking the provider when it is missing or near expiry."""
        with self._lock:
            stale = (
                self._token is None
                or self._expires is None
                or self._clock() >= self._expires - self._margin
            )
            if refresh or stale:
                raw = self._provider()
                self.calls += 1
                token = _BEARER.sub("", str(raw)).strip()
                if not token:
                    raise QueryError(
                        "the token provider returned an empty token", "check the service key"
                    )
                self._token, self._expires = token, jwt_expiry(token)
            assert self._token is not None
            return self._token

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        """Set the bearer header; on a 401, ask for a new token once and resend."""
        request.headers["Authorization"] = f"Bearer {self.token()}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self.token(refresh=True)}"
            yield request
