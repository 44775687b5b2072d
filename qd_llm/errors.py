"""User-facing errors.

Anything the user can fix (a missing model, a bad config key, a malformed task
directory) raises :class:`QdLlmError`; the CLI prints its message as one line
and exits non-zero instead of showing a traceback.
"""


class QdLlmError(Exception):
    """An error whose message alone tells the user what to do."""
