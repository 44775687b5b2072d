"""Run directory: metrics, checkpoints cut back under kill, status screen."""

import pytest

from qd_llm.errors import QdLlmError
from qd_llm.runs import RunDir, format_status, without_timings

CONFIG = {"preset": "demo", "seed": 1, "population": {"generations": 4}}


def _row(g):
    return {
        "generation": g,
        "population_size": 3,
        "num_tasks": 5,
        "best_fitness": 0.4,
        "mean_fitness": 0.2,
        "coverage": 0.6,
        "niche_coverage": 0.03,
        "qd_score": 0.7,
        "seconds": 10.0 + g,
        "timings": {"evaluate": 9.0},
    }


def test_create_refuses_a_non_empty_dir_and_open_needs_a_config(tmp_path):
    run = RunDir.create(tmp_path / "r", CONFIG)
    assert run.config() == CONFIG and (run.path.stat().st_mode & 0o755) == 0o755
    with pytest.raises(QdLlmError, match="not empty"):
        RunDir.create(tmp_path / "r", CONFIG)
    with pytest.raises(QdLlmError, match="not a run directory"):
        RunDir.open(tmp_path)


def test_checkpoint_cuts_metrics_and_evals_back_to_what_it_covers(tmp_path):
    run = RunDir.create(tmp_path / "r", CONFIG)
    run.append_metrics(_row(0))
    run.evals_path.write_text('{"a": 1}\n')
    run.save_checkpoint(0, {"population": ["x"]})
    # Generation 1 was cut short by a kill: a row, part of its evals, no checkpoint.
    run.append_metrics(_row(1))
    with open(run.evals_path, "a") as f:
        f.write('{"a": 2}\n{"a": ')
    checkpoint = RunDir.open(run.path).load_checkpoint()
    assert checkpoint.generation == 0 and checkpoint.state == {"population": ["x"]}
    assert [r["generation"] for r in run.metrics()] == [0]
    assert run.evals_path.read_text() == '{"a": 1}\n'


def test_no_checkpoint_empties_partial_files(tmp_path):
    run = RunDir.create(tmp_path / "r", CONFIG)
    run.append_metrics(_row(0))
    assert run.load_checkpoint() is None and run.metrics() == []


def test_status_screen_and_timing_free_rows(tmp_path):
    run = RunDir.create(tmp_path / "r", CONFIG)
    assert "not started" in format_status(run)
    for g in range(3):
        run.append_metrics(_row(g))
    screen = format_status(run)
    assert "generation 2/4" in screen and "ETA" in screen and "coverage   0.600" in screen
    assert "seconds" not in without_timings(_row(0)) and "timings" not in without_timings(_row(0))
