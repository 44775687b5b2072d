"""TIES merging (Yadav et al., 2023): trim, elect sign, disjoint mean."""

from collections.abc import Sequence

import torch

from qd_llm.errors import QdLlmError
from qd_llm.operators.params import BUILTIN_SIGNATURES
from qd_llm.operators.registry import ElementwiseOperator, parent_weights, register_operator


def trim_to_density(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keeps the ``ceil(density · numel)`` largest-magnitude entries, zeroes the rest."""
    if not 0.0 < density <= 1.0:
        raise QdLlmError(f"TIES density must be in (0, 1]; got {density}")
    flat = delta.flatten()
    keep = max(1, int(torch.tensor(density * flat.numel()).ceil().item()))
    if keep >= flat.numel():
        return delta
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[flat.abs().topk(keep).indices] = True
    return (flat * mask).view_as(delta)


def disjoint_mean(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Sign election by summed mass, then the weighted mean of the agreeing entries.

    ``γ = sign(Σ_i w_i δ_i)``; entry-wise, parents whose ``w_i δ_i`` is nonzero
    and has sign ``γ`` agree, and the result is ``Σ_agree w_i δ_i / Σ_agree w_i``
    (0 where no parent agrees).
    """
    weighted = torch.stack([w * d for w, d in zip(weights, deltas, strict=True)])
    elected = weighted.sum(dim=0).sign()
    agree = (weighted.sign() == elected) & (weighted != 0)
    weight_column = torch.tensor(weights, dtype=weighted.dtype).view(-1, *[1] * elected.ndim)
    divisor = (weight_column * agree).sum(dim=0)
    # Entries where nobody agrees have a zero numerator; any nonzero divisor keeps them 0.
    divisor = torch.where(divisor.abs() < 1e-12, torch.ones_like(divisor), divisor)
    return (weighted * agree).sum(dim=0) / divisor


@register_operator("ties")
class Ties(ElementwiseOperator):
    """TIES: per update, keep the top ``density`` fraction of entries by magnitude;
    elect each entry's sign by the sign of the weighted sum of the trimmed
    updates; average (weighted by ``w_i``) only the entries that agree with it:

        δ̂_i = trim(ΔW_i, density),  γ = sign(Σ_i w_i δ̂_i),
        ΔW = Σ_i w_i δ̂_i [sign(w_i δ̂_i) = γ] / Σ_i w_i [sign(w_i δ̂_i) = γ].

    Elementwise on ``ΔW``, so dense per layer: on LoRA parents the child is the
    best rank-``r`` approximation of this dense result.

    Parameters:
        weights: One weight per parent; default equal. Only their ratios matter
            (the mean is normalised by the agreeing weights).
        density: Fraction of entries kept per update, in ``(0, 1]``; default 0.5.
    """

    signature = BUILTIN_SIGNATURES["ties"]

    def apply_tensor(
        self,
        tensors: list[torch.Tensor],
        *,
        generator: torch.Generator,
        weights: Sequence[float] | None = None,
        density: float = 0.5,
    ) -> torch.Tensor:
        trimmed = [trim_to_density(t, density) for t in tensors]
        return disjoint_mean(trimmed, parent_weights(weights, len(tensors)))
