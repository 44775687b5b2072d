"""Coverage and taskforce selection on a boolean skill matrix (pure numpy).

A *skill matrix* ``S`` of shape ``(N, T)`` says which of ``N`` genomes solves
which of ``T`` tasks. A *taskforce* is an ordered list of distinct row indices;
its **coverage** is the fraction of tasks solved by at least one member
(0.0 when there are no tasks), and coverage@N is the coverage of the best
taskforce of size N a selection method finds.

Selection methods (each returns at most ``min(n, N)`` members, in the order
they were chosen, so the first ``k`` members are that method's taskforce of
size ``k`` — except :func:`exhaustive_taskforce`, which solves each size
separately):

* :func:`greedy_taskforce` — repeatedly adds the member that solves the most
  tasks not yet covered (ties: higher fitness, then lower index). Greedy max
  coverage is within ``1 - 1/e`` of the optimum, and can be strictly worse.
* :func:`fitness_taskforce` — the ``n`` fittest members (fitness = row mean).
* :func:`random_taskforce` — ``n`` members drawn without replacement.
* :func:`exhaustive_taskforce` — the best of all ``C(N, n)`` subsets (ties:
  the lexicographically first), refused beyond ``max_subsets``.
"""

import itertools
import math
from collections.abc import Sequence

import numpy as np

from qd_llm.errors import QdLlmError

#: Subsets :func:`exhaustive_taskforce` enumerates at most by default.
MAX_SUBSETS = 200_000


def _as_skills(skills: np.ndarray) -> np.ndarray:
    skills = np.asarray(skills, dtype=bool)
    if skills.ndim != 2:
        raise QdLlmError(f"a skill matrix must be 2-D (genomes, tasks); got shape {skills.shape}")
    return skills


def coverage(skills: np.ndarray, members: Sequence[int]) -> float:
    """Fraction of tasks solved by at least one member.

    Args:
        skills: Boolean skill matrix ``(N, T)``.
        members: Row indices of the taskforce.

    Returns:
        Coverage in ``[0, 1]``; 0.0 for no members or no tasks.
    """
    skills = _as_skills(skills)
    if skills.shape[1] == 0 or len(members) == 0:
        return 0.0
    return float(skills[list(members)].any(axis=0).mean())


def unique_contributions(skills: np.ndarray, members: Sequence[int]) -> np.ndarray:
    """Tasks each member solves that no other member of the taskforce solves.

    Returns:
        Integer counts, shape ``(len(members),)``.
    """
    skills = _as_skills(skills)[list(members)]
    solvers = skills.sum(axis=0)
    return (skills & (solvers == 1)).sum(axis=1).astype(int)


def fitness_taskforce(skills: np.ndarray, n: int) -> list[int]:
    """The ``n`` members with the highest fitness (ties: lower index)."""
    skills = _as_skills(skills)
    fitness = skills.mean(axis=1) if skills.shape[1] else np.zeros(len(skills))
    order = np.lexsort((np.arange(len(skills)), -fitness))
    return [int(i) for i in order[: max(n, 0)]]


def greedy_taskforce(skills: np.ndarray, n: int) -> list[int]:
    """Greedy max-coverage selection (see the module docstring).

    Once everything the pool can solve is covered, the remaining places go to
    the fittest members left (their gain is 0 and the tie rule applies).
    """
    skills = _as_skills(skills)
    fitness = skills.sum(axis=1)
    covered = np.zeros(skills.shape[1], dtype=bool)
    chosen: list[int] = []
    available = np.ones(len(skills), dtype=bool)
    for _ in range(min(max(n, 0), len(skills))):
        gain = (skills & ~covered).sum(axis=1)
        # Lexicographic key (gain, fitness, -index) as one sortable number per row.
        key = np.where(available, gain * (skills.shape[1] + 1) + fitness, -1)
        best = int(np.argmax(key))  # argmax returns the lowest index among ties
        chosen.append(best)
        available[best] = False
        covered |= skills[best]
    return chosen


def random_taskforce(skills: np.ndarray, n: int, *, rng: np.random.Generator) -> list[int]:
    """``n`` members drawn uniformly without replacement."""
    skills = _as_skills(skills)
    k = min(max(n, 0), len(skills))
    return [int(i) for i in rng.choice(len(skills), size=k, replace=False)]


def exhaustive_taskforce(
    skills: np.ndarray, n: int, *, max_subsets: int = MAX_SUBSETS
) -> list[int]:
    """The subset of size ``min(n, N)`` with the highest coverage.

    Raises:
        QdLlmError: There are more than ``max_subsets`` subsets to try.
    """
    skills = _as_skills(skills)
    k = min(max(n, 0), len(skills))
    if k == 0:
        return []
    total = math.comb(len(skills), k)
    if total > max_subsets:
        raise QdLlmError(
            f"exhaustive search over C({len(skills)}, {k}) = {total} taskforces exceeds "
            f"the limit of {max_subsets}"
        )
    best, best_count = None, -1
    for subset in itertools.combinations(range(len(skills)), k):
        count = int(skills[list(subset)].any(axis=0).sum())
        if count > best_count:
            best, best_count = list(subset), count
    return best


def exhaustive_feasible(num_genomes: int, n: int, *, max_subsets: int = MAX_SUBSETS) -> bool:
    """Whether :func:`exhaustive_taskforce` would accept this size."""
    return math.comb(num_genomes, min(max(n, 0), num_genomes)) <= max_subsets


def random_coverage(skills: np.ndarray, n: int, *, draws: int = 100, seed: int = 0) -> float:
    """Mean coverage of ``draws`` random taskforces of size ``n``."""
    rng = np.random.default_rng(seed)
    return float(
        np.mean([coverage(skills, random_taskforce(skills, n, rng=rng)) for _ in range(draws)])
    )


def coverage_curve(skills: np.ndarray, max_n: int, *, method: str, **kwargs) -> list[float]:
    """coverage@1..``max_n`` of one selection method.

    Args:
        skills: Boolean skill matrix ``(N, T)``.
        max_n: Largest taskforce size.
        method: ``greedy``, ``fitness``, ``random`` (mean over ``draws`` seeds) or
            ``exhaustive`` (None where the size is infeasible).
        **kwargs: ``draws``/``seed`` for random, ``max_subsets`` for exhaustive.

    Returns:
        ``max_n`` values, index ``k - 1`` for size ``k``.
    """
    if method in ("greedy", "fitness"):
        order = (greedy_taskforce if method == "greedy" else fitness_taskforce)(skills, max_n)
        return [coverage(skills, order[:k]) for k in range(1, max_n + 1)]
    if method == "random":
        return [random_coverage(skills, k, **kwargs) for k in range(1, max_n + 1)]
    if method == "exhaustive":
        limit = kwargs.get("max_subsets", MAX_SUBSETS)
        n = len(_as_skills(skills))
        return [
            coverage(skills, exhaustive_taskforce(skills, k, max_subsets=limit))
            if exhaustive_feasible(n, k, max_subsets=limit)
            else None
            for k in range(1, max_n + 1)
        ]
    raise QdLlmError(
        f"unknown taskforce method {method!r}; use greedy, fitness, random or exhaustive"
    )
