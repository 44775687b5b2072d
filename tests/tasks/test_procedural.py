"""The procedural scientist: its families, the task.py it writes, and the CLI.

Generated task code is only ever run in the real sandbox. The scoring test works
out the right answer to every instance from its question text (an independent
solver below), so a generator that stores a wrong answer fails it.
"""

import itertools
import json
import re

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


# --- an independent solver: answers from the question text alone ---------------------
# Written from the questions a model sees, not from the generators, so a generator
# whose stored answer is wrong (off by one, wrong operation) fails the scoring test.

_CODE_SOLUTIONS = {
    "multiply": "def multiply(a, b):\n    return a * b\n",
    "larger": "def larger(a, b):\n    return a if a >= b else b\n",
    "difference": "def difference(a, b):\n    return a - b\n",
    "reverse_text": "def reverse_text(s):\n    return ''.join(reversed(s))\n",
    "sum_even": "def sum_even(numbers):\n    return sum(n for n in numbers if not n % 2)\n",
    "count_vowels": "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s.lower())\n",
}


def _numbers(text):
    return [float(n) if "." in n else int(n) for n in re.findall(r"-?\d+(?:\.\d+)?", text)]


def _is_prime(n):
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def _next_term(terms):
    steps = {b - a for a, b in itertools.pairwise(terms)}
    if len(steps) == 1:
        return terms[-1] + steps.pop()
    ratios = {b / a for a, b in itertools.pairwise(terms)}
    if len(ratios) == 1:
        return terms[-1] * ratios.pop()
    root = round(terms[-1] ** 0.5)
    assert [r * r for r in range(root - 3, root + 1)] == terms, terms
    return (root + 1) ** 2


# (question pattern, answer from the match): a number, a text, a list of items,
# a JSON object (dict) or ("code", source).
_SOLVERS = [
    (r"What is ([\d ()+*-]+)\?", lambda m: eval(m[1], {"__builtins__": {}})),
    (r"(\w+) has (\d+) \w+\. \1 gets (\d+) more\..*", lambda m: int(m[2]) + int(m[3])),
    (r"\w+ has (\d+) \w+ and gives (\d+) away\..*", lambda m: int(m[1]) - int(m[2])),
    (r"\w+ buys (\d+) boxes with (\d+) .*", lambda m: int(m[1]) * int(m[2])),
    (
        r"\w+ has (\d+) \w+, buys (\d+) packs of (\d+) \w+, then loses (\d+)\..*",
        lambda m: int(m[1]) + int(m[2]) * int(m[3]) - int(m[4]),
    ),
    (r"\w+ shares (\d+) \w+ equally among (\d+) friends.*", lambda m: int(m[1]) % int(m[2])),
    (r"What is the first letter of the word '(\w+)'\?", lambda m: m[1][0]),
    (r"What is the last letter of the word '(\w+)'\?", lambda m: m[1][-1]),
    (r"How many letters are in the word '(\w+)'\?", lambda m: len(m[1])),
    (
        r"What is the (second|third|fourth) letter of the word '(\w+)'\?",
        lambda m: m[2][["second", "third", "fourth"].index(m[1]) + 1],
    ),
    (
        r"How many times does the letter '(\w)' appear in '(\w+)'\?",
        lambda m: sum(c == m[1] for c in m[2]),
    ),
    (r"Write the word '(\w+)' in capital letters\.", lambda m: m[1].upper()),
    (r"Write the word '(\w+)' backwards\.", lambda m: m[1][::-1]),
    (r"Write the word '(\w+)' backwards and in capital letters\.", lambda m: m[1][::-1].upper()),
    (r"Write the letters of '(\w+)' in alphabetical order\.", lambda m: "".join(sorted(m[1]))),
    (r"What is the largest number in the list (\[.*\])\?", lambda m: max(_numbers(m[1]))),
    (r"What is the smallest number in the list (\[.*\])\?", lambda m: min(_numbers(m[1]))),
    (r"What is the sum of the numbers in (\[.*\])\?", lambda m: sum(_numbers(m[1]))),
    (r"Sort the numbers (\[.*\]) from smallest to largest\.", lambda m: sorted(_numbers(m[1]))),
    (
        r"What is the median of the numbers (\[.*\])\?",
        lambda m: sorted(_numbers(m[1]))[len(_numbers(m[1])) // 2],
    ),
    (r"How many words are in this list: (.*)\?", lambda m: len(m[1].split(", "))),
    (r"How many times does '(\w+)' appear in: (.*)\?", lambda m: m[2].split(", ").count(m[1])),
    (
        r"How many vowels \(a, e, i, o, u\) are in the word '(\w+)'\?",
        lambda m: len(re.findall("[aeiou]", m[1])),
    ),
    (
        r"How many even numbers are in the list (\[.*\])\?",
        lambda m: len([n for n in _numbers(m[1]) if n % 2 == 0]),
    ),
    (
        r"How many of these words have more than 4 letters: (.*)\?",
        lambda m: len([w for w in m[1].split() if len(w) >= 5]),
    ),
    (
        r"One meter is 100 centimeters\. How many centimeters are in (\d+) meters\?",
        lambda m: int(m[1]) * 100,
    ),
    (r"How many seconds are in (\d+) minutes\?", lambda m: int(m[1]) * 60),
    (r"How many minutes are in (\d+) hours\?", lambda m: int(m[1]) * 60),
    (r"How many grams are in ([\d.]+) kilograms\?", lambda m: float(m[1]) * 1000),
    (r"How many meters are in (\d+) centimeters\?", lambda m: int(m[1]) / 100),
    (
        r"How many minutes are in (\d+) hours and (\d+) minutes\?",
        lambda m: int(m[1]) * 60 + int(m[2]),
    ),
    (r"What is (\d+) degrees Celsius in degrees Fahrenheit\?", lambda m: int(m[1]) * 1.8 + 32),
    (
        r"What number comes next in the sequence (.*), \.\.\.\?",
        lambda m: _next_term(_numbers(m[1])),
    ),
    (
        r"Write a Python function `add_(\d)\(x\)` that returns x plus \1\.",
        lambda m: ("code", f"def add_{m[1]}(x):\n    return {m[1]} + x\n"),
    ),
    (r"Write a Python function `(\w+)\(.*\)` that .*", lambda m: ("code", _CODE_SOLUTIONS[m[1]])),
    (r'Write a JSON object with the key "color" set to "(\w+)"\.', lambda m: {"color": m[1]}),
    (
        r'Write a JSON object with the key "name" set to "(\w+)" and the key "age" set to '
        r"the number (\d+)\.",
        lambda m: {"name": m[1], "age": int(m[2])},
    ),
    (r"List these words in alphabetical order: (.*)\.", lambda m: sorted(m[1].split())),
    (
        r'Write a JSON object with the key "items" holding the list of words (.*) in that order, '
        r'and the key "count" holding how many there are\.',
        lambda m: {"items": m[1].split(", "), "count": len(m[1].split(", "))},
    ),
    (
        r'Write a JSON object with the key "sum" holding (\d+) \+ (\d+) and the key "product" '
        r"holding \1 \* \2\.",
        lambda m: {"sum": int(m[1]) + int(m[2]), "product": int(m[1]) * int(m[2])},
    ),
    (r"Which is larger, ([\d.]+) or ([\d.]+)\?", lambda m: max(_numbers(m[0]))),
    (r"Is (\d+) greater than (\d+)\?", lambda m: "yes" if int(m[1]) > int(m[2]) else "no"),
    (r"Is (\d+) an even number\?", lambda m: "no" if int(m[1]) % 2 else "yes"),
    (r"Is (\d+) a prime number\?", lambda m: "yes" if _is_prime(int(m[1])) else "no"),
]


def _solve(question: str):
    """The right answer to a procedural question, worked out from its text."""
    for pattern, answer in _SOLVERS:
        match = re.fullmatch(pattern, question)
        if match:
            return answer(match)
    raise AssertionError(f"no solver for {question!r}")


def _as_reply(answer, wrap: str | None) -> str:
    """``answer`` written as the instance's format asks."""
    if isinstance(answer, tuple):  # ("code", source)
        return answer[1]
    if isinstance(answer, float):
        answer = round(answer, 6)
        answer = int(answer) if answer.is_integer() else answer
    if wrap == "json":
        return json.dumps({"answer": answer})
    if isinstance(answer, list):
        return ", ".join(str(item) for item in answer)
    if isinstance(answer, dict):
        return json.dumps(answer)
    return str(answer)


def _near_misses(answer, wrap: str | None) -> list[str]:
    """Replies that look right but are wrong."""
    if wrap == "json":  # the right answer, but not in the {"answer": ...} form asked for
        return ['{"result": ' + json.dumps(answer) + "}", _as_reply(answer, None)]
    if isinstance(answer, tuple):
        function = re.search(r"def (\w+)", answer[1])[1]
        return [f"def {function}(*args):\n    return None\n"]
    if isinstance(answer, int | float):
        return [_as_reply(answer + 1, None)]
    if isinstance(answer, list):
        return [", ".join(str(item) for item in reversed(answer))]
    if isinstance(answer, dict):
        return [json.dumps({**answer, "extra": 1})]
    return [answer + "x"] + ([answer.swapcase()] if answer.isupper() else [])


def _lenient_forms(reply: str, data: dict) -> list[str]:
    """A right reply in the wrappings a small model tends to add."""
    if data["kind"] == "code":
        return [f"Here it is:\n```python\n{reply}```\n"]
    if data.get("wrap") or data["kind"] in ("json", "list"):
        return [f"Sure: {reply}"]
    return [f"The answer is {reply}.", f"**{reply}**\nbecause it is."]


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


def test_right_answers_score_one_and_wrong_answers_zero(written, pool):
    jobs, expected = [], []
    for task in written.values():
        for instance in pool.load_instances(task.path).values():
            data = instance.data
            answer = _solve(data["question"])
            right = _as_reply(answer, data.get("wrap"))
            replies = [(right, 1.0), ("zzz qqq", 0.0)]
            replies += [(reply, 1.0) for reply in _lenient_forms(right, data)]
            replies += [(reply, 0.0) for reply in _near_misses(answer, data.get("wrap"))]
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
