"""The procedural scientist: its families, the task.py it writes, and the CLI.

Generated task code is only ever run in the real sandbox; the tests compute
reference answers in-process from the instance data the sandbox returns.
"""

import json

import pytest

from qd_llm.cli import main
from qd_llm.errors import QdLlmError
from qd_llm.tasks.procedural import FAMILIES, ProceduralScientist, get_family, kernels
from qd_llm.tasks.sandbox import SandboxConfig, SandboxPool, ScoreJob
from qd_llm.tasks.scientist import TaskRejected, TaskRequest
from qd_llm.tasks.taskdir import Lineage, TaskInfo, read_task, write_task

ALL_TASKS = [(name, level) for name in FAMILIES for level in range(5)]


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(config=SandboxConfig(), workers=2) as pool:
        yield pool


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One task per family and level, plus the JSON-wrapped variant of each composable family."""
    root = tmp_path_factory.mktemp("pool")
    scientist = ProceduralScientist(num_instances=3)
    tasks = {
        (name, level, None): scientist.write(root, family=get_family(name), level=level, seed=11)
        for name, level in ALL_TASKS
    }
    for name, family in FAMILIES.items():
        if family.composable:
            tasks[(name, 2, "json")] = scientist.write(
                root, family=family, level=2, seed=11, wrap="json"
            )
    return tasks


def _near_misses(data: dict) -> list[str]:
    """Replies that look right but are wrong, per answer kind."""
    answer = data["answer"]
    if data.get("wrap") == "json":
        return ['{"result": ' + json.dumps(answer) + "}", str(answer)]
    if data["kind"] == "number":
        return [kernels._num(float(answer) + 1)]
    if data["kind"] == "text":
        return [answer + "x"] + ([answer.swapcase()] if data.get("case") else [])
    if data["kind"] == "list":
        return [", ".join(reversed(answer.split(", ")))]
    if data["kind"] == "code":
        return [f"def {data['function']}(*args):\n    return None\n"]
    return [answer.replace("}", ', "extra": 1}')]


def _lenient_forms(data: dict) -> list[str]:
    """Reference answers in the wrappings a small model tends to add."""
    reference = kernels.reference_answer(data)
    if data["kind"] == "code":
        return [f"Here it is:\n```python\n{reference}```\n"]
    if data.get("wrap") or data["kind"] in ("json", "list"):
        return [f"Sure: {reference}"]
    return [f"The answer is {reference}.", f"**{reference}**\nbecause it is."]


def test_families_have_distinct_descriptions_and_enough_levels():
    assert len(FAMILIES) >= 8
    descriptions = [
        f.describe(level) for f in FAMILIES.values() for level in range(f.max_level + 1)
    ]
    assert len(set(descriptions)) == len(descriptions)
    assert all(family.max_level == 4 for family in FAMILIES.values())


def test_every_family_and_level_writes_a_valid_task_dir(written):
    for (name, level, wrap), task in written.items():
        reread = read_task(task.path)
        assert reread.info.description == get_family(name).describe(level, wrap)
        assert reread.info.difficulty == str(level + 1)
        assert reread.info.example_instruction
        assert reread.lineage.generation_type == "initial"
        assert reread.lineage.extra["family"] == name
        assert reread.lineage.extra["level"] == level
        assert reread.lineage.extra["params"] == {"seed": 11, "num_instances": 3, "wrap": wrap}
        code = reread.code
        assert "import qd_llm" not in code and "from qd_llm" not in code
        assert code.count("def gen_") == 1


def test_sandbox_instances_match_in_process_examples(written, pool):
    for (name, level, wrap), task in written.items():
        instances = pool.load_instances(task.path)
        family = get_family(name)
        assert [i.instructions for i in instances.values()] == [
            prompt for prompt, _ in family.examples(level, 3, 11, wrap)
        ]
        assert [i.data for i in instances.values()] == family.instances(level, 3, 11, wrap)


def test_reference_scores_one_and_wrong_answers_zero(written, pool):
    jobs, expected = [], []
    for task in written.values():
        for instance in pool.load_instances(task.path).values():
            data = instance.data
            replies = [(kernels.reference_answer(data), 1.0), ("zzz qqq", 0.0)]
            replies += [(reply, 1.0) for reply in _lenient_forms(data)]
            replies += [(reply, 0.0) for reply in _near_misses(data)]
            for reply, score in replies:
                jobs.append(ScoreJob(task_dir=task.path, instance_id=instance.instance_id,
                                     data=data, submission=reply))  # fmt: skip
                expected.append((task.task_id, reply, score))
    results = pool.score_many(jobs)
    wrong = [
        (task_id, reply, want, got.score, got.reason)
        for (task_id, reply, want), got in zip(expected, results, strict=True)
        if got.score != want
    ]
    assert not wrong, wrong[:5]


def test_number_answers_ignore_numbers_restated_from_the_question():
    largest = {"kind": "number", "answer": "8", "question": "Largest number in [8, 2]?"}
    assert kernels.score_submission(largest, "The largest number in [8, 2] is 16.") == 0.0
    assert kernels.score_submission(largest, "The largest number in [8, 2] is 8.") == 1.0
    meters = {"kind": "number", "answer": "600", "question": "How many cm are in 6 meters?"}
    assert kernels.score_submission(meters, "6 meters is 600 centimeters.") == 1.0
    assert kernels.score_submission(meters, "6 meters = 60 cm") == 0.0
    total = {"kind": "number", "answer": "1200", "question": "What is 1000 + 200?"}
    assert kernels.score_submission(total, "1000 + 200 = 1,200") == 1.0


def test_examples_give_training_pairs_whose_reference_scores_one():
    for family in FAMILIES.values():
        pairs = family.examples(0, 3, seed=5)
        assert len(pairs) == 3
        for (prompt, reference), data in zip(pairs, family.instances(0, 3, 5), strict=True):
            assert prompt == data["prompt"]
            assert kernels.score_submission(data, reference) == 1.0
    assert get_family("arithmetic").examples(1, 3, seed=5) != get_family("arithmetic").examples(
        1, 3, seed=6
    )


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_same_seed_writes_byte_identical_tasks(tmp_path):
    request = TaskRequest(operation="initial", seed=42, generation=3)
    first = ProceduralScientist().propose(request, tmp_path / "a")
    second = ProceduralScientist().propose(request, tmp_path / "b")
    assert first.task_id == second.task_id
    assert _files(first.path) == _files(second.path)
    other = ProceduralScientist().propose(TaskRequest(operation="initial", seed=43), tmp_path / "a")
    assert other.task_id != first.task_id


def _task(tmp_path, name, level, wrap=None):
    return ProceduralScientist().write(
        tmp_path / "pool", family=get_family(name), level=level, seed=1, wrap=wrap
    )


def test_harder_and_easier_move_the_level_and_record_lineage(tmp_path):
    parent = _task(tmp_path, "lists", 2, wrap="json")
    for op, level in (("harder", 3), ("easier", 1)):
        request = TaskRequest(
            operation=op, parent=parent, parent_pass_rate=0.75, generation=5, seed=9
        )
        child = read_task(ProceduralScientist().propose(request, tmp_path / "out").path)
        assert child.lineage.generation_type == op
        assert child.lineage.parent_task == parent.task_id
        assert child.lineage.parent_pass_rate == 0.75
        assert child.lineage.created_at_generation == 5
        assert child.lineage.extra["family"] == "lists"
        assert child.lineage.extra["level"] == level
        assert child.lineage.extra["params"]["wrap"] == "json"
        assert child.info.description == get_family("lists").describe(level, "json")


def test_rejections_at_the_level_bounds_and_for_foreign_parents(tmp_path):
    scientist = ProceduralScientist()
    with pytest.raises(TaskRejected, match="lowest level"):
        scientist.propose(
            TaskRequest(operation="easier", parent=_task(tmp_path, "code", 0)), tmp_path
        )
    with pytest.raises(TaskRejected, match="highest level"):
        scientist.propose(
            TaskRequest(operation="harder", parent=_task(tmp_path, "code", 4)), tmp_path
        )
    foreign = write_task(
        tmp_path / "pool",
        task_id="imported_task",
        code="class TaskFamily: pass\n",
        info=TaskInfo(name="imported", description="d", capability="c"),
        lineage=Lineage(generation_type="imported"),
    )
    with pytest.raises(TaskRejected, match="not written by the procedural scientist"):
        scientist.propose(TaskRequest(operation="harder", parent=foreign), tmp_path)


def test_novel_picks_the_least_represented_other_family(tmp_path):
    parent = _task(tmp_path, "arithmetic", 3)
    scientist = ProceduralScientist()
    context = tuple(_task(tmp_path, name, 0) for name in FAMILIES if name != "sequences")
    for seed in range(4):
        request = TaskRequest(operation="novel", parent=parent, context=context, seed=seed)
        child = scientist.propose(request, tmp_path / "out")
        assert child.lineage.extra["family"] == "sequences"
        assert child.lineage.extra["level"] == 3  # the parent's level
        assert child.lineage.generation_type == "novel"
    # Every family represented: a JSON-wrapped composition is new.
    context += (_task(tmp_path, "sequences", 0),)
    request = TaskRequest(operation="novel", parent=parent, context=context, seed=0)
    child = scientist.propose(request, tmp_path / "out")
    assert child.lineage.extra["family"] != "arithmetic"
    assert child.lineage.extra["params"]["wrap"] == "json"


def test_scientist_rejects_bad_configuration():
    with pytest.raises(QdLlmError, match="unknown task family 'poetry'"):
        ProceduralScientist(families=["poetry"])
    with pytest.raises(QdLlmError, match=r"levels 0\.\.4 of the chosen families"):
        ProceduralScientist(initial_levels=(7,))


def test_cli_new_and_adapt(tmp_path, capsys):
    out = tmp_path / "pool"
    argv = ["tasks", "new", "--out", str(out), "--n", "3", "--seed", "2"]
    assert main([*argv, "--families", "letters,comparison", "--level", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["tasks"]) == 3
    assert {t["family"] for t in summary["tasks"]} <= {"letters", "comparison"}
    assert all(t["level"] == 1 for t in summary["tasks"])

    parent = summary["tasks"][0]["path"]
    argv = ["tasks", "adapt", parent, "--op", "harder", "--out", str(out), "--pass-rate", "0.8"]
    assert main(argv) == 0
    child = json.loads(capsys.readouterr().out)
    assert child["level"] == 2 and child["parent_task"] == summary["tasks"][0]["task_id"]
    assert read_task(child["path"]).lineage.parent_pass_rate == 0.8

    argv = ["tasks", "adapt", parent, "--op", "novel", "--out", str(out), "--context", str(out)]
    assert main(argv) == 0
    drawn = {t["family"] for t in summary["tasks"]}
    assert json.loads(capsys.readouterr().out)["family"] not in drawn


def test_cli_bad_input_is_one_line_error(tmp_path, capsys):
    assert main(["tasks", "new", "--out", str(tmp_path), "--families", "poetry"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown task family 'poetry'" in err and "\n" not in err
    parent = _task(tmp_path, "letters", 0).path
    assert main(["tasks", "adapt", str(parent), "--op", "easier", "--out", str(tmp_path)]) == 2
    assert "lowest level" in capsys.readouterr().err
