"""``qd-llm experiment``: spec validation, the grid's configs, the bootstrap and the table.

The table is checked on run directories written by hand (metrics rows with a
``heldout`` entry, as the loop writes them); the end-to-end grid through the
CLI, killed and resumed, is the slow test at the bottom.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qd_llm.cli import main
from qd_llm.errors import QdLlmError
from qd_llm.experiment import (
    bootstrap_ci,
    build_table,
    plan,
    read_spec,
    run_experiment,
    run_is_finished,
)
from qd_llm.faults import KILL_AT_ENV
from qd_llm.runs import RunDir


def _spec(tmp_path, text: str, name: str = "spec.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the bootstrap --------------------------------------------------------------------


def _exact_percentile_interval(values, confidence=0.95):
    """The quantiles of the exact bootstrap distribution of the mean (inverse CDF).

    Every one of the n**n resamples is equally likely; the q-quantile is the
    smallest mean whose cumulative probability reaches q.
    """
    n = len(values)
    means = np.round([np.mean(c) for c in itertools.product(values, repeat=n)], 12)
    atoms, counts = np.unique(means, return_counts=True)
    cdf = np.cumsum(counts) / len(means)
    tail = (1 - confidence) / 2
    # Monte Carlo cannot settle a quantile that sits on a jump of the CDF: keep clear of one.
    assert np.min(np.abs(cdf - tail)) > 0.005 and np.min(np.abs(cdf - (1 - tail))) > 0.005
    return atoms[np.argmax(cdf >= tail)], atoms[np.argmax(cdf >= 1 - tail)]


@pytest.mark.parametrize("values", [[0.0, 1.0], [0.0, 0.2, 1.0], [0.1, 0.1, 0.4, 0.9]])
def test_bootstrap_ci_matches_the_exact_bootstrap_distribution(values):
    mean, low, high = bootstrap_ci(values, resamples=20_000)
    exact_low, exact_high = _exact_percentile_interval(values)
    assert mean == pytest.approx(sum(values) / len(values))
    assert (low, high) == pytest.approx((exact_low, exact_high))


def test_bootstrap_ci_of_two_values_spans_both_and_is_reproducible():
    # Resample means of [0, 1] are 0, 0.5, 1 with probability 1/4, 1/2, 1/4:
    # the 2.5 % and 97.5 % quantiles are 0 and 1.
    assert bootstrap_ci([0.0, 1.0]) == (0.5, 0.0, 1.0)
    assert bootstrap_ci([0.3, 0.5, 0.9]) == bootstrap_ci([0.3, 0.5, 0.9])
    assert bootstrap_ci([0.4]) == (0.4, 0.4, 0.4)
    assert bootstrap_ci([0.25, 0.25, 0.25]) == (0.25, 0.25, 0.25)


# --- the spec -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('seeds = [0]\nvariants = ["full"]\ncolour = 1', "unknown key 'colour'"),
        ('variants = ["full"]', "'seeds' must be a non-empty list"),
        ('seeds = [0, 0]\nvariants = ["full"]', "lists a seed twice"),
        ("seeds = [0]\nvariants = []", "'variants' must be a non-empty list"),
        ('seeds = [0]\nvariants = ["fulll"]', "unknown built-in variant 'fulll'"),
        ('seeds = [0]\nvariants = ["full"]\nexecutor = "slurm"', "'executor' must be one of"),
        ('seeds = [0]\nvariants = ["full"]\n[base]\nseed = 3', "list the run seeds in 'seeds'"),
        ('seeds = [0]\n[variants."a b"]', "variant name 'a b'"),
        ('seeds = [0]\nvariants = ["full"]\n[ray]\ncpus_per_run = 0', "'ray.cpus_per_run'"),
        ("seeds = [0\n", "is not valid toml"),
    ],
)
def test_bad_specs_are_one_readable_line(tmp_path, text, expected):
    with pytest.raises(QdLlmError) as error:
        read_spec(_spec(tmp_path, text))
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_bad_run_config_names_the_variant_and_the_key(tmp_path, capsys):
    spec = _spec(tmp_path, 'seeds = [0]\n[variants.big]\n"population.size" = -1\n')
    assert main(["experiment", str(spec), "--out", str(tmp_path / "exp")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("qd-llm experiment: error: variant 'big': config key")
    assert "population.size" in error and "\n" not in error


def test_the_grid_layers_preset_base_variant_and_seed(tmp_path):
    spec = read_spec(
        _spec(
            tmp_path,
            f"""
out = "{tmp_path / "exp"}"
seeds = [4, 7]
[base]
"population.generations" = 3
tasks.initial_tasks = 5
[variants.full]
[variants.no_adaptation]
[variants.no_novelty]
"tasks.initial_tasks" = 2
[variants.small]
population = {{ size = 4, dns_k = 2 }}
""",
        )
    )
    runs = plan(spec)
    assert [(r.variant, r.seed) for r in runs] == [
        (v, s) for v in ("full", "no_adaptation", "no_novelty", "small") for s in (4, 7)
    ]
    by_name = {(r.variant, r.seed): r for r in runs}
    full = by_name["full", 4].config
    assert (full.seed, full.preset, full.population.generations) == (4, "demo", 3)
    assert full.tasks.initial_tasks == 5 and full.tasks.adapt_every == 2  # demo preset's
    assert by_name["full", 7].config.seed == 7
    # Past the last generation (3), so the pool is never adapted.
    assert by_name["no_adaptation", 4].config.tasks.adapt_every == 4
    no_novelty = by_name["no_novelty", 4].config
    assert no_novelty.tasks.novelty_threshold == 0.0 and no_novelty.tasks.initial_tasks == 2
    small = by_name["small", 7].config
    assert (small.population.size, small.population.dns_k, small.population.offspring) == (4, 2, 6)
    assert by_name["small", 7].path == tmp_path / "exp" / "runs" / "small" / "seed7"


# --- the table from hand-written run directories ----------------------------------------


def _heldout(evolved, seeds, control, num_test=6):
    return {
        "taskset": "heldout",
        "num_val": 4,
        "num_test": num_test,
        "test": {"evolved": evolved, "seeds": seeds, "control": control},
        "val": {"evolved": evolved, "seeds": seeds, "control": control},
        "best_accuracy": {"evolved": 0.5, "seeds": 0.4, "control": 0.1},
    }


# variant, seed -> last held-out test curves (evolved, seeds, control); control is the
# same per seed in every variant, as in real runs; seed experts differ per variant here
# only to check that each seed's baseline is averaged over its runs.
CURVES = {
    ("full", 0): ([0.5, 0.5, 0.5], [1 / 6, 2 / 6, 2 / 6], [0.0, 0.0, 0.0]),
    ("full", 1): ([4 / 6, 5 / 6, 1.0], [2 / 6, 2 / 6, 3 / 6], [1 / 6, 1 / 6, 1 / 6]),
    ("merge", 0): ([2 / 6, 3 / 6, 3 / 6], [3 / 6, 4 / 6, 4 / 6], [0.0, 0.0, 0.0]),
    ("merge", 1): ([2 / 6, 2 / 6, 4 / 6], [2 / 6, 2 / 6, 3 / 6], [1 / 6, 1 / 6, 1 / 6]),
}


@pytest.fixture
def hand_written_experiment(tmp_path):
    spec_path = _spec(
        tmp_path,
        f"""
out = "{tmp_path / "exp"}"
seeds = [0, 1]
[base]
"population.generations" = 2
[variants.full]
[variants.merge]
"population.offspring" = 2
""",
    )
    spec = read_spec(spec_path)
    for run in plan(spec):
        evolved, seeds, control = CURVES[run.variant, run.seed]
        directory = RunDir.create(run.path, run.config.to_dict())
        rows = [
            {"generation": 0, "seconds": 10.0, "heldout": _heldout([0.0] * 3, seeds, control)},
            {"generation": 1, "seconds": 20.0},
            {"generation": 2, "seconds": 30.5, "heldout": _heldout(evolved, seeds, control)},
        ]
        for row in rows:
            directory.append_metrics(row)
    return spec_path, spec


def test_table_holds_means_over_seeds_and_baselines_once_per_seed(hand_written_experiment):
    _, spec = hand_written_experiment
    table = build_table(plan(spec))
    rows = {row["name"]: row for row in table["rows"]}
    assert list(rows) == ["full", "merge", "seeds", "control"] and table["max_n"] == 3
    assert table["incomplete"] == []
    for variant in ("full", "merge"):
        for n in range(3):
            cell = rows[variant]["coverage"][n]
            values = [CURVES[variant, s][0][n] for s in (0, 1)]
            assert cell["mean"] == pytest.approx(sum(values) / 2)
            # Two values: the percentile interval runs from the smaller to the larger.
            assert (cell["low"], cell["high"]) == pytest.approx((min(values), max(values)))
        assert rows[variant]["seconds_per_run"]["mean"] == pytest.approx(60.5)
        assert rows[variant]["num_test"] == [6, 6]
    # Seed 0's seed experts: mean of its two runs' curves, 1/6 and 3/6 at N=1 -> 2/6.
    seed_values = [(CURVES["full", s][1][0] + CURVES["merge", s][1][0]) / 2 for s in (0, 1)]
    assert rows["seeds"]["coverage"][0]["values"] == pytest.approx(seed_values)
    assert rows["control"]["coverage"][2]["mean"] == pytest.approx(1 / 12)
    assert rows["control"]["seeds"] == [0, 1] and rows["control"]["seconds_per_run"] is None


def test_report_only_writes_table_figure_and_reports(hand_written_experiment, capsys):
    spec_path, spec = hand_written_experiment
    # One run lost its last held-out row: it is listed, not averaged.
    RunDir(spec.out / "runs" / "merge" / "seed1").metrics_path.write_text(
        json.dumps({"generation": 0, "seconds": 1.0}) + "\n"
    )
    assert main(["experiment", str(spec_path), "--report-only"]) == 0
    printed = capsys.readouterr().out
    table = json.loads((spec.out / "table.json").read_text())
    assert table["incomplete"] == [str(spec.out / "runs" / "merge" / "seed1")]
    merge = next(row for row in table["rows"] if row["name"] == "merge")
    assert merge["seeds"] == [0] and merge["coverage"][0]["mean"] == pytest.approx(2 / 6)
    assert "| merge | 1 | 0.333 [0.333, 0.333] |" in printed
    assert (spec.out / "table.md").read_text() in printed
    assert (spec.out / "figure.png").stat().st_size > 10_000
    report = (spec.out / "report.md").read_text()
    assert "| full | 2 |" in report and "figure.png" in report and "merge/seed1" in report
    page = (spec.out / "report.html").read_text()
    assert "<table>" in page and 'src="figure.png"' in page


def test_a_run_directory_of_another_config_is_refused(hand_written_experiment, tmp_path):
    _, spec = hand_written_experiment
    changed = _spec(
        tmp_path,
        f'out = "{spec.out}"\nseeds = [0]\n[base]\n"population.generations" = 3\n[variants.full]\n',
        name="changed.toml",
    )
    with pytest.raises(QdLlmError, match=r"another config.*population\.generations"):
        run_experiment(read_spec(changed), progress=False)
    # The runs without a checkpoint are not finished, whatever their metrics say.
    assert not run_is_finished(plan(spec)[0])


def test_builtin_ablations_set_the_lead_knobs(tmp_path):
    spec = read_spec(
        _spec(
            tmp_path,
            f'out = "{tmp_path / "exp"}"\nseeds = [1]\n'
            'variants = ["random_selection", "merge_only"]\n[base]\n"population.generations" = 3\n',
        )
    )
    random_selection, merge_only = (run.config for run in plan(spec))
    assert random_selection.population.selection == "random"
    assert random_selection.population.generations == 3
    assert merge_only.population.generations == 0 and merge_only.population.selection == "dns"


# --- end to end: a tiny grid through the CLI, killed and resumed -------------------------

BIGBENCH = Path(__file__).parent / "tasks" / "data" / "bigbench_mixed"

# The cheapest real runs: two random seed genomes, one generation (merge_only: none),
# one instance per task, 4 new tokens; held out: the 6 BIG-bench questions of the fixture.
TINY_GRID = f"""
seeds = [0, 1]
variants = ["full", "merge_only"]
[base]
progress = false
heatmap = false
"genomes.seeds" = "random:2"
"genomes.rank" = 2
"genomes.random_std" = 0.02
"population.size" = 2
"population.dns_k" = 2
"population.offspring" = 1
"population.generations" = 1
"tasks.initial_tasks" = 2
"tasks.instances_per_task" = 1
"decoding.max_new_tokens" = 4
"sandbox.workers" = 1
"evaluation.heldout" = {json.dumps(str(BIGBENCH))}
"evaluation.heldout_every" = 1
"evaluation.control_samples" = 1
"tracking.tensorboard" = true
operators = {{ linear = {{ parents = 2 }}, gaussian = {{ parents = 1, scale = 0.002 }} }}
"""


def _tensorboard_scalars(run_dir: Path) -> dict[int, dict[str, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    read: dict[int, dict[str, float]] = {}
    for tag in events.Tags()["scalars"]:
        for event in events.Scalars(tag):
            read.setdefault(event.step, {})[tag] = event.value
    return read


@pytest.mark.slow
def test_tiny_grid_killed_and_resumed_gives_the_table_of_its_run_directories(world_readable):
    out = world_readable / "exp"
    spec = world_readable / "grid.toml"
    spec.write_text(f"out = {json.dumps(str(out))}\n{TINY_GRID}")
    command = [sys.executable, "-m", "qd_llm.cli", "experiment", str(spec)]
    # Metrics rows 1-2 are full/seed0's; the 4th is full/seed1's generation 1, appended
    # but not yet checkpointed when the kill comes.
    killed = subprocess.run(
        command,
        env={**os.environ, KILL_AT_ENV: "loop.metrics_appended:4"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    interrupted = RunDir(out / "runs" / "full" / "seed1")
    assert interrupted.read_checkpoint().generation == 0
    assert not (out / "table.json").exists()

    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "run full seed 0" not in done.stdout  # finished: skipped
    assert "run full seed 1" in done.stdout and "run merge_only seed 1" in done.stdout
    # Resumed from its checkpoint: the torn generation was redone once, not appended twice.
    assert [row["generation"] for row in interrupted.metrics()] == [0, 1]

    table = json.loads((out / "table.json").read_text())
    assert table["incomplete"] == [] and table["max_n"] == 3
    rows = {row["name"]: row for row in table["rows"]}
    assert list(rows) == ["full", "merge_only", "seeds", "control"]
    last = {}
    for variant, seed in itertools.product(("full", "merge_only"), (0, 1)):
        metrics = RunDir(out / "runs" / variant / f"seed{seed}").metrics()
        heldout_rows = [row for row in metrics if "heldout" in row]
        assert heldout_rows[-1]["generation"] == (1 if variant == "full" else 0)
        last[variant, seed] = heldout_rows[-1]["heldout"]
        assert last[variant, seed]["num_test"] >= 1
    for n in range(3):
        for variant in ("full", "merge_only"):
            values = [last[variant, s]["test"]["evolved"][n] for s in (0, 1)]
            cell = rows[variant]["coverage"][n]
            assert cell["mean"] == pytest.approx(np.mean(values))
            assert cell["low"] <= cell["mean"] <= cell["high"]
        for baseline in ("seeds", "control"):
            per_seed = [
                np.mean([last[v, s]["test"][baseline][n] for v in ("full", "merge_only")])
                for s in (0, 1)
            ]
            assert rows[baseline]["coverage"][n]["mean"] == pytest.approx(np.mean(per_seed))
    assert rows["full"]["seconds_per_run"]["values"] == [
        pytest.approx(
            sum(r["seconds"] for r in RunDir(out / "runs" / "full" / f"seed{s}").metrics())
        )
        for s in (0, 1)
    ]
    for name in ("table.md", "report.md", "report.html"):
        assert "merge_only" in (out / name).read_text()
    assert (out / "figure.png").stat().st_size > 10_000
    assert "| full | 2 |" in done.stdout

    # TensorBoard saw every metrics row of a run, held-out coverage included.
    finished = RunDir(out / "runs" / "full" / "seed0")
    logged = _tensorboard_scalars(finished.path)
    for row in finished.metrics():
        step = logged[row["generation"]]
        assert step["coverage"] == pytest.approx(row["coverage"])
        assert step["best_fitness"] == pytest.approx(row["best_fitness"])
        for n, value in enumerate(row["heldout"]["test"]["evolved"], start=1):
            assert step[f"heldout/test/evolved@{n}"] == pytest.approx(value)
