"""Genomes and their weights: the lowest layer, below every operator and backend.

A genome is a LoRA adapter (:class:`LoraFactors` per module, stored as a PEFT
adapter folder) or a full checkpoint of the base model, kept in a
content-addressed :class:`GenomeStore`. This package reads and writes weights
and resolves the built-in models; it never imports operators, inference or
tasks (see the ``[tool.importlinter]`` contracts in ``pyproject.toml``).
Names are imported on first use, so ``import qd_llm.models`` does not load torch.
"""

from qd_llm._lazy import lazy_exports

_EXPORTS = {
    # LoRA factors.
    "DEFAULT_TARGET_MODULES": "qd_llm.models.lora",
    "LoraFactors": "qd_llm.models.lora",
    "linear_shapes": "qd_llm.models.lora",
    "max_rank": "qd_llm.models.lora",
    "pad_rank": "qd_llm.models.lora",
    "random_weights": "qd_llm.models.lora",
    # Genome folders and the store.
    "GenomeInfo": "qd_llm.models.genome",
    "GenomeStore": "qd_llm.models.genome",
    "load_adapter_weights": "qd_llm.models.genome",
    "merged_lora_tensors": "qd_llm.models.genome",
    "is_full_checkpoint": "qd_llm.models.forms",
    # Full-weight checkpoints, streamed tensor by tensor.
    "Checkpoint": "qd_llm.models.full_weights",
    "NamedTensors": "qd_llm.models.full_weights",
    "checkpoint_linear_shapes": "qd_llm.models.full_weights",
    "checkpoint_tensors": "qd_llm.models.full_weights",
    "content_hash": "qd_llm.models.full_weights",
    "task_vector": "qd_llm.models.full_weights",
    "write_checkpoint": "qd_llm.models.full_weights",
    # The built-in base model and embedder.
    "DEFAULT_BASE_MODEL": "qd_llm.models.resolve",
    "DEFAULT_EMBEDDER": "qd_llm.models.resolve",
    "hub_id": "qd_llm.models.resolve",
    "resolve_base_model": "qd_llm.models.resolve",
    "resolve_embedder": "qd_llm.models.resolve",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
