"""Test-only fault injection: ``kill -9`` at a named point of a run.

Code that writes a run directory calls :func:`maybe_kill` at the moments a
crash would be most awkward (a child half stored, a checkpoint written but not
yet renamed...). Normally that call does nothing. When the environment
variable ``QD_LLM_KILL_AT`` is ``"PHASE:COUNT"``, the COUNT-th time (1-based)
this process reaches ``PHASE`` it sends itself ``SIGKILL``: no ``finally``
block, no atexit handler, nothing flushed — the same as a power cut for the
run directory. Tests use it to prove that ``qd-llm resume`` continues any
such run exactly (see tests/test_kill_resume.py for the points and what each
proves). The phase may itself contain ``:``; the count is after the last one.

The variable is read once, at import; unset, :func:`maybe_kill` returns at
once. It is not a user setting: never set it outside tests.

This module imports nothing from qd_llm, so every layer may call it.
"""

import os
import signal

KILL_AT_ENV = "QD_LLM_KILL_AT"


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    phase, _, count = value.rpartition(":")
    if not phase or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{KILL_AT_ENV} must be PHASE:COUNT with COUNT >= 1, got {value!r}")
    return phase, int(count)


_target = _parse(os.environ.get(KILL_AT_ENV))
_reached = 0


def maybe_kill(phase: str) -> None:
    """Marks that this process reached ``phase``; SIGKILLs it at the chosen count.

    Args:
        phase: The point's name, e.g. ``"loop.metrics_appended"``.
    """
    global _reached
    if _target is None or phase != _target[0]:
        return
    _reached += 1
    if _reached == _target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
