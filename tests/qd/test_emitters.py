"""Operator emitters (breeding real, tiny LoRA genomes) and the UCB1 bandit over them."""

import itertools
import json
from collections import Counter

import numpy as np
import pytest
import torch
from ribs.emitters import EmitterBase
from ribs.schedulers import BanditScheduler, Scheduler

from qd_llm.errors import QdLlmError
from qd_llm.models.genome import GenomeStore
from qd_llm.models.lora import random_weights
from qd_llm.qd.emitters import (
    ArchiveParents,
    OperatorBandit,
    OperatorEmitter,
    PopulationParents,
    Recipe,
)
from qd_llm.qd.niche_map import NicheMap, genome_archive

OPERATORS = {"linear": {"parents": 2}, "gaussian": {"parents": 1, "scale": 0.01}}
# Two small projections: real PEFT adapters in a real store, bred in milliseconds.
SHAPES = {"model.layers.0.self_attn.q_proj": (8, 12), "model.layers.0.mlp.up_proj": (16, 8)}


@pytest.fixture
def store(tmp_path):
    return GenomeStore(tmp_path / "genomes", base_model="smollm2-135m-instruct")


@pytest.fixture
def seeds(store):
    generator = torch.Generator().manual_seed(0)
    return [
        store.save(random_weights(SHAPES, rank=2, std=0.05, generator=generator), name=f"s{i}").id
        for i in range(4)
    ]


def _bandit(store, seed=0):
    return OperatorBandit(NicheMap().archive, operators=OPERATORS, seed=seed, store=store, rank=2)


def _emitter(**kwargs):
    return OperatorEmitter(NicheMap().archive, operator="linear", num_parents=2, **kwargs)


def test_emitter_is_a_pyribs_emitter_breeding_children_into_the_store(store, seeds):
    emitter = _emitter(batch_size=3, seed=1, store=store, rank=2, parents=PopulationParents(seeds))
    assert isinstance(emitter, EmitterBase)
    children = emitter.ask()
    assert children.shape == (3,) and children.dtype == object
    for child, recipe in zip(children, emitter.last_recipes, strict=True):
        info = store.info(child)
        assert isinstance(recipe, Recipe) and len(set(recipe.parents)) == 2
        assert set(recipe.parents) <= set(seeds) and child not in seeds
        assert (info.operator, info.parents) == ("linear", recipe.parents)
        assert info.params["seed"] == recipe.seed and info.rank == 2
    emitter.tell(children, np.zeros(3), None, {"status": np.array([1, 0, 2])})
    assert (emitter.stats.asked, emitter.stats.accepted, emitter.generation) == (3, 2, 1)


def test_emitter_without_a_store_or_parents_says_so():
    with pytest.raises(QdLlmError, match="genome store"):
        _emitter(parents=PopulationParents(["a", "b"])).ask()
    with pytest.raises(QdLlmError, match="no genomes"):
        _emitter().draw()  # the archive is empty and no initial parents were given
    with pytest.raises(QdLlmError, match="parent selection"):
        _emitter(selection="best")


def test_uniform_selection_draws_distinct_parents_whatever_the_population_order():
    population = ["d", "b", "a", "c"]
    emitter = _emitter(
        params={"weights": [0.7, 0.3]}, seed=7, parents=PopulationParents(population)
    )
    recipes = emitter.draw(1200)
    # 12 ordered pairs of distinct parents, 100 draws each expected: a fixed seed
    # makes the counts deterministic; a sampler that favours or skips a genome
    # lands far outside 60..140.
    pairs = Counter(r.parents for r in recipes)
    assert set(pairs) == set(itertools.permutations("abcd", 2))
    assert all(60 <= count <= 140 for count in pairs.values()), pairs
    assert all(r.params == {"weights": [0.7, 0.3]} for r in recipes)
    assert len({r.seed for r in recipes}) > 1190  # each child gets its own seed
    shuffled = _emitter(
        params={"weights": [0.7, 0.3]}, seed=7, parents=PopulationParents(population[::-1])
    )
    assert shuffled.draw(1200) == recipes


def test_tournament_selection_favours_fitter_parents():
    fitness = {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.3, "e": 0.7}
    parents = PopulationParents(list(fitness), fitness=lambda ids: [fitness[g] for g in ids])
    emitter = OperatorEmitter(
        NicheMap().archive, operator="gaussian", seed=3, parents=parents, selection="tournament"
    )
    counts = Counter(r.parents[0] for r in emitter.draw(2000))
    # Binary tournament over 5: rank r wins with probability 2(5 - r)/20, i.e.
    # 800, 600, 400, 200 and 0 expected draws from the fittest down.
    assert counts["a"] == 0
    for genome_id, expected in (("b", 800), ("e", 600), ("c", 400), ("d", 200)):
        assert abs(counts[genome_id] - expected) < 90, counts
    pairs = _emitter(seed=3, parents=parents, selection="tournament").draw(300)
    assert all(len(set(r.parents)) == 2 for r in pairs)  # still distinct parents


def test_archive_parents_are_the_elites_once_there_are_some():
    archive = genome_archive(dims=2, resolution=4)
    parents = ArchiveParents(archive, initial=["s1", "s0"])
    assert parents.pool() == ("s0", "s1")
    archive.add(np.array(["x", "y"], dtype=object), [0.2, 0.6], [[-0.5, -0.5], [0.5, 0.5]])
    assert parents.pool() == ("x", "y")
    assert parents.fitness_of(["y", "x"]).tolist() == pytest.approx([0.6, 0.2])


def test_bandit_breeds_every_operator_then_favours_the_one_that_pays(store, seeds):
    bandit = _bandit(store)
    first = bandit.ask(seeds, 2, generation=0)
    assert sorted(r.operator for r in bandit.last_recipes) == ["gaussian", "linear"]
    assert all(store.info(child).generation == 0 for child in first)
    bandit.tell([r.operator == "gaussian" for r in bandit.last_recipes])
    for generation in range(1, 6):
        children = bandit.ask(seeds, 3, generation=generation)
        assert all(store.info(child).generation == generation for child in children)
        bandit.tell([r.operator == "gaussian" for r in bandit.last_recipes])
    stats = bandit.total_stats()
    assert stats["gaussian"]["asked"] > stats["linear"]["asked"]
    assert stats["gaussian"]["success_rate"] == 1.0 and stats["linear"]["accepted"] == 0
    assert sum(s["asked"] for s in bandit.generation_stats().values()) == 3


def test_restored_bandit_continues_identically(store, seeds):
    bandit = _bandit(store, seed=3)
    bandit.ask(seeds, 3)
    bandit.tell([True, False, True])
    # The state is plain JSON: it survives a text round trip unchanged.
    state = json.loads(json.dumps(bandit.state_dict()))
    archive = NicheMap().archive
    clone = OperatorBandit.from_state_dict(state, archive=archive, store=store, rank=2)
    assert all(e.archive is archive for e in clone.emitters)
    assert clone.total_stats() == bandit.total_stats()
    assert clone.generation_stats() == bandit.generation_stats()
    assert bandit.ask(seeds, 4) == clone.ask(seeds, 4)
    assert _bandit(store, seed=4).ask(seeds, 4) != _bandit(store, seed=3).ask(seeds, 4)


def _objective_and_measures(store, children):
    """A toy objective and 2-D measures of real genomes: their factors' statistics."""
    weights = [store.load(child) for child in children]
    stds = np.array([[float(f.A.std()), float(f.B.std())] for w in weights for f in w.values()])
    stds = stds.reshape(len(children), -1, 2).mean(axis=1)
    return -np.abs(stds).sum(axis=1), np.clip(stds * 10 - 1, -1, 1)


@pytest.mark.parametrize("scheduler_kind", ["plain", "bandit"])
def test_emitters_run_unchanged_under_pyribs_schedulers(store, seeds, scheduler_kind):
    archive = genome_archive(dims=2, resolution=5)
    emitters = [
        OperatorEmitter(
            archive,
            operator=name,
            params={k: v for k, v in params.items() if k != "parents"},
            num_parents=params["parents"],
            batch_size=2,
            seed=i,
            store=store,
            rank=2,
            parents=ArchiveParents(archive, initial=seeds),
        )
        for i, (name, params) in enumerate(sorted(OPERATORS.items()))
    ]
    if scheduler_kind == "plain":
        scheduler = Scheduler(archive, emitters)
    else:
        scheduler = BanditScheduler(archive, emitters, num_active=1)
    bred = []
    for _ in range(3):
        children = scheduler.ask()
        assert children.dtype == object and len(children) == 2 * (
            2 if scheduler_kind == "plain" else 1
        )
        assert all(child in store for child in children)
        bred += list(children)
        scheduler.tell(*_objective_and_measures(store, children))
    held = set(archive.data("solution"))
    assert held and held <= set(bred)  # the archive holds bred genome ids
    # Every child offered was counted, and acceptances are the archive's statuses.
    assert sum(e.stats.asked for e in emitters) == len(bred)
    accepted = sum(e.stats.accepted for e in emitters)
    assert len(held) <= accepted <= len(bred)
    # Parents came from the archive once it held elites.
    later = [r for e in emitters for r in e.last_recipes]
    assert all(set(r.parents) <= set(bred) | set(seeds) for r in later)
