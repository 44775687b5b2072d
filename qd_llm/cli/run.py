"""``qd-llm run``, ``qd-llm resume`` and ``qd-llm status``.

``run`` resolves a config (preset, then ``--config`` file, then ``--set``
overrides), creates the run directory and runs the loop. Without ``--out`` the
run lands in ``<out_dir>/<UTC timestamp>-<preset>-seed<seed>/`` (``out_dir``
is a config key, default ``archives``); with ``--out DIR`` the run directory is
``DIR`` itself, which must be missing or empty. ``resume DIR`` continues a run
from its last checkpoint with the config saved in it; ``status DIR`` prints
one screen about a run.
"""

import datetime
from pathlib import Path

from qd_llm.config import PRESETS, config_from_dict, load_config
from qd_llm.runner import execute_run
from qd_llm.runs import RunDir, format_status


def register(subparsers) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the coevolution loop (models × tasks)",
        description="Coevolve LoRA genomes and tasks. Config layers: --preset, then "
        "--config (JSON or TOML), then --set key=value (dotted keys, JSON values).",
    )
    run.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    run.add_argument("--config", type=Path, metavar="FILE", help="JSON or TOML config file")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set population.size=8 (repeatable); "
        "--set backend=vllm and --set executor=ray are short for inference.backend "
        "and inference.executor",
    )
    run.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="use DIR (missing or empty) as the run directory instead of a new "
        "timestamped folder under out_dir",
    )
    run.set_defaults(func=_run)

    resume = subparsers.add_parser(
        "resume",
        help="continue a run from its last checkpoint",
        description="Continue a run exactly where its last finished generation left off.",
    )
    resume.add_argument("run_dir", type=Path, metavar="DIR")
    resume.set_defaults(func=_resume)

    status = subparsers.add_parser("status", help="one screen about a run")
    status.add_argument("run_dir", type=Path, metavar="DIR")
    status.set_defaults(func=_status)


def _run(args) -> int:
    config = load_config(preset=args.preset, file=args.config, overrides=args.overrides)
    if args.out is not None:
        path = args.out
    else:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        path = Path(config.out_dir) / f"{stamp}-{config.preset}-seed{config.seed}"
    run = RunDir.create(path, config.to_dict())
    print(f"run directory: {run.path}", flush=True)
    return execute_run(config, run)


def _resume(args) -> int:
    run = RunDir.open(args.run_dir)
    print(f"resuming {run.path}", flush=True)
    return execute_run(config_from_dict(run.config()), run)


def _status(args) -> int:
    print(format_status(RunDir.open(args.run_dir)))
    return 0
