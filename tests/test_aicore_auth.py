"""Step 06, labkit.aicore.auth: service keys from every source, the token endpoint, secrets in reprs."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs

import pytest
from aicore_fakes import SECRET, btp_key, one_line

from labkit import aicore
from labkit.aicore import AICoreError, parse_service_key
from labkit.config import load_config
from labkit.errors import ConfigError, ServiceError

# --- service keys --------------------------------------------------------------------------------


def test_service_key_from_btp_json_gives_the_sdk_urls_and_masks_the_secret():
    key = parse_service_key(json.dumps(btp_key()), "AICORE_SERVICE_KEY")
    assert key.base_url == "https://api.ai.prod.eu-central-1.aws.ml.hana.ondemand.com/v2"
    assert key.auth_url == "https://tenant.authentication.sap.hana.ondemand.com/oauth/token"
    assert key.client_secret.get_secret_value() == SECRET
    for shown in (repr(key), str(key), json.dumps(key.public())):
        assert SECRET not in shown
    assert key.public()["client_id"] == "sb-1234!b5678|aicore!b540"


def test_service_key_wrapped_in_credentials_and_urls_with_suffixes():
    key = parse_service_key({"credentials": btp_key("https://x.example/oauth/token/")}, "f.json")
    assert key.auth_url == "https://x.example/oauth/token"
    data = btp_key()
    data["serviceurls"]["AI_API_URL"] += "/v2/"
    assert parse_service_key(data).base_url.endswith(".hana.ondemand.com/v2")


def test_x509_service_key_uses_the_cert_url():
    data = btp_key()
    del data["clientsecret"]
    data.update(certificate="-----BEGIN CERTIFICATE-----\\nAAA", key="-----BEGIN KEY-----\\nBBB",
                certurl="https://tenant.authentication.cert.example")  # fmt: skip
    key = parse_service_key(data)
    assert key.auth == "x509"
    assert key.auth_url == "https://tenant.authentication.cert.example/oauth/token"
    assert "BBB" not in repr(key)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({k: v for k, v in btp_key().items() if k != "serviceurls"}), "AI_API_URL"),
        (json.dumps({k: v for k, v in btp_key().items() if k != "clientsecret"}), "clientsecret"),
    ],
)
def test_broken_service_keys_say_what_is_wrong_in_one_line(text, says):
    with pytest.raises(ConfigError) as exc:
        parse_service_key(text, "key.json")
    assert says in one_line(exc.value) and "key.json" in str(exc.value)
    assert SECRET not in str(exc.value)


def test_local_profile_reads_the_local_ai_core_key_and_never_a_tenant_key(tmp_path, monkeypatch):
    monkeypatch.setenv("AICORE_SERVICE_KEY", json.dumps(btp_key()))
    cfg = load_config(profile="local", local_dir=tmp_path)
    with pytest.raises(ServiceError) as exc:
        aicore.load_service_key(cfg)
    assert "labkit local up" in one_line(exc.value)
    local = {"clientid": "labkit", "clientsecret": "local-secret", "url": "http://127.0.0.1:8100",
             "serviceurls": {"AI_API_URL": "http://127.0.0.1:8100"}, "identityzone": "local"}  # fmt: skip
    (tmp_path / "aicore-service-key.json").write_text(json.dumps(local))
    key = aicore.load_service_key(cfg)
    assert key.base_url == "http://127.0.0.1:8100/v2"
    assert key.auth_url == "http://127.0.0.1:8100/oauth/token"


def test_tenant_profile_reads_the_variable_then_the_file_then_the_sdk_variables(
    tmp_path, monkeypatch
):
    for name in ("AICORE_SERVICE_KEY", "LABKIT_AICORE_SERVICE_KEY", "VCAP_SERVICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AICORE_HOME", str(tmp_path / "home"))  # no ~/.aicore/config.json
    monkeypatch.setenv("AICORE_SERVICE_KEY", json.dumps(btp_key("https://from-env")))
    assert aicore.load_service_key(load_config(profile="aicore")).auth_url.startswith(
        "https://from-env"
    )
    monkeypatch.delenv("AICORE_SERVICE_KEY")
    path = tmp_path / "key.json"
    path.write_text(json.dumps(btp_key("https://from-file")))
    cfg = load_config(profile="aicore", aicore_service_key_file=path)
    assert aicore.load_service_key(cfg).auth_url.startswith("https://from-file")
    with pytest.raises(ConfigError):
        aicore.load_service_key(load_config(profile="aicore"))
    monkeypatch.setenv("AICORE_CLIENT_ID", "sdk-client")
    monkeypatch.setenv("AICORE_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("AICORE_AUTH_URL", "https://sdk-auth")
    monkeypatch.setenv("AICORE_BASE_URL", "https://sdk-api/v2")
    key = aicore.load_service_key(load_config(profile="aicore"))
    assert (key.client_id, key.auth_url, key.base_url) == (
        "sdk-client",
        "https://sdk-auth/oauth/token",
        "https://sdk-api/v2",
    )


# --- token endpoint, secrets in reprs and logs ---------------------------------------------------


class _TokenHandler(BaseHTTPRequestHandler):
    issued: ClassVar[list[str]] = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        form = parse_qs(self.rfile.read(length).decode())
        ok = form.get("client_id") == ["good"] and form.get("client_secret") == [SECRET]
        body = (
            {"access_token": f"tok-{len(self.issued)}-abcdefgh", "expires_in": 43199}
            if ok
            else {"error": "unauthorized", "error_description": "Bad credentials"}
        )
        if ok:
            self.issued.append(body["access_token"])
        data = json.dumps(body).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def token_server():
    _TokenHandler.issued = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _key(url: str, client_id: str = "good") -> aicore.ServiceKey:
    data = btp_key(url)
    data["clientid"] = client_id
    data["serviceurls"]["AI_API_URL"] = url
    return parse_service_key(data, "test key")


def test_token_is_fetched_once_and_masked_in_headers(token_server):
    ai = aicore.AICore(_key(token_server), "default")
    headers = ai.headers()
    assert headers["Authorization"] == "Bearer tok-0-abcdefgh"
    assert headers["AI-Resource-Group"] == "default"
    assert ai.token() == "Bearer tok-0-abcdefgh"  # cached
    assert len(_TokenHandler.issued) == 1
    for shown in (repr(headers), str(headers), headers._repr_html_(), repr(ai), ai._repr_html_()):
        assert "tok-0" not in shown and SECRET not in shown


def test_bad_credentials_give_one_line_without_the_secret(token_server):
    ai = aicore.AICore(_key(token_server, client_id="wrong"), "default")
    with pytest.raises(AICoreError) as exc:
        ai.token()
    text = one_line(exc.value)
    assert "refused the client id and secret" in text and "401" in text
    assert SECRET not in text


def test_unreachable_token_endpoint_says_start_the_local_services():
    key = _key("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(ServiceError) as exc:
        aicore.AICore(key, "default", local=True).token()
    assert "labkit local up" in one_line(exc.value)
    with pytest.raises(AICoreError) as exc:
        aicore.AICore(key, "default").token()
    assert "unreachable" in one_line(exc.value)
