"""Opening a run directory someone else wrote never runs code from it.

A real run (the shared tiny analysis run) is copied and given a hostile
checkpoint: a pickle whose unpickling creates a marker file, planted both where
the checkpoint lives and as a legacy ``checkpoint.pkl``. Every command that
reads runs is then used on it through the CLI, as a user would: each one works
or exits non-zero with one error line, the marker never appears, and the logs a
resume would cut back stay byte-identical. The commands of one case run side by
side to keep the test short.
"""

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _analysis_run import BIGBENCH, tiny_run
from _hostile import code_executing_pickle

from qd_llm.runs import LEGACY_CHECKPOINT_FILE, RunDir

pytestmark = pytest.mark.slow


def _cut_short_copy(path: Path) -> RunDir:
    """A copy of the tiny run at ``path`` whose last generation was cut short by a kill."""
    run = RunDir.open(shutil.copytree(tiny_run(), path))
    # What a cut-short generation leaves: a resume that reads a checkpoint cuts these off.
    with open(run.metrics_path, "a") as f:
        f.write('{"generation": 3, "population_si')
    with open(run.evals_path, "a") as f:
        f.write('{"genome_id": "x"')
    return run


def _hostile_copy(tmp_path: Path, marker: Path) -> RunDir:
    """A cut-short copy of the tiny run with a code-executing pickle for a checkpoint."""
    run = _cut_short_copy(tmp_path / "run")
    payload = code_executing_pickle(marker)
    pickle.loads(payload)  # the payload is live: unpickling it makes the marker
    assert marker.exists()
    marker.unlink()
    (run.path / LEGACY_CHECKPOINT_FILE).write_bytes(payload)
    run.checkpoint_path.write_bytes(payload)
    return run


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "qd_llm.cli", *map(str, args)]


def _commands(run: RunDir, out: Path) -> dict[str, list[str]]:
    tasks = ["--tasks", BIGBENCH, "--limit", 1]
    return {
        "status": _cli("status", run.path),
        "plot": _cli("plot", run.path),
        "export": _cli("export", run.path, "--out", out / "export"),
        "coverage": _cli("coverage", run.path, *tasks),
        "bestofn": _cli("bestofn", run.path, *tasks, "--n", 1),
        "resume": _cli("resume", run.path),
    }


def _run_side_by_side(commands: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """Runs every command at once; name -> (exit code, stderr)."""
    processes = {
        name: subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for name, command in commands.items()
    }
    results = {}
    for name, process in processes.items():
        _, stderr = process.communicate(timeout=600)
        results[name] = (process.returncode, stderr)
    return results


def _files(run: RunDir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}


def _assert_one_error_line(name: str, code: int, stderr: str, expected: str) -> None:
    assert "Traceback" not in stderr, f"{name}: {stderr[-2000:]}"
    assert code == 2, f"{name} exited {code}: {stderr[-2000:]}"
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"qd-llm {name}: error: ") and expected in last, f"{name}: {last}"


def test_a_planted_pickle_is_never_loaded_by_any_command(tmp_path):
    marker = tmp_path / "marker"
    run = _hostile_copy(tmp_path, marker)
    before = _files(run)
    results = _run_side_by_side(_commands(run, tmp_path))
    assert not marker.exists()
    # status reads only config and metrics; everything else needs the checkpoint.
    code, stderr = results.pop("status")
    assert code == 0 and "Traceback" not in stderr
    for name, (code, stderr) in results.items():
        _assert_one_error_line(
            name, code, stderr, f"{run.checkpoint_path} is damaged or not a checkpoint"
        )
    assert _files(run) == before
    assert not (tmp_path / "export").exists() and not run.figures_dir.exists()


def test_legacy_and_corrupted_checkpoints_are_refused_and_change_nothing(tmp_path):
    marker = tmp_path / "marker"
    legacy = _hostile_copy(tmp_path / "legacy", marker)
    legacy.checkpoint_path.unlink()  # only the pickled checkpoint of an older qd_llm is left
    corrupted = _cut_short_copy(tmp_path / "corrupted")
    good = corrupted.checkpoint_path.read_bytes()
    corrupted.checkpoint_path.write_bytes(good[: len(good) // 2])  # torn by a bad copy
    before = {run.path: _files(run) for run in (legacy, corrupted)}
    commands = {name: _commands(legacy, tmp_path)[name] for name in ("status", "plot", "resume")}
    commands["corrupted resume"] = _cli("resume", corrupted.path)
    results = _run_side_by_side(commands)
    assert not marker.exists()
    assert results["status"][0] == 0
    for name in ("plot", "resume"):
        _assert_one_error_line(name, *results[name], "was written by an older qd_llm")
    _assert_one_error_line("resume", *results["corrupted resume"], "damaged or not a checkpoint")
    assert {run.path: _files(run) for run in (legacy, corrupted)} == before
