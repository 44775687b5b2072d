"""Inference backends: many (genome, prompt) requests to completions in few batched passes.

Every backend implements :class:`Backend` (``generate(requests, config)``):
:class:`HFBackend` (transformers + PEFT in process), :class:`VLLMBackend` (a
vLLM engine, optional) and :class:`OpenAIBackend` (an OpenAI-compatible server,
no torch). :func:`make_backend` builds one by name. Names are imported on first
use, so choosing the OpenAI backend never imports torch or vLLM.
"""

from qd_llm._lazy import lazy_exports

_EXPORTS = {
    "Backend": "qd_llm.inference.base",
    "GenerationConfig": "qd_llm.inference.base",
    "GenerationRequest": "qd_llm.inference.base",
    "BACKEND_NAMES": "qd_llm.inference.registry",
    "make_backend": "qd_llm.inference.registry",
    "HFBackend": "qd_llm.inference.hf",
    "chat_prompt": "qd_llm.inference.hf",
    "load_base_model": "qd_llm.inference.hf",
    "VLLMBackend": "qd_llm.inference.vllm_backend",
    "OpenAIBackend": "qd_llm.inference.openai_backend",
    "OpenAIChatClient": "qd_llm.inference.openai_client",
    "ChatCompletionServer": "qd_llm.inference.server",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
