"""Metrics rows streamed to TensorBoard and Weights & Biases (offline).

The rows are written by hand here; the experiment test runs real tiny runs
with TensorBoard on and compares their event files with ``metrics.jsonl``.
"""

import pytest

from qd_llm.config import TrackingConfig, load_config
from qd_llm.errors import QdLlmError
from qd_llm.trackers import Trackers, scalars

ROWS = [
    {
        "generation": 0,
        "coverage": 0.25,
        "converged": False,
        "population": ["ab12", "cd34"],
        "task_adaptation": None,
        "operators": {"linear": {"success_rate": 0.5}},
        "heldout": {"taskset": "heldout", "test": {"evolved": [0.2, 0.4, 0.6]}},
    },
    {
        "generation": 1,
        "coverage": 0.5,
        "converged": True,
        "population": ["ab12"],
        "operators": {"linear": {"success_rate": 1.0}},
        "best_fitness": float("nan"),
    },
]

EXPECTED = {
    0: {
        "coverage": 0.25,
        "converged": 0.0,
        "operators/linear/success_rate": 0.5,
        "heldout/test/evolved@1": 0.2,
        "heldout/test/evolved@2": 0.4,
        "heldout/test/evolved@3": 0.6,
    },
    1: {"coverage": 0.5, "converged": 1.0, "operators/linear/success_rate": 1.0},
}


def test_scalars_are_the_numeric_leaves_named_by_their_path():
    for row in ROWS:
        assert scalars(row) == EXPECTED[row["generation"]]


def test_tensorboard_event_files_read_back_as_the_rows(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trackers = Trackers.for_run(TrackingConfig(tensorboard=True), tmp_path, config={})
    for row in ROWS:
        trackers.log(row)
    trackers.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    read = {}
    for tag in events.Tags()["scalars"]:
        for event in events.Scalars(tag):
            read.setdefault(event.step, {})[tag] = event.value
    assert read.keys() == EXPECTED.keys()
    for step, values in EXPECTED.items():
        assert read[step] == pytest.approx(values)  # stored as float32


def test_wandb_offline_writes_an_offline_run_in_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracking = TrackingConfig(wandb="offline", wandb_project="qd-llm-test")
    trackers = Trackers.for_run(tracking, tmp_path, config={"seed": 3})
    for row in ROWS:
        trackers.log(row)
    trackers.close()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (history,) = run_dir.glob("run-*.wandb")
    data = history.read_bytes()
    for name in EXPECTED[0]:
        assert name.encode() in data


def test_tracking_config_is_validated_in_one_line():
    with pytest.raises(QdLlmError, match=r"tracking\.wandb"):
        load_config(overrides=["tracking.wandb=cloud"])
    assert load_config(overrides=["tracking.tensorboard=true"]).tracking.tensorboard
