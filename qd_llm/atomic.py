"""Atomic file and directory writes.

Every file a run writes goes through here, so a process killed at any moment
leaves either the old content or the new one, never a torn file.

Permissions: temporary files and folders are created with ``os.open(..., 0o666)``
and ``os.mkdir(..., 0o777)``, so the kernel applies the process umask itself; the
umask is never read by flipping it (``os.umask`` changes it for every thread).
"""

import contextlib
import ctypes
import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from qd_llm import faults

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_sibling(path: Path, create: Callable[[Path], object]):
    """Creates a fresh hidden sibling of ``path`` with ``create``; returns (its path, result)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, create(tmp)
        except FileExistsError:
            continue


def _load_renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    path_at = [ctypes.c_int, ctypes.c_char_p]
    function.argtypes = [*path_at, *path_at, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        False when this system or file system cannot exchange (nothing changed).
    """
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    tmp, fd = _create_sibling(path, lambda p: os.open(p, flags, 0o666))
    try:
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
    lose nothing) unless ``overwrite`` is set, in which case the two folders are
    exchanged in one step, so ``path`` is never missing for a reader, and the
    old one is then deleted. Where the system cannot exchange (not Linux, or a
    file system without ``RENAME_EXCHANGE``), the old folder is moved aside
    first and ``path`` is missing for the moment between two renames.

    Args:
        path: The final directory.
        overwrite: Replace an existing directory at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Made with mode 0777 less the umask (mkdtemp would make it 0700): others, e.g.
    # the sandbox's unprivileged task user, need to read what lands here.
    tmp, _ = _create_sibling(path, lambda p: os.mkdir(p, 0o777))
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
            if not _exchange(tmp, path):
                # Named as remove_leftovers() expects: a kill between the two renames
                # leaves ``.NAME.old`` and no ``NAME``, and the old folder is put back.
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                tmp = old
            _fsync_dir(path.parent)
            shutil.rmtree(tmp, ignore_errors=True)  # now the old content
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
