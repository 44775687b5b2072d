"""Run directory: metrics, checkpoints cut back under kill, status screen, safe reading."""

import io
import json
import os
import pickle

import numpy as np
import pytest
from _hostile import TouchOnUnpickle, code_executing_pickle

from qd_llm.errors import QdLlmError
from qd_llm.runs import (
    HELDOUT_DIR,
    Checkpoint,
    RunDir,
    cut_back_logs,
    encode_checkpoint,
    format_status,
    log_sizes,
    without_timings,
)

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
    assert "held-out" not in screen
    tracked = {"test": {"evolved": [0.25, 0.5], "seeds": [0.125, 0.5], "control": [0.0, 0.0]}}
    run.append_metrics({**_row(3), "heldout": tracked})
    assert (
        "held-out   test coverage (evolved/seeds/control) @1 0.250/0.125/0.000  "
        "@2 0.500/0.500/0.000"
    ) in format_status(run)


def _planted_run(tmp_path):
    """A run whose checkpoint covers generation 0, then a cut-short generation 1."""
    run = RunDir.create(tmp_path / "r", CONFIG)
    run.append_metrics(_row(0))
    run.evals_path.write_text('{"a": 1}\n')
    run.save_checkpoint(0, {"population": ["x"], "weights": np.arange(3.0)})
    run.append_metrics(_row(1))
    run.evals_path.write_text('{"a": 1}\n{"a": 2}\n')
    return run


def _files(run):
    return {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}


def test_checkpoint_is_one_npz_of_json_and_arrays_read_without_pickle(tmp_path):
    run = _planted_run(tmp_path)
    assert run.checkpoint_path.name == "checkpoint.npz"
    with np.load(run.checkpoint_path, allow_pickle=False) as npz:
        document = json.loads(npz["document"].tobytes())
        assert document["format"] == "qd_llm-checkpoint" and document["version"] == 2
        reference = document["state"]["weights"]["__array__"]
        assert np.array_equal(npz[reference], [0.0, 1.0, 2.0])
    state = run.read_checkpoint().state
    assert state["population"] == ["x"] and state["weights"].dtype == np.float64
    with pytest.raises(TypeError, match="object arrays"):
        run.save_checkpoint(1, {"ids": np.array(["a"], dtype=object)})


def _flip_middle(data: bytes) -> bytes:
    """``data`` with 8 bytes in the middle inverted (bit rot inside a member)."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 8]) + data[middle + 8 :]


def _object_array_npz(marker) -> bytes:
    """A well-formed checkpoint document whose array member is a pickled object array."""
    document = {"format": "qd_llm-checkpoint", "version": 2, "generation": 0}
    document |= {"metrics_bytes": 0, "evals_bytes": 0, "state": {"x": {"__array__": "a0"}}}
    buffer = io.BytesIO()
    text = np.frombuffer(json.dumps(document).encode(), dtype=np.uint8)
    np.savez(buffer, document=text, a0=np.array([TouchOnUnpickle(marker)], dtype=object))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda data, marker: code_executing_pickle(marker), "damaged or not a checkpoint"),
        (lambda data, marker: data[: len(data) // 2], "damaged or not a checkpoint"),
        (lambda data, marker: _flip_middle(data), "damaged or not a checkpoint"),
        (lambda data, marker: os.urandom(len(data)), "damaged or not a checkpoint"),
        (lambda data, marker: _object_array_npz(marker), "damaged or not a checkpoint"),
        (
            lambda data, marker: encode_checkpoint(
                Checkpoint(generation=0, state={}, metrics_bytes=0, evals_bytes=0, version=1)
            ),
            "checkpoint format version 1; this qd_llm reads version 2",
        ),
    ],
    ids=["pickle", "truncated", "corrupted", "random", "object-array", "old-version"],
)
def test_a_bad_checkpoint_is_one_error_and_changes_nothing(tmp_path, content, message):
    run = _planted_run(tmp_path)
    marker = tmp_path / "marker"
    run.checkpoint_path.write_bytes(content(run.checkpoint_path.read_bytes(), marker))
    before = _files(run)
    with pytest.raises(QdLlmError, match=message) as error:
        run.load_checkpoint()
    assert str(run.checkpoint_path) in str(error.value) and "\n" not in str(error.value)
    assert _files(run) == before and not marker.exists()


@pytest.mark.parametrize("version", [1, 3])
def test_a_snapshot_reads_the_checkpoint_through_the_version_check(tmp_path, version):
    from qd_llm.snapshot import RunSnapshot

    run = _planted_run(tmp_path)
    other = Checkpoint(generation=0, state={}, metrics_bytes=0, evals_bytes=0, version=version)
    run.checkpoint_path.write_bytes(encode_checkpoint(other))
    before = _files(run)
    with pytest.raises(QdLlmError, match=f"version {version}; this qd_llm reads version 2"):
        RunSnapshot(run.path)
    assert _files(run) == before


def test_the_eval_log_appends_batches_and_reads_what_a_checkpoint_covers(tmp_path):
    run = RunDir.create(tmp_path / "r", CONFIG)
    assert run.evals.records() == []
    run.evals.append([{"genome_id": "g", "score": 1.0}, {"genome_id": "h", "score": 0.0}])
    covered = run.evals_path.stat().st_size
    run.evals.append([{"genome_id": "i", "score": 0.5}])
    assert run.evals_path.read_text().count("\n") == 3
    assert [r["genome_id"] for r in run.evals.records()] == ["g", "h", "i"]
    assert [r["genome_id"] for r in run.evals.records(covered_bytes=covered)] == ["g", "h"]


def test_cut_back_logs_truncates_only_logs_under_the_folder(tmp_path):
    root = tmp_path / HELDOUT_DIR
    (root / "set" / "control").mkdir(parents=True)
    (root / "set" / "evals.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    (root / "set" / "control" / "evals.jsonl").write_text('{"b": 1}\n')
    outside = tmp_path / "outside.jsonl"
    outside.write_text("keep me\n")
    (root / "set" / "link.jsonl").symlink_to(outside)
    sizes = log_sizes(root)
    assert sizes == {"set/evals.jsonl": 18, "set/control/evals.jsonl": 9}
    (root / "set" / "evals.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": 3')
    cut_back_logs(root, {**sizes, "set/control/evals.jsonl": 0, "../outside.jsonl": 0})
    assert (root / "set" / "evals.jsonl").read_text() == '{"a": 1}\n{"a": 2}\n'
    assert (root / "set" / "control" / "evals.jsonl").read_text() == ""
    assert outside.read_text() == "keep me\n"
    with pytest.raises(QdLlmError, match="must be a table"):
        cut_back_logs(root, [1, 2])


def test_a_legacy_pickle_checkpoint_is_refused_unread(tmp_path):
    run = _planted_run(tmp_path)
    marker = tmp_path / "marker"
    run.checkpoint_path.unlink()
    (run.path / "checkpoint.pkl").write_bytes(code_executing_pickle(marker))
    before = _files(run)
    with pytest.raises(QdLlmError, match="written by an older qd_llm"):
        run.load_checkpoint()
    assert _files(run) == before and not marker.exists()
    # The payload is live: unpickling it would have made the marker.
    pickle.loads(code_executing_pickle(marker))
    assert marker.exists()
