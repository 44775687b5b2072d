"""Tutorial (c) runs to completion at tiny scale: its own benchmark, scientist and operator.

The tutorial registers a scientist and a merge operator by decorator, with no
edit to qd_llm, and runs the loop with a config that names them; this checks
they ran inside the loop.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).parents[1] / "analysis" / "tutorials" / "c_own_tasks_and_scientist.py"
QUIZ_TASKS = {f"jsonl_quiz_{i:04d}" for i in range(1, 9)}


@pytest.mark.slow
def test_tutorial_c_runs_its_own_scientist_and_operator_in_the_loop(tmp_path):
    tmp_path.chmod(0o755)  # sandboxed task code runs as another uid
    out = tmp_path / "tutorial"
    env = {**os.environ, "QD_LLM_TUTORIAL_SCALE": "tiny", "QD_LLM_TUTORIAL_OUT": str(out)}
    done = subprocess.run(
        [sys.executable, str(TUTORIAL)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The typed parameter check ran at load, before the run.
    assert "config key 'operators.scaled_mean.scale': must be >= 0, got -1" in done.stdout
    run = out / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["generation"] for row in rows] == [0, 1, 2]
    # Every task of the run came from the benchmark through the registered scientist,
    # the initial ones and at least one adaptation.
    lineages = [json.loads((t / "metadata.json").read_text()) for t in (run / "tasks").iterdir()]
    assert lineages and {lineage["scientist"] for lineage in lineages} == {"benchmark"}
    assert {lineage["question"] for lineage in lineages} <= QUIZ_TASKS
    assert {lineage["generation_type"] for lineage in lineages} - {"initial"}
    # Every bred genome is a child of the registered operator.
    genomes = [json.loads(p.read_text()) for p in (run / "genomes").glob("*/genome.json")]
    children = [g for g in genomes if g["operator"] != "seed"]
    assert children and {g["operator"] for g in children} == {"scaled_mean"}
    assert all(g["params"]["scale"] == 1.5 for g in children)
