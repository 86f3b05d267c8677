"""The helpers layer (labkit.util): atomic writes, process groups, ports, names, HTML tables."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labkit.util import fs, html, names, net, procs


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "state.json"
    fs.atomic_write_json(target, {"a": 1}, mode=0o600)
    fs.atomic_write_json(target, {"b": 2}, mode=0o600, sort_keys=True, newline=True)
    assert target.read_text() == '{\n "b": 2\n}\n'
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_a_failed_atomic_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "f.json"
    fs.atomic_write_text(target, "old")
    with pytest.raises(TypeError):
        fs.atomic_write_json(target, {"x": object()})
    with pytest.raises(TypeError):
        fs.atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


@given(st.text())
def test_atomic_text_round_trips(text):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = fs.atomic_write_text(Path(d) / "t", text)
        assert path.read_bytes().decode("utf-8") == text


def test_file_lock_makes_a_second_holder_wait_and_says_so(tmp_path):
    lock, done = tmp_path / "x.lock", tmp_path / "done"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from labkit.util import fs\n"
         f"with fs.file_lock(__import__('pathlib').Path({str(lock)!r})):\n"
         "    print('held', flush=True); time.sleep(1.5)\n"
         f"    open({str(done)!r}, 'w').close()"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        waits: list[str] = []
        with fs.file_lock(lock, on_wait=lambda: waits.append("waiting")):
            assert done.exists()  # the first holder had finished its block
        assert waits == ["waiting"]
        with fs.file_lock(lock, on_wait=lambda: waits.append("again")):
            pass
        assert waits == ["waiting"]  # free: no wait
    finally:
        holder.kill()
        holder.wait()


def test_stop_group_ends_a_group_that_ignores_sigterm_after_the_grace_period():
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE
    )
    assert proc.stdout.readline() == b"up\n"
    started = time.monotonic()
    assert procs.stop_group(proc.pid, grace=0.5, proc=proc) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < procs.KILL_WAIT_S
    assert not procs.group_alive(proc.pid) and not procs.pid_alive(proc.pid)


def test_stop_group_stops_the_leaders_children_too_and_is_a_noop_after():
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"], start_new_session=True)
    time.sleep(0.2)
    assert procs.group_alive(proc.pid)
    assert procs.stop_group(proc.pid, grace=5, proc=proc) == -signal.SIGTERM
    assert not procs.group_alive(proc.pid)
    assert procs.stop_group(proc.pid, grace=5) is None
    assert procs.pid_alive(os.getpid())


def test_free_port_can_be_bound():
    port = net.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a" * 40, True),
        ("0123456789abcdef" * 2 + "01234567", True),
        ("A" * 40, False),
        ("a" * 39, False),
        ("a" * 41, False),
        ("main", False),
    ],
)
def test_is_commit(value, ok):
    assert names.is_commit(value) is ok


def test_html_table_escapes_nothing_itself_and_aligns_columns():
    out = html.table(
        ["file", "size"], [[f"<code>{html.esc('a<b')}</code>", "1 kB"]], align=["", "right"]
    )
    assert out == (
        "<table><tr><th>file</th><th>size</th></tr>"
        "<tr><td><code>a&lt;b</code></td><td style='text-align:right'>1 kB</td></tr></table>"
    )
    assert html.table(["a"], [], sections=True) == (
        "<table><thead><tr><th>a</th></tr></thead><tbody></tbody></table>"
    )


def test_html_fields_name_each_value_in_a_left_aligned_header():
    assert html.fields([("plan", "<b>infer.s</b>")]) == (
        "<table><tr><th style='text-align:left'>plan</th><td><b>infer.s</b></td></tr></table>"
    )


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        (names.RESOURCE_GROUP_ID, ["default", "lab-1.a"], ["-x", "ab", "a_b"]),
        (names.OBJECT_STORE_SECRET_NAME, ["default", "a.b-c"], ["A", "a_b", "a."]),
        (names.DOCKER_REGISTRY_SECRET_NAME, ["reg", "a_b.c-d"], ["a__b", "_a", "A"]),
        (names.ARGO_NAME, ["labkit-app"], ["Lab", "a_b"]),
    ],
)
def test_ai_core_name_patterns(pattern, good, bad):
    assert all(pattern.fullmatch(g) for g in good)
    assert not any(pattern.fullmatch(b) for b in bad)


def test_the_user_suffix_is_a_valid_id_part_and_deterministic(monkeypatch):
    from labkit.util import names

    cases = {
        "jane": "labkit-vllm-jane",
        "Jane.Doe": "labkit-vllm-jane-doe",
        "first.last@company.example": "labkit-vllm-first-last-company-example",
        "ÄÖ": "labkit-vllm-user",  # nothing left: a fixed word
        "": "labkit-vllm-user",
    }
    for user, expected in cases.items():
        assert names.default_lab_id(user) == expected
    long_a, long_b = "a" * 70 + "x", "a" * 70 + "y"
    ids = [names.default_lab_id(u) for u in (long_a, long_b)]
    assert ids[0] != ids[1] and ids[0] == names.default_lab_id(long_a)  # cut, then a hash
    for value in [*ids, *cases.values()]:
        assert names.is_executable_id(value) and names.SCENARIO_ID.fullmatch(value)
        assert len(value) <= 63
    monkeypatch.setattr(names.getpass, "getuser", lambda: (_ for _ in ()).throw(OSError("none")))
    assert names.default_lab_id() == "labkit-vllm-user"


def test_pip_find_links_are_the_existing_folders_once(tmp_path, monkeypatch) -> None:
    from labkit.util import pip

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", f"{a} file://{b} {tmp_path / 'missing'} relative/dir {a}")
    found = pip.find_links()
    assert found[:2] == [a, b] and tmp_path / "missing" not in found
    assert all(p.is_absolute() and p.is_dir() for p in found) and len(set(found)) == len(found)
