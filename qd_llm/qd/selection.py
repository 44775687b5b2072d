"""Selection: which genomes breed (parent selection) and which stay (survivor selection).

A survivor selection is a function registered in :data:`SURVIVOR_SELECTIONS` and
named by ``population.selection``; the loop calls it as
``select(candidates, skills=..., population=..., rng=...)`` and keeps what it
returns (at most ``population.size`` genome ids). Register your own with
``@SURVIVOR_SELECTIONS.register("name")``.

A parent selection is a function registered in :data:`PARENT_SELECTIONS` and
named by ``population.parent_selection``; an emitter calls it as
``select(pool_size, k, rng=..., fitness=...)`` for the indices of one child's
``k`` parents in its sorted pool. Built in:

- ``uniform``: ``k`` distinct parents drawn uniformly (with replacement only
  when the pool has fewer than ``k`` genomes).
- ``tournament``: each parent is the fitter of two genomes drawn uniformly
  without replacement from the pool left after the parents already chosen
  (binary tournament; ties go to the first in sorted id order). Over a pool of
  ``N`` genomes with distinct fitness, the first parent is the one of fitness
  rank ``r`` (1 = fittest) with probability ``2 (N − r) / (N (N − 1))``: the
  fittest twice the average, the least fit never.
"""

from collections.abc import Callable, Sequence

import numpy as np

from qd_llm.qd.dns import dns_select
from qd_llm.registry import Registry

SURVIVOR_SELECTIONS = Registry("survivor selection")


@SURVIVOR_SELECTIONS.register("dns")
def dns_survivors(
    candidates: Sequence[str],
    *,
    skills: Callable[[], np.ndarray],
    population,
    rng: np.random.Generator,
) -> list[str]:
    """Dominated Novelty Search truncation, best first.

    Args:
        candidates: Genome ids of the population and its offspring.
        skills: Returns their skill matrix, shape ``(len(candidates), tasks)``
            (called only by selections that need it).
        population: The run's :class:`~qd_llm.config.PopulationConfig`
            (``size``, ``dns_k``).
        rng: The run's generator, for selections that draw.

    Returns:
        The survivors' ids.
    """
    kept = dns_select(skills(), k=population.dns_k, capacity=population.size)
    return [candidates[i] for i in kept]


@SURVIVOR_SELECTIONS.register("random")
def random_survivors(
    candidates: Sequence[str],
    *,
    skills: Callable[[], np.ndarray],
    population,
    rng: np.random.Generator,
) -> list[str]:
    """A uniform draw of ``population.size`` candidates, in draw order (an ablation).

    Arguments as for :func:`dns_survivors`.
    """
    if len(candidates) <= population.size:
        return list(candidates)
    drawn = rng.choice(len(candidates), size=population.size, replace=False)
    return [candidates[int(i)] for i in drawn]


PARENT_SELECTIONS = Registry("parent selection")


@PARENT_SELECTIONS.register("uniform")
def uniform_parents(
    pool_size: int, k: int, *, rng: np.random.Generator, fitness: Callable[[], np.ndarray]
) -> list[int]:
    """``k`` parent indices drawn uniformly, distinct when ``pool_size >= k``.

    Args:
        pool_size: Genomes in the (sorted) pool.
        k: Parents per child.
        rng: The emitter's generator.
        fitness: Returns the pool's fitness, shape ``(pool_size,)`` (called only by
            selections that need it).

    Returns:
        Indices into the pool, in parent order.
    """
    return rng.choice(pool_size, k, replace=pool_size < k).tolist()


@PARENT_SELECTIONS.register("tournament")
def tournament_parents(
    pool_size: int, k: int, *, rng: np.random.Generator, fitness: Callable[[], np.ndarray]
) -> list[int]:
    """``k`` binary-tournament winners (see the module docstring).

    Arguments and return value as for :func:`uniform_parents`.
    """
    scores = fitness()
    left = list(range(pool_size))
    picked = []
    for _ in range(k):
        candidates = left if left else list(range(pool_size))
        pair = rng.choice(candidates, min(2, len(candidates)), replace=False)
        winner = min(pair.tolist(), key=lambda j: (-scores[j], j))
        picked.append(winner)
        if pool_size >= k:
            left.remove(winner)
    return picked
