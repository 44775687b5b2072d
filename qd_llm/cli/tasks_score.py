"""``qd-llm tasks score`` and ``qd-llm tasks list``.

``score`` runs one answer through a task's ``score`` in the sandbox and prints
one JSON object; it exits 0 whenever ``score()`` returned a number, even 0, and
non-zero with one line saying why when the task is broken: its instances
cannot be computed, or ``score()`` raised, timed out or returned no number.
``list`` shows the task directories of a pool folder.
"""

import argparse
import json
from pathlib import Path

from qd_llm.errors import QdLlmError
from qd_llm.tasks.extract import EXTRACTIONS, extract_with
from qd_llm.tasks.llm_judge import TaskJudge
from qd_llm.tasks.sandbox import SandboxConfig, SandboxPool, ScoreJob
from qd_llm.tasks.taskdir import list_tasks, read_task


def register(subparsers) -> None:
    score = subparsers.add_parser(
        "score",
        help="score one answer on a task instance (in the sandbox)",
        description="Extract the answer from TEXT the way the task asks (its metadata.json "
        "answer_extraction: qd_llm, acdc or raw; see qd_llm.tasks.extract), score it with "
        "the task's score() inside the sandbox and print one JSON object with score, "
        "reason, instance_id, extraction and extracted_answer. A task calling the AC/DC "
        "helper eval_with_llm_judge is judged by the OpenAI-compatible endpoint of the "
        "environment (QD_LLM_OPENAI_BASE_URL, QD_LLM_OPENAI_MODEL).",
    )
    score.add_argument("task_dir", type=Path, metavar="TASK_DIR")
    answer = score.add_mutually_exclusive_group(required=True)
    answer.add_argument("--answer", metavar="TEXT", help="the model's reply")
    answer.add_argument("--answer-file", type=Path, metavar="F", help="read the reply from F")
    score.add_argument("--instance", metavar="ID", help="instance id (default: the first)")
    extraction = score.add_mutually_exclusive_group()
    extraction.add_argument(
        "--extract",
        choices=EXTRACTIONS,
        help="answer extraction to use instead of the task's own",
    )
    extraction.add_argument(
        "--no-extract", action="store_true", help="score the reply as is (same as --extract raw)"
    )
    score.add_argument(
        "--isolation",
        choices=("auto", "bwrap", "unshare", "none"),
        default="auto",
        help="sandbox kind; 'none' runs task code unisolated (UNSAFE, trusted code only)",
    )
    score.set_defaults(func=_score)

    listing = subparsers.add_parser(
        "list",
        help="list the task directories in a folder",
        description="List task directories (name, capability, difficulty, generation type, "
        "parent) directly under DIR.",
    )
    listing.add_argument("root", type=Path, metavar="DIR")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=_list)


def _score(args: argparse.Namespace) -> int:
    task = read_task(args.task_dir)  # a clear error before any sandbox starts
    if args.answer_file is not None:
        try:
            reply = args.answer_file.read_text(encoding="utf-8")
        except OSError as e:
            raise QdLlmError(f"cannot read --answer-file: {e.strerror}: {args.answer_file}") from e
    else:
        reply = args.answer
    extraction = "raw" if args.no_extract else args.extract or task.lineage.answer_extraction
    submission = extract_with(extraction, reply)
    with SandboxPool(
        config=SandboxConfig(isolation=args.isolation), workers=1, judge=_environment_judge()
    ) as pool:
        instances = pool.load_instances(args.task_dir)
        instance_id = args.instance if args.instance is not None else next(iter(instances))
        if instance_id not in instances:
            raise QdLlmError(
                f"no instance {instance_id!r} in {args.task_dir}; "
                f"instances: {', '.join(list(instances)[:20])}"
            )
        result = pool.score(
            ScoreJob(
                task_dir=args.task_dir,
                instance_id=instance_id,
                data=instances[instance_id].data,
                submission=submission,
            )
        )
    out = {
        "task": args.task_dir.name,
        "instance_id": instance_id,
        "score": result.score,
        "reason": result.reason,
        "extraction": extraction,
        "extracted_answer": submission,
        "seconds": round(result.seconds, 4),
    }
    print(json.dumps(out))
    if result.failed:
        raise QdLlmError(
            f"score() of {args.task_dir} failed on instance {instance_id!r}: {result.reason}"
        )
    return 0


def _environment_judge():
    """A judge on the environment's OpenAI-compatible endpoint, connected on first use.

    This command is the CLI's (the top layer), so it may reach the inference layer;
    a task that never calls the judge needs no endpoint.
    """
    from qd_llm.inference.openai_client import OpenAIChatClient

    return TaskJudge(client_factory=OpenAIChatClient)


def _list(args: argparse.Namespace) -> int:
    tasks = list_tasks(args.root)
    rows = [
        {
            "task_id": t.task_id,
            "name": t.info.name,
            "capability": t.info.capability,
            "difficulty": t.info.difficulty,
            "generation_type": t.lineage.generation_type,
            "parent": t.lineage.parent_task,
        }
        for t in tasks
    ]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    columns = ("task_id", "capability", "difficulty", "generation_type", "parent")
    table = [columns, *[tuple(str(row[c] or "-") for c in columns) for row in rows]]
    widths = [min(max(len(r[i]) for r in table), 48) for i in range(len(columns))]
    for r in table:
        print("  ".join(cell[:48].ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    print(f"{len(rows)} task(s) in {args.root}")
    return 0
