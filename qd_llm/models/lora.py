"""LoRA weights as low-rank updates.

A LoRA layer adds ``ΔW = (α / r) · B · A`` to a frozen weight ``W`` of shape
``(out, in)``. qd_llm keeps the scale folded into ``B`` so that every adapter
it stores is a plain pair with ``ΔW = B @ A`` (saved with ``lora_alpha = r``,
which makes PEFT's scale exactly 1). Operators act on ``ΔW`` through these
factors; see :mod:`qd_llm.operators`.
"""

import dataclasses
from collections.abc import Mapping

import torch


@dataclasses.dataclass(frozen=True)
class LoraFactors:
    """One layer's update ``ΔW = B @ A``.

    Attributes:
        A: Down-projection, shape ``(r, in_features)``.
        B: Up-projection with the LoRA scale folded in, shape ``(out_features, r)``.
    """

    A: torch.Tensor
    B: torch.Tensor

    def __post_init__(self):
        if self.A.ndim != 2 or self.B.ndim != 2 or self.A.shape[0] != self.B.shape[1]:
            raise ValueError(
                f"LoRA factors need A (r, in) and B (out, r); got A {tuple(self.A.shape)}, "
                f"B {tuple(self.B.shape)}"
            )

    @property
    def rank(self) -> int:
        """The LoRA rank ``r`` (rows of ``A``)."""
        return self.A.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """Shape ``(out, in)`` of the dense update."""
        return (self.B.shape[0], self.A.shape[1])

    def delta(self) -> torch.Tensor:
        """The dense update ``B @ A`` (for tests and small layers only)."""
        return self.B @ self.A

    def to(self, dtype: torch.dtype) -> "LoraFactors":
        """Both factors cast to ``dtype``."""
        return LoraFactors(self.A.to(dtype), self.B.to(dtype))


#: Module path (e.g. ``model.layers.0.self_attn.q_proj``) → its update.
LoraWeights = Mapping[str, LoraFactors]


def max_rank(weights: LoraWeights) -> int:
    """The largest rank over the layers of ``weights``."""
    return max(f.rank for f in weights.values())


def pad_rank(factors: LoraFactors, rank: int) -> LoraFactors:
    """Pads factors with zero rows/columns up to ``rank`` (``ΔW`` unchanged)."""
    extra = rank - factors.rank
    if extra < 0:
        raise ValueError(f"cannot pad rank {factors.rank} down to {rank}")
    if extra == 0:
        return factors
    A = torch.cat([factors.A, factors.A.new_zeros(extra, factors.A.shape[1])], dim=0)
    B = torch.cat([factors.B, factors.B.new_zeros(factors.B.shape[0], extra)], dim=1)
    return LoraFactors(A, B)


DEFAULT_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


def linear_shapes(model, target_modules=DEFAULT_TARGET_MODULES) -> dict[str, tuple[int, int]]:
    """``{module path: (out_features, in_features)}`` of ``model``'s targeted linears.

    Works on a model that PEFT has already wrapped in place (a targeted linear
    then holds the original as ``base_layer``).
    """
    targets = set(target_modules)
    shapes = {}
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] not in targets:
            continue
        layer = getattr(module, "base_layer", module)
        if isinstance(layer, torch.nn.Linear):
            shapes[name] = (layer.out_features, layer.in_features)
    return shapes


def random_weights(
    shapes: Mapping[str, tuple[int, int]], *, rank: int, std: float, generator: torch.Generator
) -> dict[str, LoraFactors]:
    """Random factors with ``ΔW`` entries of standard deviation ≈ ``std``.

    Used for benchmarks and tests; each entry of ``B @ A`` is a sum of ``rank``
    products of N(0, s²) variables, so ``s = sqrt(std / sqrt(rank))``.
    """
    s = (std / rank**0.5) ** 0.5
    return {
        name: LoraFactors(
            torch.randn(rank, n_in, generator=generator) * s,
            torch.randn(n_out, rank, generator=generator) * s,
        )
        for name, (n_out, n_in) in sorted(shapes.items())
    }
