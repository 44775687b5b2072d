"""Small random LoRA adapters and dense references shared by the operator tests."""

import torch

from qd_llm.models.lora import LoraFactors

SHAPES = {"layers.0.q_proj": (24, 16), "layers.0.o_proj": (16, 24), "layers.1.up_proj": (24, 24)}


def random_adapter(seed: int, rank: int) -> dict[str, LoraFactors]:
    g = torch.Generator().manual_seed(seed)
    return {
        name: LoraFactors(A=torch.randn(rank, n, generator=g), B=torch.randn(m, rank, generator=g))
        for name, (m, n) in SHAPES.items()
    }


def dense(adapter) -> dict[str, torch.Tensor]:
    return {name: f.B.double() @ f.A.double() for name, f in adapter.items()}


def best_rank(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    U, S, Vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    return (U[:, :rank] * S[:rank]) @ Vh[:rank]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    error = (actual.double() - expected.double()).norm() / expected.double().norm().clamp_min(1e-30)
    assert error <= rtol, f"relative Frobenius error {error:.3g} > {rtol}"
