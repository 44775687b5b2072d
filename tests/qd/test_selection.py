"""Survivor selections looked up by name, as the loop calls them."""

import numpy as np

from qd_llm.config import PopulationConfig
from qd_llm.qd.selection import SURVIVOR_SELECTIONS

CANDIDATES = ["a", "b", "c", "d"]
# a solves task 0, b task 1, c both, d neither: c dominates, a and b are novel, d is last.
SKILLS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])


def _select(name: str, size: int, seed: int = 0) -> tuple[list[str], int]:
    calls = []

    def skills():
        calls.append(1)
        return SKILLS

    population = PopulationConfig(size=size, dns_k=1)
    kept = SURVIVOR_SELECTIONS.get(name)(
        CANDIDATES, skills=skills, population=population, rng=np.random.default_rng(seed)
    )
    return kept, len(calls)


def test_dns_keeps_the_fittest_and_drops_the_dominated_empty_one():
    kept, skill_calls = _select("dns", size=3)
    assert kept[0] == "c" and sorted(kept) == ["a", "b", "c"] and skill_calls == 1


def test_random_draws_without_reading_skills_and_keeps_all_that_fit():
    kept, skill_calls = _select("random", size=2, seed=1)
    assert len(set(kept)) == 2 and set(kept) <= set(CANDIDATES) and skill_calls == 0
    assert _select("random", size=4)[0] == CANDIDATES
