"""Low-rank math shared by the LoRA operators.

Everything here works on factored updates ``ΔW = B @ A`` (``B`` of shape
``(m, k)``, ``A`` of shape ``(k, n)``) without forming the ``m × n`` matrix,
except :func:`truncate_dense`, which is for operators that are elementwise on
``ΔW`` and therefore dense by nature.

The core trick (:func:`factored_svd`): with thin QR decompositions
``B = Q_B R_B`` and ``Aᵀ = Q_A R_A``,

    ΔW = Q_B (R_B R_Aᵀ) Q_Aᵀ,

and the SVD of the small ``k × k`` core ``R_B R_Aᵀ = U' Σ V'ᵀ`` gives the SVD
of ``ΔW`` as ``(Q_B U') Σ (Q_A V')ᵀ``. Cost ``O((m + n) k² + k³)``.

Math runs in float64 (cheap at these sizes, and keeps repeated merges over many
generations from drifting); callers cast results to float32.
"""

from collections.abc import Sequence

import torch

from qd_llm.models.lora import LoraFactors, pad_rank

COMPUTE_DTYPE = torch.float64

# Above this smallest dimension a dense truncation uses randomized SVD; a full SVD
# of a 4096 × 4096 matrix takes tens of seconds on a laptop CPU.
EXACT_SVD_MAX_DIM = 2048
# Oversampling and power iterations for torch.svd_lowrank (Halko et al. defaults).
_LOWRANK_OVERSAMPLE = 10
_LOWRANK_NITER = 4
# Defaults of :func:`randomized_truncate`, chosen on SmolLM2's projection shapes: the
# Frobenius error stays within 1 % of the optimum on power-law and noisy spectra
# (tests/operators/test_lowrank.py, ``qd-llm bench extract``).
RANDOMIZED_OVERSAMPLE = 10
RANDOMIZED_POWER_ITERATIONS = 2


def factored_svd(
    B: torch.Tensor, A: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of ``B @ A`` from its factors, never forming the product.

    Args:
        B: Shape ``(m, k)``.
        A: Shape ``(k, n)``.

    Returns:
        ``(U, S, Vh)`` with shapes ``(m, p)``, ``(p,)``, ``(p, n)``,
        ``p = min(m, n, k)``, singular values descending, in float64.
    """
    Q_B, R_B = torch.linalg.qr(B.to(COMPUTE_DTYPE))
    Q_A, R_A = torch.linalg.qr(A.to(COMPUTE_DTYPE).T)
    U_core, S, Vh_core = torch.linalg.svd(R_B @ R_A.T, full_matrices=False)
    return Q_B @ U_core, S, Vh_core @ Q_A.T


def from_svd(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, rank: int) -> LoraFactors:
    """Factors of rank exactly ``rank`` from an SVD, truncated or zero-padded.

    The singular values are split symmetrically (``√σ`` into each factor) so
    both factors have the same scale, which keeps later QRs well conditioned.

    Args:
        U: Left singular vectors ``(m, p)``.
        S: Singular values ``(p,)``, descending.
        Vh: Right singular vectors ``(p, n)``.
        rank: Target rank.
    """
    keep = min(rank, S.shape[0])
    root = S[:keep].clamp_min(0).sqrt()
    factors = LoraFactors(A=root[:, None] * Vh[:keep], B=U[:, :keep] * root[None, :])
    return pad_rank(factors, rank)


def combine(terms: Sequence[tuple[float, LoraFactors]], rank: int) -> LoraFactors:
    """Exact ``Σ w_i B_i A_i`` re-factored to rank ``rank``.

    Concatenates ``B_cat = [w_1 B_1 | … | w_k B_k]`` and ``A_cat = [A_1; …; A_k]``
    (so ``B_cat A_cat = Σ w_i ΔW_i`` exactly, rank ``Σ r_i``) and re-factors
    with :func:`factored_svd`: exact when ``Σ r_i ≤ rank``, otherwise the best
    rank-``rank`` approximation (Eckart–Young).

    Args:
        terms: ``(weight, factors)`` pairs of equal ``(m, n)`` shape.
        rank: Target rank.
    """
    B_cat = torch.cat([w * f.B.to(COMPUTE_DTYPE) for w, f in terms], dim=1)
    A_cat = torch.cat([f.A.to(COMPUTE_DTYPE) for _, f in terms], dim=0)
    return from_svd(*factored_svd(B_cat, A_cat), rank)


def frobenius_inner(first: LoraFactors, second: LoraFactors) -> torch.Tensor:
    """``⟨B_1 A_1, B_2 A_2⟩_F = Σ (B_1ᵀ B_2) ⊙ (A_1 A_2ᵀ)`` in ``O((m + n) r_1 r_2)``."""
    B1, A1 = first.B.to(COMPUTE_DTYPE), first.A.to(COMPUTE_DTYPE)
    B2, A2 = second.B.to(COMPUTE_DTYPE), second.A.to(COMPUTE_DTYPE)
    return ((B1.T @ B2) * (A1 @ A2.T)).sum()


def truncate_dense(
    delta: torch.Tensor, rank: int, *, exact_max_dim: int = EXACT_SVD_MAX_DIM
) -> LoraFactors:
    """Best rank-``rank`` factors of a dense update (truncated SVD).

    Exact (``torch.linalg.svd``) when ``min(m, n) ≤ exact_max_dim``; above it,
    randomized ``torch.svd_lowrank`` (oversampled, 4 power iterations, fixed
    seed), which is close to but not exactly the Eckart–Young optimum.

    Args:
        delta: Dense update ``(m, n)``.
        rank: Target rank.
        exact_max_dim: Largest ``min(m, n)`` that gets the exact SVD.
    """
    delta = delta.to(COMPUTE_DTYPE)
    if min(delta.shape) <= exact_max_dim:
        U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    else:
        q = min(rank + _LOWRANK_OVERSAMPLE, *delta.shape)
        # svd_lowrank draws from the global RNG; a private fixed seed keeps merges
        # reproducible without disturbing anyone else's random stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            U, S, V = torch.svd_lowrank(delta, q=q, niter=_LOWRANK_NITER)
        Vh = V.T
    return from_svd(U, S, Vh, rank)


def randomized_truncate(
    delta: torch.Tensor,
    rank: int,
    *,
    oversample: int = RANDOMIZED_OVERSAMPLE,
    power_iterations: int = RANDOMIZED_POWER_ITERATIONS,
    seed: int = 0,
) -> LoraFactors:
    """Near-best rank-``rank`` factors of a dense update by randomized SVD.

    Halko, Martinsson & Tropp's range finder: ``Q`` spans ``ΔW Ω`` for a
    Gaussian ``Ω`` of ``rank + oversample`` columns, sharpened by
    ``power_iterations`` rounds of ``ΔW ΔWᵀ`` with a QR after every product
    (so float32 does not lose the small directions); the SVD of the small
    ``Qᵀ ΔW`` gives the factors. The big products run in float32 — eight times
    faster than float64 on this machine's CPU — and only the small SVD in
    float64. Unlike :func:`truncate_dense` (which the merge operators use and
    which stays exact) the result is not the Eckart–Young optimum: its
    Frobenius error is within a small factor ``1 + ε`` of it (measured by
    ``qd-llm bench extract``), which is what extracting LoRA from a full
    fine-tune needs.

    Args:
        delta: Dense update ``(m, n)``.
        rank: Target rank.
        oversample: Extra random directions beyond ``rank``.
        power_iterations: Rounds of ``ΔW ΔWᵀ`` applied to the sample.
        seed: Seed of a private generator (the global RNG is untouched).
    """
    delta = delta.to(torch.float32)
    width = min(rank + oversample, *delta.shape)
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(delta.shape[1], width, generator=generator, dtype=delta.dtype)
    basis, _ = torch.linalg.qr(delta @ sample)
    for _ in range(power_iterations):
        co_basis, _ = torch.linalg.qr(delta.T @ basis)
        basis, _ = torch.linalg.qr(delta @ co_basis)
    U_core, S, Vh = torch.linalg.svd((basis.T @ delta).to(COMPUTE_DTYPE), full_matrices=False)
    return from_svd(basis.to(COMPUTE_DTYPE) @ U_core, S, Vh, rank)
