"""analysis/coverage_over_seeds.py on hand-written ``coverage`` results of three runs."""

import json
from pathlib import Path

import pytest
from _scripts import load_analysis_script


@pytest.fixture(scope="module")
def script():
    return load_analysis_script("coverage_over_seeds")


def _result(run: Path, greedy, seeds, control, *, digest="d1") -> Path:
    folder = run / "coverage" / f"bench-{digest}"
    folder.mkdir(parents=True)
    result = {
        "digest": digest,
        "num_tasks": 10,
        "num_val": 4,
        "num_test": 6,
        "max_n": 2,
        "coverage_at_n": {"greedy": greedy, "seeds": seeds, "control": control, "random": [0, 0]},
    }
    (folder / "result.json").write_text(json.dumps(result))
    return run


def test_means_and_paired_differences_come_from_the_stored_results(script, tmp_path):
    runs = [
        _result(tmp_path / "a", [0.5, 0.5], [0.25, 0.5], [0.0, 0.0]),
        _result(tmp_path / "b", [0.5, 0.75], [0.5, 0.75], [0.0, 0.0]),
        _result(tmp_path / "c", [1.0, 1.0], [0.25, 1.0], [0.25, 0.25]),
    ]

    lines = script.summarise(runs, "bench").splitlines()

    assert "10 tasks: 4 validation, 6 test), 3 runs" in lines[0]
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("|")}
    # Means by hand: evolved (0.5+0.5+1)/3, (0.5+0.75+1)/3; seeds 1/3, 0.75; control 1/12.
    assert rows["evolved (greedy on val)"].split(" | ")[1].startswith("0.667 [")
    assert rows["evolved (greedy on val)"].split(" | ")[2].startswith("0.750 [")
    assert rows["seed experts"].split(" | ")[1].startswith("0.333 [")
    assert rows["base-model control"].split(" | ")[1].startswith("0.083 [")
    # Differences: N=1 (0.25, 0, 0.75) → mean 1/3, 2 ahead 1 tied; N=2 all 0.
    assert rows["1"].startswith("| 1 | 0.333 [") and rows["1"].endswith("| 2 / 1 / 0 |")
    assert rows["2"] == "| 2 | 0.000 [0.000, 0.000] | 0 / 3 / 0 |"


def test_runs_scored_on_different_sets_or_not_at_all_are_refused(script, tmp_path, capsys):
    a = _result(tmp_path / "a", [1, 1], [1, 1], [0, 0], digest="d1")
    b = _result(tmp_path / "b", [1, 1], [1, 1], [0, 0], digest="d2")
    assert script.main([str(a), str(b), "--taskset", "bench"]) == 2
    assert "different task sets" in capsys.readouterr().err
    assert script.main([str(a), str(tmp_path / "none"), "--taskset", "bench"]) == 2
    assert "found 0" in capsys.readouterr().err
