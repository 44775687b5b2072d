"""The sandbox API on real bubblewrap sandboxes: instances, scores, validation, CLI."""

import json
import os

import pytest

from qd_llm.cli import main
from qd_llm.errors import QdLlmError
from qd_llm.tasks.sandbox import (
    SandboxConfig,
    SandboxError,
    SandboxPool,
    ScoreJob,
    fresh_sandbox_score,
    load_instances,
    resolve_isolation,
)
from qd_llm.tasks.taskdir import Lineage, TaskInfo, write_task

CONFIG = SandboxConfig(cpu_seconds=2, wall_seconds=4)

ADDITION = """
class TaskFamily:
    @staticmethod
    def get_tasks():
        return {"1": {"a": 2, "b": 3, "pair": (1, 2)}, "2": {"a": 5, "b": 7, "pair": (3, 4)}}

    @staticmethod
    def get_instructions(t):
        return f"What is {t['a']} + {t['b']}?"

    @staticmethod
    def score(t, submission):
        assert t["pair"] in ([1, 2], [3, 4])  # tuples arrive as lists
        return 1.0 if submission.strip() == str(t["a"] + t["b"]) else 0.0
"""

# score(t, submission) returns eval(submission): lets one task return anything.
ECHO = """
class TaskFamily:
    @staticmethod
    def get_tasks():
        return {"only": {}}

    @staticmethod
    def get_instructions(t):
        return "Return a value."

    @staticmethod
    def score(t, submission):
        return eval(submission)
"""

LEAKY = """
import os

class TaskFamily:
    @staticmethod
    def get_tasks():
        return {"1": {}}

    @staticmethod
    def get_instructions(t):
        return "Leave a mark."

    @staticmethod
    def score(t, submission):
        fresh = not os.path.exists("mark") and not os.path.exists(os.path.expanduser("~/mark"))
        open("mark", "w").close()
        os.environ["LEAK"] = "1"
        return 1.0 if fresh and os.getcwd() == os.environ["HOME"] else 0.0
"""


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    if resolve_isolation(CONFIG) != "bwrap":
        pytest.skip("bubblewrap cannot create sandboxes here")
    root = tmp_path_factory.mktemp("pool")
    dirs = {}
    for name, code in {"addition": ADDITION, "echo": ECHO, "leaky": LEAKY}.items():
        info = TaskInfo(name=name, description=f"{name} task", capability="testing")
        lineage = Lineage(generation_type="easier", parent_task="root_task")
        dirs[name] = write_task(root, task_id=name, code=code, info=info, lineage=lineage).path
    return dirs


@pytest.fixture(scope="module")
def pool(tasks):
    with SandboxPool(config=CONFIG, workers=2) as pool:
        yield pool


def _job(task_dir, submission, instance_id="only", data=None):
    return ScoreJob(
        task_dir=task_dir, instance_id=instance_id, data=data or {}, submission=submission
    )


def test_load_instances_round_trips_json(tasks, pool):
    instances = load_instances(tasks["addition"], sandbox=pool)
    assert list(instances) == ["1", "2"]
    assert instances["1"].instructions == "What is 2 + 3?"
    assert instances["2"].data == {"a": 5, "b": 7, "pair": [3, 4]}
    assert load_instances(tasks["addition"], sandbox=CONFIG) == instances  # one-off sandbox


def test_score_many_keeps_order(tasks, pool):
    instances = load_instances(tasks["addition"], sandbox=pool)
    answers = ["5", "12", "6", " 12 ", "x"] * 8
    jobs = [
        _job(tasks["addition"], a, instance_id=i, data=instances[i].data)
        for a, i in zip(answers, ["1", "2", "1", "2", "1"] * 8, strict=True)
    ]
    results = pool.score_many(jobs)
    assert [r.score for r in results] == [1.0, 1.0, 0.0, 1.0, 0.0] * 8
    assert all(r.reason is None and r.seconds > 0 for r in results)


@pytest.mark.parametrize(
    ("returned", "score", "reason", "failed"),
    [
        ("0.25", 0.25, None, False),
        ("True", 1.0, None, False),
        ("None", 0.0, "returned NoneType", True),
        ("float('nan')", 0.0, "NaN", True),
        ("1.5", 1.0, "clamped", False),
        ("-2", 0.0, "clamped", False),
        ("'1.0'", 0.0, "returned str", True),
        ("1 / 0", 0.0, "ZeroDivisionError", True),
        ("__import__('src.eval_helper')", 0.0, "ModuleNotFoundError", True),
    ],
)
def test_scores_are_validated(tasks, pool, returned, score, reason, failed):
    result = pool.score(_job(tasks["echo"], returned))
    assert result.score == score
    assert result.failed is failed
    if reason is None:
        assert result.reason is None
    else:
        assert reason in result.reason


def test_no_state_leaks_between_jobs(tasks, pool):
    results = pool.score_many([_job(tasks["leaky"], "", instance_id="1")] * 6)
    assert [r.score for r in results] == [1.0] * 6


@pytest.mark.parametrize(
    ("isolation", "sees_host_processes"), [("bwrap", False), ("unshare", False), ("none", True)]
)
def test_fresh_sandbox_runs_in_the_isolation_asked_for(tasks, isolation, sees_host_processes):
    config = SandboxConfig(isolation=isolation, cpu_seconds=2, wall_seconds=4)
    try:
        resolve_isolation(config)
    except QdLlmError as e:
        # CI runs as root with bubblewrap installed (make system-deps), where every
        # mode works: there a missing one is a broken setup, not a reason to skip.
        if os.environ.get("CI"):
            pytest.fail(f"{isolation} unavailable in CI: {e}")
        pytest.skip(f"{isolation} unavailable here: {e}")
    assert fresh_sandbox_score(_job(tasks["echo"], "0.5"), config=config).score == 0.5
    # bwrap and unshare give task code its own PID namespace; "none" does not,
    # so only there can the task see this test's process.
    probe = f"float(__import__('os').path.exists('/proc/{os.getpid()}'))"
    assert fresh_sandbox_score(_job(tasks["echo"], probe), config=config).score == float(
        sees_host_processes
    )


def test_bad_tasks_raise_clear_errors(tmp_path, pool):
    with pytest.raises(QdLlmError, match="not a task directory"):
        load_instances(tmp_path, sandbox=pool)
    bad = {
        "not_a_dict": "class TaskFamily:\n    get_tasks = staticmethod(lambda: [1])",
        "no_family": "x = 1",
        "unserialisable": "class TaskFamily:\n    get_tasks = staticmethod(lambda: {'1': {1j}})",
    }
    for name, code in bad.items():
        info = TaskInfo(name=name, description=name, capability="testing")
        task = write_task(tmp_path, task_id=name, code=code, info=info, lineage=Lineage())
        with pytest.raises(SandboxError, match="cannot load instances"):
            load_instances(task.path, sandbox=pool)


def test_config_is_validated():
    with pytest.raises(QdLlmError, match="isolation"):
        SandboxConfig(isolation="docker")
    with pytest.raises(QdLlmError, match="wall_seconds"):
        SandboxConfig(wall_seconds=0)


def test_cli_score_and_list(tasks, tmp_path, capsys):
    assert main(["tasks", "score", str(tasks["addition"]), "--answer", "Sum.\nAnswer: **5**"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["score"] == 1.0 and out["instance_id"] == "1" and out["extracted_answer"] == "5"

    reply = tmp_path / "reply.txt"
    reply.write_text("Answer: 12")
    args = ["tasks", "score", str(tasks["addition"]), "--answer-file", str(reply)]
    assert main([*args, "--instance", "2", "--no-extract"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["score"] == 0.0 and out["extracted_answer"] == "Answer: 12"

    assert main(["tasks", "score", str(tmp_path / "nope"), "--answer", "1"]) == 2
    assert "not a task directory" in capsys.readouterr().err

    assert main(["tasks", "list", str(tasks["addition"].parent), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["task_id"] for r in rows] == ["addition", "echo", "leaky"]
    assert rows[0]["generation_type"] == "easier" and rows[0]["parent"] == "root_task"


def test_runner_refuses_to_sweep_the_hosts_pid_namespace():
    """The sweep after a job kills every process in the runner's PID namespace; a
    runner started without a namespace of its own must not start at all."""
    import subprocess
    import sys

    from qd_llm.tasks import _sandbox_runner

    read_fd, write_fd = os.pipe()
    config = {"sweep": True, "host_pid_namespace": os.readlink("/proc/self/ns/pid")}
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-S",
                _sandbox_runner.__file__,
                f"--result-fd={write_fd}",
                f"--config={json.dumps(config)}",
            ],
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        os.close(write_fd)
        assert done.returncode == 3
        assert "no PID namespace of its own" in done.stderr.decode()
        assert os.read(read_fd, 64) == b""  # it never reported ready
    finally:
        os.close(read_fd)
