"""The ``coverage`` pipeline: a run's genomes on any task set, cached in the run.

1. **Task set.** ``TASKS`` is a folder of task directories (or one task
   directory), or anything :func:`~qd_llm.tasks.importers.import_benchmark`
   reads (``humaneval``, a JSONL file, a BIG-bench ``task.json``); imports
   land in ``RUN/coverage/imports/``. The set is named after its source and
   identified by a digest of its tasks' files.
2. **Evaluation** (:func:`evaluate_task_set`) reuses
   :class:`~qd_llm.evaluation.evaluate.Evaluator` with the run's decoding
   settings, caching in ``RUN/coverage/<name>-<digest>/`` (``evals.jsonl``,
   ``instances/``), so a repeated call evaluates nothing. Which genomes:
   ``all`` (every genome in the store; the default) or ``final`` (the final
   population and the niche-map elites).
3. **Baselines.** *control*: the base model sampled ``control_samples`` times
   at ``control_temperature`` — each sample is a genome whose LoRA update is
   exactly zero (B = A = 0 on one projection, a different one per sample so the
   content hashes differ), evaluated in one batch where every row draws its own
   sample; cached in ``control-T<temperature>-seed<seed>/``. *seeds*: the run's
   seed genomes (those without parents).
4. **Report** (:func:`coverage_report`): coverage@N for N = 1..``max_n`` for
   greedy, fitness, random (mean over ``draws`` seeds) and exhaustive
   taskforces, and for the baselines; majority-vote accuracy of each; each
   greedy member's unique contribution. Taskforces are selected *on the task
   set itself*, so greedy/exhaustive coverage is an in-sample upper bound;
   random is an unbiased estimate of a taskforce's coverage.
"""

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from qd_llm import atomic
from qd_llm.errors import QdLlmError
from qd_llm.evaluation import taskforce as tf
from qd_llm.evaluation.bestofn import AnswerTable, MajorityPicker, best_of_n
from qd_llm.evaluation.evaluate import EVALS_FILE, INSTANCES_DIR, Evaluator
from qd_llm.inference.base import GenerationConfig
from qd_llm.models.genome import GenomeStore
from qd_llm.snapshot import RunSnapshot
from qd_llm.tasks.taskdir import TASK_CODE, TASK_JSON, TaskDir, list_tasks, read_task, slugify

COVERAGE_DIR = "coverage"
RESULT_FILE = "result.json"
GENOME_SELECTIONS = ("all", "final")
METHODS = ("greedy", "fitness", "random", "exhaustive")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskSet:
    """A named, content-identified set of tasks.

    Attributes:
        name: A slug of the source (``humaneval``, ``bigbench_mixed``...).
        digest: 12 hex digits over the tasks' ids, code and ``task.json``.
        tasks: The task directories, sorted by id.
    """

    name: str
    digest: str
    tasks: list[TaskDir]

    @property
    def key(self) -> str:
        return f"{self.name}-{self.digest}"


def _digest(tasks: Sequence[TaskDir]) -> str:
    h = hashlib.sha256()
    for task in sorted(tasks, key=lambda t: t.task_id):
        h.update(task.task_id.encode() + b"\0")
        for name in (TASK_CODE, TASK_JSON):
            h.update((task.path / name).read_bytes() + b"\0")
    return h.hexdigest()[:12]


def load_task_set(
    source: str | Path, *, run_dir: str | Path, limit: int | None = None, seed: int | None = None
) -> TaskSet:
    """Reads or imports the task set ``source`` (see the module docstring).

    Args:
        source: Task folder, task directory, or benchmark source.
        run_dir: The run (imports are written under ``RUN/coverage/imports``).
        limit: Keep at most this many tasks (imports and folders alike).
        seed: Shuffle with this seed before ``limit`` (imports only).

    Raises:
        QdLlmError: ``source`` holds no tasks.
    """
    path = Path(source)
    if path.is_dir() and (path / TASK_CODE).is_file():
        tasks = [read_task(path)]
    elif path.is_dir() and any((p / TASK_CODE).is_file() for p in path.iterdir()):
        tasks = list_tasks(path)[:limit]
    else:
        from qd_llm.tasks.importers import import_benchmark

        tag = hashlib.sha256(f"{source}|{limit}|{seed}".encode()).hexdigest()[:8]
        out = Path(run_dir) / COVERAGE_DIR / "imports" / f"{slugify(path.stem)}-{tag}"
        tasks = import_benchmark(source, out, limit=limit, seed=seed).tasks
    if not tasks:
        raise QdLlmError(f"task set {source} holds no tasks")
    tasks = sorted(tasks, key=lambda t: t.task_id)
    name = slugify(path.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json"))
    if path.name == "task.json":
        name = slugify(path.parent.name)
    return TaskSet(name=name, digest=_digest(tasks), tasks=tasks)


def zero_adapters(store: GenomeStore, shapes: Mapping[str, tuple[int, int]], n: int) -> list[str]:
    """``n`` genomes equal to the base model (a zero LoRA update each), distinct by module.

    Args:
        store: Where to save them.
        shapes: ``{module: (out, in)}`` (:func:`~qd_llm.models.lora.linear_shapes`);
            genome ``k`` puts its zero update on the ``k``-th module in sorted order.
        n: How many.

    Returns:
        Their ids, one per sample.
    """
    import torch

    from qd_llm.models.lora import LoraFactors

    if n > len(shapes):
        raise QdLlmError(
            f"{n} control samples need {n} distinct modules; the model has {len(shapes)}"
        )
    ids = []
    for k, name in enumerate(sorted(shapes)[:n]):
        out_features, in_features = shapes[name]
        # Rank-1 zero factors: ΔW = B @ A = 0, so the genome answers as the base model.
        weights = {name: LoraFactors(torch.zeros(1, in_features), torch.zeros(out_features, 1))}
        ids.append(store.save(weights, operator="control", name=f"control{k}").id)
    return ids


@dataclasses.dataclass(frozen=True, kw_only=True)
class CoverageData:
    """Everything the report needs, read from the cache.

    Attributes:
        task_set: The tasks.
        genomes: Genome ids evaluated (rows of ``answers``), sorted.
        seeds: The run's seed genomes among them.
        control: Control sample ids (zero adapters), in sample order.
        answers: Answers of the run's genomes.
        control_answers: Answers of the control samples.
    """

    task_set: TaskSet
    genomes: list[str]
    seeds: list[str]
    control: list[str]
    answers: AnswerTable
    control_answers: AnswerTable


def select_genomes(snapshot: RunSnapshot, which: str) -> list[str]:
    """Taskforce candidates: ``all`` stored genomes whose weights were kept (see
    ``genomes.keep_weights``), or the ``final`` population plus niche-map elites
    (the run's seed experts are evaluated as a baseline either way)."""
    if which == "all":
        return snapshot.store.ids(with_weights=True)
    if which == "final":
        return sorted(set(snapshot.population) | {e.genome_id for e in snapshot.elites()})
    raise QdLlmError(f"--genomes must be one of {GENOME_SELECTIONS}, got {which!r}")


def evaluate_task_set(
    run_dir: str | Path,
    task_set: TaskSet,
    *,
    backend,
    sandbox,
    genomes: str = "all",
    control_samples: int = 8,
    control_temperature: float = 0.7,
    seed: int = 0,
) -> CoverageData:
    """Evaluates the run's genomes and the control samples on ``task_set`` (cached).

    Args:
        run_dir: The run directory.
        task_set: From :func:`load_task_set`.
        backend: An inference backend over the run's base model.
        sandbox: A :class:`~qd_llm.tasks.sandbox.SandboxPool`.
        genomes: ``all`` or ``final`` (see :func:`select_genomes`).
        control_samples: Base-model samples of the control baseline (0 for none).
        control_temperature: Their sampling temperature.
        seed: Their sampling seed.
    """
    snapshot = RunSnapshot(run_dir)
    genome_ids = select_genomes(snapshot, genomes)
    decoding = snapshot.config["decoding"]
    greedy = GenerationConfig(
        max_new_tokens=decoding["max_new_tokens"],
        temperature=decoding["temperature"],
        seed=snapshot.config["seed"],
        system_prompt=decoding["system_prompt"] or None,
    )
    cache = snapshot.run.path / COVERAGE_DIR / task_set.key
    evaluator = Evaluator(
        run_dir=cache,
        backend=backend,
        sandbox=sandbox,
        genomes=snapshot.store,
        decoding=greedy,
        pass_threshold=snapshot.pass_threshold,
    )
    seeds = [g for g in snapshot.store.ids() if not snapshot.store.info(g).parents]
    evaluator.evaluate(sorted(set(genome_ids) | set(seeds)), task_set.tasks)

    control_dir = cache / f"control-T{control_temperature:g}-seed{seed}"
    control_store = GenomeStore(control_dir / "genomes", base_model=snapshot.base_model)
    control = []
    if control_samples:
        # Module shapes from a stored genome: the backend's model may already be PEFT-wrapped.
        shapes = {m: f.shape for m, f in snapshot.store.load(genome_ids[0]).items()}
        control = zero_adapters(control_store, shapes, control_samples)
        # Instances are a function of the task code: reuse them instead of recomputing.
        shutil.copytree(cache / INSTANCES_DIR, control_dir / INSTANCES_DIR, dirs_exist_ok=True)
        Evaluator(
            run_dir=control_dir,
            backend=backend,
            sandbox=sandbox,
            genomes=control_store,
            decoding=dataclasses.replace(greedy, temperature=control_temperature, seed=seed),
            pass_threshold=snapshot.pass_threshold,
        ).evaluate(control, task_set.tasks)
    return CoverageData(
        task_set=task_set,
        genomes=genome_ids,
        seeds=seeds,
        control=control,
        answers=_answers(cache, snapshot.pass_threshold),
        control_answers=_answers(control_dir, snapshot.pass_threshold),
    )


def _answers(directory: Path, pass_threshold: float) -> AnswerTable:
    return AnswerTable.from_files(
        directory / EVALS_FILE, directory / INSTANCES_DIR, pass_threshold=pass_threshold
    )


def _prefix_curves(table: AnswerTable, order: Sequence[str], max_n: int) -> tuple[list, list]:
    """coverage@k and majority-vote accuracy@k of the first k of ``order``, k = 1..max_n.

    Beyond ``len(order)`` the whole of ``order`` is used (a pool of k genomes
    cannot do better than all k).
    """
    skills = table.skills(order)
    coverage, vote = [], []
    for k in range(1, max_n + 1):
        members = list(range(min(k, len(order))))
        coverage.append(tf.coverage(skills, members))
        vote.append(
            best_of_n(table, [order[i] for i in members], MajorityPicker()).accuracy
            if members
            else 0.0
        )
    return coverage, vote


def coverage_report(data: CoverageData, *, max_n: int = 8, draws: int = 100, seed: int = 0) -> dict:
    """coverage@N and majority-vote accuracy@N of every method and baseline.

    Returns:
        A JSON-friendly dict: ``coverage_at_n`` and ``majority_vote_at_n``
        (method → list over N = 1..max_n; exhaustive entries are None where
        the search is too large), ``taskforce`` (the greedy taskforce of size
        ``max_n`` with each member's fitness and unique contribution), and
        the task-set and pool sizes.
    """
    table = data.answers
    skills = table.skills(data.genomes)
    coverage: dict[str, list] = {}
    vote: dict[str, list] = {}
    greedy_order = [data.genomes[i] for i in tf.greedy_taskforce(skills, max_n)]
    for method, order in (
        ("greedy", greedy_order),
        ("fitness", [data.genomes[i] for i in tf.fitness_taskforce(skills, max_n)]),
    ):
        coverage[method], vote[method] = _prefix_curves(table, order, max_n)
    coverage["random"] = [
        tf.random_coverage(skills, k, draws=draws, seed=seed) for k in range(1, max_n + 1)
    ]
    coverage["exhaustive"] = tf.coverage_curve(skills, max_n, method="exhaustive")
    seed_skills = table.skills(data.seeds)
    seed_order = [data.seeds[i] for i in tf.greedy_taskforce(seed_skills, max_n)]
    coverage["seeds"], vote["seeds"] = _prefix_curves(table, seed_order, max_n)
    if data.control:
        coverage["control"], vote["control"] = _prefix_curves(
            data.control_answers, data.control, max_n
        )
    members = greedy_order[:max_n]
    fitness = table.scores(members).mean(axis=1) if table.task_ids else np.zeros(len(members))
    unique = tf.unique_contributions(table.skills(members), range(len(members)))
    return {
        "taskset": data.task_set.name,
        "digest": data.task_set.digest,
        "num_tasks": len(table.task_ids),
        "num_genomes": len(data.genomes),
        "num_seeds": len(data.seeds),
        "control_samples": len(data.control),
        "max_n": max_n,
        "coverage_at_n": coverage,
        "majority_vote_at_n": vote,
        "taskforce": [
            {"id": g, "fitness": float(f), "unique_tasks": int(u)}
            for g, f, u in zip(members, fitness, unique, strict=True)
        ],
    }


def coverage_figure(report: dict):
    """coverage@N curves of every method and baseline (a matplotlib Figure)."""
    from qd_llm.plots import new_figure

    fig, ax = new_figure()
    sizes = np.arange(1, report["max_n"] + 1)
    styles = {"control": "--", "seeds": ":"}
    for name, curve in report["coverage_at_n"].items():
        values = np.array([np.nan if v is None else v for v in curve], dtype=np.float64)
        ax.plot(
            sizes, values, marker="o", markersize=4, linestyle=styles.get(name, "-"), label=name
        )
    ax.set_xlabel("taskforce size N (genomes)")
    ax.set_ylabel("coverage@N (fraction of tasks solved by any member)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(sizes)
    ax.grid(alpha=0.3)
    ax.set_title(
        f"Coverage on {report['taskset']} "
        f"({report['num_tasks']} tasks, {report['num_genomes']} genomes)"
    )
    ax.legend(loc="best", frameon=False)
    return fig


def write_report_files(run_dir: str | Path, report: dict) -> tuple[Path, Path]:
    """Writes ``RUN/coverage/<key>/result.json`` and ``RUN/figures/coverage_<name>.png``."""
    from qd_llm.plots import save_figure

    run_dir = Path(run_dir)
    key = f"{report['taskset']}-{report['digest']}"
    result = run_dir / COVERAGE_DIR / key / RESULT_FILE
    atomic.write_text(result, json.dumps(report, indent=2) + "\n")
    figure = save_figure(
        coverage_figure(report), run_dir / "figures" / f"coverage_{report['taskset']}.png"
    )
    return result, figure
