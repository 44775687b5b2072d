"""One ``qd-llm coverage`` task set over several runs: mean [95 % CI] and paired differences.

Usage::

    for run in EXPERIMENT/runs/full/seed*; do
        qd-llm coverage $run --tasks TASKS --genomes final --max-n 3
    done
    python analysis/coverage_over_seeds.py EXPERIMENT/runs/full/seed* --taskset NAME

``qd-llm coverage`` stores ``RUN/coverage/<taskset>-<digest>/result.json`` per
run: taskforces chosen on the validation split and scored on the test split.
This reads those files (nothing is evaluated) and prints, for each N:

* test coverage@N of the greedy taskforce of the evolved genomes, of the best
  seed experts and of the base-model control, as mean [95 % percentile-bootstrap
  CI] over runs (:func:`qd_llm.experiment.ci_cell`);
* the paired difference evolved − seeds per run, its mean [CI], and the runs
  ahead / tied / behind.

Every run must have been scored on the same task set (same digest), so the
test questions are the same for all of them.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from qd_llm.errors import QdLlmError
from qd_llm.experiment import ahead_tied_behind, ci_cell

POOLS = {
    "evolved (greedy on val)": "greedy",
    "seed experts": "seeds",
    "base-model control": "control",
}


def result_of(run: Path, taskset: str) -> dict:
    """The stored ``coverage`` result of ``run`` on the task set named ``taskset``."""
    found = sorted((run / "coverage").glob(f"{taskset}-*/result.json"))
    if len(found) != 1:
        raise QdLlmError(
            f"{run}: expected one coverage result for task set {taskset!r}, found {len(found)} "
            f"(run `qd-llm coverage {run} --tasks ...` first)"
        )
    return json.loads(found[0].read_text())


def summarise(runs: Sequence[Path], taskset: str) -> str:
    results = [result_of(run, taskset) for run in runs]
    digests = {r["digest"] for r in results}
    if len(digests) != 1:
        raise QdLlmError(f"the runs were scored on different task sets: digests {sorted(digests)}")
    max_n = min(r["max_n"] for r in results)
    first = results[0]
    lines = [
        f"Task set {taskset} ({first['num_tasks']} tasks: {first['num_val']} validation, "
        f"{first['num_test']} test), {len(runs)} runs. Test coverage@N, mean [95 % CI]:",
        "",
        "| taskforce | " + " | ".join(f"N={n}" for n in range(1, max_n + 1)) + " |",
        "|---|" + "---|" * max_n,
    ]
    for label, key in POOLS.items():
        cells = [ci_cell([r["coverage_at_n"][key][n] for r in results]) for n in range(max_n)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| N | evolved − seeds | ahead / tied / behind |", "|---|---|---|"]
    for n in range(max_n):
        diffs = [r["coverage_at_n"]["greedy"][n] - r["coverage_at_n"]["seeds"][n] for r in results]
        lines.append(f"| {n + 1} | {ci_cell(diffs)} | {ahead_tied_behind(diffs)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN")
    parser.add_argument("--taskset", required=True, help="the task set's name (its folder stem)")
    args = parser.parse_args(argv)
    try:
        print(summarise(args.runs, args.taskset))
    except QdLlmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
