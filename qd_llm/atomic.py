"""Atomic file and directory writes.

Every file a run writes goes through here, so a process killed at any moment
leaves either the old content or the new one, never a torn file.
"""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from qd_llm import faults


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes 0600 files; give the final file ordinary permissions.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        faults.maybe_kill(f"atomic.before_rename:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj, *, indent: int | None = 2) -> None:
    """Writes ``obj`` as JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


@contextlib.contextmanager
def directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Builds a directory atomically.

    Yields a temporary sibling directory to fill; on success it is renamed to
    ``path``. If ``path`` already exists it is kept (content-addressed writers
    lose nothing) unless ``overwrite`` is set.

    Args:
        path: The final directory.
        overwrite: Replace an existing directory at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    # mkdtemp makes 0700 folders; others (e.g. the sandbox's unprivileged task user)
    # need ordinary permissions to read what lands here.
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        for child in tmp.rglob("*"):
            if child.is_file():
                with open(child, "rb") as f:
                    os.fsync(f.fileno())
        if path.exists():
            if not overwrite:
                shutil.rmtree(tmp)
                return
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Cleans up after writes into ``folder`` that a kill cut short (not recursive).

    Temporary files and directories (``.NAME.*.tmp``) are deleted: their
    writes never happened. A directory replacement stopped between its two
    renames leaves ``.NAME.old`` and no ``NAME``; the old directory is put
    back. Only call this while nothing else writes into ``folder``.

    Args:
        folder: A folder written through this module (missing is fine).

    Returns:
        The paths removed or restored, sorted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    cleaned = sorted([*folder.glob(".*.tmp"), *folder.glob(".*.old")])
    for leftover in cleaned:
        if leftover.suffix == ".old":
            final = leftover.with_name(leftover.name[1 : -len(".old")])
            if not final.exists():
                os.replace(leftover, final)
                continue
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    if cleaned:
        _fsync_dir(folder)
    return cleaned
