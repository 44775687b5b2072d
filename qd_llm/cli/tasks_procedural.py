"""``qd-llm tasks new`` and ``qd-llm tasks adapt``: the procedural scientist on the CLI."""

import json
from pathlib import Path

from qd_llm.errors import QdLlmError


def _summary(task) -> dict:
    extra = task.lineage.extra
    return {
        "task_id": task.task_id,
        "path": str(task.path),
        "family": extra.get("family"),
        "level": extra.get("level"),
        "generation_type": task.lineage.generation_type,
        "parent_task": task.lineage.parent_task,
        "description": task.info.description,
    }


def _families(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def _new(args) -> int:
    from qd_llm.tasks.procedural.scientist import ProceduralScientist
    from qd_llm.tasks.scientist import TaskRequest

    if args.n < 1:
        raise QdLlmError(f"--n must be at least 1, got {args.n}")
    levels = (args.level,) if args.level is not None else (0, 1)
    scientist = ProceduralScientist(
        families=_families(args.families), initial_levels=levels, num_instances=args.instances
    )
    tasks = [
        scientist.propose(TaskRequest(operation="initial", seed=args.seed + i), Path(args.out))
        for i in range(args.n)
    ]
    print(json.dumps({"out": args.out, "tasks": [_summary(task) for task in tasks]}, indent=2))
    return 0


def _adapt(args) -> int:
    from qd_llm.tasks.procedural.scientist import ProceduralScientist
    from qd_llm.tasks.scientist import TaskRejected, TaskRequest
    from qd_llm.tasks.taskdir import list_tasks, read_task

    parent = read_task(args.task_dir)
    context = tuple(list_tasks(args.context)) if args.context else ()
    params = parent.lineage.extra.get("params") or {}
    scientist = ProceduralScientist(
        families=_families(args.families),
        num_instances=args.instances or int(params.get("num_instances", 5)),
    )
    request = TaskRequest(
        operation=args.op,
        parent=parent,
        parent_pass_rate=args.pass_rate,
        context=context,
        generation=args.generation,
        seed=args.seed,
    )
    try:
        task = scientist.propose(request, Path(args.out))
    except TaskRejected as e:
        raise QdLlmError(f"no {args.op} task from {parent.task_id}: {e}") from None
    print(json.dumps(_summary(task), indent=2))
    return 0


def register(tasks_subparsers) -> None:
    from qd_llm.tasks.procedural.families import FAMILIES

    family_help = f"comma-separated families to draw from (default all: {', '.join(FAMILIES)})"
    new = tasks_subparsers.add_parser(
        "new",
        help="write initial tasks with the procedural scientist",
        description="Write N initial task directories drawn from the procedural families "
        "and print a JSON summary. The same seed writes byte-identical tasks.",
    )
    new.add_argument("--out", required=True, help="pool folder to write the tasks into")
    new.add_argument("--n", type=int, default=1, help="number of tasks (default 1)")
    new.add_argument("--seed", type=int, default=0, help="seed of task i is SEED + i")
    new.add_argument("--families", help=family_help)
    new.add_argument("--level", type=int, help="start every task at this level (default 0 or 1)")
    new.add_argument("--instances", type=int, default=5, help="instances per task (default 5)")
    new.set_defaults(func=_new)

    adapt = tasks_subparsers.add_parser(
        "adapt",
        help="derive an easier, harder or novel task from a procedural task",
        description="Write one task derived from TASK_DIR (easier/harder: same family one "
        "level down/up; novel: a family least represented in --context) and print a JSON "
        "summary with its path.",
    )
    adapt.add_argument("task_dir", help="the parent task directory")
    adapt.add_argument("--op", required=True, choices=("easier", "harder", "novel"))
    adapt.add_argument("--out", required=True, help="pool folder to write the new task into")
    adapt.add_argument("--seed", type=int, default=0)
    adapt.add_argument("--context", help="pool folder of tasks to steer away from (novel)")
    adapt.add_argument("--families", help=family_help)
    adapt.add_argument("--pass-rate", type=float, help="the parent's pass rate, for the lineage")
    adapt.add_argument("--generation", type=int, default=0, help="loop generation, for the lineage")
    adapt.add_argument("--instances", type=int, help="instances per task (default: the parent's)")
    adapt.set_defaults(func=_adapt)
