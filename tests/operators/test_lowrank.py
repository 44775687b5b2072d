import pytest
import torch

from qd_llm.models.lora import LoraFactors
from qd_llm.operators import lowrank

from ._adapters import assert_close, best_rank


def _factors(seed, m=24, n=16, r=4):
    g = torch.Generator().manual_seed(seed)
    return LoraFactors(A=torch.randn(r, n, generator=g), B=torch.randn(m, r, generator=g))


def test_factored_svd_matches_dense_svd():
    f = _factors(0)
    U, S, Vh = lowrank.factored_svd(f.B, f.A)
    assert U.shape == (24, 4) and S.shape == (4,) and Vh.shape == (4, 16)
    dense_S = torch.linalg.svdvals(f.B.double() @ f.A.double())
    assert torch.allclose(S, dense_S[:4], rtol=1e-9)
    assert_close((U * S) @ Vh, f.delta())
    assert torch.allclose(U.T @ U, torch.eye(4, dtype=U.dtype), atol=1e-10)


def test_from_svd_pads_to_exact_rank_and_balances_factors():
    f = _factors(1, r=2)
    out = lowrank.from_svd(*lowrank.factored_svd(f.B, f.A), rank=6)
    assert out.rank == 6
    assert_close(out.delta(), f.delta())
    assert torch.allclose(out.A.norm(dim=1), out.B.norm(dim=0), rtol=1e-9)


def test_combine_is_exact_below_rank_and_optimal_above():
    f1, f2 = _factors(2, r=3), _factors(3, r=2)
    expected = 0.7 * f1.delta().double() - 1.3 * f2.delta().double()
    assert_close(lowrank.combine([(0.7, f1), (-1.3, f2)], rank=5).delta(), expected)
    assert_close(lowrank.combine([(0.7, f1), (-1.3, f2)], rank=2).delta(), best_rank(expected, 2))


def test_frobenius_inner_matches_dense():
    f1, f2 = _factors(4, r=3), _factors(5, r=2)
    expected = ((f1.B.double() @ f1.A.double()) * (f2.B.double() @ f2.A.double())).sum()
    assert torch.allclose(lowrank.frobenius_inner(f1, f2), expected, rtol=1e-9)


def test_truncate_dense_randomized_branch_is_close_to_exact():
    g = torch.Generator().manual_seed(6)
    # Decaying spectrum, as real updates have, so the randomized SVD converges.
    U, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    S = 0.5 ** torch.arange(30, dtype=torch.float64)
    matrix = (U[:, :30] * S) @ V.T
    exact = lowrank.truncate_dense(matrix, 4)
    randomized = lowrank.truncate_dense(matrix, 4, exact_max_dim=0)
    assert_close(exact.delta(), best_rank(matrix, 4), rtol=1e-10)
    assert_close(randomized.delta(), best_rank(matrix, 4), rtol=1e-6)
    # Fixed private seed: the randomized branch is reproducible.
    again = lowrank.truncate_dense(matrix, 4, exact_max_dim=0)
    assert torch.equal(randomized.A, again.A)


def _orthonormal_bases(rows, cols, seed):
    """Random ``U`` ``(rows, k)`` and ``V`` ``(cols, k)`` with orthonormal columns, ``k = min``."""
    g = torch.Generator().manual_seed(seed)
    k = min(rows, cols)
    U, _ = torch.linalg.qr(torch.randn(rows, k, generator=g))
    V, _ = torch.linalg.qr(torch.randn(cols, k, generator=g))
    return U, V


@pytest.mark.parametrize("shape", [(1536, 576), (192, 576)], ids=["mlp", "k_proj"])
def test_randomized_truncate_is_within_one_percent_of_the_optimum(shape):
    rank = 8
    U, V = _orthonormal_bases(*shape, seed=0)
    index = torch.arange(1, min(shape) + 1, dtype=torch.float32)
    spectra = {
        # Slowly decaying: the hardest case for a randomized range finder.
        "power law": index**-0.25,
        # A clear gap after the rank: the truncation itself is well defined.
        "gap": torch.where(index <= rank, 1.0, 0.05) * index**-0.3,
    }
    for name, singular_values in spectra.items():
        # ΔW = U diag(s) Vᵀ: its SVD is known by construction (in float32, which is
        # fast and exact to ~1e-6, far below the tolerances here).
        matrix = ((U * singular_values) @ V.T).double()
        factors = lowrank.randomized_truncate(matrix, rank)
        assert factors.rank == rank
        # Eckart–Young: the best rank-r error is the norm of the dropped singular values.
        optimum = singular_values[rank:].double().norm()
        error = (matrix - factors.delta().double()).norm()
        assert error / optimum <= 1.01, name
        if name == "gap":
            best = (U[:, :rank] * singular_values[:rank]) @ V[:, :rank].T
            assert_close(factors.delta(), best, rtol=1e-3)


def test_randomized_truncate_is_reproducible_and_leaves_the_global_rng_alone():
    matrix = _factors(7, m=60, n=50, r=10).delta()
    state = torch.random.get_rng_state()
    first = lowrank.randomized_truncate(matrix, 4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first.B, lowrank.randomized_truncate(matrix, 4).B)
    assert not torch.equal(first.B, lowrank.randomized_truncate(matrix, 4, seed=1).B)
