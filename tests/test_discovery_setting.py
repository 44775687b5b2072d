"""The discovery setting: runs start from built-in seed experts by name and hold
out questions of those experts' skills that none of them trained on."""

import json

import pytest
from _tiny_loop import run_tiny_loop

from qd_llm.config import load_config
from qd_llm.errors import QdLlmError
from qd_llm.seeding import SEED_SKILLS, is_held_out, skill_examples
from qd_llm.tasks.taskdir import read_task

SKILLS = {skill.name: skill for skill in SEED_SKILLS}


def test_the_preset_holds_out_the_skills_its_seeds_have():
    config = load_config(preset="discovery")
    names = config.genomes.builtin_seed_names()
    assert len(names) == 4 and set(names) <= set(SKILLS)
    assert config.evaluation.heldout.startswith("seeds:" + ",".join(names) + ":")
    assert set(config.tasks.families) == {SKILLS[name].family for name in names}
    # More seed experts than the largest taskforce, so merged experts can matter.
    assert config.evaluation.heldout_max_n < len(names)


@pytest.mark.parametrize("seeds", ["builtin:", "builtin:counting,,lists", "built-in"])
def test_malformed_builtin_seed_lists_are_one_line(seeds):
    with pytest.raises(QdLlmError, match=r"^config key 'genomes.seeds': must be 'builtin'"):
        load_config(overrides=[f"genomes.seeds={seeds}"])


@pytest.mark.slow
def test_a_run_from_named_experts_tracks_their_held_out_questions(world_readable):
    run = run_tiny_loop(
        world_readable,
        "named",
        [
            "genomes.seeds=builtin:counting,strings",
            "evaluation.heldout=seeds:counting,strings:3",
            "evaluation.heldout_every=2",
            "evaluation.control_samples=1",
        ],
    )
    genomes = [json.loads(p.read_text()) for p in run.genomes_dir.glob("*/genome.json")]
    assert sorted(g["name"] for g in genomes if g["operator"] == "seed") == ["counting", "strings"]
    (folder,) = (run.path / "heldout" / "imports").iterdir()
    tasks = sorted(folder.iterdir())
    assert len(tasks) == 6  # 3 per skill, each skill here having one level
    trained = {
        p
        for name in ("counting", "strings")
        for p, _ in skill_examples(SKILLS[name], n=320, seed=0)
    }
    questions = [read_task(t).info.example_instruction for t in tasks]
    assert all(is_held_out(q) and q not in trained for q in questions)
    rows = [row for row in run.metrics() if "heldout" in row]
    assert [row["generation"] for row in rows] == [0, 2]
    assert all(row["heldout"]["num_val"] + row["heldout"]["num_test"] == 6 for row in rows)


def test_an_unknown_held_out_skill_is_one_line(world_readable):
    with pytest.raises(QdLlmError, match=r"^config key 'evaluation.heldout': 'seeds:juggling'"):
        run_tiny_loop(world_readable, "unknown", ["evaluation.heldout=seeds:juggling"])
