"""``qd-llm plot``, ``export``, ``coverage`` and ``bestofn``: a finished run, analysed.

All four read a run directory (see :mod:`qd_llm.runs`) and never change what
the loop wrote; they add ``figures/``, ``report.html`` and ``coverage/``.
"""

import contextlib
import json
from pathlib import Path

from qd_llm.errors import QdLlmError


def register(subparsers) -> None:
    plot = subparsers.add_parser(
        "plot",
        help="draw a run's figures and write RUN/report.html",
        description="Write the niche-map heatmap, progress curves, task-embedding map, "
        "lineage and operator figures to RUN/figures/ and one HTML page linking them.",
    )
    plot.add_argument("run_dir", type=Path, metavar="RUN")
    plot.set_defaults(func=_plot)

    export = subparsers.add_parser(
        "export",
        help="write niche elites as PEFT adapters with model cards",
        description="One folder per niche elite (PEFT adapter, README.md model card) and "
        "DIR/manifest.json. Without --top/--taskforce every elite is exported.",
    )
    export.add_argument("run_dir", type=Path, metavar="RUN")
    export.add_argument("--out", type=Path, required=True, metavar="DIR")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--top", type=int, metavar="N", help="the N fittest elites")
    which.add_argument(
        "--taskforce", type=int, metavar="N", help="N elites by greedy max coverage of final tasks"
    )
    export.add_argument(
        "--merged", action="store_true", help="also write full checkpoints with the LoRA merged"
    )
    export.add_argument(
        "--base-path",
        type=Path,
        metavar="DIR",
        help="local base-model folder to name in adapter_config.json (default: the base's hub "
        "id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct); `qd-llm prepare` prints the built-in one",
    )
    export.set_defaults(func=_export)

    for name, help_text in (
        ("coverage", "coverage@N of taskforces and baselines on a task set"),
        ("bestofn", "pick one answer per task from a taskforce's answers"),
    ):
        p = subparsers.add_parser(name, help=help_text, description=help_text + ".")
        p.add_argument("run_dir", type=Path, metavar="RUN")
        p.add_argument(
            "--tasks",
            required=True,
            metavar="TASKS",
            help="a folder of task directories, or a benchmark: humaneval, a .jsonl file, "
            "a BIG-bench task.json or its folder, or bigbench:NAME (fetched on first use)",
        )
        p.add_argument("--limit", type=int, help="use at most N tasks")
        p.add_argument("--shuffle-seed", type=int, help="shuffle imported questions before --limit")
        p.add_argument(
            "--genomes",
            choices=("all", "final"),
            default="all",
            help="every saved genome (default) or the final population and niche elites",
        )
        p.add_argument("--json", action="store_true", help="print one JSON object")
        if name == "coverage":
            p.add_argument(
                "--val-fraction",
                type=float,
                default=0.5,
                help="share of TASKS (by a hash of each question) on which taskforces are "
                "chosen; the rest score them (default 0.5)",
            )
            p.add_argument(
                "--val-tasks",
                metavar="VAL",
                help="choose taskforces on this separate task set and score them on all of "
                "TASKS instead (refused if the two share a question)",
            )
            p.add_argument("--max-n", type=int, default=8, help="largest taskforce size")
            p.add_argument("--control-samples", type=int, default=8, help="base-model samples")
            p.add_argument("--control-temperature", type=float, default=0.7)
            p.add_argument("--draws", type=int, default=100, help="random taskforces per size")
            p.add_argument("--seed", type=int, default=0, help="seed of control and random")
            p.set_defaults(func=_coverage)
        else:
            p.add_argument("--n", type=int, required=True, help="taskforce size (greedy)")
            p.add_argument(
                "--method",
                default="majority",
                metavar="PICKER",
                help="a registered best-of-N picker: majority (default), judge, knockout, "
                "reward, or one a plugin adds",
            )
            p.add_argument(
                "--judge",
                choices=("local", "openai"),
                default="local",
                help="judge for judge/knockout: the local base model, or the OpenAI-compatible "
                "server in $QD_LLM_OPENAI_BASE_URL / $QD_LLM_OPENAI_MODEL",
            )
            p.add_argument(
                "--reward-model", metavar="PATH", help="HF sequence-classification model (reward)"
            )
            p.set_defaults(func=_bestofn, control_samples=0, control_temperature=0.7, seed=0)


def _plot(args) -> int:
    from qd_llm.plots import write_figures
    from qd_llm.report import write_report

    figures = write_figures(args.run_dir)
    report = write_report(args.run_dir, figures)
    print(json.dumps({"figures": [str(p) for p in figures.values()], "report": str(report)}))
    return 0


def _export(args) -> int:
    from qd_llm.export import MANIFEST, export_elites

    exported = export_elites(
        args.run_dir,
        args.out,
        top=args.top,
        taskforce=args.taskforce,
        merged=args.merged,
        base_path=args.base_path,
    )
    print(json.dumps({"exported": len(exported), "manifest": str(args.out / MANIFEST)}))
    return 0


def _load_tasks(args, run) -> tuple:
    """The task set to evaluate and, for ``coverage``, its validation/test split."""
    from qd_llm.evaluation.coverage import combined_task_set, load_task_set
    from qd_llm.evaluation.heldout import explicit_split, split_tasks

    task_set = load_task_set(args.tasks, run_dir=run.path, limit=args.limit, seed=args.shuffle_seed)
    if args.func is not _coverage:
        return task_set, None
    if args.val_tasks is None:
        return task_set, split_tasks(task_set.tasks, val_fraction=args.val_fraction)
    val_set = load_task_set(args.val_tasks, run_dir=run.path, limit=args.limit)
    split = explicit_split(val_set.tasks, task_set.tasks)  # refuses overlap
    return combined_task_set(val_set, task_set), split


def _evaluate(args, stack: contextlib.ExitStack):
    """Loads the task set and evaluates it with a backend and sandbox built from
    the run's config (closed when ``stack`` closes).

    Returns:
        ``(data, split, backend)``: the coverage data, the validation/test split
        (None for ``bestofn``) and the backend, for judges that need it.
    """
    from qd_llm import components
    from qd_llm.config import config_from_dict
    from qd_llm.evaluation.coverage import evaluate_task_set
    from qd_llm.runs import RunDir

    run = RunDir.open(args.run_dir)
    run.read_checkpoint()  # a checkpoint that cannot be read fails before any model loads
    task_set, split = _load_tasks(args, run)
    config = config_from_dict(run.config())
    backend = components.make_backend(config)
    stack.callback(backend.close)
    sandbox = components.make_sandbox(config)
    stack.callback(sandbox.close)
    data = evaluate_task_set(
        run.path,
        task_set,
        backend=backend,
        sandbox=sandbox,
        genomes=args.genomes,
        control_samples=args.control_samples,
        control_temperature=args.control_temperature,
        seed=args.seed,
    )
    return data, split, backend


def _coverage(args) -> int:
    from qd_llm.evaluation.coverage import coverage_report, write_result
    from qd_llm.plots import coverage_figure, save_figure

    if args.max_n < 1:
        raise QdLlmError(f"--max-n must be at least 1, got {args.max_n}")
    with contextlib.ExitStack() as stack:
        data, split, _ = _evaluate(args, stack)
    report = coverage_report(data, split=split, max_n=args.max_n, draws=args.draws, seed=args.seed)
    result = write_result(args.run_dir, report)
    figure = save_figure(
        coverage_figure(report), args.run_dir / "figures" / f"coverage_{report['taskset']}.png"
    )
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{report['taskset']}: {report['num_genomes']} genomes; taskforces chosen on "
        f"{report['num_val']} validation tasks, scored on {report['num_test']} test tasks"
    )
    for title, key in (("test", "coverage_at_n"), ("validation (in-sample)", "val_coverage_at_n")):
        print(f"{title:<11} " + " ".join(f"{f'@{k}':>6}" for k in range(1, args.max_n + 1)))
        for name, curve in report[key].items():
            cells = " ".join(f"{'—' if v is None else f'{v:.3f}':>6}" for v in curve)
            print(f"  {name:<9} {cells}")
    print(f"result {result}\nfigure {figure}")
    return 0


def _bestofn(args) -> int:
    from qd_llm.evaluation import bestofn
    from qd_llm.evaluation.taskforce import greedy_taskforce

    if args.n < 1:
        raise QdLlmError(f"--n must be at least 1, got {args.n}")
    evaluated = {}

    def judge(prompts: list[str]) -> list[str]:
        # Built on first use: the local judge is the backend the evaluation opens.
        if "judge" not in evaluated:
            if args.judge == "openai":
                from qd_llm.inference.openai_client import OpenAIChatClient

                evaluated["judge"] = bestofn.chat_judge(OpenAIChatClient())
            else:
                evaluated["judge"] = bestofn.backend_judge(evaluated["backend"])
        return evaluated["judge"](prompts)

    # Before any evaluation: an unknown picker or a missing option is one line, at once.
    picker = bestofn.make_picker(args.method, judge=lambda: judge, reward_model=args.reward_model)
    with contextlib.ExitStack() as stack:
        data, _, evaluated["backend"] = _evaluate(args, stack)
        skills = data.answers.skills(data.genomes)
        members = [data.genomes[i] for i in greedy_taskforce(skills, args.n)]
        result = bestofn.best_of_n(data.answers, members, picker)
    out = {"taskset": data.task_set.name, "num_tasks": len(data.answers.task_ids), "n": args.n}
    out |= result.to_json()
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{out['method']} over a greedy taskforce of {len(members)} on {out['taskset']}: "
            f"accuracy {result.accuracy:.3f} (oracle {result.oracle:.3f}, best member "
            f"{result.best_member:.3f}, mean member {result.mean_member:.3f})"
        )
        for genome_id, count in result.picked.items():
            print(f"  picked {count:4d}x  {genome_id}")
    return 0
