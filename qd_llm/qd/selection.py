"""Survivor selection: which candidates stay in the population each generation.

A selection is a function registered in :data:`SURVIVOR_SELECTIONS` and named by
``population.selection``; the loop calls it as
``select(candidates, skills=..., population=..., rng=...)`` and keeps what it
returns (at most ``population.size`` genome ids). Register your own with
``@SURVIVOR_SELECTIONS.register("name")``.
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
