"""Malformed input: one readable line and a non-zero exit, and nothing written is lost.

Every case runs ``qd-llm`` in a subprocess as a user would and checks what the
user sees: a non-zero exit, no traceback, and a last stderr line
``qd-llm COMMAND: error: ...`` that names the offending thing and what was
expected. Run-directory cases work on a copy of one tiny real run (built once
per test process, shared with the analysis tests), snapshot its bytes before
the failing command, check them unchanged after it, then remove the fault and
open the run again. Scientist replies are covered in
``tests/tasks/test_llm_scientist.py``, where the scripted chat server lives.
"""

import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _analysis_run import tiny_run

from qd_llm.runs import RunDir
from qd_llm.snapshot import RunSnapshot

# Config errors need no model: the command must stop before creating anything.
CONFIG_CASES = {
    "unknown key": (["population.sizee=4"], ["unknown config key 'population.sizee'", "valid:"]),
    "wrong type": (["population.size=many"], ["'population.size'", "must be an integer"]),
    "wrong type of a flag": (["progress=sometimes"], ["'progress'", "must be true or false"]),
    "unknown operator parameter": (
        ["operators.slerp.alpha=1"],
        ["'operators.slerp.alpha'", "unknown parameter", "valid: parents, t"],
    ),
    "operator with parents=0": (["operators.linear.parents=0"], ["'operators.linear.parents'"]),
    "negative operator parameter": (
        ['operators={"ties": {"parents": 2, "density": -0.5}}'],
        ["'operators.ties.density'", "must be in (0, 1]", "-0.5"],
    ),
    "operator weights for the wrong parent count": (
        ["operators.linear.weights=[1]"],
        ["'operators.linear.weights'", "one number per parent (2), got 1"],
    ),
    "unknown operator": (["operators.blend.parents=2"], ["'operators.blend'", "unknown operator"]),
    "population size 0": (["population.size=0"], ["'population.size'", "must be >= 1"]),
    "offspring 0": (["population.offspring=0"], ["'population.offspring'", "must be >= 1"]),
    "dns_k 0": (["population.dns_k=0"], ["'population.dns_k'", "must be >= 1"]),
    "dns_k above the population size": (
        ["population.size=4", "population.dns_k=5"],
        ["'population.dns_k'", "must be <= population.size (4), got 5"],
    ),
}

CONFIG_FILES = {
    "toml syntax error": ("bad.toml", "[population]\nsize = = 4\n", ["bad.toml", "valid toml"]),
    "json syntax error": ("bad.json", '{"population": {"size": 4,}}', ["bad.json", "valid json"]),
}

TASK_JSON = {
    "name_of_task": "broken",
    "description_of_task": "A broken task.",
    "capability_being_measured": "nothing",
}


def _family(*, get_tasks='{"1": 1}', instructions='"Say 1."', score="1.0") -> str:
    return textwrap.dedent(
        f"""\
        class TaskFamily:
            @staticmethod
            def get_tasks():
                return {get_tasks}

            @staticmethod
            def get_instructions(t):
                return {instructions}

            @staticmethod
            def score(t, submission):
                return {score}
        """
    )


# task.py (None: no task.py at all) -> what the one line must say.
BROKEN_TASKS = {
    "missing task.py": (None, ["not a task directory", "no task.py"]),
    "syntax error": ("class TaskFamily:\n    def get_tasks(:\n", ["SyntaxError", "line 2"]),
    "no TaskFamily": ("def get_tasks():\n    return {}\n", ["defines no class TaskFamily"]),
    "get_tasks not a dict": (_family(get_tasks="[1, 2]"), ["get_tasks() returned list, not dict"]),
    "score returns NaN": (_family(score='float("nan")'), ["score() returned NaN", "[0, 1]"]),
    "score returns a string": (_family(score='"1.0"'), ["score() returned str, not a number"]),
    "score raises": (_family(score='int("one")'), ["score()", "failed", "ValueError"]),
    "10 MB of instructions": (
        _family(instructions='"x" * 10_000_000'),
        ["get_instructions()", "10000000 characters, more than 100000"],
    ),
}


def qd_llm(*args: str, env: dict | None = None, prefix: tuple[str, ...] = ()):
    """Runs ``qd-llm ARGS`` in a subprocess (inside ``prefix``, e.g. ``unshare``)."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "qd_llm.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, command: str, needles) -> str:
    """The user saw a non-zero exit and one error line holding every needle; returns it."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    # Log lines (INFO ...) may come first; the error is the last line, and the only one.
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if ": error: " in line] == lines[-1:], result.stderr[-3000:]
    line = lines[-1]
    assert line.startswith(f"qd-llm {command}: error: "), line
    for needle in needles:
        assert needle in line, line
    return line


def run_bytes(path: Path) -> dict[str, bytes]:
    """Every file of a run directory, by relative path."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)): p.read_bytes() for p in files}


def assert_opens(path: Path) -> None:
    """The run opens again: its checkpoint loads and a snapshot reads it whole."""
    snapshot = RunSnapshot(path)
    assert snapshot.generation == 2 and snapshot.population
    assert len(snapshot.metrics) == 3 and snapshot.scores()
    assert RunDir.open(path).load_checkpoint().generation == 2


# --- config -------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "needles"), CONFIG_CASES.values(), ids=CONFIG_CASES.keys())
def test_bad_config_override_is_one_line(tmp_path, overrides, needles):
    out = tmp_path / "run"
    sets = [arg for item in overrides for arg in ("--set", item)]
    result = qd_llm("run", "--preset", "demo", "--out", str(out), *sets)
    assert_one_line_error(result, "run", needles)
    assert not out.exists()


@pytest.mark.parametrize(("name", "text", "needles"), CONFIG_FILES.values(), ids=list(CONFIG_FILES))
def test_config_file_with_a_syntax_error_is_one_line(tmp_path, name, text, needles):
    (tmp_path / name).write_text(text)
    out = tmp_path / "run"
    result = qd_llm("run", "--config", str(tmp_path / name), "--out", str(out))
    assert_one_line_error(result, "run", needles)
    assert not out.exists()


# --- task directories ---------------------------------------------------------------


def _broken_task(root: Path, case: str) -> Path:
    code, _ = BROKEN_TASKS[case]
    task = root / case.replace(" ", "_").replace(".", "_")
    task.mkdir(parents=True)
    (task / "task.json").write_text(json.dumps(TASK_JSON))
    if code is not None:
        (task / "task.py").write_text(code)
    return task


@pytest.mark.parametrize("case", BROKEN_TASKS)
def test_broken_task_directory_is_one_line_at_the_cli(world_readable, case):
    task = _broken_task(world_readable / "cli", case)
    result = qd_llm("tasks", "score", str(task), "--answer", "Answer: 1")
    assert_one_line_error(result, "tasks", [str(task), *BROKEN_TASKS[case][1]])


def test_broken_tasks_score_zero_in_the_evaluator_and_it_goes_on(
    world_readable, hf_backend, fixture_run
):
    """In a loop, generated code is untrusted: a broken task scores 0 or is skipped."""
    from qd_llm.evaluation.evaluate import Evaluator
    from qd_llm.inference.base import GenerationConfig
    from qd_llm.models.genome import GenomeStore
    from qd_llm.tasks.sandbox import SandboxConfig, SandboxPool
    from qd_llm.tasks.taskdir import read_task

    run = fixture_run()
    genome = RunSnapshot(run).population[0]
    tasks = {case: _broken_task(world_readable / "loop", case) for case in BROKEN_TASKS}
    readable = {case: read_task(path) for case, path in tasks.items() if case != "missing task.py"}
    with SandboxPool(config=SandboxConfig(wall_seconds=10.0), workers=1) as pool:
        evaluator = Evaluator(
            run_dir=run,
            backend=hf_backend,
            sandbox=pool,
            genomes=GenomeStore(run / "genomes", base_model="smollm2-135m-instruct"),
            decoding=GenerationConfig(max_new_tokens=2),
            pass_threshold=0.5,
        )
        unusable = {"syntax error", "no TaskFamily", "get_tasks not a dict"}
        unusable.add("10 MB of instructions")
        skipped = {case for case, task in readable.items() if not evaluator.instances(task)}
        assert skipped == unusable
        scored = [task for case, task in readable.items() if case not in unusable]
        assert evaluator.evaluate([genome], scored) == len(scored)
        ids = [task.task_id for task in scored]
        assert evaluator.scores([genome], ids).tolist() == [[0.0] * len(ids)]


def test_missing_bubblewrap_says_how_to_install_it(world_readable, tmp_path):
    task = world_readable / "fine"
    task.mkdir()
    (task / "task.json").write_text(json.dumps(TASK_JSON))
    (task / "task.py").write_text(_family())
    # An empty PATH: no bwrap on it (the interpreter is started by its full path).
    result = qd_llm(
        "tasks", "score", str(task), "--answer", "1", "--isolation", "bwrap",
        env={"PATH": str(tmp_path)},
    )  # fmt: skip
    needles = ["bubblewrap", "not on PATH", "apt-get install bubblewrap"]
    assert_one_line_error(result, "tasks", needles)


# --- run directories ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_run(world_readable):
    """Copies of the shared tiny run (two generations after generation 0), one per case."""
    source = tiny_run()
    names = itertools.count()

    def copy() -> Path:
        return Path(shutil.copytree(source, world_readable / f"run{next(names)}", symlinks=True))

    return copy


def _cut_last_bytes(path: Path, count: int) -> bytes:
    """Drops the last ``count`` bytes of ``path`` (a torn last line); returns them."""
    data = path.read_bytes()
    path.write_bytes(data[:-count])
    return data[-count:]


def test_torn_line_after_the_checkpoint_is_cut_on_resume(fixture_run):
    """A kill mid-append leaves a torn line past the checkpoint: resume drops it silently."""
    path = fixture_run()
    run = RunDir(path)
    before = run_bytes(path)
    for log in (run.metrics_path, run.evals_path):
        with open(log, "a") as f:
            f.write('{"generation": 3, "popul')
    result = qd_llm("status", str(path))
    assert result.returncode == 0 and "generation 2/2" in result.stdout
    assert_opens(path)  # load_checkpoint cuts the logs back
    assert run_bytes(path) == before


@pytest.mark.parametrize(
    ("log", "command"),
    [("metrics.jsonl", ["resume"]), ("evals.jsonl", ["export", "--out", "EXPORT"])],
    ids=["metrics via resume", "evals via export"],
)
def test_log_cut_short_inside_the_checkpoint_is_one_line(fixture_run, tmp_path, log, command):
    path = fixture_run()
    removed = _cut_last_bytes(path / log, 7)
    before = run_bytes(path)
    args = [str(tmp_path / "export") if a == "EXPORT" else a for a in command]
    result = qd_llm(args[0], str(path), *args[1:])
    assert_one_line_error(result, args[0], [str(path / log), "restore it"])
    assert run_bytes(path) == before
    assert not (tmp_path / "export").exists()
    with open(path / log, "ab") as f:
        f.write(removed)
    assert_opens(path)


CORRUPT_CHECKPOINTS = {
    "random bytes": random.Random(0).randbytes(4096),
    "foreign file": json.dumps({"format": "not a qd-llm checkpoint"}).encode(),
}


@pytest.mark.parametrize("content", CORRUPT_CHECKPOINTS.values(), ids=CORRUPT_CHECKPOINTS.keys())
@pytest.mark.parametrize("command", ["resume", "export"])
def test_corrupt_checkpoint_is_one_line(fixture_run, tmp_path, content, command):
    path = fixture_run()
    checkpoint = RunDir(path).checkpoint_path
    original = checkpoint.read_bytes()
    checkpoint.write_bytes(content)
    before = run_bytes(path)
    extra = ["--out", str(tmp_path / "export")] if command == "export" else []
    result = qd_llm(command, str(path), *extra)
    assert_one_line_error(result, command, [checkpoint.name])
    assert run_bytes(path) == before
    checkpoint.write_bytes(original)
    assert_opens(path)


def test_genome_without_weights_is_one_line_at_export(fixture_run, tmp_path):
    from qd_llm.export import export_elites
    from qd_llm.models.genome import ADAPTER_WEIGHTS

    path = fixture_run()
    elite = RunSnapshot(path).elites()[0].genome_id
    weights = path / "genomes" / elite / ADAPTER_WEIGHTS
    kept = tmp_path / ADAPTER_WEIGHTS
    shutil.move(weights, kept)
    before = run_bytes(path)
    result = qd_llm("export", str(path), "--out", str(tmp_path / "export"))
    assert_one_line_error(result, "export", [f"elite genome {elite} has no weights"])
    assert run_bytes(path) == before
    assert not (tmp_path / "export").exists()
    shutil.move(kept, weights)
    assert_opens(path)
    assert len(export_elites(path, tmp_path / "export")) >= 1


def _one_more_generation(path: Path) -> None:
    """Raises the run's generation budget by one, so ``resume`` has work to write."""
    config = json.loads((path / "config.json").read_text())
    config["population"]["generations"] += 1
    (path / "config.json").write_text(json.dumps(config))


def _mount_namespace() -> tuple[str, ...]:
    """``unshare`` into a private mount namespace, or skip where that cannot work."""
    prefix = ("unshare", "--mount", "--propagation", "private")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare --mount is not permitted here")
    return prefix


def test_read_only_run_directory_is_one_line(fixture_run):
    prefix = _mount_namespace()
    path = fixture_run()
    _one_more_generation(path)
    before = run_bytes(path)
    # As root, chmod does not stop writes; a read-only bind mount does.
    script = (
        'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && '
        'exec "$2" -m qd_llm.cli "$3" "$1"'
    )
    result = subprocess.run(
        [*prefix, "sh", "-c", script, "sh", str(path), sys.executable, "resume"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert_one_line_error(
        result, "resume", ["Read-only file system", str(path), f"qd-llm resume {path}"]
    )
    assert run_bytes(path) == before
    assert RunDir.open(path).load_checkpoint().generation == 2


def _allocated(files) -> int:
    """Bytes a tmpfs allocates for ``files`` (whole pages)."""
    return sum(-(-f.stat().st_size // 4096) * 4096 for f in files)


@pytest.mark.slow
def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(fixture_run, world_readable):
    prefix = _mount_namespace()
    path = fixture_run()
    _one_more_generation(path)
    before = run_bytes(path)
    # Before its checkpoint, the extra generation writes one child genome (every
    # genome of a run has files of the same sizes), two eval records and a
    # metrics row (a page each at most); the checkpoint, about as large as the
    # last one, comes last. Leave room for the first and not for the second.
    genome = next((path / "genomes").iterdir())
    slack = 4 * 4096
    free = _allocated(p for p in genome.rglob("*") if p.is_file()) + slack
    assert slack < _allocated([RunDir(path).checkpoint_path])
    mount_point, after = world_readable / "tmpfs", world_readable / "after_disk_full"
    mount_point.mkdir()
    script = """
        mount -t tmpfs -o size=64m,mode=0755 tmpfs "$1" && cp -a "$2" "$1/run" || exit 99
        avail=$(df -B1 --output=avail "$1" | tail -n 1)
        fallocate -l $((avail - $3)) "$1/filler" || exit 99
        "$4" -m qd_llm.cli resume "$1/run"
        rc=$?
        cp -a "$1/run" "$5" && exit $rc
    """
    result = subprocess.run(
        [
            *prefix,
            "sh",
            "-c",
            script,
            "sh",
            str(mount_point),
            str(path),
            str(free),
            sys.executable,
            str(after),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode != 99, result.stderr[-2000:]
    assert_one_line_error(result, "resume", ["No space left on device", "qd-llm resume"])
    run = RunDir(after)
    # The generation finished (its metrics row is there) but its checkpoint did not land.
    assert len(run.metrics()) == 4
    assert run.checkpoint_path.read_bytes() == before[run.checkpoint_path.name]
    # With room again, the run opens at its previous checkpoint, logs cut back to it.
    assert_opens(after)
    for log in ("metrics.jsonl", "evals.jsonl"):
        assert (after / log).read_bytes() == before[log]
