"""Taskforce selection on hand-made skill matrices with known optima."""

import numpy as np
import pytest

from qd_llm.errors import QdLlmError
from qd_llm.evaluation.taskforce import (
    coverage,
    coverage_curve,
    exhaustive_taskforce,
    fitness_taskforce,
    greedy_taskforce,
    random_coverage,
    unique_contributions,
)


def _matrix(rows: list[set[int]], tasks: int) -> np.ndarray:
    return np.array([[t in row for t in range(tasks)] for row in rows], dtype=bool)


# Greedy's classic trap: the big set A lures it, but B and C together cover all six tasks.
TRAP = _matrix([{2, 3, 4, 5}, {0, 2, 3}, {1, 4, 5}], tasks=6)


def test_coverage_counts_tasks_solved_by_any_member():
    assert coverage(TRAP, [0]) == pytest.approx(4 / 6)
    assert coverage(TRAP, [1, 2]) == 1.0
    assert coverage(TRAP, []) == 0.0


def test_greedy_is_suboptimal_where_exhaustive_is_optimal():
    greedy = greedy_taskforce(TRAP, 2)
    assert greedy[0] == 0
    assert coverage(TRAP, greedy) == pytest.approx(5 / 6)
    best = exhaustive_taskforce(TRAP, 2)
    assert sorted(best) == [1, 2]
    assert coverage(TRAP, best) == 1.0
    assert coverage_curve(TRAP, 3, method="exhaustive") == pytest.approx([4 / 6, 1.0, 1.0])


def test_greedy_ties_prefer_fitter_then_lower_index():
    skills = _matrix([{0}, {1}, {1, 2}, {0}], tasks=4)
    # Rows 1.. gain: row 2 gains 2 and is picked first; then rows 0 and 3 tie on gain 1
    # and fitness 1: the lower index wins.
    assert greedy_taskforce(skills, 2) == [2, 0]


def test_duplicates_add_nothing_and_are_picked_last():
    skills = _matrix([{0, 1}, {0, 1}, {2}], tasks=3)
    order = greedy_taskforce(skills, 3)
    assert order == [0, 2, 1]
    assert unique_contributions(skills, order).tolist() == [0, 1, 0]
    assert coverage_curve(skills, 3, method="greedy") == pytest.approx([2 / 3, 1.0, 1.0])


def test_fitness_order_and_ties():
    skills = _matrix([{0}, {0, 1, 2}, {1, 2}, {3}], tasks=4)
    assert fitness_taskforce(skills, 4) == [1, 2, 0, 3]


def test_empty_pools_and_task_sets():
    no_genomes = np.zeros((0, 5), dtype=bool)
    assert greedy_taskforce(no_genomes, 3) == []
    assert exhaustive_taskforce(no_genomes, 2) == []
    assert coverage_curve(no_genomes, 2, method="fitness") == [0.0, 0.0]
    no_tasks = np.zeros((3, 0), dtype=bool)
    assert coverage(no_tasks, [0, 1]) == 0.0
    assert len(greedy_taskforce(no_tasks, 2)) == 2


def test_random_coverage_is_the_mean_over_draws():
    # Two disjoint halves: a random single member always covers exactly half.
    skills = _matrix([{0, 1}, {2, 3}], tasks=4)
    assert random_coverage(skills, 1, draws=20, seed=3) == 0.5
    # A pool where only one of four members solves anything: expected coverage@1 = 1/4.
    lone = _matrix([{0}, set(), set(), set()], tasks=1)
    assert random_coverage(lone, 1, draws=4000, seed=0) == pytest.approx(0.25, abs=0.03)


def test_exhaustive_refuses_huge_searches_and_curve_marks_them():
    skills = np.eye(30, dtype=bool)
    with pytest.raises(QdLlmError, match="exceeds"):
        exhaustive_taskforce(skills, 10, max_subsets=1000)
    curve = coverage_curve(skills, 3, method="exhaustive", max_subsets=1000)
    assert curve[0] == pytest.approx(1 / 30)
    assert curve[2] is None


def test_unknown_method_and_bad_shape_raise():
    with pytest.raises(QdLlmError, match="unknown taskforce method"):
        coverage_curve(TRAP, 2, method="oracle")
    with pytest.raises(QdLlmError, match="2-D"):
        coverage(np.zeros(3, dtype=bool), [0])
