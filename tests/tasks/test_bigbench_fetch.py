"""``bigbench:NAME``: one task.json out of the BIG-bench sdist, fetched over a real
HTTP index (a local one serving a small sdist of the same layout), checked
against a digest and never unpacked beyond that member."""

import functools
import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest

from qd_llm.errors import QdLlmError
from qd_llm.tasks.importers import bigbench, read_source

ROOT = f"bigbench-{bigbench.BIGBENCH_VERSION}"
TOY_TASK = {
    "name": "toy_counting",
    "description": "Count the objects.",
    "keywords": ["counting"],
    "examples": [
        {"input": "I have a pen and two cups. How many objects?", "target": ["three", "3"]},
        {"input": "I have an apple. How many objects?", "target": ["one", "1"]},
    ],
}


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """A bigbench-shaped sdist: the toy task, a subtask, a setup.py and a hostile path."""
    path = tmp_path_factory.mktemp("sdist") / bigbench.SDIST_NAME
    tasks = f"{ROOT}/bigbench/benchmark_tasks"
    with tarfile.open(path, "w:gz") as archive:
        _add(archive, f"{ROOT}/setup.py", b"raise SystemExit('setup.py must never run')\n")
        _add(archive, f"{tasks}/toy_counting/task.json", json.dumps(TOY_TASK).encode())
        _add(archive, f"{tasks}/toy_counting/readme/notes.md", b"# toy\n")
        _add(archive, f"{tasks}/arith/one_digit/task.json", json.dumps(TOY_TASK).encode())
        _add(archive, "../escaped/task.json", b"{}")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("QD_LLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("QD_LLM_BIGBENCH_SDIST", raising=False)
    return tmp_path / "cache"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def index(sdist, tmp_path):
    """A PEP 503 simple index on 127.0.0.1 listing the sdist with a relative link."""
    root = tmp_path / "index"
    project = root / "simple" / "bigbench"
    project.mkdir(parents=True)
    (root / "files").mkdir()
    (root / "files" / sdist.name).write_bytes(sdist.read_bytes())
    (project / "index.html").write_text(
        f'<html><body><a href="../../files/{sdist.name}#sha256=ignored">{sdist.name}</a>'
        '<a href="../../files/other-0.1.tar.gz">other</a></body></html>'
    )
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()
    server.server_close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_task_is_downloaded_checked_and_only_its_json_is_taken(sdist, index, cache, monkeypatch):
    monkeypatch.setattr(bigbench, "SDIST_SHA256", _sha256(sdist))

    path = bigbench.bigbench_task_file("toy_counting", index_url=index)

    assert json.loads(path.read_text()) == TOY_TASK
    cached = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())
    version = bigbench.BIGBENCH_VERSION
    assert cached == [
        f"bigbench/{version}/benchmark_tasks/toy_counting/task.json",
        f"bigbench/{version}/{bigbench.SDIST_NAME}",
    ]
    assert not (cache.parent / "escaped").exists()
    # A subtask comes from the cached sdist, without the index.
    subtask = bigbench.bigbench_task_file("arith/one_digit", index_url="http://127.0.0.1:9/none")
    assert json.loads(subtask.read_text()) == TOY_TASK


def test_a_download_with_another_digest_is_refused_and_leaves_nothing(index, cache):
    # The pinned digest is the real bigbench sdist's; the toy one differs.
    with pytest.raises(QdLlmError, match=r"sha256 \w+ is not the expected"):
        bigbench.bigbench_task_file("toy_counting", index_url=index)
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_an_index_without_the_file_or_unreachable_is_one_clear_error(tmp_path, cache):
    dest = tmp_path / "out.tar.gz"
    with pytest.raises(QdLlmError, match="cannot read the package index"):
        bigbench.download_sdist("http://127.0.0.1:9/simple", "bigbench-1.0.0.tar.gz",
                                sha256="0" * 64, dest=dest)  # fmt: skip
    assert not dest.exists()


def test_the_index_must_list_the_file(index, tmp_path):
    with pytest.raises(QdLlmError, match=r"lists no bigbench-9\.9\.tar\.gz"):
        bigbench.download_sdist(index, "bigbench-9.9.tar.gz", sha256="0" * 64, dest=tmp_path / "x")


def test_a_local_sdist_is_read_by_name_through_read_source(sdist, cache, monkeypatch):
    monkeypatch.setenv("QD_LLM_BIGBENCH_SDIST", str(sdist))

    fmt, questions = read_source("bigbench:toy_counting")

    assert fmt == "bigbench"
    ids = [q.task_id for q in questions]
    assert ids == ["bigbench_toy_counting_0001", "bigbench_toy_counting_0002"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../escaped", "expected a benchmark_tasks folder"),
        ("Toy Counting", "expected a benchmark_tasks folder"),
        ("toy_counting/readme", "has no task 'toy_counting/readme'"),
        ("no_such_task", "has no task 'no_such_task'"),
    ],
)
def test_names_outside_the_sdist_are_refused(name, message, sdist, cache, monkeypatch):
    monkeypatch.setenv("QD_LLM_BIGBENCH_SDIST", str(sdist))
    with pytest.raises(QdLlmError, match=message):
        bigbench.bigbench_task_file(name)


@pytest.mark.parametrize("content", [b"not a tarball", b"\x1f\x8b\x08\x00truncated gzip"])
def test_a_local_sdist_that_is_not_a_tarball_is_one_clear_error(
    content, tmp_path, cache, monkeypatch
):
    bad = tmp_path / bigbench.SDIST_NAME
    bad.write_bytes(content)
    monkeypatch.setenv("QD_LLM_BIGBENCH_SDIST", str(bad))
    with pytest.raises(QdLlmError, match=r"is not a readable \.tar\.gz sdist"):
        bigbench.bigbench_task_file("toy_counting")
    assert not (cache / "bigbench").exists() or not any((cache / "bigbench").rglob("task.json"))
