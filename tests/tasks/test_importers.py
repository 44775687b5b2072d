"""Benchmark import: every imported task is scored for real in the bubblewrap sandbox."""

import gzip
import json
from pathlib import Path

import pytest

from qd_llm.cli import main
from qd_llm.errors import QdLlmError
from qd_llm.tasks.importers import INSTANCE_ID, import_benchmark
from qd_llm.tasks.importers.readers import humaneval_data_path
from qd_llm.tasks.sandbox import SandboxConfig, SandboxPool, ScoreJob
from qd_llm.tasks.taskdir import read_task

DATA = Path(__file__).parent / "data"
BIGBENCH_DIR = DATA / "bigbench_mixed"
QA_JSONL = DATA / "qa_small.jsonl"


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(config=SandboxConfig(wall_seconds=15.0), workers=2) as pool:
        yield pool


@pytest.fixture(scope="module")
def humaneval(tmp_path_factory):
    return import_benchmark("humaneval", tmp_path_factory.mktemp("humaneval"))


def _score_all(pool, task_dirs, submissions) -> list[float]:
    """Loads each task's single instance in the sandbox and scores its submission there."""
    jobs = []
    for task_dir, submission in zip(task_dirs, submissions, strict=True):
        (instance,) = pool.load_instances(task_dir).values()
        assert instance.instance_id == INSTANCE_ID
        jobs.append(
            ScoreJob(
                task_dir=task_dir,
                instance_id=instance.instance_id,
                data=instance.data,
                submission=submission,
            )
        )
    results = pool.score_many(jobs)
    return [r.score for r in results]


def test_humaneval_all_canonical_solutions_pass_and_empty_answers_fail(pool, humaneval):
    with gzip.open(humaneval_data_path(), "rt") as f:
        problems = [json.loads(line) for line in f]
    assert humaneval.format == "humaneval" and len(humaneval.tasks) == len(problems) == 164
    paths = [task.path for task in humaneval.tasks]
    canonical = [p["canonical_solution"] for p in problems]

    scores = _score_all(pool, paths + paths, canonical + [""] * len(paths))

    failing = [p["task_id"] for p, s in zip(problems, scores[:164], strict=True) if s != 1.0]
    assert failing == []
    assert scores[164:] == [0.0] * 164


def test_humaneval_task_dirs_record_their_source(humaneval):
    first = read_task(humaneval.tasks[0].path)
    assert [t.task_id for t in humaneval.tasks[:3]] == [
        "humaneval_000",
        "humaneval_001",
        "humaneval_002",
    ]
    assert first.lineage.generation_type == "imported"
    assert first.lineage.extra == {
        "source": "humaneval",
        "format": "humaneval",
        "question_id": "HumanEval/0",
    }
    assert "has_close_elements" in first.info.description
    assert "```python" in first.info.example_instruction


def test_humaneval_accepts_full_functions_and_rejects_misbehaving_code(pool, humaneval):
    with gzip.open(humaneval_data_path(), "rt") as f:
        problem = json.loads(f.readline())
    full_function = problem["prompt"] + problem["canonical_solution"]
    submissions = [
        f"```python\n{full_function}```",  # whole function in a fence
        "def has_close_elements(numbers, threshold):\n    return True\n",  # wrong
        "print('noise')\n" + full_function,  # prints, still right
        "import sys\nsys.exit(0)\n",  # exits instead of answering
        "    return (",  # syntax error
    ]
    path = humaneval.tasks[0].path
    assert _score_all(pool, [path] * len(submissions), submissions) == [1.0, 0.0, 1.0, 0.0, 0.0]


def test_bigbench_task_imports_both_target_styles_and_scores_variants(pool, tmp_path):
    result = import_benchmark(BIGBENCH_DIR, tmp_path)
    assert result.format == "bigbench"
    assert [t.task_id for t in result.tasks] == [
        f"bigbench_mixed_reasoning_{i:04d}" for i in range(1, 7)
    ]
    choice_instructions = result.tasks[2].info.example_instruction
    assert "Question: Which city is the capital of France?" in choice_instructions
    assert "A. Berlin\nB. Paris\nC. Madrid\nD. Rome" in choice_instructions
    cases = {
        0: {"42": 1.0, " 42. ": 1.0, "42.0": 1.0, "43": 0.0, "": 0.0},
        1: {"jupiter": 1.0, "The planet Jupiter.": 1.0, "Jupiter!": 1.0, "Saturn": 0.0},
        2: {
            "B": 1.0,
            "(b)": 1.0,
            "Paris": 1.0,
            "paris.": 1.0,
            "B) Paris": 1.0,
            "A": 0.0,
            "Berlin": 0.0,
            "E": 0.0,
            "B) Rome": 0.0,
        },
        3: {"13": 1.0, "D": 1.0, "9": 0.0, "A": 0.0},
        4: {"3.5": 1.0, "3.50": 1.0, "7/2": 1.0, "3,5": 0.0, "3.6": 0.0},
        # target and target_scores both given, preferred_score exact_str_match: generative.
        5: {"5": 1.0, "A": 0.0, "6": 0.0},
    }
    paths, submissions, expected = [], [], []
    for index, answers in cases.items():
        for submission, score in answers.items():
            paths.append(result.tasks[index].path)
            submissions.append(submission)
            expected.append(score)
    assert _score_all(pool, paths, submissions) == expected


def test_jsonl_imports_and_scores_as_expected(pool, tmp_path):
    result = import_benchmark(QA_JSONL, tmp_path)
    assert result.format == "jsonl"
    assert [t.task_id for t in result.tasks] == [f"jsonl_qa_small_{i:04d}" for i in range(1, 7)]
    assert read_task(result.tasks[0].path).lineage.extra["question_id"] == "q-add"
    assert read_task(result.tasks[1].path).lineage.extra["question_id"] == "line 2"
    cases = [
        (0, "42", 1.0),
        (0, "42.", 1.0),
        (0, "41", 0.0),
        (1, "TAC", 1.0),
        (1, "cat", 0.0),
        (2, "Carbon dioxide.", 1.0),
        (2, "co2", 1.0),
        (2, "oxygen", 0.0),
        (3, "B", 1.0),
        (3, "dolphin", 1.0),
        (3, "A", 0.0),
        (4, "A", 1.0),
        (4, "Green", 1.0),
        (4, "pink", 0.0),
        (5, "B", 1.0),
        (5, "8", 1.0),
        (5, "3", 0.0),
    ]
    scores = _score_all(pool, [result.tasks[i].path for i, _, _ in cases], [s for _, s, _ in cases])
    assert scores == [expected for _, _, expected in cases]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"question": "q", "answer": "a"}', "{not json"], r"qa\.jsonl:2: not valid JSON"),
        (['{"question": "q"}'], r"qa\.jsonl:1: no answer"),
        (['{"answer": "a"}'], r"qa\.jsonl:1: no question"),
        (['{"question": "q", "choices": ["x", "y"], "answer": "z"}'], r":1: answer 'z' names"),
        (["[1, 2]"], r"qa\.jsonl:1: expected a JSON object"),
    ],
)
def test_malformed_jsonl_names_the_line(tmp_path, lines, message):
    source = tmp_path / "qa.jsonl"
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(QdLlmError, match=message):
        import_benchmark(source, tmp_path / "out")


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(QdLlmError, match="nor an existing path"):
        import_benchmark(tmp_path / "missing.jsonl", tmp_path / "out")
    with pytest.raises(QdLlmError, match=r"holds no task\.json"):
        import_benchmark(tmp_path, tmp_path / "out")
    (tmp_path / "task.json").write_text(json.dumps({"examples": [{"input": "q"}]}))
    with pytest.raises(QdLlmError, match="example 1 needs a target"):
        import_benchmark(tmp_path, tmp_path / "out")


def test_limit_and_seed_select_a_reproducible_subset(tmp_path):
    first = import_benchmark("humaneval", tmp_path / "a", limit=3)
    assert [t.task_id for t in first.tasks] == ["humaneval_000", "humaneval_001", "humaneval_002"]
    shuffled = [
        [t.task_id for t in import_benchmark("humaneval", tmp_path / d, limit=5, seed=7).tasks]
        for d in ("b", "c")
    ]
    assert shuffled[0] == shuffled[1]
    assert shuffled[0] != [f"humaneval_{i:03d}" for i in range(5)]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(shuffled[0])
    with pytest.raises(QdLlmError, match="--limit must be at least 1"):
        import_benchmark("humaneval", tmp_path / "d", limit=0)


def test_cli_prints_a_json_summary(tmp_path, capsys):
    assert main(["tasks", "import", str(QA_JSONL), "--out", str(tmp_path), "--limit", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"count": 2, "out": str(tmp_path), "format": "jsonl"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "jsonl_qa_small_0001",
        "jsonl_qa_small_0002",
    ]
    assert main(["tasks", "import", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)]) == 2
