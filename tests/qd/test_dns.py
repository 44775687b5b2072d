import math

import numpy as np
import pytest

from qd_llm.errors import QdLlmError
from qd_llm.qd.dns import difficulty_weights, dns_scores, dns_select


def _skills(*rows: str) -> np.ndarray:
    return np.array([[c == "1" for c in row] for row in rows])


WORKED = _skills("111000", "110100", "000011", "111000", "100000")  # A, B, C, D, E


def naive_scores(skills, k, fitness=None):
    """Straight from the definition, loops only."""
    n, t = skills.shape
    fitness = skills.mean(axis=1) if fitness is None else fitness
    w = [sum(1 for m in range(n) if not skills[m, i]) / n for i in range(t)]
    total = sum(w)
    scores = []
    for m in range(n):
        fitter = [
            j
            for j in range(n)
            if j != m and (fitness[j] > fitness[m] or (fitness[j] == fitness[m] and j < m))
        ]
        if not fitter:
            scores.append(math.inf)
            continue
        d = []
        for j in fitter:
            mass = sum(w[i] for i in range(t) if skills[m, i] and not skills[j, i])
            d.append(100 * mass / total if total else 0.0)
        nearest = sorted(d)[:k]
        scores.append(sum(nearest) / len(nearest))
    return np.array(scores)


def test_worked_check_from_the_design():
    assert np.allclose(difficulty_weights(WORKED), [0.2, 0.4, 0.6, 0.8, 0.8, 0.8])
    scores = dns_scores(WORKED, k=3)
    assert scores[0] == math.inf
    assert np.allclose(scores[1:], [200 / 9, 400 / 9, 25 / 3, 0.0])
    assert dns_select(WORKED, k=3, capacity=3).tolist() == [0, 2, 1]  # A, C, B


def test_equal_fitness_is_broken_by_list_order():
    twins = _skills("1100", "1100", "0011")
    scores = dns_scores(twins, k=3)
    # Same fitness: the first is unbeaten, the copies are dominated by earlier ones.
    assert scores[0] == math.inf
    assert scores[1] == 0.0
    assert scores[2] > 0.0 and math.isfinite(scores[2])
    assert dns_select(twins, k=3, capacity=2).tolist() == [0, 2]


def test_equal_scores_prefer_fitness_then_index():
    # Every later row is a subset of the first, so all three score 0; among them the
    # fitter one (index 1 or 2) goes first, and of those two the earlier index.
    skills = _skills("1110", "1100", "1100", "1000")
    scores = dns_scores(skills, k=3)
    assert scores[1] == scores[2] == scores[3] == 0.0
    assert dns_select(skills, k=3, capacity=4).tolist() == [0, 1, 2, 3]


def test_given_fitness_overrides_row_means():
    fitness = np.array([0.1, 0.2, 0.9, 0.3, 0.0])
    scores = dns_scores(WORKED, k=3, fitness=fitness)
    assert scores[2] == math.inf and scores[0] != math.inf
    assert np.allclose(scores, naive_scores(WORKED, 3, fitness))


def test_no_weight_means_zero_distance():
    everyone_solves_all = np.ones((4, 3), dtype=bool)
    scores = dns_scores(everyone_solves_all, k=2)
    assert scores[0] == math.inf
    assert np.all(scores[1:] == 0.0)


def test_k_larger_than_fitter_set_averages_what_there_is():
    skills = _skills("111", "110", "001")
    # fitter(2) = {0, 1}: d(2,0) = 0, d(2,1) = 100·w(2)/Σw
    w = difficulty_weights(skills)
    expected = (0.0 + 100 * w[2] / w.sum()) / 2
    assert dns_scores(skills, k=10)[2] == pytest.approx(expected)


def test_capacity_at_least_population_keeps_everyone_in_rank_order():
    kept = dns_select(WORKED, k=3, capacity=50)
    assert sorted(kept.tolist()) == [0, 1, 2, 3, 4]
    assert kept.tolist() == [0, 2, 1, 3, 4]


def test_empty_and_invalid_inputs():
    assert dns_scores(np.zeros((0, 4), dtype=bool), k=3).shape == (0,)
    assert dns_select(WORKED, k=3, capacity=0).tolist() == []
    with pytest.raises(QdLlmError, match="k must be at least 1"):
        dns_scores(WORKED, k=0)
    with pytest.raises(QdLlmError, match="fitness has shape"):
        dns_scores(WORKED, k=3, fitness=np.zeros(2))
    with pytest.raises(QdLlmError, match="matrix"):
        dns_scores(np.zeros(5), k=3)


@pytest.mark.parametrize("seed", range(12))
def test_matches_naive_loop_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n, t = rng.integers(1, 14), rng.integers(1, 10)
    skills = rng.random((n, t)) < rng.uniform(0.1, 0.9)
    k = int(rng.integers(1, 5))
    # Coarse fitness values make ties common, which exercises the tie rule.
    fitness = None if seed % 2 else rng.integers(0, 3, size=n) / 2
    expected = naive_scores(skills, k, fitness)
    assert np.allclose(dns_scores(skills, k=k, fitness=fitness), expected)
    capacity = int(rng.integers(0, n + 2))
    f = skills.mean(axis=1) if fitness is None else fitness
    reference = sorted(range(n), key=lambda i: (-expected[i], -f[i], i))[:capacity]
    assert dns_select(skills, k=k, capacity=capacity, fitness=fitness).tolist() == reference
