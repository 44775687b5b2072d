"""User-facing errors.

Anything the user can fix (a missing model, a bad config key, a malformed task
directory) raises :class:`QdLlmError`; the CLI prints its message as one line
and exits non-zero instead of showing a traceback. So does an :class:`OSError`
of the storage (:data:`STORAGE_ERRNOS`: a full disk, a read-only file system,
missing permissions), described by :func:`storage_problem`.
"""

import errno

#: ``errno`` values of storage the user has to fix, not of a bug.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class QdLlmError(Exception):
    """An error whose message alone tells the user what to do."""


def storage_problem(error: OSError) -> str:
    """``error`` as ``"cannot write PATH: REASON"`` (``PATH`` when the error names one)."""
    where = f" {error.filename}" if error.filename else ""
    return f"cannot write{where}: {error.strerror or error}"
