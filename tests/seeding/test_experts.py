"""Seed experts: reproducible training and real skill gains on held-out items."""

import pytest
import torch

from qd_llm import seeding
from qd_llm.errors import QdLlmError


def test_held_out_items_are_never_trained_on():
    for skill in seeding.SEED_SKILLS:
        train = {p for p, _ in seeding.skill_examples(skill, n=320, seed=0)}
        held = seeding.held_out_instances(skill, n=30)
        assert len(held) >= 8
        assert not train & {d["prompt"] for d in held}
        assert all(seeding.is_held_out(d["prompt"]) for d in held)


def test_training_is_reproducible_from_a_seed():
    skill = seeding.SEED_SKILLS[0]
    config = seeding.TrainingConfig(steps=1, batch_size=2, seed=3)
    a = seeding.train_seed_expert("smollm2-135m-instruct", skill, config)
    b = seeding.train_seed_expert("smollm2-135m-instruct", skill, config)
    assert a.keys() == b.keys() and len(a) == 210
    for name in a:
        torch.testing.assert_close(a[name].delta(), b[name].delta(), rtol=0, atol=0)
    # One step of training moved the update away from zero.
    assert any(a[name].B.abs().max() > 0 for name in a)


@pytest.fixture(scope="module")
def builtin_experts():
    return seeding.seed_expert_folders(names=[skill.name for skill in seeding.SEED_SKILLS])


def test_builtin_experts_are_committed_for_every_skill(builtin_experts):
    assert set(builtin_experts) == {s.name for s in seeding.SEED_SKILLS}
    for folder in builtin_experts.values():
        assert (folder / "adapter_model.safetensors").stat().st_size < 8e6


@pytest.fixture(scope="module")
def accuracy(hf_backend, builtin_experts):
    """Skill name → {expert or "base" → held-out accuracy}, one mixed batch per skill."""
    genomes = {**builtin_experts, "base": None}
    return {
        skill.name: seeding.skill_accuracies(
            hf_backend, seeding.held_out_instances(skill, n=30), genomes
        )
        for skill in seeding.SEED_SKILLS
    }


@pytest.mark.parametrize("skill", seeding.SEED_SKILLS, ids=lambda s: s.name)
def test_each_expert_is_the_best_on_its_own_skill(accuracy, skill):
    scores = dict(accuracy[skill.name])
    base = scores.pop("base")
    own = scores.pop(skill.name)
    assert own >= base + 0.1, (skill.name, base, own)
    assert own > max(scores.values()), (skill.name, own, scores)


def test_mixed_batch_accuracies_equal_one_genome_at_a_time(hf_backend, builtin_experts):
    items = seeding.held_out_instances(seeding.SEED_SKILLS[1], n=6)
    genomes = {"strings": builtin_experts["strings"], "base": None}
    together = seeding.skill_accuracies(hf_backend, items, genomes)
    alone = {
        name: seeding.skill_accuracy(hf_backend, items, adapter=folder)
        for name, folder in genomes.items()
    }
    assert together == alone


def test_default_seeds_are_three_and_an_unknown_name_is_one_line():
    assert list(seeding.seed_expert_folders()) == ["arithmetic", "strings", "lists"]
    chosen = seeding.seed_expert_folders(names=["word_problem", "counting"])
    assert list(chosen) == ["word_problem", "counting"]
    with pytest.raises(QdLlmError, match=r"^unknown seed expert\(s\) juggling; built-in: "):
        seeding.seed_expert_folders(names=["counting", "juggling"])


def test_held_out_tasks_are_one_unseen_question_each(tmp_path):
    from qd_llm.evaluation.coverage import find_tasks
    from qd_llm.tasks.procedural import get_family

    skills = [s for s in seeding.SEED_SKILLS if s.name in ("counting", "lists")]
    paths = seeding.write_held_out_tasks(tmp_path, skills, per_skill=6)
    tasks = find_tasks(tmp_path)
    assert sorted(t.path for t in tasks) == sorted(paths)
    # counting has one level, lists two: 6 questions each, split over the levels.
    levels = [(t.lineage.extra["family"], t.lineage.extra["level"]) for t in tasks]
    assert {key: levels.count(key) for key in levels} == {
        ("counting", 0): 6,
        ("lists", 0): 3,
        ("lists", 1): 3,
    }
    trained = {p for s in skills for p, _ in seeding.skill_examples(s, n=320, seed=0)}
    # What each task.py holds, from the knobs its metadata records.
    knobs = [(t.lineage.extra["family"], t.lineage.extra["level"], t.lineage.extra["params"])
             for t in tasks]  # fmt: skip
    assert all(params["num_instances"] == 1 for _, _, params in knobs)
    prompts = [
        get_family(family).instances(level, 1, params["seed"])[0]["prompt"]
        for family, level, params in knobs
    ]
    assert prompts == [t.info.example_instruction for t in tasks]
    assert len(set(prompts)) == len(prompts)
    assert all(seeding.is_held_out(p) and p not in trained for p in prompts)
