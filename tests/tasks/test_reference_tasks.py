"""Task directories written for the AC/DC reference score as they do there.

The directories here are written in the reference's style (``metadata.json`` is
``{"embedding": []}``; a ``TaskFamily`` with plain methods; ``score`` importing
``sandbox_eval_helper``), and are scored through ``qd-llm tasks score`` in a
subprocess and inside a loop run, with the real sandbox and SmolLM2. The 72B
judge cannot run here: a scripted backend behind the real OpenAI-compatible
server stands in for it, deciding by a rule stated in this file.
"""

import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from _tiny_loop import TINY

from qd_llm.inference.base import Backend, GenerationConfig, GenerationRequest
from qd_llm.inference.openai_client import OpenAIChatClient
from qd_llm.inference.server import ChatCompletionServer
from qd_llm.tasks.extract import extract_answer_acdc
from qd_llm.tasks.llm_judge import (
    INTERESTING_SYSTEM_PROMPT,
    JUDGE_SYSTEM_PROMPT,
    InterestingCheck,
    TaskJudge,
)
from qd_llm.tasks.llm_scientist import LLMScientist
from qd_llm.tasks.sandbox import SandboxConfig, SandboxPool, ScoreJob, answer_judge_request
from qd_llm.tasks.scientist import Scientist, TaskRejected, TaskRequest
from qd_llm.tasks.taskdir import TaskInfo, read_task

# A multiple-choice task with plain (non-static) methods, as the reference allows.
MCQ_PLAIN = """
class TaskFamily:
    def get_tasks(self):
        return {"1": {"question": "Which planet is called the red planet?",
                      "options": {"A": "Venus", "B": "Mars", "C": "Jupiter"}, "answer": "B"}}

    def get_instructions(self, t):
        options = "\\n".join(f"{k}: {v}" for k, v in t["options"].items())
        return f"{t['question']}\\n{options}\\n\\nReturn the letter of the correct option."

    def score(self, t, submission):
        return 1.0 if t["answer"].lower() == submission.lower().strip() else 0.0
"""

# A code task checked with the reference's helper.
CODE_HELPER = """
class TaskFamily:
    @staticmethod
    def get_tasks():
        return {"1": {"tests": [[[3, 9, 2], 9], [[-5, -2], -2]], "name": "largest"}}

    @staticmethod
    def get_instructions(t):
        return "Write a python function called `largest` returning the largest item of a list."

    @staticmethod
    def score(t, submission):
        from sandbox_eval_helper import get_function_name_to_callable

        function = get_function_name_to_callable(submission).get(t["name"])
        if function is None:
            return 0.0
        try:
            return float(all(function(arg) == expected for arg, expected in t["tests"]))
        except Exception:
            return 0.0
"""

# A task the LLM judge scores, with plain methods calling each other.
JUDGED = """
class TaskFamily:
    def get_tasks(self):
        return {"1": {"thing": "the capital of France"}}

    def get_instructions(self, t):
        return f"In one word, name {t['thing']}."

    def score(self, t, submission):
        from sandbox_eval_helper import eval_with_llm_judge

        criteria = ["The response names Paris."]
        return 1.0 if eval_with_llm_judge(self.get_instructions(t), submission, criteria) else 0.0
"""

CORRECT_CODE = "```python\ndef largest(items):\n    return max(items)\n```"
WRONG_CODE = "```python\ndef largest(items):\n    return items[0]\n```"

# (task, reply, score) through `qd-llm tasks score`, replies in the reference's
# protocol (its system prompt asks for the answer after 'Answer: ').
CLI_CASES = [
    ("mcq_plain", "The red planet is Mars.\nAnswer: B", 1.0),
    ("mcq_plain", "Answer: A", 0.0),
    ("mcq_plain", "B", 0.0),  # no marker: the reference scores "No answer found."
    ("code_helper", f"Here it is.\nAnswer:\n{CORRECT_CODE}", 1.0),
    ("code_helper", f"Answer:\n{WRONG_CODE}", 0.0),
    ("judged", "Answer: Paris", 1.0),
    ("judged", "Answer: Lyon", 0.0),
]


def _write_reference_task(root: Path, name: str, code: str, metadata=None) -> Path:
    task = root / name
    task.mkdir(parents=True)
    (task / "task.py").write_text(textwrap.dedent(code))
    info = {
        "name_of_task": name,
        "description_of_task": f"Reference-style task {name}.",
        "capability_being_measured": name.split("_")[0],
        "estimated_human_difficulty": "2",
        "example_instruction": "",
    }
    (task / "task.json").write_text(json.dumps(info))
    (task / "metadata.json").write_text(json.dumps(metadata or {"embedding": []}))
    return task


class ScriptedJudge(Backend):
    """The judge and curator model: decides by rule and records what it was shown.

    A submission passes when it names Paris (and is not the reference's
    "No answer found."); a task is interesting unless its name holds "boring".
    """

    def __init__(self):
        self.judge_prompts: list[str] = []
        self.interesting_prompts: list[str] = []

    def generate(self, requests: Sequence[GenerationRequest], config: GenerationConfig):
        replies = []
        for request in requests:
            if config.system_prompt == JUDGE_SYSTEM_PROMPT:
                self.judge_prompts.append(request.prompt)
                submission = request.prompt.split("Submission:", 1)[1].split("Additional")[0]
                verdict = "Yes" if "paris" in submission.lower() else "No"
                replies.append(f"THOUGHT:\nChecked the submission.\n\nDECISION:\n{verdict}")
            elif config.system_prompt == INTERESTING_SYSTEM_PROMPT:
                self.interesting_prompts.append(request.prompt)
                new_task = request.prompt.split("already in the collection")[0]
                verdict = "No" if "boring" in new_task else "Yes"
                replies.append(f"It differs.\nDecision: {verdict}")
            else:
                raise AssertionError(f"unexpected system prompt {config.system_prompt!r}")
        return replies


@pytest.fixture(scope="module")
def judge_server():
    backend = ScriptedJudge()
    with ChatCompletionServer(backend=backend, base_model="fake-72b") as server:
        server.start()
        yield server, backend


@pytest.fixture(scope="module")
def reference_pool(world_readable):
    root = world_readable / "reference_pool"
    for name, code in (("mcq_plain", MCQ_PLAIN), ("code_helper", CODE_HELPER), ("judged", JUDGED)):
        _write_reference_task(root, name, code)
    return root


def _judge_env(server) -> dict:
    return {"QD_LLM_OPENAI_BASE_URL": server.url, "QD_LLM_OPENAI_MODEL": "fake-72b"}


def _score(task: Path, reply: str, server, monkeypatch, capsys) -> dict:
    """``qd-llm tasks score`` in this process (the subprocess test below covers the real CLI)."""
    from qd_llm.cli import main

    for name, value in _judge_env(server).items():
        monkeypatch.setenv(name, value)
    assert main(["tasks", "score", str(task), "--answer", reply]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("task", "reply", "expected"), CLI_CASES)
def test_reference_tasks_score_through_the_cli(
    reference_pool, judge_server, monkeypatch, capsys, task, reply, expected
):
    server, _ = judge_server
    out = _score(reference_pool / task, reply, server, monkeypatch, capsys)
    assert out["extraction"] == "acdc"
    assert out["score"] == expected, out


def test_judge_sees_the_instructions_submission_and_criteria(reference_pool, judge_server):
    server, backend = judge_server
    before = len(backend.judge_prompts)
    command = [sys.executable, "-m", "qd_llm.cli", "tasks", "score", str(reference_pool / "judged")]
    result = subprocess.run(
        [*command, "--answer", "Answer: Paris"],
        capture_output=True,
        text=True,
        env={**os.environ, **_judge_env(server)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["score"] == 1.0
    [prompt] = backend.judge_prompts[before:]
    assert "In one word, name the capital of France." in prompt
    assert "Submission:  Paris" in prompt  # the reference keeps the space after 'Answer:'
    assert "* The response names Paris." in prompt


def test_raw_extraction_recorded_in_metadata_passes_the_whole_reply(
    world_readable, judge_server, monkeypatch, capsys
):
    server, _ = judge_server
    task = _write_reference_task(
        world_readable / "raw_pool", "mcq_raw", MCQ_PLAIN, {"answer_extraction": "raw"}
    )
    assert read_task(task).lineage.answer_extraction == "raw"
    assert _score(task, " b\n", server, monkeypatch, capsys)["score"] == 1.0
    assert _score(task, "Answer: B", server, monkeypatch, capsys)["score"] == 0.0


def test_judge_without_an_endpoint_fails_the_scoring_with_a_reason(reference_pool):
    with SandboxPool(config=SandboxConfig(), workers=1) as pool:
        instance = pool.load_instances(reference_pool / "judged")["1"]
        job = ScoreJob(
            task_dir=reference_pool / "judged", instance_id="1", data=instance.data, submission="x"
        )
        result = pool.score(job)
    assert result.failed and result.score == 0.0
    assert "no LLM judge is configured" in result.reason


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Answer: C", " C"),
        ("C", "No answer found."),
        ("work\n#### 72 \nAnswer: 3", "72 \nAnswer: 3"),  # to the end, stripped
        ("so \\boxed{\\frac{1}{2}} and {x}", "\\frac{1}{2}} and {x"),
        ("Answer: 1\nAnswer: 2", " 1\nAnswer: 2"),
        ("answer: lower", "No answer found."),
    ],
)
def test_reference_extraction_rule(reply, expected):
    assert extract_answer_acdc(reply) == expected


def test_reference_generation_types_are_read():
    from qd_llm.tasks.taskdir import Lineage

    lineage = Lineage.from_json({"generation_type": "adaptation_harder", "task_number": 7})
    assert lineage.generation_type == "harder"
    assert lineage.answer_extraction == "acdc"
    assert Lineage.from_json({"created_at_generation": 3}).answer_extraction == "qd_llm"


# --- the interestingly-new check and the LLM scientist ---------------------------------


def _client(server) -> OpenAIChatClient:
    return OpenAIChatClient(base_url=server.url, model="fake-72b", max_retries=0)


def test_interesting_check_asks_with_the_nearest_tasks(judge_server):
    server, backend = judge_server
    check = InterestingCheck(client=_client(server))
    near = TaskInfo(name="sums", description="Add numbers.", capability="arithmetic")
    fresh = TaskInfo(name="poems", description="Write a haiku.", capability="creativity")
    boring = TaskInfo(name="boring_sums", description="Add numbers.", capability="arithmetic")
    before = len(backend.interesting_prompts)
    assert check(fresh, []) is True  # nothing to compare: not asked
    assert check(fresh, [near]) is True
    assert check(boring, [near]) is False
    first, _ = backend.interesting_prompts[before:]
    assert "Name of task: poems" in first and "Task 1:\nName of task: sums" in first


JUDGE_TASK_REPLY = json.dumps(
    {
        "thought": "A judged task.",
        "name_of_task": "capital_city",
        "description_of_task": "Name a capital city.",
        "capability_being_measured": "knowledge",
        "estimated_human_difficulty": "1",
        "example_instruction": "In one word, name the capital of France.",
        "task_family": textwrap.dedent(JUDGED),
        "done": True,
    }
)


class _ScientistAndJudge(ScriptedJudge):
    """Writes one judged task as the scientist, answers 'Answer: Paris', and judges."""

    def generate(self, requests, config):
        if config.system_prompt in (JUDGE_SYSTEM_PROMPT, INTERESTING_SYSTEM_PROMPT):
            return super().generate(requests, config)
        if "Solve the task" in (config.system_prompt or ""):
            return ["Answer: Paris"] * len(requests)
        return [JUDGE_TASK_REPLY] * len(requests)


def test_llm_scientist_tests_drafts_in_the_given_pool_and_its_judge(tmp_path):
    backend = _ScientistAndJudge()
    with ChatCompletionServer(backend=backend, base_model="fake-72b") as server:
        server.start()
        client = _client(server)
        with SandboxPool(config=SandboxConfig(), workers=1, judge=TaskJudge(client=client)) as pool:
            tasks = []
            # A scientist per adaptation, as in the loop, on the run's one pool.
            for out in ("first", "second"):
                scientist = LLMScientist(client=client, sandbox=pool, max_reflections=0)
                tasks.append(scientist.propose(TaskRequest(operation="initial"), tmp_path / out))
                del scientist
                gc.collect()
            # The pool is the caller's: still open and usable afterwards.
            assert pool.load_instances(tasks[1].path)["1"].instructions.startswith("In one word")
    # The drafts' own answers were judged by the pool's judge: a new pool would have none.
    assert [t.lineage.extra["scientist_score"] for t in tasks] == [1.0, 1.0]
    assert len(backend.judge_prompts) == 4  # per draft: the scientist's answer, the smoke test


def test_loop_gives_the_llm_scientist_its_pool_and_the_interesting_check(
    world_readable, judge_server, monkeypatch
):
    from qd_llm.config import load_config
    from qd_llm.loop import Coevolution
    from qd_llm.runs import RunDir

    server, _ = judge_server
    for name, value in _judge_env(server).items():
        monkeypatch.setenv(name, value)
    config = load_config(overrides=["tasks.scientist=llm", "progress=false"])
    # A given embedder, so the pool's archive is built without loading MiniLM.
    loop = Coevolution(
        config,
        RunDir.create(world_readable / "llm_wiring", config.to_dict()),
        embedder=lambda texts: np.ones((len(texts), 2)),
    )
    try:
        loop.start()
        assert loop.scientist.sandbox is loop.sandbox
        assert isinstance(loop.tasks.is_interesting, InterestingCheck)
        assert isinstance(loop.sandbox.judge, TaskJudge)
    finally:
        loop.close()


# --- the judge channel under load and abuse --------------------------------------------

SLOW_AND_GREEDY = """
class TaskFamily:
    @staticmethod
    def get_tasks():
        return {"1": {"calls": 1}, "2": {"calls": 3}}

    @staticmethod
    def get_instructions(t):
        return "Say anything."

    @staticmethod
    def score(t, submission):
        from sandbox_eval_helper import eval_with_llm_judge

        verdicts = [eval_with_llm_judge("Say anything.", submission) for _ in range(t["calls"])]
        return float(all(verdicts))
"""


def test_judge_time_is_not_the_jobs_and_calls_are_capped(world_readable):
    task = _write_reference_task(world_readable / "judge_limits", "slow", SLOW_AND_GREEDY)

    def slow_judge(instructions, submission, criteria):
        time.sleep(1.5)  # longer than the job's wall-clock limit
        return True

    config = SandboxConfig(wall_seconds=1.0, max_judge_calls=2)
    with SandboxPool(config=config, workers=1, judge=slow_judge) as pool:
        instances = pool.load_instances(task)
        once, thrice = pool.score_many(
            [ScoreJob(task_dir=task, instance_id=i, data=instances[i].data, submission="hi")
             for i in ("1", "2")]
        )  # fmt: skip
    assert (once.score, once.reason) == (1.0, None)
    assert thrice.failed and "over 2 judge calls in a job" in thrice.reason


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ("not a dict", "malformed"),
        ({"instructions": 1, "submission": "x", "criteria": []}, "malformed"),
        ({"instructions": "i", "submission": "x", "criteria": "c"}, "malformed"),
        ({"instructions": "i", "submission": "x", "criteria": [1]}, "malformed"),
        ({"instructions": "i", "submission": "boom", "criteria": []}, "RuntimeError: down"),
    ],
)
def test_judge_requests_are_checked_and_judge_failures_reported(request_, error):
    def judge(instructions, submission, criteria):
        if submission == "boom":
            raise RuntimeError("down")
        return True

    assert error in answer_judge_request(judge, request_)["error"]


# --- inside a loop run -----------------------------------------------------------------


class CopyScientist(Scientist):
    """Offers the given task directories, unchanged, as the run's initial tasks."""

    name = "copy"

    def __init__(self, sources: Sequence[Path]):
        self.sources = list(sources)

    def propose(self, request: TaskRequest, out_root: Path):
        if request.operation != "initial" or not self.sources:
            raise TaskRejected("only initial tasks, once each")
        source = self.sources.pop(0)
        shutil.copytree(source, Path(out_root) / source.name)
        return read_task(Path(out_root) / source.name)


@pytest.mark.slow
def test_reference_tasks_score_inside_a_loop_run(
    world_readable, reference_pool, judge_server, monkeypatch
):
    from qd_llm.config import load_config
    from qd_llm.loop import Coevolution
    from qd_llm.runs import RunDir

    server, backend = judge_server
    monkeypatch.setenv("QD_LLM_OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("QD_LLM_OPENAI_MODEL", "fake-72b")
    raw_judged = _write_reference_task(
        world_readable / "loop_sources", "judged_raw", JUDGED, {"answer_extraction": "raw"}
    )
    sources = [reference_pool / "mcq_plain", reference_pool / "code_helper", raw_judged]

    config = load_config(
        preset="demo",
        overrides=[*TINY, "population.generations=1", f"tasks.initial_tasks={len(sources)}"],
    )
    run = RunDir.create(world_readable / "reference_loop", config.to_dict())
    loop = Coevolution(config, run, scientist=CopyScientist(sources))
    try:
        loop.run()
    finally:
        loop.close()
    records = [json.loads(line) for line in run.evals_path.read_text().splitlines()]
    by_task = {name: [r for r in records if r["task_id"] == name] for name in ("mcq_plain",
               "code_helper", "judged_raw")}  # fmt: skip
    assert all(by_task.values()), {k: len(v) for k, v in by_task.items()}
    for record in by_task["mcq_plain"] + by_task["code_helper"]:
        assert record["extracted"] == extract_answer_acdc(record["completion"])
    for record in by_task["mcq_plain"]:
        assert record["score"] == (1.0 if record["extracted"].strip().lower() == "b" else 0.0)
    judged_prompts = "\n".join(backend.judge_prompts)
    for record in by_task["judged_raw"]:
        assert record["extracted"] == record["completion"]  # the raw reply
        assert f"Submission: {record['completion']}" in judged_prompts
        expected = 1.0 if "paris" in record["completion"].lower() else 0.0
        assert (record["score"], record["reason"]) == (expected, None)
    # Greedy SmolLM2 names Paris and misses the letter: the run saw both outcomes.
    assert {r["score"] for r in records} == {0.0, 1.0}
