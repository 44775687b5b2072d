"""Mutations of one update: noise on its singular values, or plain Gaussian noise."""

import torch

from qd_llm.models.lora import LoraFactors
from qd_llm.operators.lowrank import COMPUTE_DTYPE, combine, factored_svd, from_svd
from qd_llm.operators.params import BUILTIN_SIGNATURES
from qd_llm.operators.registry import Operator, register_operator


def perturb_singular_values(
    U: torch.Tensor,
    S: torch.Tensor,
    Vh: torch.Tensor,
    *,
    scale: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``σ_i ← σ_i · (1 + scale · z_i)``, ``z ~ N(0, I)``, as a valid SVD again.

    A factor ``1 + scale · z_i`` below zero flips that direction: its left
    singular vector changes sign and ``|σ_i|`` is kept. The result is re-sorted
    so singular values stay descending.
    """
    noise = torch.randn(S.shape, generator=generator).to(S.dtype)
    perturbed = S * (1.0 + scale * noise)
    U = U * torch.where(perturbed < 0, -1.0, 1.0).to(U.dtype)
    order = perturbed.abs().argsort(descending=True)
    return U[:, order], perturbed.abs()[order], Vh[order]


def _relative_noise(x: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """``x + scale · rms(x) · Z`` with ``Z ~ N(0, I)`` (zero noise for an all-zero ``x``).

    Noise is drawn in float32 whatever the dtype of ``x`` (here and in
    :func:`perturb_singular_values`) so a seed means the same draws everywhere.
    """
    rms = x.pow(2).mean().sqrt()
    return x + scale * rms * torch.randn(x.shape, generator=generator).to(x.dtype)


@register_operator("svd_mutation")
class SvdMutation(Operator):
    """The paper's SVD mutation applied to the update: with ``ΔW = U Σ Vᵀ``,

        σ_i ← σ_i · (1 + ε z_i),  z_i ~ N(0, 1)   (multiplicative),

    singular vectors unchanged (a negative factor flips a direction). Relative
    noise keeps the mutation's size proportional to each direction's strength
    and leaves the update's rank unchanged. On LoRA parents the SVD is the
    factored one (QR + small SVD, no dense matrix); on task vectors it is a
    dense SVD of each 2-D tensor, and other tensors (biases, norms) pass through.

    Parameters:
        scale: Noise level ``ε``; default 0.1.
    """

    signature = BUILTIN_SIGNATURES["svd_mutation"]

    def apply_layer(
        self,
        layers: list[LoraFactors],
        *,
        rank: int,
        generator: torch.Generator,
        scale: float = 0.1,
    ) -> LoraFactors:
        (layer,) = layers
        svd = factored_svd(layer.B, layer.A)
        return from_svd(*perturb_singular_values(*svd, scale=scale, generator=generator), rank)

    def apply_tensor(
        self, tensors: list[torch.Tensor], *, generator: torch.Generator, scale: float = 0.1
    ) -> torch.Tensor:
        (tensor,) = tensors
        if tensor.ndim != 2:
            return tensor
        svd = torch.linalg.svd(tensor, full_matrices=False)
        U, S, Vh = perturb_singular_values(*svd, scale=scale, generator=generator)
        return (U * S[None, :]) @ Vh


@register_operator("gaussian")
class GaussianMutation(Operator):
    """Plain Gaussian noise, relative to the size of what it perturbs.

    On LoRA parents the update is first re-factored to the target rank in
    balanced SVD form (``B = U√Σ``, ``A = √Σ Vᵀ``, exact if its rank ≤ r), then
    each factor gets noise relative to its root-mean-square entry:

        A ← A + ε · rms(A) · Z_A,   B ← B + ε · rms(B) · Z_B,

    so the child keeps rank r (``ΔW`` changes by ``ε(Z_B A + B Z_A) + ε² Z_B Z_A``
    up to the rms scales). On task vectors: ``δ ← δ + ε · rms(δ) · Z``.

    Parameters:
        scale: Noise level ``ε``; default 0.01.
    """

    signature = BUILTIN_SIGNATURES["gaussian"]

    def apply_layer(
        self,
        layers: list[LoraFactors],
        *,
        rank: int,
        generator: torch.Generator,
        scale: float = 0.01,
    ) -> LoraFactors:
        balanced = combine([(1.0, layers[0])], rank)
        return LoraFactors(
            A=_relative_noise(balanced.A.to(COMPUTE_DTYPE), scale, generator),
            B=_relative_noise(balanced.B.to(COMPUTE_DTYPE), scale, generator),
        )

    def apply_tensor(
        self, tensors: list[torch.Tensor], *, generator: torch.Generator, scale: float = 0.01
    ) -> torch.Tensor:
        return _relative_noise(tensors[0], scale, generator)
