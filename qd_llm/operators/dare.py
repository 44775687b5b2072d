"""DARE (Yu et al., 2024): drop and rescale, then combine."""

from collections.abc import Sequence

import torch

from qd_llm.errors import QdLlmError
from qd_llm.operators.linear import weighted_sum
from qd_llm.operators.params import BUILTIN_SIGNATURES
from qd_llm.operators.registry import ElementwiseOperator, parent_weights, register_operator
from qd_llm.operators.ties import disjoint_mean

COMBINE_METHODS = ("linear", "ties")


@register_operator("dare")
class Dare(ElementwiseOperator):
    """DARE: drop each entry of each update with probability ``p`` and rescale
    the survivors by ``1 / (1 − p)`` (so each update is unchanged in
    expectation), then combine:

        δ̃_i = ΔW_i ⊙ m_i / (1 − p),  m_i ~ Bernoulli(1 − p) entrywise,
        linear: ΔW = Σ_i w_i δ̃_i;   ties: ΔW = disjoint_mean(δ̃_i, w_i)
        (sign election + mean of agreeing entries, as in TIES without trimming).

    Masks are drawn from the generator parent by parent (float32
    ``torch.rand(shape) ≥ p`` whatever the compute dtype, so the LoRA and
    task-vector forms draw the same masks).
    Elementwise on ``ΔW``, so dense per layer: on LoRA parents the child is the
    best rank-``r`` approximation of this dense result.

    Parameters:
        weights: One weight per parent; default ``1/k`` each.
        drop_prob: Drop probability ``p`` in ``[0, 1)``; default 0.5.
        combine: ``"linear"`` (default) or ``"ties"``.
    """

    signature = BUILTIN_SIGNATURES["dare"]

    def apply_tensor(
        self,
        tensors: list[torch.Tensor],
        *,
        generator: torch.Generator,
        weights: Sequence[float] | None = None,
        drop_prob: float = 0.5,
        combine: str = "linear",
    ) -> torch.Tensor:
        if not 0.0 <= drop_prob < 1.0:
            raise QdLlmError(f"DARE drop_prob must be in [0, 1); got {drop_prob}")
        if combine not in COMBINE_METHODS:
            raise QdLlmError(f"DARE combine must be one of {COMBINE_METHODS}; got '{combine}'")
        weights = parent_weights(weights, len(tensors))
        rescaled = [
            t * (torch.rand(t.shape, generator=generator) >= drop_prob) / (1.0 - drop_prob)
            for t in tensors
        ]
        if combine == "ties":
            return disjoint_mean(rescaled, weights)
        return weighted_sum(rescaled, weights)
