"""Print the coverage@N tables ``qd-llm coverage`` stored in a run, as Markdown.

Usage::

    python analysis/coverage_table.py RUN [--max-n 3]

Reads every ``RUN/coverage/*/result.json`` (nothing is evaluated) and prints
one table per task set: coverage@N and majority-vote accuracy@N for each
taskforce method and baseline.
"""

import argparse
import json
from pathlib import Path

from qd_llm.evaluation.coverage import COVERAGE_DIR, RESULT_FILE


def _cell(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def table(result: dict, max_n: int) -> str:
    sizes = range(1, min(max_n, result["max_n"]) + 1)
    lines = [
        f"### {result['taskset']}: test coverage, chosen on {result.get('num_val', '?')} "
        f"validation and scored on {result.get('num_test', '?')} test tasks "
        f"({result['num_genomes']} genomes, {result['control_samples']} control samples)",
        "",
        "| method | "
        + " | ".join(f"coverage@{k}" for k in sizes)
        + " | "
        + " | ".join(f"vote@{k}" for k in sizes)
        + " |",
        "|---" * (1 + 2 * len(sizes)) + "|",
    ]
    for name, curve in result["coverage_at_n"].items():
        votes = result["majority_vote_at_n"].get(name, [None] * len(curve))
        lines.append(
            f"| {name} | "
            + " | ".join(_cell(curve[k - 1]) for k in sizes)
            + " | "
            + " | ".join(_cell(votes[k - 1]) for k in sizes)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", metavar="RUN", type=Path)
    parser.add_argument("--max-n", type=int, default=3)
    args = parser.parse_args()
    results = sorted((args.run_dir / COVERAGE_DIR).glob(f"*/{RESULT_FILE}"))
    if not results:
        raise SystemExit(f"no coverage results in {args.run_dir}; run `qd-llm coverage` first")
    for path in results:
        print(table(json.loads(path.read_text(encoding="utf-8")), args.max_n))
        print()


if __name__ == "__main__":
    main()
