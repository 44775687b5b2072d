"""``qd-llm experiment SPEC``: a grid of runs and its held-out coverage table."""

from pathlib import Path

from qd_llm.experiment import BUILTIN_VARIANTS, markdown_table, read_spec, run_experiment


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="a grid of runs (variants × seeds) and its held-out coverage table",
        description="Run every variant × seed of an experiment spec (TOML), resuming "
        "interrupted runs and skipping finished ones, then write OUT/table.json, table.md, "
        "figure.png, report.md and report.html. Built-in variants: "
        + ", ".join(BUILTIN_VARIANTS)
        + ".",
    )
    parser.add_argument("spec", type=Path, metavar="SPEC", help="the experiment spec (TOML)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="experiment folder (overrides out)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rebuild the table and report from the run directories",
    )
    parser.set_defaults(func=_experiment)


def _experiment(args) -> int:
    spec = read_spec(args.spec, out=args.out)
    table = run_experiment(spec, run=not args.report_only)
    print(markdown_table(table), end="")
    for path in table["incomplete"]:
        print(f"not in the table (no held-out row): {path}")
    print(f"experiment folder: {spec.out}")
    return 0
