"""Spherical linear interpolation between two updates."""

import math

import torch

from qd_llm.errors import QdLlmError
from qd_llm.models.lora import LoraFactors
from qd_llm.operators.linear import weighted_sum
from qd_llm.operators.lowrank import combine, frobenius_inner
from qd_llm.operators.params import BUILTIN_SIGNATURES
from qd_llm.operators.registry import Operator, register_operator

# Above this |cos| the updates are treated as parallel and interpolated linearly
# (sin θ → 0 makes the spherical weights numerically meaningless); mergekit's value.
PARALLEL_COSINE = 0.9995


def slerp_weights(t: float, dot: float, norm_first: float, norm_second: float) -> list[float]:
    """Coefficients ``[s_0, s_1]`` with ``slerp = s_0 ΔW_0 + s_1 ΔW_1``.

    ``θ = arccos(⟨ΔW_0, ΔW_1⟩ / (‖ΔW_0‖ ‖ΔW_1‖))``,
    ``s_0 = sin((1 − t) θ) / sin θ``, ``s_1 = sin(t θ) / sin θ``; linear
    ``[1 − t, t]`` when either update is zero or ``|cos θ| > 0.9995``.
    """
    if not 0.0 <= t <= 1.0:
        raise QdLlmError(f"SLERP t must be in [0, 1]; got {t}")
    if norm_first == 0.0 or norm_second == 0.0:
        return [1.0 - t, t]
    cosine = max(-1.0, min(1.0, dot / (norm_first * norm_second)))
    if abs(cosine) > PARALLEL_COSINE:
        return [1.0 - t, t]
    theta = math.acos(cosine)
    return [math.sin((1.0 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)]


@register_operator("slerp")
class Slerp(Operator):
    """SLERP between two updates, on the flattened ``ΔW`` of each layer:

        θ = arccos(⟨ΔW_0, ΔW_1⟩_F / (‖ΔW_0‖_F ‖ΔW_1‖_F)),
        ΔW = sin((1 − t) θ)/sin θ · ΔW_0 + sin(t θ)/sin θ · ΔW_1,

    linear interpolation when the updates are (anti-)parallel or one is zero.
    The norms and inner product come from the factors
    (``⟨B_0 A_0, B_1 A_1⟩_F = Σ (B_0ᵀ B_1) ⊙ (A_0 A_1ᵀ)``) and the result is a
    linear combination, merged exactly by
    :func:`~qd_llm.operators.lowrank.combine` — no dense matrix. The norms are
    interpolated too (this is slerp of the vectors themselves, as in mergekit,
    not of their directions).

    Parameters:
        t: Interpolation position in ``[0, 1]`` (0: first parent, 1: second); default 0.5.
    """

    signature = BUILTIN_SIGNATURES["slerp"]

    def apply_layer(
        self, layers: list[LoraFactors], *, rank: int, generator: torch.Generator, t: float = 0.5
    ) -> LoraFactors:
        first, second = layers
        dot = frobenius_inner(first, second).item()
        norms = [frobenius_inner(f, f).clamp_min(0).sqrt().item() for f in layers]
        weights = slerp_weights(t, dot, *norms)
        return combine(list(zip(weights, layers, strict=True)), rank)

    def apply_tensor(
        self, tensors: list[torch.Tensor], *, generator: torch.Generator, t: float = 0.5
    ) -> torch.Tensor:
        first, second = tensors
        dot = (first * second).sum().item()
        weights = slerp_weights(t, dot, first.norm().item(), second.norm().item())
        return weighted_sum(tensors, weights)
