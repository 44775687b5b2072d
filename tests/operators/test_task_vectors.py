import pytest
import torch

from qd_llm.errors import QdLlmError
from qd_llm.models.full_weights import task_vector
from qd_llm.operators import apply_to_task_vectors, extract_lora, get_operator

from ._adapters import assert_close, best_rank


def _task_vectors(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "q.weight": torch.randn(24, 16, generator=g),
        "norm.weight": torch.randn(16, generator=g),
        "o.weight": torch.randn(16, 24, generator=g),
    }


def test_linear_on_task_vectors_is_the_weighted_sum():
    parents = [_task_vectors(0), _task_vectors(1)]
    child = dict(apply_to_task_vectors("linear", parents, weights=[2.0, -1.0]))
    assert list(child) == list(parents[0])
    for name, tensor in child.items():
        assert_close(tensor, 2.0 * parents[0][name] - parents[1][name])


def test_streams_tensor_by_tensor():
    pulled = []

    def stream(seed):
        for name, tensor in _task_vectors(seed).items():
            pulled.append((seed, name))
            yield name, tensor

    child = apply_to_task_vectors("ties", [stream(0), stream(1)], density=0.5)
    first_name, _ = next(child)
    assert first_name == "q.weight"
    assert pulled == [(0, "q.weight"), (1, "q.weight")]


def test_lora_and_task_vector_forms_agree():
    """The LoRA form of an elementwise operator is the rank-r truncation of its dense form."""
    g = torch.Generator().manual_seed(0)
    from qd_llm.models.lora import LoraFactors

    parents = [
        {"q": LoraFactors(A=torch.randn(3, 16, generator=g), B=torch.randn(24, 3, generator=g))}
        for _ in range(2)
    ]
    lora_child = get_operator("dare")(parents, rank=4, generator=9, drop_prob=0.4)
    dense_parents = [{"q": p["q"].delta()} for p in parents]
    dense_child = dict(apply_to_task_vectors("dare", dense_parents, generator=9, drop_prob=0.4))
    assert_close(lora_child["q"].delta(), best_rank(dense_child["q"], 4), rtol=1e-5)


def test_svd_mutation_passes_non_matrices_through_and_keeps_dtype():
    parent = {k: v.to(torch.bfloat16) for k, v in _task_vectors(0).items()}
    child = dict(apply_to_task_vectors("svd_mutation", [parent], generator=1, scale=0.3))
    assert all(t.dtype == torch.bfloat16 for t in child.values())
    assert torch.equal(child["norm.weight"], parent["norm.weight"])
    assert not torch.equal(child["q.weight"], parent["q.weight"])
    # Singular vectors kept: the mutated matrix stays in the parent's row space.
    U, _, _ = torch.linalg.svd(parent["q.weight"].float(), full_matrices=False)
    mutated = child["q.weight"].float()
    assert_close(U @ (U.T @ mutated), mutated, rtol=1e-2)  # bfloat16 output


def test_mismatched_parents_are_rejected():
    first, second = _task_vectors(0), _task_vectors(1)
    second["q.weight"] = torch.zeros(3, 3)
    with pytest.raises(QdLlmError, match=r"disagree on parameter q\.weight"):
        list(apply_to_task_vectors("linear", [first, second]))
    with pytest.raises(QdLlmError, match="different numbers of parameters"):
        list(apply_to_task_vectors("linear", [first, {"q.weight": first["q.weight"]}]))


def test_task_vector_is_finetuned_minus_base():
    base, finetuned = _task_vectors(0), _task_vectors(1)
    delta = dict(task_vector(finetuned, base))
    assert torch.equal(delta["q.weight"], finetuned["q.weight"] - base["q.weight"])
    with pytest.raises(QdLlmError, match="missing from the base"):
        list(task_vector({"extra": torch.zeros(2)}, base))


def test_extract_lora_is_the_best_rank_r_approximation():
    matrix = _task_vectors(0)["q.weight"]
    factors = extract_lora(matrix, rank=5, exact=True)
    assert factors.rank == 5 and factors.A.dtype == torch.float32
    assert_close(factors.delta(), best_rank(matrix, 5))
    # The default, randomized, is near-optimal in Frobenius error (within 1 %).
    fast = extract_lora(matrix, rank=5)
    assert fast.rank == 5 and fast.A.dtype == torch.float32
    optimum = (matrix.double() - best_rank(matrix, 5)).norm()
    assert (matrix.double() - fast.delta().double()).norm() <= 1.01 * optimum
    with pytest.raises(QdLlmError, match="2-D"):
        extract_lora(torch.zeros(4), rank=2)
