"""Merge and mutation operators on LoRA updates ``ΔW = B @ A`` and on task vectors.

Operators are looked up by name (:func:`get_operator`, :func:`operator_names`);
the built-in ones are ``linear``, ``ties``, ``dare``, ``slerp``, ``svd_mutation``
and ``gaussian``, declared with their typed parameters in :mod:`qd_llm.operators.params`
(torch-free: a config is checked against them without importing torch). This
package's names, and the operators' classes, are imported on first use. An operator applies to
LoRA parents (``Operator.__call__``) and, tensor by tensor, to full-weight
task vectors (:func:`apply_to_task_vectors`, :func:`breed_full`).

This package sits above :mod:`qd_llm.models` (it reads LoRA factors and
checkpoints and saves children into a :class:`~qd_llm.models.genome.GenomeStore`);
the store never imports it.
"""

from qd_llm._lazy import lazy_exports

_EXPORTS = {
    "ElementwiseOperator": "qd_llm.operators.registry",
    "Operator": "qd_llm.operators.registry",
    "as_generator": "qd_llm.operators.registry",
    "get_operator": "qd_llm.operators.registry",
    "operator_names": "qd_llm.operators.registry",
    "register_operator": "qd_llm.operators.registry",
    "OPERATORS": "qd_llm.operators.params",
    "OperatorSignature": "qd_llm.operators.params",
    "Param": "qd_llm.operators.params",
    "apply_to_task_vectors": "qd_llm.operators.task_vectors",
    "breed_full": "qd_llm.operators.task_vectors",
    "extract_lora": "qd_llm.operators.task_vectors",
    "extract_lora_from_checkpoint": "qd_llm.operators.task_vectors",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
