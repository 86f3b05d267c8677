"""labkit.image: tag rules, next tag from a registry, and the registry secret (labkit.image.tags,
labkit.image.registry)."""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from labkit_cli import labkit
from pydantic import SecretStr

from labkit import image
from labkit.config import load_config
from labkit.image import ImageError, ImageRef
from labkit.util import net

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "runtime" / "Dockerfile"
PASSWORD = "s3cr3t-never-printed-0123"
DAY = date(2026, 11, 26)


def test_tag_format_and_parse_round_trip() -> None:
    assert image.format_tag(DAY, 1) == "v261126-01"
    assert image.format_tag(date(2027, 1, 5), 42) == "v050127-42"
    assert image.parse_tag("v261126-07") == (DAY, 7)
    assert image.parse_tag(image.format_tag(date(2030, 2, 28), 99)) == (date(2030, 2, 28), 99)


@pytest.mark.parametrize(
    "tag",
    [
        "latest",
        "v261126-1",  # NN is two digits
        "v261126-001",
        "V261126-01",
        "v2611261-01",
        "v261126_01",
        "v261126-00",  # numbers start at 01
        "v321126-01",  # day 32
        "v300226-01",  # 30 February
        "v261326-01",  # month 13
        "261126-01",
    ],
)
def test_bad_tags_are_refused(tag: str) -> None:
    with pytest.raises(ImageError):
        image.parse_tag(tag)
    assert not image.is_lab_tag(tag)


def test_format_tag_refuses_numbers_out_of_range() -> None:
    for seq in (0, 100):
        with pytest.raises(ImageError, match="out of range"):
            image.format_tag(DAY, seq)


def test_image_reference_parse_and_parts() -> None:
    ref = ImageRef.parse("localhost:5000/labkit/aicore-vllm:v261126-03")
    assert (ref.registry, ref.repository, ref.tag) == ("localhost:5000", "labkit", "v261126-03")
    assert ref.path == "labkit/aicore-vllm" and ref.day == DAY and ref.seq == 3
    assert str(ref) == "localhost:5000/labkit/aicore-vllm:v261126-03"
    deep = ImageRef.parse("registry.example.com/team/llm-serving/aicore-vllm:v010127-01")
    assert deep.repository == "team/llm-serving" and deep.name.endswith("/aicore-vllm")
    assert ImageRef.parse("[::1]:5000/x/aicore-vllm:v010127-01").registry == "[::1]:5000"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("localhost:5000/labkit/aicore-vllm", "no tag"),
        ("localhost:5000/labkit/vllm:v261126-01", "aicore-vllm"),
        ("localhost:5000/aicore-vllm:v261126-01", "aicore-vllm"),  # no repository path
        ("localhost:5000/Labkit/aicore-vllm:v261126-01", "not a valid path"),
        ("localhost:5000/lab kit/aicore-vllm:v261126-01", "not a valid path"),
        ("localhost:5000/lab--/aicore-vllm:v261126-01", "not a valid path"),
        ("myorg/labkit/aicore-vllm:v261126-01", "Docker Hub namespace"),
        ("localhost:99999/labkit/aicore-vllm:v261126-01", "not a registry"),
        ("localhost:5000/labkit/aicore-vllm:latest", "v<ddmmyy>-<NN>"),
    ],
)
def test_bad_references_say_which_part_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ImageError, match=why.replace("<", ".").replace(">", ".")):
        ImageRef.parse(text)


def test_registry_rules() -> None:
    for good in (
        "localhost",
        "localhost:5000",
        "docker.io",
        "a-b.example.com:443",
        "10.0.0.1:5000",
    ):
        assert image.check_registry(good) == good
    bad_ones = ("https://docker.io", "docker.io/x", "-bad.example.com", "reg.example.com:0",
                "localhost:", "reg.example.com:123456", "", "reg.example.com:\u0665\u0660\u0660\u0660")  # fmt: skip
    for bad in bad_ones:
        with pytest.raises(ImageError):
            image.check_registry(bad)
    assert image.is_loopback("localhost:5000") and image.is_loopback("127.0.0.1:5000")
    assert image.is_loopback("[::1]:5000") and not image.is_loopback("registry.example.com")


def test_next_tag_takes_the_day_highest_plus_one() -> None:
    assert image.next_tag([], DAY) == "v261126-01"
    tags = ["latest", "v261126-01", "v261126-03", "v251126-09", "v261125-12", "v261126-xx"]
    assert image.next_tag(tags, DAY) == "v261126-04"  # gaps are not refilled
    assert image.next_tag(tags, date(2026, 11, 25)) == "v251126-10"
    with pytest.raises(ImageError, match="all 99 tags"):
        image.next_tag([image.format_tag(DAY, 99)], DAY)


def test_local_profile_uses_the_local_registry_unless_one_is_set(monkeypatch) -> None:
    monkeypatch.delenv("LABKIT_REGISTRY", raising=False)
    assert image.registry_address(load_config(registry_port=5123)) == "localhost:5123"
    cfg = load_config(registry="registry.example.com", registry_port=5123)
    assert image.registry_address(cfg) == "registry.example.com"


class _FakeRegistry(BaseHTTPRequestHandler):
    """A registry API v2 with a token service (Docker Hub's scheme) and paginated tag lists."""

    tags: ClassVar[dict[str, list[str]]] = {}
    user = "robot"
    anonymous_pull = False
    requests: ClassVar[list[tuple[str, str]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        self.requests.append((self.path, auth))
        host = self.headers["Host"]
        if self.path.startswith("/token"):
            expected = "Basic " + image.registry._basic(self.user, SecretStr(PASSWORD))
            if auth == expected or (self.anonymous_pull and not auth):
                return self._send(200, {"token": "tok"})
            return self._send(401, {"errors": [{"code": "UNAUTHORIZED"}]})
        if auth != "Bearer tok":
            challenge = f'Bearer realm="http://{host}/token",service="fake"'
            return self._send(401, {"errors": []}, {"WWW-Authenticate": challenge})
        if self.path == "/v2/":
            return self._send(200, {})
        path, _, query = self.path.partition("?")
        name = path.removeprefix("/v2/").removesuffix("/tags/list")
        if name not in self.tags:
            return self._send(404, {"errors": [{"code": "NAME_UNKNOWN"}]})
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        every = self.tags[name]
        start = every.index(params["last"]) + 1 if "last" in params else 0
        page = every[start : start + 2]  # two per page: the client must follow Link
        headers = {}
        if start + 2 < len(every):
            headers["Link"] = f'</v2/{name}/tags/list?n=2&last={page[-1]}>; rel="next"'
        return self._send(200, {"name": name, "tags": page}, headers)


@pytest.fixture
def fake_registry() -> Iterator[str]:
    _FakeRegistry.tags = {
        "team/aicore-vllm": ["latest", "v261126-01", "v261126-02", "v251126-05", "v261126-05"]
    }
    _FakeRegistry.requests = []
    _FakeRegistry.anonymous_pull = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_next_tag_from_a_registry_with_token_auth_and_pages(fake_registry: str) -> None:
    login = ("robot", SecretStr(PASSWORD))
    tags = image.list_tags(fake_registry, "team", login=login)
    assert tags == ["latest", "v261126-01", "v261126-02", "v251126-05", "v261126-05"]
    ref = image.find_next_tag(fake_registry, "team", DAY, login=login)
    assert str(ref) == f"{fake_registry}/team/aicore-vllm:v261126-06"
    scopes = [p for p, _ in _FakeRegistry.requests if p.startswith("/token")]
    assert scopes and "repository%3Ateam%2Faicore-vllm%3Apull" in scopes[0]
    # A repository the registry does not know yet starts at 01.
    assert str(image.find_next_tag(fake_registry, "other", DAY, login=login)).endswith("-01")


def test_registry_errors_name_the_fix_and_never_the_password(fake_registry: str) -> None:
    with pytest.raises(ImageError, match="needs a login") as anon:
        image.list_tags(fake_registry, "team")
    assert "LABKIT_REGISTRY_USERNAME" in str(anon.value)
    with pytest.raises(ImageError, match="refused the login of 'robot'") as wrong:
        image.list_tags(fake_registry, "team", login=("robot", SecretStr("wrong-" + PASSWORD)))
    assert PASSWORD not in str(wrong.value)
    _FakeRegistry.anonymous_pull = True
    assert "v261126-05" in image.list_tags(fake_registry, "team")
    with pytest.raises(ImageError, match="cannot reach registry"):
        image.list_tags(f"127.0.0.1:{net.free_port()}", "team")


def test_cli_next_tag_prints_the_tag_and_json(fake_registry: str) -> None:
    env = {"LABKIT_REGISTRY_USERNAME": "robot", "LABKIT_REGISTRY_PASSWORD": PASSWORD}
    out = labkit(
        "image", "next-tag", "--registry", fake_registry, "--repository", "team",
        "--date", "2026-11-26", env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "v261126-06"
    out = labkit(
        "image", "next-tag", "--registry", fake_registry, "--repository", "team",
        "--date", "2026-11-25", "--json", env=env,
    )  # fmt: skip
    data = json.loads(out.stdout)
    assert data["tag"] == "v251126-06" and data["taken"] == ["v251126-05"]
    assert data["reference"] == f"{fake_registry}/team/aicore-vllm:v251126-06"
    bad = labkit("image", "next-tag", "--registry", "x", "--repository", "team")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_registry_secret_is_the_dockerconfigjson_body_with_the_password_masked() -> None:
    secret = image.registry_secret(
        "registry.example.com", "robot", PASSWORD, name="my-registry", verify=False
    )
    body = secret.body()
    assert body["name"] == "my-registry" and set(body["data"]) == {".dockerconfigjson"}
    auths = json.loads(body["data"][".dockerconfigjson"])["auths"]
    entry = auths["registry.example.com"]
    assert entry["username"] == "robot" and entry["password"] == PASSWORD
    import base64

    assert base64.b64decode(entry["auth"]).decode() == f"robot:{PASSWORD}"
    for shown in (repr(secret), str(secret), json.dumps(secret.public()), secret._repr_html_()):
        assert PASSWORD not in shown
        assert base64.b64encode(f"robot:{PASSWORD}".encode()).decode() not in shown
    masked = json.loads(secret.public()["data"][".dockerconfigjson"])["auths"]
    assert masked["registry.example.com"]["password"] == image.MASK
    with pytest.raises(ImageError, match="secret name"):
        image.registry_secret("r.example.com", "u", PASSWORD, name="Bad_Name-", verify=False)
    with pytest.raises(ImageError, match="no registry password"):
        image.registry_secret("r.example.com", "u", "", verify=False)


def test_registry_secret_checks_the_login(fake_registry: str) -> None:
    secret = image.registry_secret(fake_registry, "robot", PASSWORD)
    assert secret.registry == fake_registry
    with pytest.raises(ImageError, match="refused") as err:
        image.registry_secret(fake_registry, "robot", PASSWORD + "x")
    assert PASSWORD not in str(err.value)


def test_cli_login_secret_masks_and_writes_the_real_body_only_to_a_private_file(
    tmp_path: Path, fake_registry: str
) -> None:
    out_file = tmp_path / "secret.json"
    out = labkit(
        "image", "login-secret", "--registry", fake_registry, "--username", "robot",
        "--password-stdin", "--secret-out", str(out_file), "--json", input=PASSWORD + "\n",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout + out.stderr
    data = json.loads(out.stdout)
    assert data["verified"] and data["secret"]["name"] == "labkit-registry"
    assert image.MASK in data["secret"]["data"][".dockerconfigjson"]
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    assert PASSWORD in json.loads(out_file.read_text())["data"][".dockerconfigjson"]
    refused = labkit(
        "image", "login-secret", "--registry", fake_registry, "--username", "robot",
        "--password-stdin", input="wrong\n",
    )  # fmt: skip
    assert refused.returncode == 2 and "refused the login" in refused.stderr


def _fake_mmdebstrap(bin_dir: Path, body: str) -> None:
    """A program named mmdebstrap on PATH: ``body`` is its shell script (the tarball is $N-1)."""
    exe = bin_dir / "mmdebstrap"
    exe.write_text(f'#!/bin/sh\nfor a; do out="$prev"; prev="$a"; done\n{body}\n')
    exe.chmod(0o755)


def test_the_base_tarball_is_complete_or_absent(tmp_path: Path, monkeypatch) -> None:
    """mmdebstrap's output goes to a partial name, renamed only once it exits with 0: a failed
    or cut run leaves nothing that the next build would take for the base."""
    from labkit.image import base

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    cfg = load_config(image_cache_dir=tmp_path / "cache")
    folder = tmp_path / "cache" / "base"

    _fake_mmdebstrap(bin_dir, 'printf half > "$out"; echo "E: cannot reach the mirror"; exit 1')
    with pytest.raises(ImageError) as exc:
        base._base_tarball(cfg)
    assert "mmdebstrap" in str(exc.value) and "cannot reach the mirror" in str(exc.value)
    assert list(folder.iterdir()) == []

    _fake_mmdebstrap(bin_dir, 'printf whole > "$out"')
    tarball = base._base_tarball(cfg)
    assert tarball.parent == folder and tarball.read_text() == "whole"
    assert [p.name for p in folder.iterdir()] == [tarball.name]
    _fake_mmdebstrap(bin_dir, "exit 9")  # made once: not run again
    assert base._base_tarball(cfg) == tarball


def test_a_missing_mmdebstrap_says_how_to_install_it(tmp_path: Path, monkeypatch) -> None:
    from labkit.errors import ServiceError
    from labkit.image import base

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceError) as exc:
        base._base_tarball(load_config(image_cache_dir=tmp_path / "cache"))
    assert "apt-get install mmdebstrap" in str(exc.value) and "\n" not in str(exc.value)
