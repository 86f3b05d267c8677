"""Generated inputs for the parsers of what a user hands the lab: AI Core service keys, model
manifests and their sha256 sidecars, LABKIT_* values and .env files, and `labkit run -p`
parameters. Each gives a valid result or a one-line typed error (LabError), never a traceback;
the client secret never appears in a message."""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from aicore_fakes import btp_key
from hypothesis import assume, example, given
from hypothesis import strategies as st
from test_package import PINNED, REPO_ID, make_cache

from labkit.aicore import ServiceKey, load_service_key, parse_service_key
from labkit.config import Config, load_config
from labkit.errors import ConfigError, LabError, StepError
from labkit.package import verify_tarball, write_tarball
from labkit.run import check_parameters, parameter_value

# Distinctive, so that no generated field value contains it by chance.
SECRET = "zq-client-secret-4f9e1d7c-never-shown"
X509_KEY = "-----BEGIN PRIVATE KEY-----\\nzq-x509-key-never-shown\\n-----END PRIVATE KEY-----"


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text.strip() and "\n" not in text and "\r" not in text, text
    assert "Traceback" not in text
    return text


def no_secret(text: str) -> None:
    assert SECRET not in text and "zq-x509-key-never-shown" not in text, text


# --- generated values --------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
URLS = st.sampled_from(
    [
        "https://tenant.authentication.sap.hana.ondemand.com",
        "http://127.0.0.1:8100/",
        "https://x.example/oauth/token",
        "tenant.authentication.sap.hana.ondemand.com",  # no scheme
        "ftp://x.example",
        "https://",
        "http://[::1",
        "https://x.example:0",
        "https://x.example:99999",
        "https://x .example",
        "",
        "   ",
        "https://x.example/" + "a" * 5000,
    ]
)
FIELD_VALUES = JSON_VALUES | URLS | st.just("") | st.just("x" * 100_000)


def btp_shapes() -> st.SearchStrategy[dict[str, Any]]:
    """Every shape the BTP cockpit produces: client secret, x509 (with and without certurl),
    wrapped in ``credentials`` (as `cf service-key` prints it)."""

    def x509(cert_url: bool) -> dict[str, Any]:
        key = btp_key(clientsecret=None)
        del key["clientsecret"]
        key.update(certificate="-----BEGIN CERTIFICATE-----\\nAAA", key=X509_KEY)
        if cert_url:
            key["certurl"] = "https://tenant.authentication.cert.sap.hana.ondemand.com"
        return key

    return st.sampled_from(
        [
            btp_key(clientsecret=SECRET),
            btp_key("https://tenant.authentication.sap.hana.ondemand.com/", clientsecret=SECRET),
            x509(True),
            x509(False),
            {"credentials": btp_key(clientsecret=SECRET)},
        ]
    )


@st.composite
def service_keys(draw: st.DrawFn) -> Any:
    """A BTP key mutated field by field, at the top or inside serviceurls, or not a key at all."""
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "mutated", "garbage"]))
    if kind == "garbage":
        return draw(
            JSON_VALUES
            | st.text(max_size=50)
            | st.binary(max_size=50)
            | st.sampled_from(["[" * 100_000, "1" * 5000, "", "null", '"\\ud800"', "NaN"])
        )
    key = copy.deepcopy(draw(btp_shapes()))
    body = key.get("credentials", key)
    for _ in range(draw(st.integers(1, 3)) if kind == "mutated" else 0):
        where = draw(st.sampled_from(["top", "top", "serviceurls"]))
        target = body if where == "top" else body.get("serviceurls")
        if not isinstance(target, dict):
            target = body
        name = draw(st.sampled_from(sorted({*target, "certurl", "certificate", "key"})))
        if draw(st.booleans()):
            target.pop(name, None)
        else:
            target[name] = draw(FIELD_VALUES)
    form = draw(st.sampled_from(["dict", "json", "bytes", "bad-utf8"]))
    if form == "dict":
        return key
    text = json.dumps(key)
    if form == "json":
        return text
    data = text.encode()
    return data if form == "bytes" else data[:5] + b"\xff\xfe" + data[5:]


def check_key(key: ServiceKey) -> None:
    assert key.client_id
    assert key.auth_url.startswith(("http://", "https://"))
    assert key.auth_url.endswith("/oauth/token")
    assert key.base_url.startswith(("http://", "https://")) and key.base_url.endswith("/v2")
    assert (key.client_secret is not None) or (key.certificate and key.key)
    for shown in (repr(key), str(key), json.dumps(key.public())):
        no_secret(shown)


# --- service keys ------------------------------------------------------------------------------


@given(service_keys())
@example("[" * 100_000)  # was RecursionError
@example("1" * 5000)  # was ValueError (Python's integer digit limit)
@example({**btp_key(), "clientsecret": 5})  # was TypeError from the secret registry
@example({**btp_key(), "url": ["https://x"]})  # was a key with auth_url "['https://x']/oauth/token"
@example({**btp_key(), "url": "tenant.example"})  # was a key without a scheme
@example({**btp_key(), "serviceurls": {"AI_API_URL": {"a": 1}}})  # was api_url "{'a': 1}"
@example({**btp_key(clientsecret=SECRET), "identityzone": None})  # was identityzone "None"
@example(b'{"clientid": "\xff"}')
def test_service_key_is_a_key_or_one_line_without_the_secret(data):
    try:
        key = parse_service_key(data, "key.json")
    except ConfigError as exc:
        no_secret(one_line(exc))
        assert "key.json" in str(exc)
        return
    check_key(key)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ("[" * 100_000, "is not JSON"),
        ("1" * 5000, "is not JSON"),
        ({**btp_key(), "clientsecret": 5}, "clientsecret of type int"),
        ({**btp_key(), "url": ["https://x"]}, "url of type list"),
        ({**btp_key(), "url": "tenant.example"}, "url that is not an http(s) URL"),
        ({**btp_key(), "url": "https://x .example"}, "url that is not an http(s) URL"),
        ({**btp_key(), "serviceurls": {"AI_API_URL": "x"}}, "AI_API_URL that is not"),
        ({**btp_key(), "serviceurls": {"AI_API_URL": {"a": 1}}}, "AI_API_URL of type dict"),
        ({**btp_key(), "serviceurls": ["x"]}, "serviceurls of type list"),
        ({**btp_key(), "clientid": "  "}, "lacks clientid"),
        (b'{"clientid": "\xff"}', "not UTF-8"),
    ],
)
def test_broken_service_key_regressions(data, says):
    with pytest.raises(ConfigError) as exc:
        parse_service_key(data, "key.json")
    assert says in one_line(exc.value)


def test_service_key_null_identityzone_is_empty():
    assert parse_service_key({**btp_key(), "identityzone": None}).identityzone == ""


@given(service_keys(), st.sampled_from(["env", "file"]))
def test_load_service_key_from_the_variable_or_the_file(data, source):
    """`load_service_key` on a tenant: AICORE_SERVICE_KEY (text) or LABKIT_AICORE_SERVICE_KEY_FILE."""
    if isinstance(data, bytes):
        raw = data
    elif isinstance(data, str):
        raw = data.encode("utf-8", "surrogatepass")
    else:
        raw = json.dumps(data).encode()
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABKIT_ROOT", tmp)
        mp.setenv("AICORE_HOME", tmp)  # the SDK's config file: none
        for name in ("AICORE_SERVICE_KEY", "LABKIT_AICORE_SERVICE_KEY", "VCAP_SERVICES"):
            mp.delenv(name, raising=False)
        if source == "env":
            text = raw.decode("utf-8", "replace").replace("\x00", "")
            assume(text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text))
            mp.setenv("AICORE_SERVICE_KEY", text)
            cfg = load_config(profile="aicore")
        else:
            path = Path(tmp) / "key.json"
            path.write_bytes(raw)
            cfg = load_config(profile="aicore", aicore_service_key_file=path)
        try:
            key = load_service_key(cfg)
        except ConfigError as exc:
            no_secret(one_line(exc))
            return
        check_key(key)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"AICORE_CONFIG": "/"}, "cannot read its credentials (IsADirectoryError)"),
        ({"VCAP_SERVICES": "[1]"}, "cannot read its credentials (AttributeError)"),
        (
            {
                "AICORE_CLIENT_ID": "x",
                "AICORE_CLIENT_SECRET": SECRET,
                "AICORE_AUTH_URL": "z",
                "AICORE_BASE_URL": "https://api.example",
            },
            "url that is not an http(s) URL",
        ),
    ],
)
def test_sdk_sources_regressions(env, says, tmp_path, monkeypatch):
    """The SDK's own sources (AICORE_* variables, its config file, VCAP_SERVICES): was a
    traceback (IsADirectoryError, AttributeError) or a key without a scheme."""
    monkeypatch.setenv("AICORE_HOME", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as exc:
        load_service_key(load_config(profile="aicore"))
    assert says in one_line(exc.value)
    no_secret(str(exc.value))


def test_config_service_key_of_a_non_utf8_file(tmp_path):
    """Config.service_key (the environment check's view): was UnicodeDecodeError."""
    path = tmp_path / "key.json"
    path.write_bytes(b'{"clientid": "\xff"}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(aicore_service_key_file=path).service_key()
    path.write_text("[" * 100_000)
    with pytest.raises(ConfigError, match="not JSON"):
        load_config(aicore_service_key_file=path).service_key()


# --- manifest and sha256 sidecar ---------------------------------------------------------------


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory):
    """A good tarball with its sidecars, and the pristine manifest and sidecar bytes."""
    root = tmp_path_factory.mktemp("packed")
    tb = write_tarball(make_cache(root), REPO_ID, PINNED, root / "good.tar", progress=False)
    manifest, sidecar = tb.manifest.read_bytes(), tb.sha256_file.read_bytes()
    yield tb, manifest, sidecar
    shutil.rmtree(root, ignore_errors=True)


CHECKED_TOP = ("sha256", "size", "repo_id", "revision", "files")
CHECKED_ENTRY = ("path", "size", "sha256")
OPTIONAL = ("format", "blob", "etag")  # absent or null: not checked


def hex_mutations(value: str) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [
            value[:-1],
            value + "0",
            value.upper(),
            ("0" if value[0] != "0" else "1") + value[1:],
            "g" + value[1:],
            f" {value}",
            "",
        ]
    )


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # 1, 1.0, true differ


def expected_verdict(original: dict[str, Any], doc: dict[str, Any]) -> bool:
    """Whether a manifest changed from ``original`` to ``doc`` still passes: every checked field
    the same (the optional ones may go or be null; format must stay 1 where present)."""
    if "format" in doc and not _same(doc["format"], 1):
        return False
    if any(name not in doc or not _same(doc[name], original[name]) for name in CHECKED_TOP[:-1]):
        return False
    files = doc.get("files")
    if not isinstance(files, list) or len(files) != len(original["files"]):
        return False
    for entry, before in zip(files, original["files"], strict=True):
        if not isinstance(entry, dict):
            return False
        if any(name not in entry or not _same(entry[name], before[name]) for name in CHECKED_ENTRY):
            return False
        if any(entry.get(n) is not None and not _same(entry[n], before[n]) for n in OPTIONAL[1:]):
            return False
    return True


@st.composite
def manifests(draw: st.DrawFn, original: dict[str, Any]) -> tuple[bytes, bool]:
    """(manifest bytes, whether verification passes): the same content in other whitespace,
    fields changed, deleted or retyped at the top or in a file entry, or no manifest at all."""
    kind = draw(st.sampled_from(["format", "mutate", "mutate", "mutate", "garbage"]))
    if kind == "garbage":
        data = draw(
            st.binary(max_size=40)
            | st.sampled_from([b"", b"\xff\xfe", b"[" * 100_000, b"1" * 5000, b"null", b"[]"])
            | JSON_VALUES.map(lambda v: json.dumps(v).encode())
        )
        return data, False
    doc = copy.deepcopy(original)
    if kind == "format":  # the same content, other whitespace
        indent = draw(st.sampled_from([None, 0, 1, 4, "\t"]))
        return ("\n \t" + json.dumps(doc, indent=indent) + "\n\n").encode(), True
    for _ in range(draw(st.integers(1, 3))):
        in_entry = draw(st.booleans()) and isinstance(doc.get("files"), list) and doc["files"]
        target = draw(st.sampled_from(doc["files"])) if in_entry else doc
        if not isinstance(target, dict) or not target:
            continue
        name = draw(st.sampled_from(sorted(target)))
        old = target[name]
        if draw(st.integers(0, 4)) == 0:
            del target[name]
            continue
        strategy = FIELD_VALUES
        if isinstance(old, str) and old and all(c in "0123456789abcdef" for c in old):
            strategy = hex_mutations(old) | strategy
        target[name] = new = draw(strategy)
        if name == "repo_id" and isinstance(new, str) and isinstance(old, str):
            assume(new.replace("/", "--") != old.replace("/", "--") or new == old)
    return json.dumps(doc).encode(), expected_verdict(original, doc)


def check_report(report) -> None:
    for line in report.errors + report.warnings:
        assert line.strip() and "\n" not in line and "\r" not in line, line
        assert len(line) < 1000, line[:200]
    assert report.ok == (not report.errors)


def verify_with_manifest(packed, content: bytes):
    tb, pristine, sidecar = packed
    tb.sha256_file.write_bytes(sidecar)
    tb.manifest.write_bytes(content)
    try:
        report = verify_tarball(tb.path)
    finally:
        tb.manifest.write_bytes(pristine)
    check_report(report)
    return report


@given(st.data())
def test_manifest_mutations_give_a_verdict_not_a_crash(packed, data):
    original = json.loads(packed[1])
    content, expected = data.draw(manifests(original))
    report = verify_with_manifest(packed, content)
    assert report.ok is expected, (content[:300], report.errors)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\xff\xfe", "good.tar.manifest.json: not UTF-8 text"),  # was UnicodeDecodeError
        (b"[" * 100_000, "too deeply nested"),  # was RecursionError
        (b"1" * 5000, "too large a number"),  # was ValueError
        (b"", "not valid JSON"),
        (b"[]", "no 'files' list"),
    ],
)
def test_broken_manifest_file_regressions(packed, content, says):
    report = verify_with_manifest(packed, content)
    assert not report.ok and any(says in e for e in report.errors), report.errors


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda m: m.update(revision=[1]), "no snapshot of the manifest's revision [1]"),
        (lambda m: m.update(size=True), "the manifest says True"),
        (lambda m: m.update(format=2), "format 2, this labkit reads format 1"),
        (lambda m: m.update(format=1.0), "format 1.0, this labkit reads format 1"),
        (lambda m: m.update(repo_id=7), "repo_id 7 is not a repo id"),
        (lambda m: m["files"].append(m["files"][0]), "listed twice in the manifest"),
        (lambda m: m["files"][0].update(etag="0" * 40), "the manifest's etag is"),
        (lambda m: m["files"].append(["x" * 5000]), "malformed file entry"),
    ],
)
def test_manifest_regressions(packed, change, says):
    """Was TypeError (a list as revision) or a pass (true as a size, a wrong format or etag)."""
    tb, pristine, _ = packed
    manifest = json.loads(pristine)
    change(manifest)
    report = verify_tarball(tb.path, manifest)
    check_report(report)
    assert not report.ok and any(says in e for e in report.errors), report.errors


def test_manifest_given_as_data_without_files(packed):
    """Was KeyError 'files'."""
    tb, _, _ = packed
    report = verify_tarball(tb.path, {"a": 1})
    assert report.errors == ["manifest: not a labkit manifest (no 'files' list)"]


SIDECARS = st.sampled_from(["good", "upper", "spaces", "crlf", "star", "nothing"]) | st.binary(
    max_size=80
)


@given(SIDECARS)
@example(b"\xff")  # was UnicodeDecodeError
@example(b"")
@example("upper")
def test_sha256_sidecar_gives_a_verdict(packed, sidecar):
    tb, pristine, good = packed
    tb.manifest.write_bytes(pristine)
    sha = tb.sha256
    content = {
        "good": good,
        "upper": f"{sha.upper()}  good.tar\n".encode(),
        "spaces": f"\n  {sha} \t good.tar  \n\n".encode(),
        "crlf": f"{sha}  good.tar\r\n".encode(),
        "star": f"{sha} *good.tar\n".encode(),  # sha256sum's binary mode
        "nothing": b"   \n",
    }.get(sidecar, sidecar)
    tb.sha256_file.write_bytes(content)
    try:
        report = verify_tarball(tb.path)
    finally:
        tb.sha256_file.write_bytes(good)
    check_report(report)
    try:
        first = content.decode("ascii").split()[0].lower()
    except (UnicodeDecodeError, IndexError):
        first = ""
    assert report.ok == (first == sha), (content, report.errors)


# --- LABKIT_* values and .env ------------------------------------------------------------------

ENV_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30
)
NUMBERS = st.sampled_from(
    [
        "0",
        "1",
        "-1",
        "80",
        "65535",
        "65536",
        "99999999",
        "1e3",
        "1.5",
        "nan",
        "inf",
        "-inf",
        " 8080 ",
        "0x50",
        "1_000",
        "",
        "  ",
        "1" * 5000,
        "٣",
    ]
) | st.integers(-(10**12), 10**12).map(str)
SETTINGS = {
    "LABKIT_PROFILE": st.sampled_from(["local", "aicore", "AICORE", "Local", "", "x"]) | ENV_TEXT,
    "LABKIT_S3_PORT": NUMBERS,
    "LABKIT_HUB_PORT": NUMBERS,
    "LABKIT_AICORE_PORT": NUMBERS,
    "LABKIT_REGISTRY_PORT": NUMBERS,
    "LABKIT_AICORE_TOKEN_TTL": NUMBERS,
    "LABKIT_AICORE_START_TIMEOUT": NUMBERS,
    "LABKIT_IMAGE_BUILDER": st.sampled_from(["auto", "buildah", "podman", "docker", "kaniko"]),
    "LABKIT_IMAGE_VARIANT": st.sampled_from(["cpu", "gpu", "", "tpu"]),
    "LABKIT_AICORE_RUNNER": st.sampled_from(["auto", "host", "buildah", "x"]),
    "LABKIT_BUCKET": ENV_TEXT,
    "LABKIT_REGISTRY": ENV_TEXT,
    "LABKIT_IMAGE_REPOSITORY": ENV_TEXT,
    "LABKIT_HF_ENDPOINT": URLS.filter(lambda u: len(u) < 100) | ENV_TEXT,
    "LABKIT_S3_ENDPOINT_URL": URLS.filter(lambda u: len(u) < 100) | ENV_TEXT,
    "LABKIT_LAB_DIR": ENV_TEXT,
    "LABKIT_REGISTRY_PASSWORD": st.just(SECRET),
}
PORTS = ("s3_port", "hub_port", "aicore_port", "registry_port")


def check_config(cfg: Config) -> None:
    assert cfg.profile in ("local", "aicore")
    for name in PORTS:
        assert 1 <= getattr(cfg, name) <= 65535
    assert 60 <= cfg.aicore_token_ttl <= 366 * 86400
    assert math.isfinite(cfg.aicore_start_timeout) and cfg.aicore_start_timeout > 0
    assert cfg.lab_dir is not None and str(cfg.lab_dir)
    no_secret(repr(cfg))
    no_secret(json.dumps(cfg.public(), default=str))


@given(
    st.dictionaries(st.sampled_from(sorted(SETTINGS)), st.none(), max_size=6).flatmap(
        lambda keys: st.fixed_dictionaries({k: SETTINGS[k] for k in keys})
    ),
    st.booleans(),
)
@example({"LABKIT_S3_PORT": "99999999"}, False)  # was accepted: a port past 65535
@example({"LABKIT_HUB_PORT": "-1"}, True)  # was accepted
@example({"LABKIT_AICORE_START_TIMEOUT": "inf"}, False)  # was accepted
@example({"LABKIT_AICORE_TOKEN_TTL": "1" * 30}, False)  # was accepted
@example({"LABKIT_BUCKET": "", "LABKIT_LAB_DIR": ""}, True)  # was the bucket "" and lab dir "."
def test_settings_give_a_config_or_one_line(settings, in_dotenv):
    """Values in the environment or in .env: a Config within bounds, or a ConfigError that
    names the variable to fix."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABKIT_ROOT", tmp)
        for name in SETTINGS:
            mp.delenv(name, raising=False)
        if in_dotenv:
            lines = [f"{k}={json.dumps(v)}" for k, v in settings.items()]
            Path(tmp, ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")
        else:
            for name, value in settings.items():
                mp.setenv(name, value)
        try:
            cfg = load_config()
        except ConfigError as exc:
            text = one_line(exc)
            no_secret(text)
            assert "fix LABKIT_" in text
            return
        check_config(cfg)
        for name, value in settings.items():
            if value == "" and name in ("LABKIT_BUCKET", "LABKIT_LAB_DIR") and not in_dotenv:
                assert getattr(cfg, name.removeprefix("LABKIT_").lower()) != ""


@pytest.mark.parametrize(
    "dotenv", [b"LABKIT_PROFILE=\xff\n", b"\xff\xfe\x00garbage", b"LABKIT_BUCKET=caf\xe9\n"]
)
def test_dotenv_not_utf8_regression(dotenv, tmp_path, monkeypatch):
    """Was UnicodeDecodeError from pydantic-settings."""
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path))
    (tmp_path / ".env").write_bytes(dotenv)
    with pytest.raises(ConfigError, match=r"\.env is not UTF-8 text"):
        load_config()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("LABKIT_S3_PORT", "99999999", "less than or equal to 65535"),
        ("LABKIT_REGISTRY_PORT", "0", "greater than or equal to 1"),
        ("LABKIT_AICORE_START_TIMEOUT", "inf", "finite"),
        ("LABKIT_AICORE_TOKEN_TTL", "1" * 30, "less than or equal to"),
    ],
)
def test_settings_out_of_range_regressions(name, value, says, monkeypatch):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as exc:
        load_config()
    assert says in one_line(exc.value) and f"fix {name}" in str(exc.value)


def test_empty_variable_means_unset(monkeypatch):
    """`LABKIT_BUCKET=` as .env.example lists it: was the bucket ""."""
    monkeypatch.setenv("LABKIT_BUCKET", "")
    monkeypatch.setenv("LABKIT_S3_PORT", "")
    cfg = load_config()
    assert cfg.bucket == "labkit-models" and cfg.s3_port == 9000


# --- `labkit run -p` parameters ----------------------------------------------------------------

# The shape of the lab's notebooks' parameters (names and papermill's types); the real table is
# checked against it below.
DECLARED = {
    "01_size_model.ipynb": {"MODEL": "str", "MAX_MODEL_LEN": "int", "KV_CACHE_GIB": "float"},
    "05_author_serving_template.ipynb": {"MAX_MODEL_LEN": "int", "MIN_REPLICAS": "int"},
    "07_query.ipynb": {"OFFLINE": "bool", "QUESTION": "str"},
    "08_benchmark.ipynb": {"CONCURRENCIES": "str", "SEED": "int", "NOTES": "None"},
    "99_cleanup.ipynb": {"TIMEOUT_S": "float", "DELETE_SETUP": "bool"},
}
NAMES = st.sampled_from(sorted({n for p in DECLARED.values() for n in p})) | st.text(max_size=12)
PARAM_VALUES = (
    NUMBERS
    | st.sampled_from(["True", "False", "true", "None", "yes", "1,4,8", "-p"])
    | ENV_TEXT
    | st.integers()
    | st.floats()
    | st.booleans()
    | st.none()
)
KINDS = {"int": int, "float": (int, float), "bool": bool, "str": str}


@given(st.dictionaries(NAMES, PARAM_VALUES, max_size=4))
@example({"MAX_MODEL_LEN": "4096", "KV_CACHE_GIB": "1.5", "OFFLINE": "False"})
@example({"TIMEOUT_S": "nan"})
@example({"SEED": "1" * 5000})
def test_run_parameters_are_typed_or_refused(params):
    try:
        typed = check_parameters(DECLARED, params)
    except StepError as exc:
        one_line(exc)
        return
    assert set(typed) == set(DECLARED)
    for nb, values in typed.items():
        assert set(values) == set(params) & set(DECLARED[nb])
        for name, value in values.items():
            kind = DECLARED[nb][name]
            if kind in KINDS:
                assert isinstance(value, KINDS[kind])
                assert kind == "bool" or not isinstance(value, bool)
                assert kind != "float" or math.isfinite(value)


@pytest.mark.parametrize(
    ("value", "kind", "typed"),
    [
        ("4", "int", 4),
        (" 4 ", "int", 4),
        ("2.5", "float", 2.5),
        ("4", "float", 4.0),
        ("true", "bool", True),
        ("False", "bool", False),
        ("123", "str", "123"),
        ("None", "None", None),
        ("8", "None", 8),
    ],
)
def test_run_parameter_values(value, kind, typed):
    result = parameter_value(value, kind, "N", "01_x.ipynb")
    assert result == typed and type(result) is type(typed)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("x", "int"),
        ("4.0", "int"),
        ("True", "int"),
        (True, "int"),
        ("nan", "float"),
        ("1e999", "float"),
        ("1", "bool"),
        ("yes", "bool"),
        (3, "str"),
        ("1" * 5000, "int"),
    ],
)
def test_run_parameter_wrong_type_regressions(value, kind):
    """Were passed on to papermill (a notebook failing later, or a str param given an int)."""
    with pytest.raises(StepError) as exc:
        parameter_value(value, kind, "N", "01_x.ipynb")
    assert "takes N as" in one_line(exc.value)


def test_the_lab_notebooks_parameters_have_the_types_checked():
    """The real notebooks: their parameters are of the types the check knows."""
    from labkit.config import find_root
    from labkit.run import lab_notebooks, notebook_parameters

    table = {nb.name: notebook_parameters(nb) for nb in lab_notebooks(find_root() / "notebooks")}
    kinds = {kind for params in table.values() for kind in params.values()}
    assert kinds <= {"int", "float", "bool", "str"}, kinds
    typed = check_parameters(table, {"MAX_MODEL_LEN": "4096", "OFFLINE": "False"})
    assert typed["01_size_model.ipynb"] == {"MAX_MODEL_LEN": 4096}
    with pytest.raises(StepError, match="takes MAX_MODEL_LEN as an integer"):
        check_parameters(table, {"MAX_MODEL_LEN": "long"})
    with pytest.raises(LabError, match="no notebook to run takes the parameter NOPE"):
        check_parameters(table, {"NOPE": "1"})


@pytest.mark.parametrize(
    "report",
    ["[1]", '{"notebooks": [{"x": 1}]}', '{"notebooks": 5, "out_dir": "x"}', "[" * 100_000, "\xff"],
)
def test_corrupt_last_run_report_is_no_run_to_resume(report, lab_env):
    """`labkit run --resume` reads the last run's report.json: was TypeError/AttributeError."""
    from labkit.run import last_failed_run

    cfg = load_config()
    run_dir = cfg.runs_dir / "old"
    run_dir.mkdir(parents=True)
    (run_dir / "report.json").write_text(report, encoding="latin-1")
    (cfg.runs_dir / "last-run").write_text(f"{run_dir}\n")
    assert last_failed_run(cfg) is None
