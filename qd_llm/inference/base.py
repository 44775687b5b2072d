"""The interface every inference backend implements.

A backend turns many (genome, prompt) requests into completions in as few
batched passes as it can. Genomes are LoRA adapter folders or full
checkpoints of the base architecture (see :mod:`qd_llm.models.genome`);
``adapter=None`` means the bare base model.
"""

import abc
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from qd_llm.models.forms import is_full_checkpoint


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerationConfig:
    """How to decode.

    Attributes:
        max_new_tokens: Tokens to generate at most per request.
        temperature: 0 means greedy decoding.
        top_p: Nucleus sampling mass (sampling only).
        stop: Strings that end a completion; the stop string is not returned.
        seed: Seed for sampling; greedy decoding ignores it.
        system_prompt: Optional system message placed before each prompt.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0
    system_prompt: str | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """One prompt for one genome.

    Attributes:
        prompt: The user message (the chat template is applied by the backend).
        genome_id: A stable name for the genome (its content hash); None for base.
        adapter: The genome's folder (a PEFT adapter, or a full checkpoint
            where the backend supports them); None for the base model.
    """

    prompt: str
    genome_id: str | None = None
    adapter: Path | None = None

    def __post_init__(self):
        if (self.genome_id is None) != (self.adapter is None):
            raise ValueError("genome_id and adapter must be given together")


class Backend(abc.ABC):
    """Generates completions for batches of mixed-genome requests."""

    @abc.abstractmethod
    def generate(
        self, requests: Sequence[GenerationRequest], config: GenerationConfig
    ) -> list[str]:
        """Returns one completion per request, in request order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases engines, processes and memory."""


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cuts ``text`` at the earliest stop string (the stop string is dropped)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def group_by_weights(requests: Sequence[GenerationRequest]) -> list[tuple[Path | None, list[int]]]:
    """Request indices by the weights they need, for backends that swap full weights.

    Returns:
        ``(None, rows)`` first for base-model and LoRA requests (one shared
        batch), then ``(checkpoint folder, rows)`` for each full-weight genome,
        in folder order. Groups are never empty.
    """
    groups: dict[Path | None, list[int]] = {}
    for i, r in enumerate(requests):
        full = r.adapter is not None and is_full_checkpoint(r.adapter)
        groups.setdefault(Path(r.adapter) if full else None, []).append(i)
    return sorted(groups.items(), key=lambda item: (item[0] is not None, str(item[0])))
