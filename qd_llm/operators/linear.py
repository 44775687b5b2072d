"""Linear merge (task arithmetic) of LoRA updates and task vectors."""

from collections.abc import Sequence

import torch

from qd_llm.models.lora import LoraFactors
from qd_llm.operators.lowrank import combine
from qd_llm.operators.params import BUILTIN_SIGNATURES
from qd_llm.operators.registry import Operator, parent_weights, register_operator


def weighted_sum(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``Σ_i w_i t_i`` of equally shaped tensors."""
    return sum(w * t for w, t in zip(weights, tensors, strict=True))


@register_operator("linear")
class Linear(Operator):
    """Weighted sum of updates, ``ΔW = Σ_i w_i ΔW_i`` (task arithmetic).

    On LoRA parents the sum is exact in factored form: ``B_cat = [w_1 B_1 | … |
    w_k B_k]``, ``A_cat = [A_1; …; A_k]`` has rank ``Σ r_i`` and is re-factored
    by QR + a small SVD (:func:`~qd_llm.operators.lowrank.combine`) — exact when
    ``Σ r_i ≤ r``, the optimal rank-``r`` truncation otherwise, ``O((m + n) r²)``
    per layer with no ``m × n`` matrix.

    Parameters:
        weights: One weight per parent; default ``1/k`` each (the mean).
            Weights are used as given (not normalised), so ``[1, 1]`` adds
            two task vectors and ``[1, -1]`` subtracts one.
    """

    signature = BUILTIN_SIGNATURES["linear"]

    def apply_layer(
        self,
        layers: list[LoraFactors],
        *,
        rank: int,
        generator: torch.Generator,
        weights: Sequence[float] | None = None,
    ) -> LoraFactors:
        return combine(list(zip(parent_weights(weights, len(layers)), layers, strict=True)), rank)

    def apply_tensor(
        self,
        tensors: list[torch.Tensor],
        *,
        generator: torch.Generator,
        weights: Sequence[float] | None = None,
    ) -> torch.Tensor:
        return weighted_sum(tensors, parent_weights(weights, len(tensors)))
