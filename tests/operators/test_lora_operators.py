"""Every LoRA operator against a dense-ΔW reference on small random adapters."""

import math

import pytest
import torch

from qd_llm.operators import get_operator, operator_names

from ._adapters import SHAPES, assert_close, best_rank, dense, random_adapter

# Parameters that make each operator do real work; pyribs-style parametrisation.
OPERATOR_CASES = {
    "linear": (3, {"weights": [0.5, -0.2, 1.0]}),
    "ties": (3, {"density": 0.4}),
    "dare": (2, {"drop_prob": 0.3}),
    "slerp": (2, {"t": 0.3}),
    "svd_mutation": (1, {"scale": 0.2}),
    "gaussian": (1, {"scale": 0.05}),
}


def test_every_registered_operator_has_a_case():
    assert set(OPERATOR_CASES) == set(operator_names())


@pytest.mark.parametrize("name", sorted(OPERATOR_CASES))
def test_child_has_exact_rank_float32_and_every_module(name):
    num_parents, params = OPERATOR_CASES[name]
    parents = [random_adapter(i, rank=2 + i) for i in range(num_parents)]
    child = get_operator(name)(parents, rank=5, generator=0, **params)
    assert set(child) == set(SHAPES)
    for module, factors in child.items():
        assert factors.rank == 5
        assert factors.shape == SHAPES[module]
        assert factors.A.dtype == factors.B.dtype == torch.float32
        assert torch.isfinite(factors.delta()).all()


@pytest.mark.parametrize("name", sorted(OPERATOR_CASES))
def test_same_seed_same_child(name):
    num_parents, params = OPERATOR_CASES[name]
    parents = [random_adapter(i, rank=3) for i in range(num_parents)]
    operator = get_operator(name)
    first = operator(parents, rank=4, generator=7, **params)
    second = operator(parents, rank=4, generator=torch.Generator().manual_seed(7), **params)
    for module in first:
        assert torch.equal(first[module].A, second[module].A)
        assert torch.equal(first[module].B, second[module].B)


@pytest.mark.parametrize("name", ["dare", "svd_mutation", "gaussian"])
def test_random_operators_depend_on_the_seed(name):
    num_parents, params = OPERATOR_CASES[name]
    parents = [random_adapter(i, rank=3) for i in range(num_parents)]
    first = get_operator(name)(parents, rank=4, generator=1, **params)
    second = get_operator(name)(parents, rank=4, generator=2, **params)
    assert any(not torch.allclose(first[m].delta(), second[m].delta()) for m in first)


def test_linear_is_exact_when_ranks_fit():
    parents = [random_adapter(0, 2), random_adapter(1, 3), random_adapter(2, 4)]
    weights = [0.5, -1.5, 2.0]
    child = get_operator("linear")(parents, rank=9, weights=weights)
    for module in SHAPES:
        expected = sum(w * dense(p)[module] for w, p in zip(weights, parents, strict=True))
        assert_close(child[module].delta(), expected)


def test_linear_default_is_the_mean():
    parents = [random_adapter(0, 2), random_adapter(1, 2)]
    child = get_operator("linear")(parents, rank=4)
    for module in SHAPES:
        expected = (dense(parents[0])[module] + dense(parents[1])[module]) / 2
        assert_close(child[module].delta(), expected)


def test_linear_truncates_to_the_best_rank_r_approximation():
    parents = [random_adapter(0, 4), random_adapter(1, 4), random_adapter(2, 4)]
    child = get_operator("linear")(parents, rank=3, weights=[1.0, 1.0, 1.0])
    for module in SHAPES:
        expected = sum(dense(p)[module] for p in parents)
        assert_close(child[module].delta(), best_rank(expected, 3))


def test_missing_module_counts_as_zero_update():
    first, second = random_adapter(0, 2), random_adapter(1, 2)
    missing = "layers.1.up_proj"
    del second[missing]
    child = get_operator("linear")([first, second], rank=4, weights=[1.0, 1.0])
    assert_close(child[missing].delta(), dense(first)[missing])


def _dense_slerp(v0, v1, t):
    cosine = (v0 * v1).sum() / (v0.norm() * v1.norm())
    theta = math.acos(cosine.item())
    return (math.sin((1 - t) * theta) * v0 + math.sin(t * theta) * v1) / math.sin(theta)


def test_slerp_endpoints_and_midpoint_match_dense():
    parents = [random_adapter(0, 2), random_adapter(1, 3)]
    slerp = get_operator("slerp")
    at_0, at_1, mid = (slerp(parents, rank=5, t=t) for t in (0.0, 1.0, 0.3))
    for module in SHAPES:
        assert_close(at_0[module].delta(), dense(parents[0])[module])
        assert_close(at_1[module].delta(), dense(parents[1])[module])
        expected = _dense_slerp(dense(parents[0])[module], dense(parents[1])[module], 0.3)
        assert_close(mid[module].delta(), expected)


def test_slerp_of_parallel_updates_is_linear():
    parent = random_adapter(0, 2)
    doubled = {m: type(f)(A=f.A, B=2 * f.B) for m, f in parent.items()}
    child = get_operator("slerp")([parent, doubled], rank=2, t=0.5)
    for module in SHAPES:
        assert_close(child[module].delta(), 1.5 * dense(parent)[module])


def _dense_ties(deltas, weights, density):
    trimmed = []
    for d in deltas:
        keep = math.ceil(density * d.numel())
        threshold = d.abs().flatten().sort(descending=True).values[keep - 1]
        trimmed.append(torch.where(d.abs() >= threshold, d, torch.zeros_like(d)))
    out = torch.zeros_like(deltas[0])
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            values = [w * t[i, j] for w, t in zip(weights, trimmed, strict=True)]
            sign = torch.sign(sum(values))
            agreeing = [
                (w, v)
                for w, v in zip(weights, values, strict=True)
                if v != 0 and torch.sign(v) == sign
            ]
            if agreeing:
                out[i, j] = sum(v for _, v in agreeing) / sum(w for w, _ in agreeing)
    return out


def test_ties_matches_dense_reference_truncated_to_rank():
    parents = [random_adapter(0, 3), random_adapter(1, 2), random_adapter(2, 4)]
    weights = [1.0, 0.5, 2.0]
    child = get_operator("ties")(parents, rank=4, weights=weights, density=0.3)
    for module in SHAPES:
        reference = _dense_ties([dense(p)[module] for p in parents], weights, 0.3)
        assert_close(child[module].delta(), best_rank(reference, 4))


@pytest.mark.parametrize("combine", ["linear", "ties"])
def test_dare_matches_dense_reference_truncated_to_rank(combine):
    parents = [random_adapter(0, 3), random_adapter(1, 2)]
    weights = [0.6, 0.4]
    child = get_operator("dare")(
        parents, rank=4, generator=11, weights=weights, drop_prob=0.3, combine=combine
    )
    g = torch.Generator().manual_seed(11)
    for module in sorted(SHAPES):  # operators visit modules in sorted order
        rescaled = []
        for p in parents:
            d = dense(p)[module]
            keep = torch.rand(d.shape, generator=g) >= 0.3
            rescaled.append(torch.where(keep, d / 0.7, torch.zeros_like(d)))
        if combine == "linear":
            reference = weights[0] * rescaled[0] + weights[1] * rescaled[1]
        else:
            reference = _dense_ties(rescaled, weights, density=1.0)
        assert_close(child[module].delta(), best_rank(reference, 4))


def test_dare_without_dropping_is_linear():
    parents = [random_adapter(0, 2), random_adapter(1, 2)]
    child = get_operator("dare")(parents, rank=4, drop_prob=0.0, weights=[1.0, 1.0])
    linear = get_operator("linear")(parents, rank=4, weights=[1.0, 1.0])
    for module in SHAPES:
        assert_close(child[module].delta(), linear[module].delta())


def test_svd_mutation_perturbs_only_singular_values():
    parent = random_adapter(0, 3)
    child = get_operator("svd_mutation")([parent], rank=3, generator=5, scale=0.2)
    g = torch.Generator().manual_seed(5)
    for module in sorted(SHAPES):
        U, S, Vh = torch.linalg.svd(dense(parent)[module], full_matrices=False)
        z = torch.randn(3, generator=g).double()
        expected = (S[:3] * (1 + 0.2 * z)).abs().sort(descending=True).values
        mutated = child[module].delta().double()
        assert torch.allclose(torch.linalg.svdvals(mutated)[:3], expected, rtol=1e-5)
        # Same subspaces: projecting onto the parent's singular vectors loses nothing.
        assert_close(U[:, :3] @ (U[:, :3].T @ mutated @ Vh[:3].T) @ Vh[:3], mutated)


@pytest.mark.parametrize("name", ["svd_mutation", "gaussian"])
def test_zero_noise_mutation_is_identity(name):
    parent = random_adapter(0, 3)
    child = get_operator(name)([parent], rank=4, generator=0, scale=0.0)
    for module in SHAPES:
        assert_close(child[module].delta(), dense(parent)[module])


def test_gaussian_mutation_size_follows_scale():
    parent = random_adapter(0, 4)
    child = get_operator("gaussian")([parent], rank=4, generator=3, scale=0.01)
    for module in SHAPES:
        change = (child[module].delta().double() - dense(parent)[module]).norm()
        relative = (change / dense(parent)[module].norm()).item()
        assert 1e-3 < relative < 0.1
