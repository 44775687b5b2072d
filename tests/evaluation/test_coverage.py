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


def test_report_curves_are_consistent(data, run):
    report = coverage_report(data, max_n=MAX_N, draws=20)
    curves = report["coverage_at_n"]
    assert set(curves) == {"greedy", "fitness", "random", "exhaustive", "seeds", "control"}
    for name, curve in curves.items():
        assert len(curve) == MAX_N
        assert all(v is None or 0.0 <= v <= 1.0 for v in curve), name
    for k in range(MAX_N):
        assert curves["exhaustive"][k] >= curves["greedy"][k] >= curves["random"][k] - 1e-9
        assert curves["exhaustive"][k] >= curves["fitness"][k]
    assert curves["greedy"] == sorted(curves["greedy"])
    skills = data.answers.skills(data.genomes)
    assert curves["greedy"][-1] == pytest.approx(
        min(1.0, skills[[data.genomes.index(m["id"]) for m in report["taskforce"]]].any(0).mean())
    )
    assert sum(m["unique_tasks"] for m in report["taskforce"]) <= report["num_tasks"]
    assert len(report["majority_vote_at_n"]["greedy"]) == MAX_N
    result, figure = write_report_files(run, report)
    assert json.loads(result.read_text())["coverage_at_n"] == json.loads(json.dumps(curves))
    with Image.open(figure) as image:
        assert image.size == (960, 720)


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
