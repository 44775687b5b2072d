"""``qd-llm bench sandbox``: pooled sandbox scoring vs one fresh sandbox per scoring.

Both sides score the same N jobs of a simple benign task (one-digit addition,
half the answers right) with the same isolation, limits and concurrency
(``--workers`` at a time); ``ratio`` is
pooled scorings per second over fresh scorings per second.

``containment`` then runs three hostile scorings under the default limits (a
fork bomb, a memory bomb spread over eight processes each below the per-process
limit, and a tmpfs fill with many small files) and gives, for each, why and
after how many seconds the job ended (the wall-clock limit is
``wall_limit_seconds``) and the peaks the job's cgroups measured (null without
cgroups); ``limits_mechanism`` says what bounded the jobs.
"""

import dataclasses
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qd_llm.tasks.sandbox import (
    SandboxConfig,
    SandboxPool,
    ScoreJob,
    fresh_sandbox_score,
    load_instances,
    resolve_isolation,
)
from qd_llm.tasks.taskdir import Lineage, TaskInfo, write_task

NAME = "sandbox"
HELP = "scorings per second: pooled fork-server sandboxes vs a fresh sandbox per scoring"

_TASK_CODE = """
class TaskFamily:
    @staticmethod
    def get_tasks():
        return {str(i): {"a": i % 10, "b": (3 * i) % 10} for i in range(20)}

    @staticmethod
    def get_instructions(t):
        return f"What is {t['a']} + {t['b']}? Answer with a number."

    @staticmethod
    def score(t, submission):
        return 1.0 if submission.strip() == str(t["a"] + t["b"]) else 0.0
"""


def add_arguments(parser) -> None:
    parser.add_argument("-n", "--scorings", type=int, default=200, help="jobs per side")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="pool size (default: CPUs)"
    )
    parser.add_argument("--isolation", choices=("auto", "bwrap", "unshare", "none"), default="auto")
    parser.add_argument(
        "--no-cgroups",
        action="store_true",
        help="measure containment with the fallback (no per-job cgroups)",
    )


# One attack per line of score(); each returns 1.0 only if it was never stopped.
_ATTACKS = {
    "fork_bomb": """
        import contextlib, os
        while True:
            with contextlib.suppress(OSError):
                os.fork()""",
    "memory_bomb_processes": """
        import os, time
        for _ in range(8):
            if os.fork() == 0:
                hog = [bytearray(16 << 20) for _ in range({memory_bytes} // 4 // (16 << 20))]
                time.sleep(3600)
        time.sleep(3600)""",
    "tmpfs_fill": """
        import contextlib, itertools
        for i in itertools.count():
            with contextlib.suppress(OSError), open(f"fill-{{i}}", "wb") as f:
                f.write(bytes(1 << 20))""",
}
_ATTACK_TASK = """
class TaskFamily:
    @staticmethod
    def get_tasks():
        return {{"1": {{}}}}

    @staticmethod
    def get_instructions(t):
        return "Attack."

    @staticmethod
    def score(t, submission):{attack}
        return 1.0
"""


def _containment(root: str, config: SandboxConfig) -> tuple[str, dict]:
    """Runs each attack once; returns the limits mechanism and what ended each job."""
    measures = {}
    with SandboxPool(config=config, workers=1) as pool:
        for name, attack in _ATTACKS.items():
            code = _ATTACK_TASK.format(attack=attack.format(memory_bytes=config.memory_bytes))
            info = TaskInfo(name=name, description=name, capability="hostility")
            task = write_task(root, task_id=name, code=code, info=info, lineage=Lineage())
            job = ScoreJob(task_dir=task.path, instance_id="1", data={}, submission="")
            result = pool.score(job)
            measures[name] = {
                "score": result.score,
                "reason": result.reason,
                "seconds": round(result.seconds, 3),
                "peak_memory_bytes": result.peak_memory_bytes,
                "peak_processes": result.peak_processes,
            }
        return pool.limits_mechanism, measures


def _jobs(task_dir: Path, config: SandboxConfig, n: int) -> list[ScoreJob]:
    instances = list(load_instances(task_dir, sandbox=config).values())
    jobs = []
    for i in range(n):
        inst = instances[i % len(instances)]
        right = str(inst.data["a"] + inst.data["b"])
        jobs.append(
            ScoreJob(
                task_dir=task_dir,
                instance_id=inst.instance_id,
                data=inst.data,
                submission=right if i % 2 == 0 else right + "0",
            )
        )
    return jobs


def run(args) -> dict:
    config = SandboxConfig(isolation=args.isolation)
    with tempfile.TemporaryDirectory(prefix="qd-bench-sandbox-") as root:
        task = write_task(
            root,
            task_id="one_digit_addition",
            code=_TASK_CODE,
            info=TaskInfo(name="one_digit_addition", description="add", capability="arithmetic"),
            lineage=Lineage(),
        )
        jobs = _jobs(task.path, config, args.scorings)
        expected = sum(1 for i in range(len(jobs)) if i % 2 == 0)

        with SandboxPool(config=config, workers=args.workers) as pool:
            pool.score_many(jobs[: args.workers])  # start the sandboxes outside the timing
            start = time.perf_counter()
            pooled = pool.score_many(jobs)
            pooled_s = time.perf_counter() - start

        # Same concurrency on both sides: only the per-call sandbox start differs.
        start = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as executor:
            fresh = list(executor.map(lambda job: fresh_sandbox_score(job, config=config), jobs))
        fresh_s = time.perf_counter() - start

        hostile_config = dataclasses.replace(config, use_cgroups=not args.no_cgroups)
        mechanism, containment = _containment(root, hostile_config)

    pooled_rate = len(jobs) / pooled_s
    fresh_rate = len(jobs) / fresh_s
    return {
        "isolation": resolve_isolation(config),
        "scorings": len(jobs),
        "workers": args.workers,
        "pooled_per_s": round(pooled_rate, 1),
        "fresh_per_s": round(fresh_rate, 1),
        "ratio": round(pooled_rate / fresh_rate, 2),
        "pooled_correct": sum(r.score for r in pooled) == expected,
        "fresh_correct": sum(r.score for r in fresh) == expected,
        "limits_mechanism": mechanism,
        "limits": {
            "memory_bytes": config.memory_bytes,
            "max_processes": config.max_processes,
            "tmp_bytes": config.tmp_bytes,
            "wall_limit_seconds": config.wall_seconds,
        },
        "containment": containment,
    }
