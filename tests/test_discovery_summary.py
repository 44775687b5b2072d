"""analysis/discovery_summary.py on a hand-written experiment: before/after rows,
paired differences against the seed experts, and per-family coverage from the files."""

import json
from pathlib import Path

import pytest
from _scripts import load_analysis_script

from qd_llm.config import load_config
from qd_llm.runs import RunDir

TASKSET = "heldout_set-abc"
TEST_TASKS = ["counting_l0_aa", "counting_l0_bb", "lists_l1_cc", "word_problem_l0_dd"]


@pytest.fixture(scope="module")
def summary():
    return load_analysis_script("discovery_summary")


def _heldout(evolved, seeds, control, taskforces):
    return {
        "taskset": TASKSET,
        "num_test": 4,
        "num_val": 3,
        "test": {"evolved": evolved, "seeds": seeds, "control": control},
        "taskforce": taskforces,
    }


def _run(root: Path, seed: int, first: list, last: list, passes: dict[str, list[str]]) -> None:
    """A run with held-out rows at generations 0 and 4 and the evaluations behind them."""
    run = RunDir.create(root / "runs" / "full" / f"seed{seed}", load_config().to_dict())
    taskforces = {"evolved": ["e1", "e2"], "seeds": ["s1", "s2"], "control": ["c1"]}
    seeds, control = [0.25, 0.5], [0.0, 0.0]
    run.append_metrics({"generation": 0, "heldout": _heldout(first, seeds, control, taskforces)})
    run.append_metrics({"generation": 2})
    run.append_metrics({"generation": 4, "heldout": _heldout(last, seeds, control, taskforces)})
    folder = run.path / "heldout" / TASKSET
    (folder / "control").mkdir(parents=True)
    split = {"rule": "given", "val": ["counting_l0_val"], "test": TEST_TASKS}
    (folder / "split.json").write_text(json.dumps(split))
    records = [
        {"genome_id": genome, "task_id": task, "score": float(task in passes.get(genome, []))}
        for genome in ("e1", "e2", "e3", "s1", "s2")
        for task in [*TEST_TASKS, "counting_l0_val"]
    ]
    (folder / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "control" / "evals.jsonl").write_text("")


def test_summary_pairs_each_run_with_its_own_seed_experts(tmp_path, summary):
    # Passing genomes by hand: e3 is not in the taskforce, the validation task is not test.
    _run(
        tmp_path,
        0,
        [0.25, 0.5],
        [0.5, 0.75],
        {
            "e1": ["counting_l0_aa", "counting_l0_bb"],
            "e2": ["lists_l1_cc"],
            "e3": ["word_problem_l0_dd"],
            "s1": ["counting_l0_aa"],
            "s2": ["word_problem_l0_dd"],
        },
    )
    _run(tmp_path, 1, [0.25, 0.25], [0.25, 0.5],
         {"e1": ["counting_l0_aa", "counting_l0_val"], "e2": ["word_problem_l0_dd"],
          "s1": ["counting_l0_aa"], "s2": ["word_problem_l0_dd"]})  # fmt: skip
    text = summary.summarise(tmp_path)
    assert "## full: 2 runs (seed0, seed1), [4] test questions" in text
    # Means over the two runs; two values give an interval from the smaller to the larger.
    assert "| evolved, generation [0] | 0.250 [0.250, 0.250] | 0.375 [0.250, 0.500] |" in text
    assert "| evolved, generation [4] | 0.375 [0.250, 0.500] | 0.625 [0.500, 0.750] |" in text
    assert "| seed experts | 0.250 [0.250, 0.250] | 0.500 [0.500, 0.500] |" in text
    # Paired differences: +0.25 and 0 at N=1; +0.25 and 0 at N=2.
    assert "| 1 | 0.125 [0.000, 0.250] | 1 / 1 / 0 |" in text
    assert "| 2 | 0.125 [0.000, 0.250] | 1 / 1 / 0 |" in text
    # Per family (counting has 2 test questions): run 0 evolved covers counting 2/2,
    # lists 1/1, word_problem 0/1; run 1 covers 1/2, 0/1, 1/1.
    assert "| taskforce | counting | lists | word_problem |" in text
    assert "| evolved | 0.75 | 0.50 | 0.50 |" in text
    assert "| seeds | 0.50 | 0.00 | 1.00 |" in text


def test_an_experiment_without_held_out_rows_is_one_line(tmp_path, summary, capsys):
    run = RunDir.create(tmp_path / "runs" / "full" / "seed0", load_config().to_dict())
    run.append_metrics({"generation": 0})
    assert summary.main([str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "has a held-out row" in error
    assert error.count("\n") == 1


def test_runs_still_going_are_named_and_left_out(tmp_path, summary):
    _run(tmp_path, 0, [0.25, 0.5], [0.5, 0.75], {"e1": ["counting_l0_aa"]})
    # A run of the same variant before its first held-out row, and a variant
    # whose only run has not written its first metrics row yet.
    RunDir.create(tmp_path / "runs" / "full" / "seed1", load_config().to_dict()).append_metrics(
        {"generation": 0}
    )
    (tmp_path / "runs" / "no_adaptation" / "seed0").mkdir(parents=True)
    text = summary.summarise(tmp_path)
    assert "## full: 1 runs (seed0), [4] test questions" in text
    assert "| evolved, generation [4] | 0.500 [0.500, 0.500] | 0.750 [0.750, 0.750] |" in text
    assert "## no_adaptation" not in text
    assert text.endswith(
        "Not in the summary (no held-out row yet):\n- full/seed1\n- no_adaptation/seed0"
    )
