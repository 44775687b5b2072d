"""BIG-bench tasks by name, from the ``bigbench`` sdist on the package index.

``bigbench:object_counting`` or ``bigbench:arithmetic/1_digit_addition`` names
``bigbench/benchmark_tasks/<name>/task.json`` of the ``bigbench`` 1.0.0 source
distribution. Nothing is committed or shipped:

1. the sdist (358 MB) is taken from ``$QD_LLM_BIGBENCH_SDIST`` (a local copy,
   for offline machines) or downloaded once from the package index pip uses
   (``$PIP_INDEX_URL``, else PyPI's simple index) into the cache, and its
   sha256 is checked against the pinned digest before anything is read;
2. the one ``task.json`` asked for is copied out of the archive into the cache
   (a streaming pass, tens of seconds); later uses read the cached file.

Nothing in the archive is executed or unpacked except that JSON member: the
member is matched by exact name and must be a regular file.
"""

import hashlib
import html.parser
import os
import re
import tarfile
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from qd_llm import atomic
from qd_llm.errors import QdLlmError
from qd_llm.paths import cache_dir

BIGBENCH_PREFIX = "bigbench:"
BIGBENCH_VERSION = "1.0.0"
SDIST_NAME = f"bigbench-{BIGBENCH_VERSION}.tar.gz"
# The digest PyPI lists for bigbench-1.0.0.tar.gz; a download that differs is refused.
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
DEFAULT_INDEX_URL = "https://pypi.org/simple"
_TASK_NAME = re.compile(r"[a-z0-9_]+(/[a-z0-9_]+)?")
_CHUNK = 1 << 20


def bigbench_cache() -> Path:
    """The cache folder of the sdist and the task files taken from it."""
    return cache_dir() / "bigbench" / BIGBENCH_VERSION


def bigbench_task_file(name: str, *, index_url: str | None = None) -> Path:
    """The cached ``task.json`` of BIG-bench task ``name``, fetched on first use.

    Args:
        name: A task folder under ``benchmark_tasks/``: ``object_counting``,
            or ``arithmetic/1_digit_addition`` for a subtask.
        index_url: A PEP 503 simple index (default ``$PIP_INDEX_URL``, else PyPI).

    Returns:
        The path of the cached ``task.json``.

    Raises:
        QdLlmError: ``name`` is malformed or not in the sdist, the download
            failed, or the archive's digest is not the pinned one.
    """
    if not _TASK_NAME.fullmatch(name):
        raise QdLlmError(
            f"BIG-bench task name {name!r}: expected a benchmark_tasks folder such as "
            "'object_counting' or 'arithmetic/1_digit_addition'"
        )
    target = bigbench_cache() / "benchmark_tasks" / name / "task.json"
    if target.is_file():
        return target
    sdist = _local_sdist() or _cached_sdist(index_url)
    member = f"bigbench-{BIGBENCH_VERSION}/bigbench/benchmark_tasks/{name}/task.json"
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            for info in archive:
                if info.name == member and info.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    atomic.write_bytes(target, archive.extractfile(info).read())
                    return target
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise QdLlmError(f"{sdist} is not a readable .tar.gz sdist: {e}") from None
    raise QdLlmError(f"BIG-bench {BIGBENCH_VERSION} has no task {name!r} (no {member})")


def _local_sdist() -> Path | None:
    """``$QD_LLM_BIGBENCH_SDIST``: an sdist the user already has (not re-hashed)."""
    given = os.environ.get("QD_LLM_BIGBENCH_SDIST")
    if not given:
        return None
    path = Path(given).expanduser()
    if not path.is_file():
        raise QdLlmError(f"QD_LLM_BIGBENCH_SDIST={given} is not a file")
    return path


def _cached_sdist(index_url: str | None) -> Path:
    path = bigbench_cache() / SDIST_NAME
    if not path.is_file():
        index = index_url or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL
        download_sdist(index, SDIST_NAME, sha256=SDIST_SHA256, dest=path)
    return path


def download_sdist(index_url: str, filename: str, *, sha256: str, dest: Path) -> Path:
    """Downloads ``filename`` from a PEP 503 simple index and checks its digest.

    The file lands at ``dest`` only once its sha256 matches; a partial or
    mismatching download leaves nothing behind.

    Args:
        index_url: The simple index root; the project page is
            ``<index_url>/<project>/`` with project the part of ``filename``
            before its first ``-``.
        filename: The distribution file to fetch, e.g. ``bigbench-1.0.0.tar.gz``.
        sha256: The expected hex digest.
        dest: Where the verified file goes.

    Returns:
        ``dest``.

    Raises:
        QdLlmError: The index has no such file, the transfer failed, or the
            digest differs.
    """
    project = filename.split("-", 1)[0]
    page = f"{index_url.rstrip('/')}/{project}/"
    try:
        with urllib.request.urlopen(page, timeout=60) as response:
            links = _links(response.read().decode("utf-8", "replace"))
    except OSError as e:
        raise QdLlmError(f"cannot read the package index {page}: {e}") from None
    url = next(
        (urllib.parse.urljoin(page, href) for href in links
         if urllib.parse.urlsplit(href).path.rsplit("/", 1)[-1] == filename),
        None,
    )  # fmt: skip
    if url is None:
        raise QdLlmError(f"the package index {page} lists no {filename}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    try:
        from tqdm.auto import tqdm

        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=filename) as bar:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise QdLlmError(f"downloading {url} failed: {e}") from None
    if digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise QdLlmError(
            f"{url}: sha256 {digest.hexdigest()} is not the expected {sha256}; not used"
        )
    os.replace(partial, dest)  # same folder: the verified file appears whole
    return dest


class _LinkParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.extend(value for key, value in attrs if key == "href" and value)


def _links(page: str) -> list[str]:
    parser = _LinkParser()
    parser.feed(page)
    return parser.hrefs
