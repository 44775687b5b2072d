"""Which form a genome folder holds, told from its file names alone.

A genome is a PEFT LoRA adapter (``adapter_config.json``) or a full Hugging
Face checkpoint (``config.json`` and no adapter config). Telling them apart
needs neither torch nor safetensors, so inference backends that only talk to a
server (:mod:`qd_llm.inference.openai_backend`) can do it without importing torch.
"""

from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"
CONFIG_FILE = "config.json"


def is_full_checkpoint(folder: str | Path) -> bool:
    """Whether ``folder`` holds full model weights rather than a PEFT adapter."""
    folder = Path(folder)
    return not (folder / ADAPTER_CONFIG).exists() and (folder / CONFIG_FILE).exists()
