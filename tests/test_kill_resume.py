"""``kill -9`` anywhere in a run: ``qd-llm resume`` continues it exactly.

One tiny real run (SmolLM2, sandbox, MiniLM; LoRA genomes with
``keep_weights=live`` so weights are dropped) is killed with SIGKILL at one
point per process through :mod:`qd_llm.faults` (``QD_LLM_KILL_AT``), resumed
and killed at the next point, and so on, then resumed to the end. Every kill
must happen (exit status -9, and the metrics rows on disk show how far the
run got), and the final run directory must equal an uninterrupted run's:
``metrics.jsonl`` apart from wall time, ``evals.jsonl`` byte for byte, the same
task folders and instances files byte for byte, the same genome folders with
the same files (``genome.json`` apart from its creation time), no temporary
leftovers of atomic writes, and ``status``, ``plot`` and ``export`` work.

The kill points, in the order the chain hits them (``phase:count``, the count
within one process), and what each proves:

1. ``loop.task_seeded:1`` — generation 0, one initial task written (task
   folder, instances file) and the other not: task seeding restarts from
   scratch and rewrites the same task, reusing the folder and instances.
2. ``genome.weights_written:3`` — generation 0, the first child's adapter
   written into its temporary folder, ``genome.json`` not yet: the half-made
   genome folder (``genomes/.ID.*.tmp``) is removed and the child bred again.
3. ``loop.checkpoint_saved:1`` — generation 0 checkpointed, its dead weights
   not dropped yet: the resume drops them itself.
4. ``genome.markers_dropped:1`` — that drop on resume killed after a genome's
   weights file went and before its other files did: the next resume finishes
   the drop, so the folder holds ``genome.json`` alone, as in the reference.
5. ``loop.child_saved:1`` — generation 1, one of two children stored: it is
   found stored (same content hash) when bred again.
6. ``evaluate.generated:1`` — generation 1, the children's answers generated,
   none scored or written: evaluation is redone with identical answers.
7. ``sandbox.scored:1`` — generation 1, one of the children's two sandbox
   scores done (the other child was evaluated in generation 0): nothing of
   them was written; scoring is redone.
8. ``evaluate.appended:1`` — generation 1's evaluation records appended,
   no metrics row: ``evals.jsonl`` is cut back to the checkpoint.
9. ``loop.tasks_adapted:1`` — generation 1's task adaptation has written and
   accepted a new (easier) task, the population is not yet evaluated on it:
   the adaptation is redone with the same draws and the same task.
10. ``loop.metrics_appended:1`` — generation 1's row on disk, its checkpoint
    not: the row and evaluations are cut back and the generation redone.
11. ``atomic.before_rename:<checkpoint file>:1`` — generation 1's row and
    evaluations written and its checkpoint complete in a temporary file, not
    yet renamed: the temporary file is removed, and the resume starts from
    generation 0's checkpoint.
12. ``loop.weights_dropped:1`` — generation 1 checkpointed and its dead
    weights dropped: a kill between generations loses nothing.
13. ``loop.checkpoint_saved:1`` — the last generation checkpointed, its dead
    weights not dropped: a resume with no generation left still drops them.

Then a resume without a kill point finishes the run.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from qd_llm import atomic
from qd_llm.cli import main
from qd_llm.faults import KILL_AT_ENV
from qd_llm.models.genome import ADAPTER_CONFIG, ADAPTER_WEIGHTS, GENOME_JSON
from qd_llm.runs import RunDir, without_timings

# Seed 1 draws an initial task one level above the lowest, so generation 1's
# adaptation gets an easier task accepted (everything fails with 2 tokens).
TINY = [
    "seed=1",
    "genomes.seeds=random:2",
    "genomes.rank=2",
    "genomes.keep_weights=live",
    "population.size=2",
    "population.dns_k=2",
    "population.offspring=2",
    "population.generations=2",
    "tasks.adapt_every=1",
    "tasks.initial_tasks=2",
    "tasks.instances_per_task=1",
    "tasks.new_task_attempts=1",
    "decoding.max_new_tokens=2",
    "sandbox.workers=1",
    "progress=false",
    "heatmap=false",
    'operators={"linear": {"parents": 2}, "gaussian": {"parents": 1, "scale": 0.002}}',
]


@dataclasses.dataclass(frozen=True)
class KillPoint:
    """Where one process of the chain is killed.

    Attributes:
        phase: The :func:`qd_llm.faults.maybe_kill` phase.
        count: Killed the count-th time the process reaches it.
        rows_on_disk: Complete metrics rows on disk right after the kill.
        mess: What the kill must have left in the run directory for the
            resume to clean up, if anything: a check on the run's path.
    """

    phase: str
    count: int
    rows_on_disk: int
    mess: Callable[[Path], bool] | None = None


def _half_made_genome(run: Path) -> bool:
    return any(
        (p / ADAPTER_WEIGHTS).exists() and not (p / GENOME_JSON).exists()
        for p in (run / "genomes").glob(".*.tmp")
    )


def _half_dropped_genome(run: Path) -> bool:
    return any(
        (p / ADAPTER_CONFIG).exists() and not (p / ADAPTER_WEIGHTS).exists()
        for p in (run / "genomes").iterdir()
    )


def _unrenamed_checkpoint(run: Path) -> bool:
    return any(run.glob(f".{RunDir(run).checkpoint_path.name}.*.tmp"))


def _chain(checkpoint_name: str) -> list[KillPoint]:
    return [
        KillPoint("loop.task_seeded", 1, 0),
        KillPoint("genome.weights_written", 3, 0, mess=_half_made_genome),
        KillPoint("loop.checkpoint_saved", 1, 1),
        KillPoint("genome.markers_dropped", 1, 1, mess=_half_dropped_genome),
        KillPoint("loop.child_saved", 1, 1),
        KillPoint("evaluate.generated", 1, 1),
        KillPoint("sandbox.scored", 1, 1),
        KillPoint("evaluate.appended", 1, 1),
        KillPoint("loop.tasks_adapted", 1, 1),
        KillPoint("loop.metrics_appended", 1, 2),
        KillPoint(f"atomic.before_rename:{checkpoint_name}", 1, 2, mess=_unrenamed_checkpoint),
        KillPoint("loop.weights_dropped", 1, 2),
        KillPoint("loop.checkpoint_saved", 1, 3),
    ]


def _env(kill_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != KILL_AT_ENV}
    if kill_at is not None:
        env[KILL_AT_ENV] = kill_at
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "qd_llm.cli", *args]


def _qd_llm(*args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(*args), capture_output=True, text=True, timeout=600, env=_env(kill_at)
    )


def _run_args(out: Path) -> list[str]:
    args = ["run", "--preset", "demo", "--out", str(out)]
    for item in TINY:
        args += ["--set", item]
    return args


def _contents(folder: Path) -> dict[str, object]:
    """Relative path -> bytes of every file.

    ``genome.json`` is compared without its creation time, and PEFT's
    ``adapter_config.json`` with ``target_modules`` sorted: PEFT writes a set,
    in an order that changes with each process's string hash seed.
    """
    contents = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name == GENOME_JSON:
            info = json.loads(path.read_text())
            info.pop("created_at")
            contents[str(path.relative_to(folder))] = info
        elif path.name == ADAPTER_CONFIG:
            config = json.loads(path.read_text())
            config["target_modules"] = sorted(config["target_modules"])
            contents[str(path.relative_to(folder))] = config
        else:
            contents[str(path.relative_to(folder))] = path.read_bytes()
    return contents


def test_the_kill_comes_at_the_chosen_count_of_the_chosen_phase():
    code = (
        "from qd_llm import faults\n"
        "for phase in ['a', 'b', 'a', 'b', 'a']:\n"
        "    faults.maybe_kill(phase)\n"
        "    print(phase, flush=True)\n"
    )
    env = {**os.environ, KILL_AT_ENV: "b:2"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["a", "b", "a"]
    env = {k: v for k, v in os.environ.items() if k != KILL_AT_ENV}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.split() == ["a", "b", "a", "b", "a"]


def test_leftovers_of_cut_short_atomic_writes_are_cleaned_up(tmp_path):
    (tmp_path / "kept.json").write_text("{}")
    (tmp_path / ".kept.json.x1.tmp").write_text("{")  # a file write before its rename
    (tmp_path / ".task.x2.tmp").mkdir()  # a directory being filled
    (tmp_path / ".task.x2.tmp" / "task.py").write_text("")
    (tmp_path / "replaced").mkdir()  # a replacement done but for deleting the old copy
    (tmp_path / ".replaced.old").mkdir()
    (tmp_path / ".moved.old").mkdir()  # a replacement stopped between its two renames
    (tmp_path / ".moved.old" / "genome.json").write_text("{}")
    assert len(atomic.remove_leftovers(tmp_path)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.json", "moved", "replaced"]
    assert (tmp_path / "moved" / "genome.json").exists()
    assert atomic.remove_leftovers(tmp_path) == []
    assert atomic.remove_leftovers(tmp_path / "missing") == []


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_run_killed_at_every_point_resumes_to_the_uninterrupted_run(world_readable, tmp_path):
    reference = world_readable / "reference"
    # The uninterrupted run goes alongside the chain: most of the chain's time is
    # single-threaded process start-up.
    log = tmp_path / "uninterrupted.log"
    with open(log, "w") as stderr:
        uninterrupted = subprocess.Popen(
            _command(*_run_args(reference)), stdout=stderr, stderr=stderr, env=_env()
        )
    try:
        killed = world_readable / "killed"
        chain = _chain(RunDir(killed).checkpoint_path.name)
        for step, point in enumerate(chain):
            args = _run_args(killed) if step == 0 else ["resume", str(killed)]
            done = _qd_llm(*args, kill_at=f"{point.phase}:{point.count}")
            assert done.returncode == -signal.SIGKILL, (
                f"{point.phase}:{point.count} was not reached: exit {done.returncode}\n"
                f"{done.stderr[-2000:]}"
            )
            assert len(RunDir(killed).metrics()) == point.rows_on_disk, point
            if point.mess is not None:
                assert point.mess(killed), f"{point}: the kill left no {point.mess.__name__}"
        done = _qd_llm("resume", str(killed))
        assert done.returncode == 0, done.stderr[-2000:]
        assert uninterrupted.wait(timeout=600) == 0, log.read_text()[-2000:]
    finally:
        uninterrupted.kill()
        uninterrupted.wait()

    expected, actual = RunDir(reference), RunDir(killed)
    assert [without_timings(r) for r in actual.metrics()] == [
        without_timings(r) for r in expected.metrics()
    ]
    assert actual.evals_path.read_bytes() == expected.evals_path.read_bytes()
    for folder in ("genomes", "tasks", "instances"):
        assert _contents(killed / folder) == _contents(reference / folder), folder
    assert not [p for p in killed.rglob("*") if p.suffix in (".tmp", ".old")]

    assert main(["status", str(killed)]) == 0
    assert main(["plot", str(killed)]) == 0
    assert main(["export", str(killed), "--out", str(tmp_path / "export"), "--top", "1"]) == 0
    assert (tmp_path / "export" / "manifest.json").exists()
