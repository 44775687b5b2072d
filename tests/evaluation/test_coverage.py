"""The coverage pipeline on a real run and an imported BIG-bench task set."""

import json
import shutil

import numpy as np
import pytest
from _analysis_run import BIGBENCH, tiny_run
from PIL import Image

from qd_llm.cli import main
from qd_llm.evaluation.coverage import (
    COVERAGE_DIR,
    coverage_report,
    evaluate_task_set,
    load_task_set,
    write_report_files,
)
from qd_llm.evaluation.heldout import split_tasks
from qd_llm.inference.base import GenerationConfig, GenerationRequest
from qd_llm.tasks.sandbox import SandboxConfig, SandboxPool

# Every test here evaluates a copy of the shared tiny run, built by a whole loop run.
pytestmark = pytest.mark.slow

MAX_N = 3


@pytest.fixture(scope="module")
def sandbox():
    pool = SandboxPool(config=SandboxConfig(), workers=2)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("coverage") / "run"
    shutil.copytree(tiny_run(), path)
    return path


@pytest.fixture(scope="module")
def data(run, hf_backend, sandbox):
    task_set = load_task_set(BIGBENCH, run_dir=run)
    return evaluate_task_set(
        run, task_set, backend=hf_backend, sandbox=sandbox, control_samples=2, seed=1
    )


def test_task_set_is_imported_into_the_run_and_named(data, run):
    assert data.task_set.name == "bigbench_mixed"
    assert len(data.task_set.tasks) == 6
    assert all(run / COVERAGE_DIR in t.path.parents for t in data.task_set.tasks)
    again = load_task_set(BIGBENCH, run_dir=run)
    assert again.key == data.task_set.key


def test_every_genome_and_control_sample_answered_every_instance(data):
    table = data.answers
    assert len(table.task_ids) == 6
    for task_id in table.task_ids:
        for instance_id in table.instances(task_id):
            for genome_id in data.genomes:
                assert (genome_id, task_id, instance_id) in table._answers
    assert len(data.control) == 2 and len(set(data.control)) == 2
    assert data.seeds and set(data.seeds) <= set(data.genomes)


def test_second_evaluation_is_served_from_the_cache(data, run, hf_backend, sandbox):
    evals = run / COVERAGE_DIR / data.task_set.key / "evals.jsonl"
    before = evals.read_bytes()
    again = evaluate_task_set(
        run, data.task_set, backend=hf_backend, sandbox=sandbox, control_samples=2, seed=1
    )
    assert evals.read_bytes() == before
    assert np.array_equal(again.answers.scores(again.genomes), data.answers.scores(data.genomes))


def test_zero_adapter_control_answers_like_the_base_model(data, run, hf_backend):
    control_dir = next((run / COVERAGE_DIR / data.task_set.key).glob("control-*"))
    folder = control_dir / "genomes" / data.control[0]
    prompt = data.answers.instructions[next(iter(data.answers.instructions))]
    config = GenerationConfig(max_new_tokens=6)
    with_zero = hf_backend.generate(
        [GenerationRequest(prompt=prompt, genome_id=data.control[0], adapter=folder)], config
    )
    assert with_zero == hf_backend.generate([GenerationRequest(prompt=prompt)], config)


def _coverage_of(table, members, task_ids):
    """Fraction of ``task_ids`` that some member passes, read straight from the answers."""
    passed = [
        any(
            np.mean([table.answer(g, t, i).score for i in table.instances(t)] or [0.0])
            >= table.pass_threshold
            for g in members
        )
        for t in task_ids
    ]
    return float(np.mean(passed))


def test_report_chooses_on_validation_and_scores_on_test(data, run):
    split = split_tasks(data.task_set.tasks, val_fraction=0.5)
    report = coverage_report(data, split=split, max_n=MAX_N, draws=20)
    assert report["num_val"] + report["num_test"] == report["num_tasks"] == 6
    assert not set(report["split"]["val"]) & set(report["split"]["test"])
    curves, in_sample = report["coverage_at_n"], report["val_coverage_at_n"]
    assert set(curves) == {"greedy", "fitness", "random", "exhaustive", "seeds", "control"}
    assert set(in_sample) == set(curves)
    for name, curve in {**curves, **in_sample}.items():
        assert len(curve) == MAX_N
        assert all(v is None or 0.0 <= v <= 1.0 for v in curve), name
    members = [m["id"] for m in report["taskforce"]]
    val_ids, test_ids = report["split"]["val"], report["split"]["test"]
    for k in range(1, MAX_N + 1):
        # Reported first: the members chosen on validation, scored on the test tasks only.
        assert curves["greedy"][k - 1] == pytest.approx(
            _coverage_of(data.answers, members[:k], test_ids)
        )
        assert in_sample["greedy"][k - 1] == pytest.approx(
            _coverage_of(data.answers, members[:k], val_ids)
        )
        # The exhaustive search is the best possible on the split it chose on.
        assert in_sample["exhaustive"][k - 1] >= in_sample["greedy"][k - 1]
    # Each greedy member adds the most validation tasks of those left.
    for k, member in enumerate(members):
        gains = {
            g: _coverage_of(data.answers, [*members[:k], g], val_ids)
            for g in data.genomes
            if g not in members[:k]
        }
        assert gains[member] == pytest.approx(max(gains.values()))
    result, figure = write_report_files(run, report)
    assert json.loads(result.read_text())["coverage_at_n"] == json.loads(json.dumps(curves))
    with Image.open(figure) as image:
        assert image.size == (960, 720)


def test_coverage_refuses_a_validation_set_that_overlaps_the_test_set(run, capsys):
    code = main(["coverage", str(run), "--tasks", str(BIGBENCH), "--val-tasks", str(BIGBENCH)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "overlaps the validation split" in err and "\n" not in err


def test_cli_prints_one_json_object_from_the_cache(data, run, capsys):
    code = main(
        [
            "coverage",
            str(run),
            "--tasks",
            str(BIGBENCH),
            "--max-n",
            "2",
            "--control-samples",
            "2",
            "--seed",
            "1",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_tasks"] == 6 and len(report["coverage_at_n"]["control"]) == 2
    assert (run / "figures" / "coverage_bigbench_mixed.png").exists()
    members = [m["id"] for m in report["taskforce"]]
    assert report["coverage_at_n"]["greedy"] == pytest.approx(
        [_coverage_of(data.answers, members[:k], report["split"]["test"]) for k in (1, 2)]
    )


def test_cli_table_shows_test_coverage_first(data, run, capsys):
    code = main(
        [
            "coverage",
            str(run),
            "--tasks",
            str(BIGBENCH),
            "--max-n",
            "2",
            "--control-samples",
            "2",
            "--seed",
            "1",
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert "scored on" in lines[0] and lines[1].startswith("test ")
    assert lines.index(next(x for x in lines if x.startswith("validation"))) > 1
