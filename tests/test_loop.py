"""The coevolution loop end to end: real SmolLM2, sandbox, MiniLM and pyribs.

One tiny uninterrupted run (via the CLI, as users run it) is compared with a
run killed with SIGKILL mid-way and resumed: apart from wall-time fields the
metrics must be identical.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qd_llm.runs import RunDir, without_timings

# Every test here shares a whole tiny loop run through the CLI (minutes on 2 cores).
pytestmark = pytest.mark.slow

TINY = [
    "seed=3",
    "genomes.seeds=random:2",
    "population.size=2",
    "population.dns_k=2",
    "population.offspring=1",
    "population.generations=2",
    "tasks.adapt_every=1",
    "tasks.initial_tasks=2",
    "tasks.instances_per_task=1",
    "tasks.new_task_attempts=1",
    "decoding.max_new_tokens=4",
    "sandbox.workers=1",
    "progress=false",
    'operators={"linear": {"parents": 2}, "gaussian": {"parents": 1, "scale": 0.002}}',
]


def _command(*args):
    return [sys.executable, "-m", "qd_llm.cli", *args]


def _run_args(out: Path):
    args = ["run", "--preset", "demo", "--out", str(out)]
    for item in TINY:
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def finished_run(world_readable):
    out = world_readable / "whole"
    done = subprocess.run(_command(*_run_args(out)), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"run directory: {out}" in done.stdout
    return RunDir.open(out)


def test_tiny_run_writes_a_valid_run_directory(finished_run):
    run = finished_run
    rows = run.metrics()
    assert [r["generation"] for r in rows] == [0, 1, 2]
    for row in rows:
        for key in ("population_size", "num_tasks", "best_fitness", "mean_fitness", "coverage"):
            assert key in row
        assert 0.0 <= row["coverage"] <= 1.0 and 0.0 <= row["niche_coverage"] <= 1.0
        assert row["population_size"] == 2 and row["seconds"] > 0
        assert set(row["operators"]) == {"linear", "gaussian"}
    assert rows[1]["task_adaptation"]["attempts"] == 1 and rows[2]["task_adaptation"] is None
    assert (run.figures_dir / "niche_map.png").stat().st_size > 1000
    assert run.config()["population"]["generations"] == 2
    assert set(rows[-1]["population"]) <= {p.name for p in run.genomes_dir.iterdir()}
    assert any((p / "task.py").exists() for p in run.tasks_dir.iterdir())
    records = [json.loads(line) for line in run.evals_path.read_text().splitlines()]
    keys = [(r["genome_id"], r["task_id"], r["instance_id"]) for r in records]
    assert len(keys) == len(set(keys)), "a (genome, task, instance) was evaluated twice"
    status = subprocess.run(_command("status", str(run.path)), capture_output=True, text=True)
    assert status.returncode == 0 and "generation 2/2" in status.stdout


def test_evaluations_are_cached_across_processes(finished_run):
    from qd_llm.evaluation.evaluate import Evaluator
    from qd_llm.inference.base import GenerationConfig
    from qd_llm.models.genome import GenomeStore
    from qd_llm.tasks.taskdir import read_task

    run = finished_run
    last = run.metrics()[-1]
    records = [json.loads(line) for line in run.evals_path.read_text().splitlines()]
    tasks = [read_task(run.tasks_dir / t) for t in sorted({r["task_id"] for r in records})]
    evaluated = {(r["genome_id"], r["task_id"]) for r in records}
    genomes = [g for g in last["population"] if all((g, t.task_id) in evaluated for t in tasks)]
    evaluator = Evaluator(
        run_dir=run.path,
        backend=None,  # never reached: everything is cached
        sandbox=None,
        genomes=GenomeStore(run.genomes_dir, base_model="smollm2-135m-instruct"),
        decoding=GenerationConfig(max_new_tokens=4),
        pass_threshold=0.5,
    )
    assert genomes and evaluator.evaluate(genomes, tasks) == 0
    assert evaluator.skills(genomes, [t.task_id for t in tasks]).shape == (len(genomes), len(tasks))


def test_killed_run_resumes_to_identical_metrics(finished_run, world_readable):
    out = world_readable / "killed"
    process = subprocess.Popen(
        _command(*_run_args(out)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    # Killed right after generation 0's metrics row: possibly before its checkpoint
    # is written, certainly before generation 1 is done — both must resume exactly.
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_rows = RunDir.open(out).metrics()
    assert len(killed_rows) < 3
    resumed = subprocess.run(
        _command("resume", str(out)), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = [without_timings(r) for r in finished_run.metrics()]
    assert [without_timings(r) for r in RunDir.open(out).metrics()] == expected
