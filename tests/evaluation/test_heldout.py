"""Held-out tracking: the split, the chosen-on-validation numbers, and the loop's use of them."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _analysis_run import BIGBENCH, TINY_RUN_OVERRIDES, tiny_run
from _tiny_loop import run_loop

from qd_llm.errors import QdLlmError
from qd_llm.evaluation.heldout import (
    best_single,
    check_disjoint,
    chosen_on_val,
    split_tasks,
)
from qd_llm.faults import KILL_AT_ENV
from qd_llm.runs import RunDir, without_timings
from qd_llm.tasks.taskdir import Lineage, TaskInfo, write_task

HELDOUT = [
    f"evaluation.heldout={BIGBENCH}",
    "evaluation.heldout_every=2",
    "evaluation.control_samples=2",
]


def _task(root: Path, task_id: str, question: str):
    info = TaskInfo(name=task_id, description="d", capability="c", example_instruction=question)
    return write_task(root, task_id=task_id, code="", info=info, lineage=Lineage())


def _in_val(question: str, fraction: float) -> bool:
    value = int(hashlib.sha256(question.encode()).hexdigest()[:16], 16)
    return value < fraction * 2**64


def test_split_follows_the_question_hash_and_keeps_duplicates_together(tmp_path):
    tasks = [_task(tmp_path, f"t{i}", f"What is {i} + {i}?") for i in range(40)]
    twin = _task(tmp_path, "twin", "What is 7 + 7?")
    split = split_tasks([*tasks, twin], val_fraction=0.3)
    assert split.val_ids == sorted(t.task_id for t in [*tasks, twin] if t in split.val)
    for task in [*tasks, twin]:
        expected = _in_val(task.info.example_instruction, 0.3)
        assert (task.task_id in split.val_ids) == expected, task.task_id
    assert ("twin" in split.val_ids) == ("t7" in split.val_ids)
    assert 0 < len(split.val) < len(split.test)
    assert json.loads(json.dumps(split.to_json()))["test"] == split.test_ids


def test_overlapping_or_empty_splits_are_refused(tmp_path):
    a = _task(tmp_path / "a", "a", "Q1")
    same_question = _task(tmp_path / "b", "b", "Q1")
    other = _task(tmp_path / "c", "c", "Q2")
    with pytest.raises(QdLlmError, match="overlaps the validation split"):
        check_disjoint([a], [same_question, other])
    with pytest.raises(QdLlmError, match="overlaps the validation split"):
        check_disjoint([a], [a])
    with pytest.raises(QdLlmError, match="0 test tasks"):
        check_disjoint([a, other], [])
    with pytest.raises(QdLlmError, match=r"\(0, 1\)"):
        split_tasks([a, other], val_fraction=1.0)


def test_taskforce_is_chosen_on_validation_and_scored_on_test():
    # Genome 0 looks best on validation but solves nothing on test; 1 and 2 do.
    val = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 0]], dtype=bool)
    test = np.array([[0, 0], [1, 0], [0, 1]], dtype=bool)
    chosen = chosen_on_val(val, test, max_n=3)
    assert chosen["order"][0] == 0
    assert chosen["val"] == [1.0, 1.0, 1.0]
    # N=1 picks genome 0 (test 0); later places go to the fitter of the rest by the tie rule.
    assert chosen["test"][0] == 0.0
    assert chosen["test"][2] == 1.0
    assert best_single(val, test) == 0.0
    assert best_single(val[1:], test[1:]) == 0.5


@pytest.fixture(scope="module")
def heldout_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    root.chmod(0o755)  # the sandbox's unprivileged uid reads the tasks
    return run_loop(root, "run", [*TINY_RUN_OVERRIDES, *HELDOUT])


def _pass_matrix(folder: Path, pass_threshold: float) -> dict[tuple[str, str], bool]:
    scores: dict[tuple[str, str], list[float]] = {}
    for line in (folder / "evals.jsonl").read_text().splitlines():
        record = json.loads(line)
        scores.setdefault((record["genome_id"], record["task_id"]), []).append(record["score"])
    return {pair: float(np.mean(s)) >= pass_threshold for pair, s in scores.items()}


@pytest.mark.slow
def test_loop_reports_heldout_rows_recomputable_from_its_files(heldout_run):
    rows = heldout_run.metrics()
    assert [("heldout" in r) for r in rows] == [True, False, True]  # every 2, and the last
    (folder,) = (heldout_run.path / "heldout").glob("bigbench_mixed-*")
    split = json.loads((folder / "split.json").read_text())
    passed = _pass_matrix(folder, 0.5)
    control_passed = _pass_matrix(folder / "control", 0.5)
    seeds = {
        p.name
        for p in (heldout_run.path / "genomes").iterdir()
        if not json.loads((p / "genome.json").read_text())["parents"]
    }
    for row in (rows[0], rows[2]):
        entry = row["heldout"]
        assert entry["num_val"] == len(split["val"]) and entry["num_test"] == len(split["test"])
        assert set(entry["taskforce"]["seeds"]) <= seeds
        assert len(entry["taskforce"]["control"]) == 2
        for pool, table in (("evolved", passed), ("seeds", passed), ("control", control_passed)):
            members = entry["taskforce"][pool]
            for k in range(1, 4):
                chosen = members[:k]
                test = np.mean([any(table[(g, t)] for g in chosen) for t in split["test"]])
                val = np.mean([any(table[(g, t)] for g in chosen) for t in split["val"]])
                assert entry["test"][pool][k - 1] == pytest.approx(test), (pool, k)
                assert entry["val"][pool][k - 1] == pytest.approx(val), (pool, k)
        assert set(row["population"]) <= {g for g, _ in passed}  # evaluated, held out
        assert set(entry["taskforce"]["evolved"]) <= {g for g, _ in passed}


@pytest.mark.slow
def test_heldout_tracking_leaves_the_run_itself_unchanged(heldout_run):
    plain = RunDir(tiny_run()).metrics()
    tracked = heldout_run.metrics()
    assert [without_timings(r) for r in plain] == [
        {k: v for k, v in without_timings(r).items() if k != "heldout"} for r in tracked
    ]


@pytest.mark.slow
def test_kill_during_heldout_evaluation_resumes_to_the_same_numbers(heldout_run, tmp_path):
    tmp_path.chmod(0o755)
    config = json.loads((heldout_run.path / "config.json").read_text())
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    out = tmp_path / "run"
    env = {**os.environ, KILL_AT_ENV: "evaluate.appended:2"}  # held-out genomes, not control
    command = [sys.executable, "-m", "qd_llm.cli"]
    killed = subprocess.run(
        [*command, "run", "--preset", "demo", "--config", str(config_file), "--out", str(out)],
        env=env,
        capture_output=True,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text()
    assert list((out / "heldout").rglob("evals.jsonl"))  # a half-done held-out evaluation
    env.pop(KILL_AT_ENV)
    resumed = subprocess.run([*command, "resume", str(out)], env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert [without_timings(r) for r in RunDir(out).metrics()] == [
        without_timings(r) for r in heldout_run.metrics()
    ]
    for log in (heldout_run.path / "heldout").rglob("evals.jsonl"):
        relative = log.relative_to(heldout_run.path)
        assert (out / relative).read_bytes() == log.read_bytes(), relative


@pytest.mark.slow
def test_plot_draws_heldout_coverage_and_who_solves_what(heldout_run):
    from PIL import Image

    from qd_llm.cli import main

    assert main(["plot", str(heldout_run.path)]) == 0
    for name in ("heldout_coverage", "pass_matrix"):
        with Image.open(heldout_run.path / "figures" / f"{name}.png") as image:
            assert image.size == (960, 720)
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
    page = (heldout_run.path / "report.html").read_text()
    test = heldout_run.metrics()[-1]["heldout"]["test"]
    assert f"N=1: {test['evolved'][0]:.3f} / {test['seeds'][0]:.3f}" in page
