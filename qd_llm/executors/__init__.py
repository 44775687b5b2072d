"""Executors: where evaluation and scoring run (``local`` in process, or ``ray``).

The ``ray`` executor (:mod:`qd_llm.executors.ray_executor`) needs the
optional ``ray`` extra (``pip install -e ".[ray]"``); it is imported only when
a run asks for it.
"""

from qd_llm._lazy import lazy_exports

_EXPORTS = {
    "RayBackend": "qd_llm.executors.ray_executor",
    "RaySandboxPool": "qd_llm.executors.ray_executor",
    "init_ray": "qd_llm.executors.ray_executor",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
