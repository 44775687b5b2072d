"""Figures of a run, drawn from its directory alone (matplotlib, Agg backend).

Every figure is ``FIGSIZE`` inches at ``DPI`` (960×720 pixels) so they line up
in the report and in a paper. :func:`write_figures` writes them all to
``RUN/figures/``:

================================  ============================================
``niche_map.png``                 pyribs heatmap of elite fitness (2-D maps)
``progress_coverage.png``         in-run coverage and niche-map coverage
``progress_fitness.png``          best and mean population fitness
``progress_qd_score.png``         niche-map QD score
``progress_pool.png``             task-pool size, its Vendi score, population
``task_embeddings.png``           every task's embedding in 2-D (the run's
                                  descriptor projection, PCA by default), by
                                  generation and adaptation type
``lineage.png``                   ancestry of the final population
``operators.png``                 operator success rate per generation
``heldout_coverage.png``          held-out test coverage@N over generations,
                                  against the seeds and the control
``pass_matrix.png``               who solves what: final population and seeds
                                  × held-out tasks (else the final active tasks)
================================  ============================================

``qd-llm coverage`` adds ``coverage_<set>.png`` (:func:`coverage_figure`).
"""

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from qd_llm import atomic
from qd_llm.qd.descriptors import SkillDescriptors
from qd_llm.runs import HELDOUT_DIR, RunDir
from qd_llm.snapshot import RunSnapshot
from qd_llm.tasks.archive import task_text
from qd_llm.tasks.taskdir import GENERATION_TYPES

FIGSIZE = (6.4, 4.8)
DPI = 150
_MARKERS = {"initial": "o", "easier": "v", "harder": "^", "novel": "*", "imported": "s"}


def new_figure() -> tuple[Figure, plt.Axes]:
    """A figure of the standard size with one axes."""
    return plt.subplots(figsize=FIGSIZE, dpi=DPI, layout="constrained")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Writes ``fig`` as a PNG of exactly ``FIGSIZE`` at ``DPI`` (atomically) and closes it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    atomic.write_bytes(path, buffer.getvalue())
    return Path(path)


def niche_map_figure(niche, *, generation: int) -> Figure | None:
    """The elite fitness heatmap of a :class:`~qd_llm.qd.niche_map.NicheMap`.

    Returns None for maps of more than 2 dimensions.
    """
    if niche.dims > 2:
        return None
    from ribs.visualize import cvt_archive_heatmap, grid_archive_heatmap

    fig, ax = new_figure()
    draw = grid_archive_heatmap if niche.kind == "grid" else cvt_archive_heatmap
    draw(
        niche.archive, ax=ax, vmin=0.0, vmax=1.0, cbar_kwargs={"label": "elite fitness (pass rate)"}
    )
    ax.set_xlabel("skill descriptor 1 (PCA of task embeddings, scaled)")
    ax.set_ylabel("skill descriptor 2" if niche.dims == 2 else "")
    ax.set_title(
        f"Niche map after generation {generation}: "
        f"{len(niche)} elites, coverage {niche.coverage:.2f}"
    )
    return fig


def _series(metrics: Sequence[dict], key: str) -> np.ndarray:
    return np.array([row.get(key, np.nan) for row in metrics], dtype=np.float64)


def _progress(metrics: Sequence[dict], lines: dict[str, str], ylabel: str, title: str) -> Figure:
    fig, ax = new_figure()
    generations = _series(metrics, "generation")
    for key, label in lines.items():
        ax.plot(generations, _series(metrics, key), marker="o", markersize=3, label=label)
    ax.set_xlabel("generation")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", frameon=False)
    return fig


def progress_figures(metrics: Sequence[dict]) -> dict[str, Figure]:
    """Curves over generations from ``metrics.jsonl`` rows, keyed by file stem."""
    return {
        "progress_coverage": _progress(
            metrics,
            {
                "coverage": "population coverage of active tasks",
                "niche_coverage": "niche-map coverage",
            },
            "fraction (tasks solved / cells filled)",
            "Coverage",
        ),
        "progress_fitness": _progress(
            metrics,
            {"best_fitness": "best", "mean_fitness": "mean"},
            "population fitness (pass rate on active tasks)",
            "Fitness",
        ),
        "progress_qd_score": _progress(
            metrics, {"qd_score": "QD score"}, "QD score (sum of elite fitness)", "QD score"
        ),
        "progress_pool": _progress(
            metrics,
            {
                "num_tasks": "active tasks",
                "task_vendi": "task Vendi score",
                "population_size": "population size",
            },
            "count (tasks, effective tasks, genomes)",
            "Task pool and population",
        ),
    }


def heldout_figure(metrics: Sequence[dict]) -> Figure | None:
    """Held-out test coverage@N over generations (``evaluation.heldout``): the
    evolved pool (solid), the seed experts (dotted) and the base-model control
    (dashed), one colour per taskforce size N. None when the run tracked none."""
    rows = [row for row in metrics if row.get("heldout")]
    if not rows:
        return None
    last = rows[-1]["heldout"]
    generations = [row["generation"] for row in rows]
    fig, ax = new_figure()
    styles = {"evolved": ("-", "o"), "seeds": (":", None), "control": ("--", None)}
    for n in range(len(last["test"]["evolved"])):
        color = f"C{n}"
        for pool, (linestyle, marker) in styles.items():
            if pool not in last["test"]:
                continue
            values = [row["heldout"]["test"][pool][n] for row in rows]
            ax.plot(
                generations,
                values,
                color=color,
                linestyle=linestyle,
                marker=marker,
                markersize=4,
                label=f"{pool} N={n + 1}",
            )
    ax.set_xlabel("generation")
    ax.set_ylabel("held-out test coverage@N")
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.set_title(
        # Two lines: task-set names are long enough to run past the axes.
        f"Held-out {last['taskset'].rsplit('-', 1)[0]}\nchosen on {last['num_val']} val, "
        f"scored on {last['num_test']} test tasks",
        fontsize="medium",
    )
    ax.legend(loc="best", frameon=False, fontsize="small", ncol=len(styles))
    return fig


def coverage_figure(report: dict) -> Figure:
    """Test coverage@N curves of every method and baseline in a
    :func:`~qd_llm.evaluation.coverage.coverage_report`."""
    fig, ax = new_figure()
    sizes = np.arange(1, report["max_n"] + 1)
    styles = {"control": "--", "seeds": ":"}
    for name, curve in report["coverage_at_n"].items():
        values = np.array([np.nan if v is None else v for v in curve], dtype=np.float64)
        ax.plot(
            sizes, values, marker="o", markersize=4, linestyle=styles.get(name, "-"), label=name
        )
    ax.set_xlabel("taskforce size N (genomes)")
    ax.set_ylabel("test coverage@N (fraction of test tasks solved by any member)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(sizes)
    ax.grid(alpha=0.3)
    ax.set_title(
        f"Coverage on {report['taskset']}: chosen on {report['num_val']} val, "
        f"scored on {report['num_test']} test tasks"
    )
    ax.legend(loc="best", frameon=False)
    return fig


def _genome_label(snapshot: RunSnapshot, genome_id: str) -> str:
    info = snapshot.store.info(genome_id)
    kind = "seed" if not info.parents else f"g{info.generation} {info.operator}"
    return f"{kind}: {info.name or genome_id[:8]}"


def pass_matrix_figure(snapshot: RunSnapshot) -> Figure | None:
    """Who solves what: the final population and the seed experts (rows) × the
    held-out tasks, validation then test (columns), or the final active tasks
    when the run tracked no held-out set. Filled cells are passes."""
    from qd_llm.evaluation.bestofn import AnswerTable

    rows = [r for r in snapshot.metrics if r.get("heldout")]
    if rows:
        folder = RunDir(snapshot.run.path / HELDOUT_DIR / rows[-1]["heldout"]["taskset"])
        split = json.loads((folder.path / "split.json").read_text(encoding="utf-8"))
        columns, divider = split["val"] + split["test"], len(split["val"])
        where = f"held-out tasks: validation | test (generation {rows[-1]['generation']})"
    else:
        folder = snapshot.run
        columns, divider = [t.task_id for t in snapshot.tasks.active()], None
        where = f"active tasks after generation {snapshot.generation}"
    seeds = [g for g in snapshot.store.ids() if not snapshot.store.info(g).parents]
    genomes = seeds + [g for g in snapshot.population if g not in seeds]
    if not genomes or not columns:
        return None
    table = AnswerTable.from_files(
        folder.evals_path, folder.instances_dir, pass_threshold=snapshot.pass_threshold
    ).subset(columns)
    order = {t: i for i, t in enumerate(table.task_ids)}
    skills = table.skills(genomes)[:, [order[t] for t in columns]]
    fig, ax = new_figure()
    ax.imshow(skills, cmap="Greens", vmin=0, vmax=1.3, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(genomes)), [_genome_label(snapshot, g) for g in genomes])
    ax.tick_params(axis="y", labelsize=6)
    if len(columns) <= 40:
        # Imported ids share the set's name as a prefix; their ends tell them apart.
        ax.set_xticks(range(len(columns)), [c[-24:] for c in columns], rotation=90, fontsize=5)
    else:
        ax.set_xticks([])
    ax.set_xticks(np.arange(-0.5, len(columns)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(genomes)), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    if divider is not None:
        ax.axvline(divider - 0.5, color="black", linewidth=1.2)
    ax.axhline(len(seeds) - 0.5, color="black", linewidth=1.2, linestyle=":")
    ax.set_xlabel(where)
    ax.set_title(
        f"Who solves what\n{len(seeds)} seeds above the dotted line, "
        f"{len(genomes) - len(seeds)} more in the final population",
        fontsize="medium",
    )
    return fig


def task_embedding_figure(
    snapshot: RunSnapshot, *, embed: Callable[[list[str]], np.ndarray] | None = None
) -> Figure:
    """Every task ever accepted, placed by its embedding as the skill descriptors project it.

    The projection is the run's ``niche_map.projection`` (PCA by default) fitted on these
    tasks, each axis scaled to ``[-1, 1]``.

    Args:
        snapshot: The run.
        embed: Embeds texts for tasks whose embedding the run did not store;
            default a SentenceTransformer on the run's embedder.
    """
    history = snapshot.tasks.history()
    # Runs from before projections were configurable used PCA.
    projection = snapshot.config["niche_map"].get("projection", "pca")
    vectors = snapshot.stored_task_embeddings()
    missing = [t for t in history if t.task_id not in vectors]
    if missing:
        embed = embed or _default_embedder(snapshot.config["embedder"])
        fresh = np.asarray(embed([task_text(t.info) for t in missing]), dtype=np.float64)
        vectors.update(zip([t.task_id for t in missing], fresh, strict=True))
    fig, ax = new_figure()
    if history:
        points = np.stack([vectors[t.task_id] for t in history])
        coords = SkillDescriptors(dims=2, projection=projection).fit(points).project(points)
        generations = np.array([snapshot.tasks.accepted_at(t.task_id) for t in history])
        kinds = [t.lineage.generation_type for t in history]
        norm = matplotlib.colors.Normalize(vmin=0, vmax=max(int(generations.max()), 1))
        for kind in GENERATION_TYPES:
            rows = [i for i, k in enumerate(kinds) if k == kind]
            if rows:
                ax.scatter(
                    coords[rows, 0],
                    coords[rows, 1],
                    c=generations[rows],
                    cmap="viridis",
                    norm=norm,
                    marker=_MARKERS[kind],
                    s=40,
                    edgecolors="black",
                    linewidths=0.4,
                )
        colorbar = fig.colorbar(
            matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis"),
            ax=ax,
            label="generation accepted",
        )
        colorbar.locator = matplotlib.ticker.MaxNLocator(integer=True)
        colorbar.update_ticks()
        handles = [
            Line2D(
                [],
                [],
                linestyle="",
                marker=_MARKERS[k],
                color="grey",
                markeredgecolor="black",
                label=k,
            )
            for k in GENERATION_TYPES
            if k in kinds
        ]
        ax.legend(handles=handles, title="adaptation", loc="best", frameon=False)
    ax.set_xlabel(f"task embedding, {projection} component 1")
    ax.set_ylabel(f"task embedding, {projection} component 2")
    ax.set_title(f"Tasks ever accepted: {len(history)}")
    return fig


def _default_embedder(name: str) -> Callable[[list[str]], np.ndarray]:
    from sentence_transformers import SentenceTransformer

    from qd_llm.models.resolve import resolve_embedder

    model = SentenceTransformer(resolve_embedder(name), device="cpu")
    return lambda texts: model.encode(texts, normalize_embeddings=True, show_progress_bar=False)


def lineage_layout(
    snapshot: RunSnapshot,
) -> tuple[dict[str, tuple[float, int]], list[tuple[str, str]]]:
    """Positions of the final population and its ancestors in a layered graph.

    Layer 0 holds the seeds, layer ``g + 1`` the children born in generation
    ``g``. Within a layer nodes are ordered by the mean position of their
    parents (one barycentre pass, which removes most edge crossings) and
    spread evenly over ``[0, 1]``.

    Returns:
        ``{genome_id: (x, layer)}`` and the ``(parent, child)`` edges.
    """
    ids = snapshot.ancestors(snapshot.population)
    infos = {g: snapshot.store.info(g) for g in ids}
    layer = {g: 0 if not i.parents else i.generation + 1 for g, i in infos.items()}
    positions: dict[str, tuple[float, int]] = {}
    for depth in sorted(set(layer.values())):
        members = sorted(g for g in ids if layer[g] == depth)

        def barycentre(g: str) -> float:
            xs = [positions[p][0] for p in infos[g].parents if p in positions]
            return float(np.mean(xs)) if xs else 0.5

        members.sort(key=lambda g: (barycentre(g), g))
        for k, g in enumerate(members):
            positions[g] = ((k + 1) / (len(members) + 1), depth)
    edges = [(p, g) for g in ids for p in infos[g].parents if p in positions]
    return positions, edges


def lineage_figure(snapshot: RunSnapshot) -> Figure:
    """The final population's ancestry: nodes by birth generation, edges by operator."""
    positions, edges = lineage_layout(snapshot)
    operators = sorted({snapshot.store.info(child).operator for _, child in edges})
    colours = dict(zip(operators, plt.get_cmap("tab10").colors, strict=False))
    fig, ax = new_figure()
    for parent, child in edges:
        (x0, y0), (x1, y1) = positions[parent], positions[child]
        operator = snapshot.store.info(child).operator
        ax.plot([x0, x1], [y0, y1], color=colours[operator], linewidth=1.0, alpha=0.8, zorder=1)
    final = set(snapshot.population)
    for genome_id, (x, y) in positions.items():
        is_seed = y == 0
        ax.scatter(
            x,
            y,
            s=60,
            marker="s" if is_seed else "o",
            color="tab:red" if genome_id in final else "white",
            edgecolors="black",
            linewidths=0.8,
            zorder=2,
        )
    layers = sorted({y for _, y in positions.values()})
    ax.set_yticks(layers, ["seeds" if y == 0 else f"gen {y - 1}" for y in layers])
    ax.invert_yaxis()
    ax.set_xticks([])
    ax.set_xlim(0, 1)
    ax.set_ylabel("birth generation")
    ax.set_xlabel(f"{len(positions)} genomes (final population in red, seeds square)")
    ax.set_title(f"Lineage of the final population ({len(final)} genomes)")
    handles = [Line2D([], [], color=colours[o], label=o) for o in operators]
    if handles:
        ax.legend(
            handles=handles,
            title="operator",
            loc="upper left",
            bbox_to_anchor=(1.01, 1),
            frameon=False,
        )
    return fig


def operator_figure(metrics: Sequence[dict]) -> Figure:
    """Each operator's success rate (children accepted / asked) per generation."""
    names = sorted({name for row in metrics for name in (row.get("operators") or {})})
    fig, ax = new_figure()
    generations = _series(metrics, "generation")
    for name in names:
        rates = [
            s["success_rate"]
            if (s := (row.get("operators") or {}).get(name)) and s["asked"]
            else np.nan
            for row in metrics
        ]
        ax.plot(generations, rates, marker="o", markersize=4, label=name)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("generation")
    ax.set_ylabel("success rate (children accepted / asked)")
    ax.set_title("Operator success rates")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if names:
        ax.legend(loc="best", frameon=False)
    return fig


def write_figures(
    run_dir: str | Path, *, embed: Callable[[list[str]], np.ndarray] | None = None
) -> dict[str, Path]:
    """Draws every figure of a run into ``RUN/figures/``.

    Args:
        run_dir: The run directory.
        embed: See :func:`task_embedding_figure`.

    Returns:
        File stem → written PNG path, in report order.
    """
    snapshot = RunSnapshot(run_dir)
    out = snapshot.run.figures_dir
    figures: dict[str, Figure | None] = {
        "niche_map": niche_map_figure(snapshot.niche, generation=snapshot.generation)
    }
    figures |= progress_figures(snapshot.metrics)
    figures["task_embeddings"] = task_embedding_figure(snapshot, embed=embed)
    figures["lineage"] = lineage_figure(snapshot)
    figures["operators"] = operator_figure(snapshot.metrics)
    figures["heldout_coverage"] = heldout_figure(snapshot.metrics)
    figures["pass_matrix"] = pass_matrix_figure(snapshot)
    return {
        name: save_figure(fig, out / f"{name}.png")
        for name, fig in figures.items()
        if fig is not None
    }
