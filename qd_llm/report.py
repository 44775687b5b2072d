"""``RUN/report.html``: one self-contained page with a run's figures and key numbers.

The page has no scripts and no external resources; figures are linked by
relative paths (``figures/<name>.png``), so the run directory can be moved or
served as it is. Coverage results written by ``qd-llm coverage``
(``RUN/coverage/*/result.json``) are tabulated when present.
"""

import html
import json
from collections.abc import Mapping
from pathlib import Path

from qd_llm import atomic
from qd_llm.snapshot import RunSnapshot

REPORT_FILE = "report.html"

CAPTIONS = {
    "niche_map": "Niche map: fitness of the elite in each cell of skill-descriptor space.",
    "progress_coverage": "Fraction of active tasks the population solves, and of niche cells "
    "filled.",
    "progress_fitness": "Best and mean population fitness (pass rate on the active tasks).",
    "progress_qd_score": "QD score: the sum of elite fitnesses in the niche map.",
    "progress_pool": "Active tasks, their Vendi score (effective number of distinct tasks), "
    "and the population size.",
    "task_embeddings": "Every task ever accepted, placed by its sentence embedding (PCA), coloured "
    "by the generation it was accepted in and marked by how it was made.",
    "lineage": "Ancestry of the final population; edges coloured by the operator that made "
    "the child.",
    "operators": "Per-generation success rate of each breeding operator.",
    "heldout_coverage": "Held-out test coverage@N over generations: taskforces of N genomes "
    "chosen on the validation half of the held-out set and scored on its test half, for the "
    "evolved population and niche elites (solid), the seed experts (dotted) and base-model "
    "samples (dashed).",
    "pass_matrix": "Who solves what: each row a seed expert or final-population genome, each "
    "column a task (held-out validation | test, or the final active tasks); filled = passed.",
}

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""


def key_numbers(snapshot: RunSnapshot) -> dict[str, str]:
    """The run's headline numbers, formatted for display."""
    last = snapshot.metrics[-1] if snapshot.metrics else {}
    config = snapshot.config
    seconds = sum(row.get("seconds", 0.0) for row in snapshot.metrics)
    numbers = {
        "preset / seed": f"{config.get('preset')} / {config['seed']}",
        "base model": config["base_model"],
        "generations finished": f"{snapshot.generation} of {config['population']['generations']}",
        "genomes saved": str(len(snapshot.store.ids())),
        "population size": str(len(snapshot.population)),
        "niche-map elites": f"{len(snapshot.niche)} (coverage {snapshot.niche.coverage:.3f})",
        "QD score": f"{snapshot.niche.qd_score:.3f}",
        "tasks active / ever accepted": f"{len(snapshot.tasks)} / {len(snapshot.tasks.history())}",
        "wall time": f"{seconds / 60:.1f} min",
    }
    if last:
        numbers |= {
            "best / mean fitness": f"{last['best_fitness']:.3f} / {last['mean_fitness']:.3f}",
            "in-run coverage": f"{last['coverage']:.3f}",
        }
        if "task_vendi" in last:
            numbers["task Vendi score"] = f"{last['task_vendi']:.2f}"
    heldout = [row for row in snapshot.metrics if row.get("heldout")]
    if heldout:
        test = heldout[-1]["heldout"]["test"]
        numbers["held-out test coverage@N (evolved / seeds / control)"] = "; ".join(
            f"N={n + 1}: "
            + " / ".join(f"{test[p][n]:.3f}" for p in ("evolved", "seeds", "control") if p in test)
            for n in range(len(test["evolved"]))
        )
    return numbers


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _coverage_section(run_path: Path) -> str:
    parts = []
    for result_path in sorted(run_path.glob("coverage/*/result.json")):
        result = json.loads(result_path.read_text(encoding="utf-8"))
        curves = result["coverage_at_n"]
        sizes = max((len(c) for c in curves.values()), default=0)
        rows = [
            [name] + ["—" if v is None else f"{v:.3f}" for v in curve]
            for name, curve in curves.items()
        ]
        parts.append(
            f"<h3>{html.escape(result['taskset'])}: test coverage@N, taskforces chosen on "
            f"{result.get('num_val', '?')} validation and scored on "
            f"{result.get('num_test', '?')} test tasks ({result['num_genomes']} genomes)</h3>"
            + _table(["method"] + [f"@{k}" for k in range(1, sizes + 1)], rows)
        )
        figure = run_path / "figures" / f"coverage_{result['taskset']}.png"
        if figure.exists():
            parts.append(f'<img src="figures/{figure.name}" alt="coverage@N">')
    if not parts:
        return ""
    return "<h2>Coverage on task sets</h2>" + "".join(parts)


def write_report(run_dir: str | Path, figures: Mapping[str, Path]) -> Path:
    """Writes ``RUN/report.html`` linking ``figures`` (relative paths) atomically.

    Args:
        run_dir: The run directory.
        figures: File stem → PNG path under the run directory, in display order.

    Returns:
        The report's path.
    """
    snapshot = RunSnapshot(run_dir)
    root = snapshot.run.path
    numbers = _table(["quantity", "value"], [[k, v] for k, v in key_numbers(snapshot).items()])
    elites = _table(
        ["genome", "cell", "fitness", "operator"],
        [
            [
                e.genome_id,
                str(e.cell),
                f"{e.fitness:.3f}",
                snapshot.store.info(e.genome_id).operator,
            ]
            for e in snapshot.elites()[:10]
        ],
    )
    blocks = []
    for name, path in figures.items():
        relative = Path(path).resolve().relative_to(root.resolve()).as_posix()
        caption = html.escape(CAPTIONS.get(name, name))
        blocks.append(
            f'<figure><img src="{html.escape(relative)}" alt="{html.escape(name)}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>qd-llm run {html.escape(root.name)}</title><style>{_STYLE}</style></head>
<body>
<h1>qd-llm run <code>{html.escape(root.name)}</code></h1>
<h2>Key numbers</h2>{numbers}
<h2>Top elites</h2>{elites}
{_coverage_section(root)}
<h2>Figures</h2>
{"".join(blocks)}
</body></html>
"""
    path = root / REPORT_FILE
    atomic.write_text(path, page)
    return path
