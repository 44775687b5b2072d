"""A tiny real loop run, for tests that compare where and how a run executes.

Two random seed genomes, two generations with a task adaptation after each,
greedy decoding of 4 tokens: a minute on 2 cores with the real SmolLM2,
sandbox and MiniLM. Runs built with the same overrides must agree, whatever
backend or executor produced them.
"""

import json
from collections.abc import Sequence
from pathlib import Path

from qd_llm.config import load_config
from qd_llm.runs import RunDir

TINY = [
    "seed=5",
    "genomes.seeds=random:2",
    "population.size=2",
    "population.dns_k=2",
    "population.offspring=1",
    "population.generations=2",
    "tasks.adapt_every=1",
    "tasks.initial_tasks=2",
    "tasks.instances_per_task=2",
    "tasks.new_task_attempts=1",
    "decoding.max_new_tokens=4",
    "sandbox.workers=1",
    "progress=false",
    "heatmap=false",
    'operators={"linear": {"parents": 2}, "gaussian": {"parents": 1, "scale": 0.002}}',
]


def run_tiny_loop(root: Path, name: str, overrides: Sequence[str] = ()) -> RunDir:
    """Runs the tiny loop in ``root / name`` with ``overrides`` after :data:`TINY`.

    ``root`` must be world-readable: sandboxed task code runs as another uid.
    """
    return run_loop(root, name, [*TINY, *overrides])


def run_loop(root: Path, name: str, overrides: Sequence[str]) -> RunDir:
    """Runs the demo preset with ``overrides`` in ``root / name`` through the Python API."""
    from qd_llm.loop import Coevolution

    config = load_config(preset="demo", overrides=overrides)
    run = RunDir.create(root / name, config.to_dict())
    loop = Coevolution(config, run)
    try:
        loop.run()
    finally:
        loop.close()
    return run


def eval_records(run: RunDir) -> list[dict]:
    """Every evaluation record of ``run`` (completions, extractions, scores)."""
    return [json.loads(line) for line in run.evals_path.read_text().splitlines()]
