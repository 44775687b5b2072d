"""Did coevolution beat its seed experts on held-out questions? Paired numbers from an experiment.

Usage::

    python analysis/discovery_summary.py EXPERIMENT_DIR [--out summary.md]

``EXPERIMENT_DIR`` is a ``qd-llm experiment`` folder (``runs/<variant>/seed<k>/``)
whose runs track a held-out set (``evaluation.heldout``). ``qd-llm experiment``
already tabulates the last held-out row of each run; this adds what the
discovery question needs:

* **Before and after evolution.** Test coverage@N of the first held-out row
  (generation 0: the seeds plus their first children, i.e. merging without
  evolution) next to the last, for each variant.
* **Paired differences.** Every run measures its own seed experts on the same
  test questions, so ``evolved − seeds`` is a paired difference per run; its
  mean gets a 95 % percentile-bootstrap CI over runs
  (:func:`qd_llm.experiment.ci_cell`), with the number of runs where the
  evolved taskforce was ahead, tied and behind.
* **Who covers what.** Per task family of the held-out questions, the share of
  test questions the final evolved taskforce of size ``max_n`` passes, against
  the seed taskforce of the same size.

Everything is read from the run directories' files (``metrics.jsonl``,
``heldout/<set>/split.json`` and its ``evals.jsonl``); nothing is evaluated.
Runs without a held-out row yet (a grid still running) are named at the end
and left out, so a summary can be read while the grid runs.
"""

import argparse
import collections
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from qd_llm.errors import QdLlmError
from qd_llm.experiment import RUNS_DIR, ahead_tied_behind, ci_cell
from qd_llm.runs import RunDir


def heldout_rows(run: Path) -> list[dict]:
    """The metrics rows of ``run`` that carry a held-out evaluation, in order."""
    return [row for row in RunDir.open(run).metrics() if "heldout" in row]


def family_of(task_id: str) -> str:
    """``counting_l0_0ca1aa0d`` → ``counting`` (procedural ids: ``<family>_l<level>_<hash>``)."""
    stem = task_id.rsplit("_", 1)[0]
    family, _, level = stem.rpartition("_l")
    return family if family and level.isdigit() else stem


def family_coverage(run: Path, row: dict, pool: str) -> dict[str, float]:
    """Per family, the share of test questions the pool's largest taskforce passes."""
    entry = row["heldout"]
    (folder,) = [p for p in (run / "heldout").iterdir() if p.name == entry["taskset"]]
    test = set(json.loads((folder / "split.json").read_text())["test"])
    members = set(entry["taskforce"][pool])
    evals = folder / "control" / "evals.jsonl" if pool == "control" else folder / "evals.jsonl"
    passed: dict[str, bool] = {task: False for task in test}
    for line in evals.read_text().splitlines():
        record = json.loads(line)
        if record["genome_id"] in members and record["task_id"] in test:
            passed[record["task_id"]] |= record["score"] >= 0.5
    by_family = collections.defaultdict(list)
    for task, ok in passed.items():
        by_family[family_of(task)].append(ok)
    return {family: sum(oks) / len(oks) for family, oks in sorted(by_family.items())}


def summarise(experiment: Path) -> str:
    """The markdown summary of ``experiment`` (see the module docstring)."""
    runs_root = experiment / RUNS_DIR
    variants = sorted(p for p in runs_root.iterdir() if p.is_dir()) if runs_root.is_dir() else []
    if not variants:
        raise QdLlmError(f"{experiment} holds no runs under {RUNS_DIR}/")
    lines = [f"# Discovery summary: {experiment}", ""]
    pending = []  # runs without a held-out row yet: still running, or not tracking one
    summarised = []
    for variant in variants:
        rows = {}
        for run in sorted(p for p in variant.iterdir() if p.is_dir()):
            found = heldout_rows(run) if (run / "metrics.jsonl").exists() else []
            if found:
                rows[run] = found
            else:
                pending.append(run)
        if not rows:
            continue
        runs = list(rows)
        summarised.append(variant)
        max_n = len(next(iter(rows.values()))[-1]["heldout"]["test"]["evolved"])
        first = {run: r[0] for run, r in rows.items()}
        last = {run: r[-1] for run, r in rows.items()}
        num_test = sorted({r["heldout"]["num_test"] for r in last.values()})
        lines += [
            f"## {variant.name}: {len(runs)} runs ({', '.join(p.name for p in runs)}), "
            f"{num_test} test questions",
            "",
            "Test coverage@N, mean [95 % bootstrap CI] over runs. 'generation g' is the "
            "evolved population with its niche elites at the first / last held-out row.",
            "",
            "| taskforce | " + " | ".join(f"N={n}" for n in range(1, max_n + 1)) + " |",
            "|---|" + "---|" * max_n,
        ]
        generations = (
            sorted({r["generation"] for r in first.values()}),
            sorted({r["generation"] for r in last.values()}),
        )
        for label, chosen, pool in (
            (f"evolved, generation {generations[0]}", first, "evolved"),
            (f"evolved, generation {generations[1]}", last, "evolved"),
            ("seed experts", last, "seeds"),
            ("base-model control", last, "control"),
        ):
            cells = [
                ci_cell([r["heldout"]["test"][pool][n] for r in chosen.values()])
                for n in range(max_n)
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Paired difference evolved (last row) − seed experts, per run: mean [95 % CI]; "
            "runs ahead / tied / behind.",
            "",
            "| N | difference | ahead / tied / behind |",
            "|---|---|---|",
        ]
        for n in range(max_n):
            diffs = [
                r["heldout"]["test"]["evolved"][n] - r["heldout"]["test"]["seeds"][n]
                for r in last.values()
            ]
            lines.append(f"| {n + 1} | {ci_cell(diffs)} | {ahead_tied_behind(diffs)} |")
        lines += [
            "",
            f"Share of test questions per family passed by the taskforce of N={max_n} "
            "(last row), mean over runs:",
            "",
        ]
        tables = {
            pool: [family_coverage(run, row, pool) for run, row in last.items()]
            for pool in ("evolved", "seeds", "control")
        }
        families = sorted(tables["evolved"][0])
        lines += [
            "| taskforce | " + " | ".join(families) + " |",
            "|---|" + "---|" * len(families),
        ]
        for pool, per_run in tables.items():
            means = [sum(t[f] for t in per_run) / len(per_run) for f in families]
            lines.append(f"| {pool} | " + " | ".join(f"{m:.2f}" for m in means) + " |")
        lines.append("")
    if not summarised:
        raise QdLlmError(
            f"no run under {runs_root} has a held-out row yet (was evaluation.heldout set?)"
        )
    if pending:
        lines.append("Not in the summary (no held-out row yet):")
        lines += [f"- {run.relative_to(runs_root)}" for run in pending]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment", type=Path, help="a qd-llm experiment folder")
    parser.add_argument("--out", type=Path, help="also write the summary here (markdown)")
    args = parser.parse_args(argv)
    try:
        text = summarise(args.experiment)
    except QdLlmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
