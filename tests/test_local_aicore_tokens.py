"""The local AI Core's tokens (labkit.local.aicore.tokens): JWTs bound to the key and client,
and the token endpoint against SAP's client."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import aicore_emulator
import httpx
import pytest
from aicore_emulator import (
    Emulator,
    sdk_client,
)

from labkit.local.aicore import common as common_mod
from labkit.local.aicore import tokens as tokens_mod

# The fixtures of tests/aicore_emulator.py this file uses.
emulator = aicore_emulator.emulator


def test_tokens_expire_and_are_bound_to_the_key_and_client(tmp_path: Path) -> None:
    from pydantic import SecretStr

    tokens = tokens_mod.Tokens(
        b"k" * 32, "client", SecretStr("s3cret"), "http://x/oauth/token", 5000
    )
    assert tokens.credentials_ok("client", "s3cret")
    assert not tokens.credentials_ok("client", "wrong") and not tokens.credentials_ok(
        "other", "s3cret"
    )
    issued = tokens.issue(at=1000.0)
    assert issued["expires_in"] == 4999 and issued["token_type"] == "bearer"
    bearer = f"Bearer {issued['access_token']}"
    assert tokens.check(bearer, at=1001.0)["cid"] == "client"
    for header, at, why in (
        (bearer, 6000.0, "expired"),
        (None, 1001.0, "no Authorization"),
        ("Basic abc", 1001.0, "must be 'Bearer"),
        (bearer[:-3] + "AAA", 1001.0, "not issued by this AI Core"),
        ("Bearer a.b", 1001.0, "not a JWT"),
    ):
        with pytest.raises(common_mod.ApiError) as err:
            tokens.check(header, at=at)
        assert err.value.status == 401 and why in err.value.message
    other_key = tokens_mod.Tokens(b"x" * 32, "client", SecretStr("s3cret"), "i", 5000)
    with pytest.raises(common_mod.ApiError):
        other_key.check(bearer, at=1001.0)


def test_token_endpoint_takes_form_and_basic_credentials_and_refuses_others(
    emulator: Emulator,
) -> None:
    from ai_api_client_sdk.exception import (
        AIAPIAuthenticatorAuthorizationException,
        AIAPIAuthorizationException,
    )

    key, url = emulator.key, emulator.token_base + "/oauth/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": key["clientid"],
        "client_secret": key["clientsecret"],
    }
    ok = httpx.post(url, data=form, trust_env=False)
    assert ok.status_code == 200 and ok.json()["expires_in"] > 3600
    basic = base64.b64encode(f"{key['clientid']}:{key['clientsecret']}".encode()).decode()
    ok2 = httpx.post(
        url,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
        trust_env=False,
    )
    assert ok2.status_code == 200
    bad = httpx.post(url, data={**form, "client_secret": "wrong"}, trust_env=False)
    assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"
    assert key["clientsecret"] not in bad.text
    grant = httpx.post(url, data={**form, "grant_type": "password"}, trust_env=False)
    assert grant.status_code == 400
    with pytest.raises(AIAPIAuthenticatorAuthorizationException):
        sdk_client({**key, "clientsecret": "wrong"}).scenario.query()
    # A token of the right shape that has run out, and no token at all: 401 on the API.
    stale = emulator.core.tokens.issue(at=time.time() - 2 * emulator.settings.token_ttl)
    for headers in ({"Authorization": f"Bearer {stale['access_token']}"}, {}):
        resp = httpx.get(
            emulator.base + "/v2/lm/scenarios",
            headers={**headers, "AI-Resource-Group": "default"},
            trust_env=False,
        )
        assert resp.status_code == 401 and resp.json()["error"]["message"]
    client = emulator.client()
    client.rest_client.get_token = lambda: f"Bearer {stale['access_token']}"
    with pytest.raises(AIAPIAuthorizationException):
        client.repositories.query()  # an admin call: it goes through client.rest_client
    # The secret never lands in the server's files.
    for path in emulator.state.rglob("*"):
        if path.is_file():
            assert key["clientsecret"].encode() not in path.read_bytes(), path


def test_tokens_last_7199_s_by_default_as_sap_documents(tmp_path: Path) -> None:
    """SAP Help, "Get an Auth Token": ``"expires_in": 7199``; SAP's client re-fetches a token
    under 60 minutes from its end, so this is still above that."""
    from pydantic import SecretStr

    assert tokens_mod.DEFAULT_TOKEN_TTL_S == 7200
    tokens = tokens_mod.Tokens(b"k" * 32, "c", SecretStr("s"), "i", tokens_mod.DEFAULT_TOKEN_TTL_S)
    assert tokens.issue()["expires_in"] == 7199 > 3600


def test_the_token_endpoint_is_a_host_of_its_own(emulator: Emulator) -> None:
    """As on a tenant (XSUAA's host is not the AI API's): the API answers no /oauth/token, the
    token host no /v2; a key with the two URLs swapped fails, the right one works."""
    from ai_api_client_sdk.exception import AIAPIAuthenticatorException

    key = emulator.key
    assert key["url"] == emulator.token_base != key["serviceurls"]["AI_API_URL"] == emulator.base
    form = {
        "grant_type": "client_credentials",
        "client_id": key["clientid"],
        "client_secret": key["clientsecret"],
    }
    on_api = httpx.post(emulator.base + "/oauth/token", data=form, trust_env=False)
    assert on_api.status_code == 404
    token = httpx.post(emulator.token_base + "/oauth/token", data=form, trust_env=False).json()
    on_token_host = httpx.get(
        emulator.token_base + "/v2/lm/scenarios",
        headers={
            "Authorization": f"Bearer {token['access_token']}",
            "AI-Resource-Group": "default",
        },
        trust_env=False,
    )
    assert on_token_host.status_code == 404
    swapped = {
        **key,
        "url": key["serviceurls"]["AI_API_URL"],
        "serviceurls": {"AI_API_URL": key["url"]},
    }
    with pytest.raises(AIAPIAuthenticatorException):
        sdk_client(swapped).scenario.query()
    assert sdk_client(key).scenario.query().count == 0  # SAP's client, in-process
