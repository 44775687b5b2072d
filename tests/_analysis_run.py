"""One tiny real run shared by the analysis tests (plots, export, coverage, best-of-N).

Built once per test process with the loop's own API: real SmolLM2, real
sandbox, real MiniLM; two random seed genomes, two generations with one task
adaptation, so every figure has something to draw. Tests must not modify it.

Set ``QD_LLM_ANALYSIS_RUN=DIR`` to reuse a run built earlier by :func:`tiny_run`
(it is copied to ``DIR`` on first build when ``DIR`` does not exist yet), which
saves the build on repeated local test sessions.
"""

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

BIGBENCH = Path(__file__).parent / "tasks" / "data" / "bigbench_mixed"

TINY_RUN_OVERRIDES = [
    "seed=3",
    "progress=false",
    "heatmap=false",
    "genomes.seeds=random:2",
    "genomes.rank=2",
    "genomes.random_std=0.02",
    "population.size=2",
    "population.dns_k=2",
    "population.offspring=1",
    "population.generations=2",
    "tasks.initial_tasks=2",
    "tasks.instances_per_task=1",
    "tasks.adapt_every=1",
    "tasks.new_task_attempts=1",
    "decoding.max_new_tokens=6",
    "inference.batch_size=16",
]


@functools.cache
def tiny_run() -> Path:
    """The run directory (built on first call, deleted at process exit)."""
    from qd_llm.runs import CHECKPOINT_FILE, RunDir

    reuse = os.environ.get("QD_LLM_ANALYSIS_RUN")
    if reuse and (Path(reuse) / CHECKPOINT_FILE).exists():
        return Path(reuse)
    from qd_llm.config import load_config
    from qd_llm.loop import Coevolution

    root = Path(tempfile.mkdtemp(prefix="qd-analysis-"))
    root.chmod(0o755)  # the sandbox's unprivileged uid reads the tasks
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    config = load_config(preset="demo", overrides=TINY_RUN_OVERRIDES)
    run = RunDir.create(root / "run", config.to_dict())
    loop = Coevolution(config, run)
    try:
        loop.run()
    finally:
        loop.close()
    if reuse:
        shutil.copytree(run.path, reuse)
    return run.path
