"""Merge and mutation operators on LoRA updates ``ΔW = B @ A`` and on task vectors.

Operators are looked up by name (:func:`get_operator`, :func:`operator_names`);
importing this package registers the built-in ones: ``linear``, ``ties``,
``dare``, ``slerp``, ``svd_mutation`` and ``gaussian``. An operator applies to
LoRA parents (``Operator.__call__``) and, tensor by tensor, to full-weight
task vectors (:func:`apply_to_task_vectors`, :func:`breed_full`).

This package sits above :mod:`qd_llm.models` (it reads LoRA factors and
checkpoints and saves children into a :class:`~qd_llm.models.genome.GenomeStore`);
the store never imports it.
"""

# Imported for their side effect: each module registers its operators.
from qd_llm.operators import dare, linear, mutation, slerp, ties  # noqa: F401
from qd_llm.operators.registry import (
    ElementwiseOperator,
    Operator,
    as_generator,
    get_operator,
    operator_names,
    register_operator,
)
from qd_llm.operators.task_vectors import (
    apply_to_task_vectors,
    breed_full,
    extract_lora,
    extract_lora_from_checkpoint,
)

__all__ = [
    "ElementwiseOperator",
    "Operator",
    "apply_to_task_vectors",
    "as_generator",
    "breed_full",
    "extract_lora",
    "extract_lora_from_checkpoint",
    "get_operator",
    "operator_names",
    "register_operator",
]
