"""Atomic writes: permissions from the umask without flipping it, replacements never gap."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qd_llm import atomic

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask_027():
    """Runs the test under umask 027, then forbids changing the umask (flipping races threads)."""
    old = os.umask(0o027)

    def refuse(mask):
        raise AssertionError("os.umask called: it changes the umask of every thread")

    patch = pytest.MonkeyPatch()
    patch.setattr(os, "umask", refuse)
    yield
    patch.undo()
    os.umask(old)


def test_file_and_directory_permissions_follow_the_umask(tmp_path, umask_027):
    atomic.write_text(tmp_path / "note.txt", "hello")
    with atomic.directory(tmp_path / "folder") as tmp:
        (tmp / "inside").write_text("x")
    with atomic.directory(tmp_path / "folder", overwrite=True) as tmp:
        (tmp / "inside").write_text("y")

    assert (tmp_path / "note.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "folder" / "inside").read_text() == "y"


def test_only_the_final_names_remain(tmp_path):
    atomic.write_json(tmp_path / "a.json", {"k": 1})
    atomic.write_json(tmp_path / "a.json", {"k": 2})
    with atomic.directory(tmp_path / "d") as tmp:
        (tmp / "f").write_text("1")
    with atomic.directory(tmp_path / "d", overwrite=True) as tmp:
        (tmp / "f").write_text("2")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "d"]
    assert (tmp_path / "a.json").read_text() == '{\n  "k": 2\n}\n'
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["f"]


def test_existing_directory_is_kept_without_overwrite(tmp_path):
    with atomic.directory(tmp_path / "d") as tmp:
        (tmp / "f").write_text("first")
    with atomic.directory(tmp_path / "d") as tmp:
        (tmp / "f").write_text("second")

    assert (tmp_path / "d" / "f").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_a_failed_build_leaves_the_old_directory(tmp_path):
    with atomic.directory(tmp_path / "d") as tmp:
        (tmp / "f").write_text("old")
    with pytest.raises(RuntimeError), atomic.directory(tmp_path / "d", overwrite=True) as tmp:
        (tmp / "f").write_text("new")
        raise RuntimeError("builder failed")

    assert (tmp_path / "d" / "f").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_a_concurrent_reader_never_sees_the_directory_missing(tmp_path):
    target = tmp_path / "d"
    with atomic.directory(target) as tmp:
        (tmp / "version").write_text("0")
    stop = threading.Event()
    seen = {"reads": 0, "missing": 0, "versions": set()}

    def reader():
        while not stop.is_set():
            seen["reads"] += 1
            try:
                seen["versions"].add((target / "version").read_text())
            except FileNotFoundError:
                seen["missing"] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for version in range(1, 201):
            with atomic.directory(target, overwrite=True) as tmp:
                (tmp / "version").write_text(str(version))
    finally:
        stop.set()
        thread.join()

    assert seen["missing"] == 0, f"missing in {seen['missing']} of {seen['reads']} reads"
    assert seen["versions"] <= {str(v) for v in range(201)}
    assert (target / "version").read_text() == "200"


_REPLACER = """
import sys
from pathlib import Path
from qd_llm import atomic

target = Path(sys.argv[1])
version = 0
while True:
    version += 1
    with atomic.directory(target, overwrite=True) as tmp:
        for name in ("a", "b"):
            (tmp / name).write_text(str(version) * 1000)
    atomic.write_text(target.parent / "note.txt", str(version) * 1000)
    print(version, flush=True)
"""


def _is_whole(text: str) -> bool:
    """Whether ``text`` is one version number written 1000 times, as the replacer writes."""
    digits = text[: len(text) // 1000]
    return digits.isdigit() and text == digits * 1000


def test_a_kill_at_any_moment_leaves_old_or_new(tmp_path):
    """SIGKILL a process that replaces a folder and a file in a loop: both stay whole."""
    target = tmp_path / "d"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for delay in (0.05, 0.11, 0.17, 0.23, 0.29):
        proc = subprocess.Popen(
            [sys.executable, "-c", _REPLACER, str(target)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        proc.stdout.readline()  # one full replacement done: the kill lands mid-loop
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()

        a, b = ((target / name).read_text() for name in ("a", "b"))
        assert _is_whole(a) and a == b
        assert _is_whole((tmp_path / "note.txt").read_text())


def test_replacing_without_exchange_still_replaces(tmp_path, monkeypatch):
    """Where renameat2 cannot exchange, two renames replace the folder (with a gap)."""
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    with atomic.directory(tmp_path / "d") as tmp:
        (tmp / "f").write_text("old")
    with atomic.directory(tmp_path / "d", overwrite=True) as tmp:
        (tmp / "f").write_text("new")

    assert (tmp_path / "d" / "f").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
