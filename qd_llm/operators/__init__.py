"""Merge and mutation operators on LoRA updates ``ΔW = B @ A`` and on task vectors.

Operators are looked up by name (:func:`get_operator`, :func:`operator_names`);
importing this package registers the built-in ones: ``linear``, ``ties``,
``dare``, ``slerp``, ``svd_mutation`` and ``gaussian``.
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
from qd_llm.operators.task_vectors import apply_to_task_vectors, extract_lora, task_vector

__all__ = [
    "ElementwiseOperator",
    "Operator",
    "apply_to_task_vectors",
    "as_generator",
    "extract_lora",
    "get_operator",
    "operator_names",
    "register_operator",
    "task_vector",
]
