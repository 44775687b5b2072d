"""Experiments: a grid of runs (variants × seeds) and its held-out table (``qd-llm experiment``).

A spec is a TOML (or JSON) file::

    preset = "demo"                 # the config preset every run starts from
    config = "base.toml"            # optional config file applied after the preset
    out = "experiments/ablation"    # the experiment folder (default experiments/<spec stem>)
    seeds = [0, 1, 2]
    executor = "local"              # runs one after another; "ray": one Ray task per run
    variants = ["full", "no_adaptation", "random_selection", "no_novelty", "merge_only"]

    [base]                          # config overrides every run gets (dotted or nested keys)
    "population.generations" = 6
    "evaluation.heldout" = "heldout_tasks"

    [ray]                           # only with executor = "ray"
    address = "local"               # or auto, ray://HOST:10001, HOST:6379
    num_cpus = 0                    # CPUs of a private local cluster (0: all)
    cpus_per_run = 1

``variants`` is a list of built-in names (:data:`BUILTIN_VARIANTS`) or a table
``name → config overrides``; in the table a built-in name adds its own
overrides after the table's, and any other name is a custom variant. Relative
paths (``config``, ``out``, paths inside overrides) are relative to the current
folder, as for ``qd-llm run``.

Each run is a normal run directory, ``OUT/runs/<variant>/seed<k>/``, made and
run by the same code as ``qd-llm run`` (its config: preset, config file,
``base``, the variant's overrides, ``seed=k``). Running the command again skips
finished runs and resumes interrupted ones from their checkpoint, as
``qd-llm resume`` would; a run directory whose saved config differs from what
the spec gives now is refused.

When every run is done, the held-out test coverage@1..N of the last metrics
row that has a ``heldout`` entry of each run is tabulated as mean and 95 %
percentile-bootstrap confidence interval over seeds (:func:`bootstrap_ci`),
for every variant and for the baselines every run also measures (the seed
experts and the control), and written as ``OUT/table.json``, ``table.md``,
``figure.png``, ``report.md`` and ``report.html``.
"""

import dataclasses
import html
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from qd_llm import atomic
from qd_llm.config import (
    EXECUTORS,
    PRESETS,
    RunConfig,
    config_from_dict,
    load_config,
    read_config_file,
)
from qd_llm.errors import QdLlmError
from qd_llm.runs import CONFIG_FILE, RunDir

RUNS_DIR = "runs"
TABLE_JSON = "table.json"
TABLE_MD = "table.md"
FIGURE = "figure.png"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
#: Table rows of the baselines every run measures next to its evolved population.
BASELINES = ("seeds", "control")

_SPEC_KEYS = ("preset", "config", "out", "seeds", "executor", "variants", "base", "ray")
_RAY_KEYS = ("address", "num_cpus", "cpus_per_run")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclasses.dataclass(frozen=True)
class BuiltinVariant:
    """A named ablation of AC/DC.

    Attributes:
        description: What the variant changes, for the report.
        overrides: Config overrides (dotted keys) given the run's config without them.
    """

    description: str
    overrides: Callable[[RunConfig], dict]


BUILTIN_VARIANTS: dict[str, BuiltinVariant] = {
    "full": BuiltinVariant("full AC/DC", lambda config: {}),
    "no_adaptation": BuiltinVariant(
        "no task adaptation: the initial pool stays fixed",
        lambda config: {"tasks.adapt_every": config.population.generations + 1},
    ),
    "random_selection": BuiltinVariant(
        "random survivor selection instead of Dominated Novelty Search",
        lambda config: {"population.selection": "random"},
    ),
    "no_novelty": BuiltinVariant(
        "no novelty filter on new tasks", lambda config: {"tasks.novelty_threshold": 0.0}
    ),
    "merge_only": BuiltinVariant(
        "merging without evolution: generation 0 (seeds and their children) only",
        lambda config: {"population.generations": 0},
    ),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentSpec:
    """A validated experiment spec (see the module docstring).

    Attributes:
        preset: Config preset of every run.
        config: Optional config file applied after the preset.
        out: The experiment folder.
        seeds: Run seeds, in order.
        executor: ``local`` or ``ray``.
        variants: Variant name → its own config overrides (a built-in adds its own after).
        base: Config overrides of every run.
        ray_address: Ray cluster address (``executor = "ray"``).
        ray_num_cpus: CPUs of a private local Ray cluster (0: all).
        cpus_per_run: CPUs a run reserves on Ray.
    """

    preset: str = "demo"
    config: Path | None = None
    out: Path
    seeds: tuple[int, ...]
    executor: str = "local"
    variants: dict[str, dict]
    base: dict = dataclasses.field(default_factory=dict)
    ray_address: str = "local"
    ray_num_cpus: int = 0
    cpus_per_run: float = 1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlannedRun:
    """One cell of the grid.

    Attributes:
        variant: The variant's name.
        seed: The run's seed.
        path: The run directory.
        config: Its resolved config.
    """

    variant: str
    seed: int
    path: Path
    config: RunConfig


def _spec_error(path: Path, message: str) -> QdLlmError:
    return QdLlmError(f"experiment spec {path}: {message}")


def read_spec(path: str | Path, *, out: str | Path | None = None) -> ExperimentSpec:
    """Reads and validates an experiment spec.

    Args:
        path: The TOML (or ``.json``) spec file.
        out: Experiment folder overriding the spec's ``out``.

    Raises:
        QdLlmError: The file is unreadable or a key is unknown or invalid (one line).
    """
    path = Path(path)
    # Dotted keys come back nested, as in config files.
    data = read_config_file(path)

    def require(condition: bool, message: str) -> None:
        if not condition:
            raise _spec_error(path, message)

    for key in data:
        require(key in _SPEC_KEYS, f"unknown key {key!r}; valid: {', '.join(_SPEC_KEYS)}")
    preset = data.get("preset", "demo")
    require(preset in PRESETS, f"'preset' must be one of {', '.join(PRESETS)}, got {preset!r}")
    config = data.get("config")
    require(config is None or isinstance(config, str), "'config' must be a file path")
    seeds = data.get("seeds")
    require(
        isinstance(seeds, list)
        and seeds
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds),
        "'seeds' must be a non-empty list of integers >= 0",
    )
    require(len(set(seeds)) == len(seeds), "'seeds' lists a seed twice")
    executor = data.get("executor", "local")
    require(executor in EXECUTORS, f"'executor' must be one of {', '.join(EXECUTORS)}")
    base = data.get("base", {})
    require(isinstance(base, dict), "'base' must be a table of config overrides")
    require("seed" not in base, "'base' sets 'seed'; list the run seeds in 'seeds'")
    variants = _read_variants(data.get("variants"), require)
    ray = data.get("ray", {})
    require(isinstance(ray, dict), "'ray' must be a table")
    for key in ray:
        require(key in _RAY_KEYS, f"unknown key 'ray.{key}'; valid: {', '.join(_RAY_KEYS)}")
    address = ray.get("address", "local")
    require(isinstance(address, str) and address, "'ray.address' must be a string")
    num_cpus = ray.get("num_cpus", 0)
    require(
        isinstance(num_cpus, int) and not isinstance(num_cpus, bool) and num_cpus >= 0,
        "'ray.num_cpus' must be an integer >= 0 (0: all)",
    )
    cpus_per_run = ray.get("cpus_per_run", 1)
    require(
        isinstance(cpus_per_run, int | float)
        and not isinstance(cpus_per_run, bool)
        and cpus_per_run > 0,
        "'ray.cpus_per_run' must be a number > 0",
    )
    if out is None:
        out = data.get("out", f"experiments/{path.stem}")
        require(isinstance(out, str) and out, "'out' must be a folder path")
    return ExperimentSpec(
        preset=preset,
        config=Path(config) if config else None,
        out=Path(out),
        seeds=tuple(seeds),
        executor=executor,
        variants=variants,
        base=base,
        ray_address=address,
        ray_num_cpus=num_cpus,
        cpus_per_run=float(cpus_per_run),
    )


def _read_variants(value, require: Callable[[bool, str], None]) -> dict[str, dict]:
    builtin = ", ".join(BUILTIN_VARIANTS)
    require(
        isinstance(value, list | dict) and value,
        f"'variants' must be a non-empty list of built-in names ({builtin}) or a table "
        "name → config overrides",
    )
    if isinstance(value, list):
        for name in value:
            require(
                name in BUILTIN_VARIANTS,
                f"unknown built-in variant {name!r} (built in: {builtin}); define custom "
                "variants as a table [variants.NAME] of config overrides",
            )
        require(len(set(value)) == len(value), "'variants' lists a variant twice")
        return {name: {} for name in value}
    for name, overrides in value.items():
        require(
            bool(_NAME.match(name)) and name not in BASELINES,
            f"variant name {name!r} must be letters, digits, '_' or '-', and not "
            f"{' or '.join(BASELINES)}",
        )
        require(
            isinstance(overrides, dict), f"variant {name!r} must be a table of config overrides"
        )
        require("seed" not in overrides, f"variant {name!r} sets 'seed'; use 'seeds'")
    return dict(value)


def _override_items(table: Mapping, prefix: str = "") -> Iterator[str]:
    """A table of config overrides as ``--set`` items (``key=JSON``)."""
    for key, value in table.items():
        name = f"{prefix}{key}"
        # An operator table is one value (it replaces the operators, as in a config file).
        if isinstance(value, Mapping) and not name.startswith("operators"):
            yield from _override_items(value, f"{name}.")
        else:
            try:
                yield f"{name}={json.dumps(value)}"
            except TypeError:
                raise QdLlmError(f"config key '{name}': {value!r} is not a config value") from None


def plan(spec: ExperimentSpec) -> list[PlannedRun]:
    """Resolves the config of every run of the grid (variants × seeds), in order.

    Raises:
        QdLlmError: A run's config is invalid; the message names the variant and the key.
    """
    runs = []
    for variant, overrides in spec.variants.items():
        items = [*_override_items(spec.base), *_override_items(overrides)]
        for seed in spec.seeds:
            try:
                config = load_config(
                    preset=spec.preset, file=spec.config, overrides=[*items, f"seed={seed}"]
                )
                if variant in BUILTIN_VARIANTS:
                    extra = list(_override_items(BUILTIN_VARIANTS[variant].overrides(config)))
                    config = load_config(
                        preset=spec.preset,
                        file=spec.config,
                        overrides=[*items, *extra, f"seed={seed}"],
                    )
            except QdLlmError as e:
                raise QdLlmError(f"variant {variant!r}: {e}") from None
            path = spec.out / RUNS_DIR / variant / f"seed{seed}"
            runs.append(PlannedRun(variant=variant, seed=seed, path=path, config=config))
    return runs


def _flat(data, prefix: str = "") -> dict:
    if isinstance(data, Mapping):
        return {
            k: v for key, item in data.items() for k, v in _flat(item, f"{prefix}{key}.").items()
        }
    return {prefix.rstrip("."): data}


def run_is_finished(planned: PlannedRun) -> bool:
    """Whether the run directory holds a checkpoint of its last generation.

    Raises:
        QdLlmError: The folder exists but is not this run (another config, or no
            ``config.json`` in a non-empty folder).
    """
    path = planned.path
    if not (path / CONFIG_FILE).exists():
        if path.exists() and any(path.iterdir()):
            raise QdLlmError(f"{path} is not empty but holds no {CONFIG_FILE}; move it away")
        return False
    saved, wanted = _flat(RunDir(path).config()), _flat(planned.config.to_dict())
    differing = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
    if differing:
        raise QdLlmError(
            f"{path} was run with another config than the spec gives now "
            f"(differs in {', '.join(differing[:5])}); restore the spec or choose another out"
        )
    checkpoint = RunDir(path).read_checkpoint()
    return checkpoint is not None and checkpoint.generation >= planned.config.population.generations


def execute_planned(config: dict, path: str) -> str:
    """Runs (or resumes) one run of the grid in this process; returns its path.

    Args:
        config: The run's resolved config (:meth:`RunConfig.to_dict`).
        path: The run directory; created when missing or empty.
    """
    from qd_llm.runner import execute_run

    # An interrupted run continues from its checkpoint, as with `qd-llm resume`.
    exists = (Path(path) / CONFIG_FILE).exists()
    run = RunDir.open(path) if exists else RunDir.create(path, config)
    execute_run(config_from_dict(config), run)
    return path


def run_grid(spec: ExperimentSpec, *, progress: bool = True) -> list[PlannedRun]:
    """Runs every unfinished run of the grid (resuming interrupted ones).

    Returns:
        The planned runs, in grid order.

    Raises:
        QdLlmError: A spec or run config is invalid, a run directory belongs to
            another config, or (with Ray) runs failed; finished runs stay.
    """
    planned = plan(spec)
    todo = [p for p in planned if not run_is_finished(p)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(planned), initial=len(planned) - len(todo), desc="runs")
    try:
        if spec.executor == "ray" and todo:
            _run_on_ray(spec, todo, bar)
        else:
            for run in todo:
                print(f"run {run.variant} seed {run.seed}: {run.path}", flush=True)
                execute_planned(run.config.to_dict(), str(run.path))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return planned


def _run_on_ray(spec: ExperimentSpec, todo: Sequence[PlannedRun], bar) -> None:
    """Runs each planned run as one Ray task; collects failures into one error."""
    from qd_llm.executors.ray_executor import init_ray

    started = init_ray(address=spec.ray_address, num_cpus=spec.ray_num_cpus or None)
    import ray

    try:
        remote = ray.remote(num_cpus=spec.cpus_per_run, max_retries=0)(execute_planned)
        pending = {remote.remote(run.config.to_dict(), str(run.path)): run for run in todo}
        failed = []
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(ready)
            try:
                ray.get(ready)
            except ray.exceptions.RayError as e:
                lines = [line.strip() for line in str(e).splitlines() if line.strip()]
                failed.append(f"{run.path} ({lines[-1] if lines else type(e).__name__})")
            if bar is not None:
                bar.update(1)
        if failed:
            raise QdLlmError(f"{len(failed)} run(s) failed: {'; '.join(failed)}")
    finally:
        if started:
            ray.shutdown()


# --- the table ------------------------------------------------------------------------


def bootstrap_ci(
    values: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval of the mean.

    Method: draw ``resamples`` samples of ``len(values)`` values with
    replacement from ``values`` (``numpy.random.default_rng(seed)``, so the
    result is reproducible), take the mean of each, and return the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of those
    means (``numpy.quantile``, linear interpolation) as the interval. One value
    gives a zero-width interval.

    Args:
        values: The per-seed values (at least one).
        confidence: Coverage of the interval (0.95: 95 %).
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        ``(mean, low, high)``.
    """
    sample = np.asarray(values, dtype=np.float64)
    if sample.ndim != 1 or not len(sample):
        raise ValueError("bootstrap_ci needs a non-empty list of values")
    draws = np.random.default_rng(seed).integers(0, len(sample), size=(resamples, len(sample)))
    means = sample[draws].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(sample.mean()), float(low), float(high)


def last_heldout_row(rows: Sequence[dict]) -> dict | None:
    """The last metrics row that carries a ``heldout`` evaluation (None without one)."""
    return next((row for row in reversed(rows) if row.get("heldout")), None)


def _summary(values: Sequence[float]) -> dict:
    mean, low, high = bootstrap_ci(values)
    return {"mean": mean, "low": low, "high": high, "values": list(values)}


def build_table(planned: Sequence[PlannedRun]) -> dict:
    """The experiment table from the run directories (see the module docstring).

    Baselines (``seeds``, ``control``) do not depend on the variant, so each
    seed contributes the mean of its runs' baseline values once.

    Returns:
        A JSON-ready dict: ``rows`` (one per variant, then the baselines, each
        with ``coverage`` = per N a mean/low/high/values summary over seeds,
        ``num_test``, ``seconds_per_run``), ``runs`` (what each run
        contributed) and ``incomplete`` (runs without a held-out row).
    """
    runs, incomplete = [], []
    for p in planned:
        rows = RunDir(p.path).metrics()
        row = last_heldout_row(rows)
        if row is None:
            incomplete.append(str(p.path))
            continue
        heldout = row["heldout"]
        runs.append(
            {
                "variant": p.variant,
                "seed": p.seed,
                "path": str(p.path),
                "generation": row["generation"],
                "taskset": heldout["taskset"],
                "num_val": heldout["num_val"],
                "num_test": heldout["num_test"],
                "test": heldout["test"],
                "seconds": round(sum(r.get("seconds", 0.0) for r in rows), 3),
            }
        )
    max_n = min((len(c) for r in runs for c in r["test"].values()), default=0)

    def coverage(per_seed: Sequence[Sequence[float]]) -> list[dict]:
        return [{"n": n + 1, **_summary([c[n] for c in per_seed])} for n in range(max_n)]

    table_rows = []
    for variant in dict.fromkeys(p.variant for p in planned):
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        table_rows.append(
            {
                "name": variant,
                "kind": "variant",
                "seeds": [r["seed"] for r in mine],
                "coverage": coverage([r["test"]["evolved"] for r in mine]),
                "num_test": [r["num_test"] for r in mine],
                "seconds_per_run": _summary([r["seconds"] for r in mine]),
            }
        )
    seeds = list(dict.fromkeys(r["seed"] for r in runs))
    for baseline in BASELINES:
        per_seed = [
            np.mean([r["test"][baseline][:max_n] for r in runs if r["seed"] == s], axis=0).tolist()
            for s in seeds
        ]
        if per_seed:
            table_rows.append(
                {
                    "name": baseline,
                    "kind": "baseline",
                    "seeds": seeds,
                    "coverage": coverage(per_seed),
                    "num_test": [
                        next(r["num_test"] for r in runs if r["seed"] == s) for s in seeds
                    ],
                    "seconds_per_run": None,
                }
            )
    return {
        "metric": "held-out test coverage@N (fraction of test tasks solved by the best "
        "N-genome taskforce chosen on the validation split)",
        "confidence": CONFIDENCE,
        "bootstrap": {
            "method": "percentile",
            "resamples": BOOTSTRAP_RESAMPLES,
            "seed": BOOTSTRAP_SEED,
        },
        "max_n": max_n,
        "rows": table_rows,
        "runs": runs,
        "incomplete": incomplete,
    }


def _cell(summary: dict) -> str:
    return f"{summary['mean']:.3f} [{summary['low']:.3f}, {summary['high']:.3f}]"


def ci_cell(values: Sequence[float]) -> str:
    """``"mean [low, high]"`` of :func:`bootstrap_ci` over ``values``, as the tables print it."""
    return _cell(_summary(values))


def ahead_tied_behind(differences: Sequence[float]) -> str:
    """``"a / t / b"``: how many paired differences are above, at and below zero."""
    counts = (
        sum(d > 0 for d in differences),
        sum(d == 0 for d in differences),
        sum(d < 0 for d in differences),
    )
    return " / ".join(map(str, counts))


def table_cells(table: dict) -> tuple[list[str], list[list[str]]]:
    """The table as display strings: a header and one row per variant and baseline."""
    header = ["variant / baseline", "n (seeds)"]
    header += [f"coverage@{n}" for n in range(1, table["max_n"] + 1)]
    header += ["test tasks", "wall time per run (s)"]
    rows = []
    for row in table["rows"]:
        tests = sorted(set(row["num_test"]))
        seconds = row["seconds_per_run"]
        rows.append(
            [row["name"], str(len(row["seeds"]))]
            + [_cell(c) for c in row["coverage"]]
            + [
                "/".join(str(n) for n in tests),
                "—" if seconds is None else f"{seconds['mean']:.1f}",
            ]
        )
    return header, rows


def markdown_table(table: dict) -> str:
    """The table as GitHub-flavoured Markdown."""
    header, rows = table_cells(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def html_table(table: dict) -> str:
    """The table as an HTML ``<table>``."""
    header, rows = table_cells(table)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def table_figure(table: dict):
    """Mean held-out test coverage@N with 95 % CI error bars, one series per table row."""
    from qd_llm.plots import new_figure

    fig, ax = new_figure()
    rows = table["rows"]
    width = 0.8 / max(len(rows), 1)
    baseline_style = {"seeds": ("s", "dimgray"), "control": ("D", "black")}
    for i, row in enumerate(rows):
        ns = np.array([c["n"] for c in row["coverage"]], dtype=np.float64)
        means = np.array([c["mean"] for c in row["coverage"]])
        errors = np.array(
            [
                [c["mean"] - c["low"] for c in row["coverage"]],
                [c["high"] - c["mean"] for c in row["coverage"]],
            ]
        )
        marker, colour = baseline_style.get(row["name"], ("o", None))
        ax.errorbar(
            ns + (i - (len(rows) - 1) / 2) * width,
            means,
            yerr=np.clip(errors, 0.0, None),
            fmt=marker,
            color=colour,
            capsize=3,
            markersize=5,
            label=f"{row['name']} ({len(row['seeds'])} seed{'s' * (len(row['seeds']) != 1)})",
        )
    ax.set_xticks(range(1, table["max_n"] + 1))
    ax.set_xlabel("taskforce size N")
    ax.set_ylabel("held-out test coverage@N")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Held-out test coverage (mean, {CONFIDENCE:.0%} bootstrap CI over seeds)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="best", frameon=False, fontsize="small")
    return fig


def _variant_lines(spec: ExperimentSpec) -> list[tuple[str, str]]:
    lines = []
    for name, overrides in spec.variants.items():
        parts = []
        if name in BUILTIN_VARIANTS:
            parts.append(BUILTIN_VARIANTS[name].description)
        if overrides:
            parts.append(", ".join(_override_items(overrides)))
        lines.append((name, "; ".join(parts) or "custom, no overrides"))
    return lines


def write_outputs(spec: ExperimentSpec, table: dict) -> dict[str, Path]:
    """Writes ``table.json``, ``table.md``, ``figure.png``, ``report.md`` and ``report.html``."""
    from qd_llm.plots import save_figure

    out = spec.out
    paths = {name: out / name for name in (TABLE_JSON, TABLE_MD, FIGURE, REPORT_MD, REPORT_HTML)}
    atomic.write_json(paths[TABLE_JSON], table)
    atomic.write_text(paths[TABLE_MD], markdown_table(table))
    if table["rows"]:
        save_figure(table_figure(table), paths[FIGURE])
    base = ", ".join(_override_items(spec.base)) or "none"
    variants = _variant_lines(spec)
    caption = (
        f"Held-out test coverage@N: mean [{CONFIDENCE:.0%} percentile-bootstrap CI over seeds, "
        f"{BOOTSTRAP_RESAMPLES} resamples]. `seeds`: the seed experts; `control`: the control "
        "model. Wall time: the run's summed generation times."
    )
    incomplete = "".join(
        f"\n- not in the table (no held-out row): `{p}`" for p in table["incomplete"]
    )
    markdown = (
        f"# Experiment `{out.name}`\n\n"
        f"Preset `{spec.preset}`, seeds {list(spec.seeds)}, executor `{spec.executor}`; "
        f"overrides of every run: `{base}`.\n\n"
        + "".join(f"- `{name}`: {text}\n" for name, text in variants)
        + f"\n{caption}\n\n{markdown_table(table)}{incomplete}\n\n![coverage]({FIGURE})\n"
    )
    atomic.write_text(paths[REPORT_MD], markdown)
    items = "".join(
        f"<li><code>{html.escape(name)}</code>: {html.escape(text)}</li>" for name, text in variants
    )
    missing = "".join(
        f"<p>not in the table (no held-out row): <code>{html.escape(p)}</code></p>"
        for p in table["incomplete"]
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>qd-llm experiment {html.escape(out.name)}</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; }} table {{ border-collapse: collapse; }}
img {{ max-width: 100%; }}</style></head><body>
<h1>qd-llm experiment <code>{html.escape(out.name)}</code></h1>
<p>Preset <code>{html.escape(spec.preset)}</code>, seeds {html.escape(str(list(spec.seeds)))},
executor <code>{html.escape(spec.executor)}</code>; overrides of every run:
<code>{html.escape(base)}</code>.</p><ul>{items}</ul>
<p>{html.escape(caption)}</p>{html_table(table)}
{missing}
<img src="{FIGURE}" alt="held-out test coverage@N"></body></html>
"""
    atomic.write_text(paths[REPORT_HTML], page)
    return paths


def run_experiment(spec: ExperimentSpec, *, progress: bool = True, run: bool = True) -> dict:
    """Runs the grid (unless ``run`` is False), then writes the table and report.

    Returns:
        The table (as written to ``table.json``).
    """
    planned = run_grid(spec, progress=progress) if run else plan(spec)
    table = build_table(planned)
    write_outputs(spec, table)
    return table
