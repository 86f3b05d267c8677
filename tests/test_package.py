"""labkit.package: the deterministic model tarball, its streaming core, and its verification."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from labkit import package
from labkit.errors import ModelError
from labkit.package import (
    iter_tar_bytes,
    plan_tarball,
    tar_tree,
    verify_tarball,
    write_tarball,
)
from labkit.state import to_data

REPO_ID = "org/tiny"
FOLDER = "models--org--tiny"
PINNED = "1" * 40
OTHER = "2" * 40

WEIGHTS = bytes(range(256)) * 5000  # 1.28 MB, an "LFS" file: its blob is named by sha256
PINNED_FILES = {
    "config.json": b'{"model_type": "llama"}\n',
    "model.safetensors": WEIGHTS,
    "subdir/x.json": b'{"x": 1}\n',
    "tokenizer.json": b'{"tokens": []}\n',
}
OTHER_FILES = {"config.json": b'{"model_type": "llama", "v": 2}\n', "model.safetensors": WEIGHTS}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def etag_of(name: str, data: bytes) -> str:
    """The Hub's etag: sha256 for LFS files (weights, or anything large), git sha1 otherwise."""
    return (
        sha256(data) if name.endswith(".safetensors") or len(data) >= 10 << 20 else git_sha1(data)
    )


def add_snapshot(cache: Path, folder: str, commit: str, files: dict[str, bytes]) -> None:
    """Write a snapshot the way huggingface_hub does: blobs by etag, relative symlinks to them."""
    repo = cache / folder
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        blob = repo / "blobs" / etag_of(rel, data)
        if not blob.exists():
            blob.write_bytes(data)
        link = repo / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)


def make_cache(root: Path, *, refs: dict[str, str] | None = None) -> Path:
    """A cache like snapshot_download leaves: the pinned snapshot, another one, and clutter."""
    cache = root / "hub"
    add_snapshot(cache, FOLDER, PINNED, PINNED_FILES)
    add_snapshot(cache, FOLDER, OTHER, OTHER_FILES)
    repo = cache / FOLDER
    (repo / "blobs" / sha256(b"orphan")).write_bytes(b"orphan")
    (repo / "blobs" / (sha256(b"partial") + ".incomplete")).write_bytes(b"part")
    for name, commit in (refs if refs is not None else {"main": PINNED, "dev": OTHER}).items():
        (repo / "refs" / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / name).write_text(commit)
    (repo / ".no_exist" / PINNED).mkdir(parents=True)
    (repo / ".no_exist" / PINNED / "processor_config.json").touch()
    (repo / "trees").mkdir()
    (repo / "trees" / f"{PINNED}.json").write_text("{}")
    (cache / ".locks" / FOLDER).mkdir(parents=True)
    (cache / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    add_snapshot(cache, "models--someone--else", OTHER, {"config.json": b"{}"})
    return cache


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return make_cache(tmp_path)


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tf:
        return {ti.name: ti for ti in tf}


def read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tf:
        fh = tf.extractfile(name)
        assert fh is not None
        return fh.read()


def test_layout_is_exactly_one_snapshot_of_the_cache(cache: Path, tmp_path: Path) -> None:
    tb = write_tarball(cache, REPO_ID, PINNED, tmp_path / "m.tar", progress=False)
    got = members(tb.path)
    snap = f"{FOLDER}/snapshots/{PINNED}"
    blobs = {rel: f"{FOLDER}/blobs/{etag_of(rel, d)}" for rel, d in PINNED_FILES.items()}
    expected = {
        FOLDER: "dir",
        f"{FOLDER}/blobs": "dir",
        f"{FOLDER}/refs": "dir",
        f"{FOLDER}/refs/main": "file",
        f"{FOLDER}/snapshots": "dir",
        snap: "dir",
        f"{snap}/subdir": "dir",
        "version.txt": "file",
    }
    expected.update(dict.fromkeys(blobs.values(), "file"))
    expected.update({f"{snap}/{rel}": "symlink" for rel in PINNED_FILES})
    kinds = {n: "dir" if t.isdir() else "symlink" if t.issym() else "file" for n, t in got.items()}
    assert kinds == expected
    # Archive order: sorted by path components, parents before children.
    assert list(got) == sorted(got, key=lambda n: n.split("/"))

    config_etag = etag_of("config.json", PINNED_FILES["config.json"])
    assert got[f"{snap}/config.json"].linkname == f"../../blobs/{config_etag}"
    assert got[f"{snap}/subdir/x.json"].linkname.startswith("../../../blobs/")
    for rel, data in PINNED_FILES.items():
        assert read_member(tb.path, blobs[rel]) == data
    assert read_member(tb.path, f"{FOLDER}/refs/main") == PINNED.encode()  # no newline
    assert read_member(tb.path, "version.txt") == b"1"
    assert etag_of("model.safetensors", WEIGHTS) == sha256(WEIGHTS)  # the LFS blob
    assert len(etag_of("config.json", b"{}")) == 40  # a git-sha1 blob

    for ti in got.values():
        assert (ti.uid, ti.gid, ti.uname, ti.gname, ti.mtime) == (0, 0, "", "", package.MTIME)
        assert ti.mode == {"0": 0o644, "5": 0o755, "2": 0o777}[ti.type.decode()]


def test_manifest_and_checksum_file(cache: Path, tmp_path: Path) -> None:
    tb = write_tarball(cache, REPO_ID, PINNED, tmp_path / "m.tar", progress=False)
    data = tb.path.read_bytes()
    assert tb.sha256 == sha256(data) and tb.size == len(data)
    assert tb.sha256_file.read_text() == f"{tb.sha256}  m.tar\n"
    manifest = json.loads(tb.manifest.read_text())
    assert manifest["repo_id"] == REPO_ID and manifest["revision"] == PINNED
    assert (manifest["sha256"], manifest["size"]) == (tb.sha256, tb.size)
    assert manifest["refs"] == {"main": PINNED}
    by_path = {f["path"]: f for f in manifest["files"]}
    assert set(by_path) == {f"{FOLDER}/snapshots/{PINNED}/{rel}" for rel in PINNED_FILES}
    for rel, content in PINNED_FILES.items():
        entry = by_path[f"{FOLDER}/snapshots/{PINNED}/{rel}"]
        etag = etag_of(rel, content)
        assert entry == {
            "path": f"{FOLDER}/snapshots/{PINNED}/{rel}",
            "size": len(content),
            "sha256": sha256(content),
            "etag": etag,
            "blob": f"{FOLDER}/blobs/{etag}",
        }
    json.dumps(to_data(tb))  # the lab state can record it


def test_refs_only_those_pointing_at_the_commit(tmp_path: Path) -> None:
    cache = make_cache(tmp_path, refs={"main": OTHER, "v1": PINNED, "pr/7": PINNED})
    plan = plan_tarball(cache, REPO_ID, PINNED)
    assert plan.refs == {"pr/7": PINNED, "v1": PINNED}
    names = [m.name for m in plan.members]
    assert f"{FOLDER}/refs/pr" in names and f"{FOLDER}/refs/main" not in names
    assert plan_tarball(cache, REPO_ID, "v1").revision == PINNED  # a ref name resolves


def test_refs_main_written_when_no_ref_points_at_the_commit(tmp_path: Path) -> None:
    # snapshot_download(revision=<sha>) writes no refs at all.
    cache = make_cache(tmp_path, refs={"main": OTHER})
    assert plan_tarball(cache, REPO_ID, PINNED).refs == {"main": PINNED}
    assert plan_tarball(cache, REPO_ID, PINNED, ref="pinned").refs == {"pinned": PINNED}
    plan = plan_tarball(cache, REPO_ID, PINNED, ref=None)
    assert plan.refs == {} and not any("/refs" in m.name for m in plan.members)


def test_byte_identical_across_runs_and_cache_copies(cache: Path, tmp_path: Path) -> None:
    first = write_tarball(cache, REPO_ID, PINNED, tmp_path / "a.tar", progress=False)
    again = write_tarball(cache, REPO_ID, PINNED, tmp_path / "b.tar", progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(cache, copy, symlinks=True)
    for i, p in enumerate(sorted(copy.rglob("*"))):
        if not p.is_symlink():
            os.utime(p, (1_000_000 + i * 7919, 2_000_000_000 - i * 104729))
            p.chmod(0o700 if p.is_dir() else 0o600)
            if os.geteuid() == 0:
                os.chown(p, 1234, 4321)
    moved = write_tarball(copy, REPO_ID, PINNED, tmp_path / "c.tar", progress=False)
    data = first.path.read_bytes()
    assert again.path.read_bytes() == data and moved.path.read_bytes() == data
    assert first.sha256 == again.sha256 == moved.sha256


def test_streamed_bytes_equal_the_file_and_the_planned_size(cache: Path, tmp_path: Path) -> None:
    plan = plan_tarball(cache, REPO_ID, PINNED)
    tb = write_tarball(cache, REPO_ID, PINNED, tmp_path / "m.tar", progress=False)
    chunks = list(iter_tar_bytes(plan, chunk_size=64 << 10))
    assert all(len(c) <= 64 << 10 for c in chunks)
    assert b"".join(chunks) == tb.path.read_bytes()
    assert plan.size == tb.size == tb.path.stat().st_size
    assert plan.size % package.RECORD == 0


def test_headers_are_what_pythons_tarfile_writes(tmp_path: Path) -> None:
    # An independent encoder as oracle, with paths long and non-ASCII enough to need pax records.
    deep = "/".join(["a-rather-long-folder-name"] * 5) + "/weights.safetensors"
    files = {**PINNED_FILES, deep: b"deep", "données/é.json": b"{}"}
    cache = tmp_path / "hub"
    add_snapshot(cache, FOLDER, PINNED, files)
    plan = plan_tarball(cache, REPO_ID, PINNED)
    oracle = io.BytesIO()
    with tarfile.open(fileobj=oracle, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m in plan.members:
            ti = tarfile.TarInfo(m.name)
            ti.type = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE}[
                m.kind
            ]
            ti.mode = {"dir": 0o755, "file": 0o644, "symlink": 0o777}[m.kind]
            ti.size, ti.linkname, ti.mtime, ti.uname, ti.gname = (
                m.size,
                m.linkname,
                package.MTIME,
                "",
                "",
            )
            content = m.data if m.data is not None else m.source.read_bytes() if m.source else b""
            tf.addfile(ti, io.BytesIO(content) if m.kind == "file" else None)
    assert b"".join(iter_tar_bytes(plan)) == oracle.getvalue()
    assert any(len(m.name) > 100 for m in plan.members)


def test_gzip_on_request_and_deterministic(cache: Path, tmp_path: Path) -> None:
    plain = write_tarball(cache, REPO_ID, PINNED, tmp_path / "m.tar", progress=False)
    gz = write_tarball(
        cache, REPO_ID, PINNED, tmp_path / "m.tar.gz", compression="gz", progress=False
    )
    gz2 = write_tarball(
        cache, REPO_ID, PINNED, tmp_path / "n.tgz", compression="gz", progress=False
    )
    data = gz.path.read_bytes()
    assert data[:2] == b"\x1f\x8b" and gzip.decompress(data) == plain.path.read_bytes()
    assert gz2.path.read_bytes() == data and gz.sha256 == sha256(data) == gz2.sha256
    manifest = json.loads(gz.manifest.read_text())
    assert manifest["compression"] == "gz" and manifest["tar_size"] == plain.size
    assert verify_tarball(gz.path).ok


@pytest.mark.parametrize(
    ("name", "compression", "says"),
    [
        ("m.tar.gz", None, "compression='gz'"),
        ("m.tgz", None, "compression='gz'"),
        ("m.zip", None, "m.zip.tar"),
        ("m.tar", "gz", "m.tar.gz"),
        ("m", "gz", "m.tar.gz"),
    ],
)
def test_file_name_must_tell_the_truth(
    cache: Path, tmp_path: Path, name: str, compression: str | None, says: str
) -> None:
    with pytest.raises(ModelError, match=r"\.tar") as err:
        write_tarball(
            cache, REPO_ID, PINNED, tmp_path / name, compression=compression, progress=False
        )  # type: ignore[arg-type]
    assert says in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.glob("m*")) == []


def test_folder_destination_gets_the_default_name(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert write_tarball(cache, REPO_ID, PINNED, out, progress=False).path == out / "org--tiny.tar"
    gz = write_tarball(cache, REPO_ID, PINNED, out, compression="gz", progress=False)
    assert gz.path == out / "org--tiny.tar.gz"


@pytest.mark.parametrize(("name", "compression"), [("m.tar", None), ("m.tar.gz", "gz")])
def test_interrupted_write_leaves_nothing(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, compression: str | None
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    real = package.writer._write_all
    calls = {"n": 0}

    def failing(sink: object, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt  # the worst case: not even an Exception
        real(sink, data)

    monkeypatch.setattr(package.writer, "_write_all", failing)
    with pytest.raises(KeyboardInterrupt):
        write_tarball(
            cache,
            REPO_ID,
            PINNED,
            out / name,
            compression=compression,  # type: ignore[arg-type]
            progress=False,
            chunk_size=64 << 10,
        )
    assert list(out.iterdir()) == []


def test_blob_changed_during_packing_is_an_error(cache: Path, tmp_path: Path) -> None:
    plan = plan_tarball(cache, REPO_ID, PINNED)
    blob = cache / FOLDER / "blobs" / sha256(WEIGHTS)
    blob.write_bytes(WEIGHTS[:-1])
    with pytest.raises(ModelError, match="changed size"):
        b"".join(iter_tar_bytes(plan))


def test_shared_store_blob_is_packed_as_a_file(cache: Path, tmp_path: Path) -> None:
    # huggingface_hub 2.x may make blobs/<etag> a symlink into a cache-wide store.
    blob = cache / FOLDER / "blobs" / sha256(WEIGHTS)
    store = cache / "blobs" / "ab" / "xethash"
    store.parent.mkdir(parents=True)
    blob.rename(store)
    os.symlink(os.path.relpath(store, blob.parent), blob)
    tb = write_tarball(cache, REPO_ID, PINNED, tmp_path / "m.tar", progress=False)
    ti = members(tb.path)[f"{FOLDER}/blobs/{sha256(WEIGHTS)}"]
    assert ti.isreg() and ti.size == len(WEIGHTS)
    assert verify_tarball(tb.path).ok


def test_plan_errors_say_what_to_do(cache: Path) -> None:
    cases = {
        "nobody/nothing": (PINNED, "download it first"),
        REPO_ID: ("3" * 40, "download that revision"),
        "bad--id": (PINNED, "org/name"),
    }
    for repo_id, (revision, hint) in cases.items():
        with pytest.raises(ModelError, match=hint):
            plan_tarball(cache, repo_id, revision)
    with pytest.raises(ModelError, match="40-hex"):
        plan_tarball(cache, REPO_ID, "no-such-branch")
    snap = cache / FOLDER / "snapshots" / PINNED
    (snap / "tokenizer.json").unlink()
    (snap / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError, match="regular file"):
        plan_tarball(cache, REPO_ID, PINNED)
    (snap / "tokenizer.json").unlink()
    os.symlink("../../blobs/" + "f" * 40, snap / "tokenizer.json")
    with pytest.raises(ModelError, match="missing blob"):
        plan_tarball(cache, REPO_ID, PINNED)
    (snap / "tokenizer.json").unlink()
    os.symlink("../../../../CACHEDIR.TAG", snap / "tokenizer.json")
    with pytest.raises(ModelError, match="outside"):
        plan_tarball(cache, REPO_ID, PINNED)


def test_tar_tree_lists_the_archive(cache: Path, tmp_path: Path) -> None:
    tb = write_tarball(cache, REPO_ID, PINNED, tmp_path / "m.tar", progress=False)
    tree = tar_tree(tb.path)
    assert tree.splitlines()[0].startswith("m.tar")
    assert "blobs/  (4 files" in tree
    assert f"main = {PINNED}" in tree
    assert "│           │   └── x.json -> ../../../blobs/" in tree
    assert tree.splitlines()[-1] == "└── version.txt  (1 B)"


@pytest.fixture
def good(cache: Path, tmp_path: Path) -> package.Tarball:
    return write_tarball(cache, REPO_ID, PINNED, tmp_path / "good.tar", progress=False)


def rewrite(src: Path, dst: Path, extra: list[tarfile.TarInfo] = (), skip: str = "") -> Path:  # type: ignore[assignment]
    """Copy an archive member by member, adding hand-made (malicious) members at the end."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for ti in tin:
            if ti.name != skip:
                tout.addfile(ti, tin.extractfile(ti) if ti.isreg() else None)
        for ti in extra:
            tout.addfile(ti, io.BytesIO(b"x" * ti.size) if ti.isreg() else None)
    return dst


def entry(
    name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 1
) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.size = kind, linkname, size if kind == tarfile.REGTYPE else 0
    return ti


def test_verify_accepts_a_good_archive(good: package.Tarball) -> None:
    report = verify_tarball(good.path)
    assert report.ok and report.errors == [] and report.warnings == []
    assert report.sha256 == good.sha256 and report.size == good.size
    assert "verified" in report._repr_html_()


def test_verify_catches_a_corrupted_blob(good: package.Tarball) -> None:
    name = f"{FOLDER}/blobs/{sha256(WEIGHTS)}"
    with tarfile.open(good.path) as tf:
        offset = tf.getmember(name).offset_data + 1000
    with open(good.path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    report = verify_tarball(good.path)
    assert not report.ok
    text = "\n".join(report.errors)
    assert f"{name}: content sha256" in text  # the blob no longer matches its name
    assert f"{FOLDER}/snapshots/{PINNED}/model.safetensors: sha256" in text  # nor the manifest
    assert "good.tar: sha256" in text  # nor the archive's checksum
    assert "FAILED" in report._repr_html_()


def test_verify_catches_a_corrupted_small_blob_by_its_git_sha1(cache: Path, tmp_path: Path) -> None:
    blob = cache / FOLDER / "blobs" / git_sha1(PINNED_FILES["config.json"])
    blob.write_bytes(b'{"model_type": "gpt2"}\n')
    tb = write_tarball(cache, REPO_ID, PINNED, tmp_path / "m.tar", progress=False)
    report = verify_tarball(tb.path)
    assert report.errors == [
        f"{FOLDER}/blobs/{blob.name}: content git sha1 is {git_sha1(blob.read_bytes())}, not the sha1 it is named by"
    ]


def test_verify_catches_a_tampered_manifest(good: package.Tarball) -> None:
    manifest = json.loads(good.manifest.read_text())
    target = f"{FOLDER}/snapshots/{PINNED}/subdir/x.json"
    for f in manifest["files"]:
        if f["path"] == target:
            f["sha256"] = "0" * 64
    good.manifest.write_text(json.dumps(manifest))
    report = verify_tarball(good.path)
    assert report.errors == [
        f"{target}: sha256 is {sha256(PINNED_FILES['subdir/x.json'])}, the manifest says {'0' * 64}"
    ]
    # An explicit manifest (a path or the data) is used instead of the one beside the archive.
    del manifest["files"][0]
    assert any(
        "not listed in the manifest" in e for e in verify_tarball(good.path, manifest).errors
    )


def test_verify_checks_the_sha256_file(good: package.Tarball) -> None:
    good.sha256_file.write_text(f"{'0' * 64}  good.tar\n")
    assert verify_tarball(good.path).errors == [
        f"good.tar: sha256 is {good.sha256}, good.tar.sha256 says {'0' * 64}"
    ]


@pytest.mark.parametrize(
    ("evil", "says"),
    [
        (
            entry(
                f"{FOLDER}/snapshots/{PINNED}/evil.json", tarfile.SYMTYPE, "../../../../etc/passwd"
            ),
            "points outside the archive",
        ),
        (
            entry(f"{FOLDER}/snapshots/{PINNED}/abs.json", tarfile.SYMTYPE, "/etc/passwd"),
            "link to the absolute path",
        ),
        (
            entry(
                f"{FOLDER}/snapshots/{PINNED}/blob.json", tarfile.SYMTYPE, "../../../version.txt"
            ),
            "not to a blob",
        ),
        (entry("/etc/cron.d/evil"), "absolute path"),
        (entry(f"{FOLDER}/../../evil.sh"), "'..'"),
        (entry(f"{FOLDER}/blobs/hard", tarfile.LNKTYPE, "../outside"), "hard link"),
        (entry(f"{FOLDER}/blobs/dev", tarfile.CHRTYPE), "device"),
        (entry(f"{FOLDER}/refs/main2", size=41), "40-hex"),
        (entry("models--another--repo/config.json"), "exactly one"),
        (entry("version.txt"), "appears twice"),
        (entry(f"{FOLDER}/snapshots/{PINNED}/real.json"), "regular file, not a relative symlink"),
    ],
    ids=[
        "symlink-out",
        "symlink-abs",
        "symlink-not-blob",
        "abs-path",
        "dotdot",
        "hardlink",
        "device",
        "bad-ref",
        "two-repos",
        "duplicate",
        "regular-in-snapshot",
    ],
)
def test_verify_catches_unsafe_or_misplaced_members(
    good: package.Tarball, tmp_path: Path, evil: tarfile.TarInfo, says: str
) -> None:
    bad = rewrite(good.path, tmp_path / "bad.tar", [evil])
    report = verify_tarball(bad, good.manifest)
    assert not report.ok
    named = [e for e in report.errors if says in e]
    assert named, report.errors
    if "exactly one" not in says:
        assert any(evil.name in e for e in named), named


def test_verify_requires_version_txt_and_warns_without_manifest(
    good: package.Tarball, tmp_path: Path
) -> None:
    bad = rewrite(good.path, tmp_path / "bad.tar", skip="version.txt")
    report = verify_tarball(bad)
    assert report.errors == ["version.txt: missing at the archive root"]
    assert any("no bad.tar.manifest.json" in w for w in report.warnings)


def test_verify_of_a_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="package the model first"):
        verify_tarball(tmp_path / "nothing.tar")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    assert "not a readable tar" in verify_tarball(tmp_path / "junk.tar").errors[0]


VLLM_SCRIPT = textwrap.dedent(
    """
    import json, sys

    from vllm import LLM, SamplingParams

    if __name__ == "__main__":
        model, revision = sys.argv[1], sys.argv[2] or None
        llm = LLM(model=model, revision=revision, enforce_eager=True, max_model_len=512)
        params = SamplingParams(temperature=0.0, max_tokens=8)
        out = llm.generate(["The capital of France is"], params)
        print("ANSWER " + json.dumps(out[0].outputs[0].text), flush=True)
    """
)


@pytest.mark.integration
@pytest.mark.slow
def test_vllm_loads_the_unpacked_read_only_tarball(default_tarball, tmp_path: Path) -> None:
    repo_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    tb = default_tarball
    commit = tb.revision
    assert verify_tarball(tb.path).ok

    models = tmp_path / "mnt" / "models"
    models.mkdir(parents=True)
    with tarfile.open(tb.path) as tf:
        tf.extractall(models, filter="data")  # as KServe's storage initializer unpacks it
    assert sorted(p.name for p in models.iterdir()) == [
        "models--HuggingFaceTB--SmolLM2-135M-Instruct",
        "version.txt",
    ]
    subprocess.run(["chmod", "-R", "a-w", str(models)], check=True)
    script = tmp_path / "ask.py"
    script.write_text(VLLM_SCRIPT)
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(models),
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env.pop("HF_ENDPOINT", None)
    snapshot = models / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit
    try:
        for model, revision in ((repo_id, commit), (str(snapshot), "")):
            run = subprocess.run(
                [sys.executable, str(script), model, revision],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=600,
            )
            answers = [line for line in run.stdout.splitlines() if line.startswith("ANSWER ")]
            assert run.returncode == 0 and answers, run.stderr[-3000:]
            answer = json.loads(answers[0].removeprefix("ANSWER "))
            print(f"vLLM ({model}): The capital of France is{answer}")
            assert answer.strip()
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(models)], check=False)
