"""The operators on full-weight genomes, as task vectors ``δ = θ − θ_base``.

A full-weight genome is handled through its task vector
(:func:`~qd_llm.models.full_weights.task_vector`), one tensor at a time:
parents come in as streams of ``(parameter name, tensor)`` pairs (or mappings)
and the child goes out as a stream, so merging never holds a second full copy
of a model — only one tensor of each parent at a time. Each operator's
``apply_tensor`` (the same registry as the LoRA form) does the math;
:func:`breed_full` breeds a full-weight child in a genome store.

:func:`extract_lora` turns a 2-D task vector into LoRA factors (randomized or
exact truncated SVD), so a full fine-tune can join a LoRA-level population
(:func:`extract_lora_from_checkpoint`).
"""

from collections.abc import Iterable, Iterator, Sequence
from itertools import zip_longest
from pathlib import Path

import torch

from qd_llm.errors import QdLlmError
from qd_llm.models.full_weights import (
    Checkpoint,
    NamedTensors,
    checkpoint_linear_shapes,
    checkpoint_tensors,
    named_tensor_pairs,
    task_vector,
)
from qd_llm.models.genome import GenomeInfo, GenomeStore
from qd_llm.models.lora import DEFAULT_TARGET_MODULES, LoraFactors
from qd_llm.operators.lowrank import randomized_truncate, truncate_dense
from qd_llm.operators.registry import Operator, as_generator, get_operator


def apply_to_task_vectors(
    operator: str | Operator,
    parents: Sequence[NamedTensors],
    *,
    generator: torch.Generator | int | None = None,
    **params,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Applies an operator to task vectors, tensor by tensor.

    All parents must list the same parameters in the same order (as state dicts
    of one architecture do). Math runs in float32; each child tensor comes back
    in its first parent's dtype. Random operators draw from ``generator`` in
    stream order.

    Args:
        operator: Registered operator name or instance.
        parents: One stream (or mapping) of ``(name, δ)`` per parent.
        generator: Generator or seed for random operators.
        **params: The operator's hyper-parameters.

    Yields:
        ``(name, δ_child)`` pairs.

    Raises:
        QdLlmError: Unknown operator or parameter, wrong parent count, or the
            parents' parameter names or shapes disagree.
    """
    operator = get_operator(operator) if isinstance(operator, str) else operator
    operator.check(len(parents), params)
    generator = as_generator(generator)
    missing = object()
    for items in zip_longest(*(named_tensor_pairs(p) for p in parents), fillvalue=missing):
        if any(item is missing for item in items):
            raise QdLlmError("task-vector parents have different numbers of parameters")
        names = {name for name, _ in items}
        shapes = {tuple(tensor.shape) for _, tensor in items}
        if len(names) != 1 or len(shapes) != 1:
            raise QdLlmError(f"task-vector parents disagree on parameter {sorted(names)[0]}")
        tensors = [tensor.to(torch.float32) for _, tensor in items]
        child = operator.apply_tensor(tensors, generator=generator, **params)
        yield items[0][0], child.to(items[0][1].dtype)


def extract_lora(task_vector_2d: torch.Tensor, rank: int, *, exact: bool = False) -> LoraFactors:
    """Rank-``rank`` LoRA factors of a 2-D task vector (truncated SVD).

    Args:
        task_vector_2d: ``θ − θ_base`` of one linear layer, shape ``(out, in)``.
        rank: LoRA rank.
        exact: Use the exact float64 SVD (:func:`~qd_llm.operators.lowrank.truncate_dense`,
            the best rank-``rank`` approximation up to
            :data:`~qd_llm.operators.lowrank.EXACT_SVD_MAX_DIM`) instead of the
            randomized one (:func:`~qd_llm.operators.lowrank.randomized_truncate`,
            tens of times faster, Frobenius error within ~1 % of the optimum).

    Returns:
        float32 factors ``B`` ``(out, rank)`` and ``A`` ``(rank, in)``.
    """
    if task_vector_2d.ndim != 2:
        raise QdLlmError(f"can only extract LoRA from a 2-D tensor; got {task_vector_2d.ndim}-D")
    truncate = truncate_dense if exact else randomized_truncate
    return truncate(task_vector_2d, rank).to(torch.float32)


def extract_lora_from_checkpoint(
    folder: str | Path,
    *,
    base_folder: str | Path,
    rank: int,
    target_modules: Iterable[str] | None = None,
    exact: bool = False,
) -> dict[str, LoraFactors]:
    """LoRA factors approximating a full checkpoint's update of each linear projection.

    Each targeted 2-D weight's task vector ``θ − θ_base`` is truncated to rank
    ``rank`` by SVD (:func:`extract_lora`):
    randomized by default (SmolLM2's 210 projections in seconds, Frobenius
    error within ~1 % of the optimum), exact on request.
    Module names are those of :func:`qd_llm.models.lora.linear_shapes`
    (``model.layers.0.self_attn.q_proj``), so the result can be stored with
    :meth:`~qd_llm.models.genome.GenomeStore.save` and loaded by PEFT.
    Embeddings and norms are not projections and are skipped.

    Args:
        folder: The fine-tuned checkpoint.
        base_folder: The base model checkpoint it was tuned from.
        rank: LoRA rank of every layer.
        target_modules: Leaf module names to extract; default the attention
            and MLP projections (:data:`~qd_llm.models.lora.DEFAULT_TARGET_MODULES`).
        exact: Use the exact float64 SVD (the best rank-``rank`` factors, tens
            of times slower).

    Returns:
        ``{module: factors}`` with ``B`` ``(out, rank)`` and ``A`` ``(rank, in)``, float32.

    Raises:
        QdLlmError: No targeted projection is in the checkpoint, or it does not
            match the base.
    """
    modules = checkpoint_linear_shapes(folder, target_modules or DEFAULT_TARGET_MODULES)
    checkpoint = Checkpoint(folder)
    names = [f"{module}.weight" for module in sorted(modules)]
    deltas = task_vector(((name, checkpoint[name]) for name in names), Checkpoint(base_folder))
    return {
        name.removesuffix(".weight"): extract_lora(delta, rank, exact=exact)
        for name, delta in deltas
    }


def breed_full(
    store: GenomeStore,
    operator: str,
    parent_ids: Sequence[str],
    *,
    generator: int,
    generation: int = 0,
    **params,
) -> GenomeInfo:
    """Breeds a full-weight child from full-weight parents as task vectors.

    Streams ``δ_i = θ_i − θ_base`` of every parent through the operator
    (:func:`apply_to_task_vectors`) and
    stores ``θ_base + δ_child``, one tensor of each parent at a time.

    Args:
        store: The store holding the parents; the child is saved into it.
        operator: Registered operator name (``linear``, ``ties``...).
        parent_ids: Full-weight parent genomes, in the operator's order.
        generator: Seed of the operator's random draws; recorded as
            ``params["seed"]`` like the LoRA loop does.
        generation: The loop generation the child is born in.
        **params: The operator's hyper-parameters.

    Raises:
        QdLlmError: A parent is not a full-weight genome, the seed is not an
            int, or the operator rejects its parameters.
    """
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise QdLlmError(f"breed_full needs an int seed as generator, got {generator!r}")
    for parent in parent_ids:
        if not store.is_full(parent):
            raise QdLlmError(
                f"genome {parent} is a LoRA genome; breed_full needs full-weight parents "
                f"(store it with merge_adapter first)"
            )
    base = Checkpoint(store.base_folder)
    deltas = [task_vector(checkpoint_tensors(store.path(p)), base) for p in parent_ids]
    child = apply_to_task_vectors(operator, deltas, generator=generator, **params)
    return store.save_full(
        ((name, base[name] + delta) for name, delta in child),
        parents=parent_ids,
        operator=operator,
        params={**params, "seed": generator},
        generation=generation,
    )
