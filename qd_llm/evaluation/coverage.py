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
4. **Report** (:func:`coverage_report`): the task set is split into
   validation and test tasks by question hash (or given as two sets; see
   :mod:`qd_llm.evaluation.heldout`). Greedy, fitness and exhaustive taskforces
   and the seed and control baselines are *chosen on validation and scored on
   test*; random taskforces need no choosing and are scored on test directly.
   ``coverage_at_n`` holds the test numbers; ``val_coverage_at_n`` the
   in-sample validation numbers, an optimistic upper bound kept for reference.
   Majority-vote accuracy and each greedy member's unique contribution are
   measured on test too.
"""

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from qd_llm import atomic
from qd_llm.errors import QdLlmError
from qd_llm.evaluation import taskforce as tf
from qd_llm.evaluation.bestofn import AnswerTable, MajorityPicker, best_of_n
from qd_llm.evaluation.evaluate import Evaluator
from qd_llm.evaluation.heldout import TaskSplit, chosen_on_val
from qd_llm.inference.base import GenerationConfig
from qd_llm.models.genome import GenomeStore
from qd_llm.runs import EVALS_FILE, INSTANCES_DIR
from qd_llm.snapshot import RunSnapshot
from qd_llm.tasks.taskdir import TASK_CODE, TASK_JSON, TaskDir, read_task, slugify

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


def find_tasks(root: str | Path) -> list[TaskDir]:
    """Every task directory under ``root``, nested folders included (links not followed).

    Raises:
        QdLlmError: Two task directories share a name (task ids must be unique).
    """
    found: dict[str, TaskDir] = {}
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        if TASK_CODE in files:
            task = read_task(folder)
            if task.task_id in found:
                raise QdLlmError(
                    f"two task directories are named {task.task_id}: "
                    f"{found[task.task_id].path} and {task.path}"
                )
            found[task.task_id] = task
            subfolders.clear()  # a task directory holds no further tasks
    return [found[k] for k in sorted(found)]


def load_task_set(
    source: str | Path,
    *,
    run_dir: str | Path,
    limit: int | None = None,
    seed: int | None = None,
    subdir: str = COVERAGE_DIR,
) -> TaskSet:
    """Reads or imports the task set ``source`` (see the module docstring).

    Args:
        source: Task folder (nested folders included), task directory, or benchmark source.
        run_dir: The run (imports are written under ``RUN/<subdir>/imports``).
        limit: Keep at most this many tasks (imports and folders alike).
        seed: Shuffle with this seed before ``limit`` (imports only).
        subdir: The run folder that holds imports.

    Raises:
        QdLlmError: ``source`` holds no tasks.
    """
    path = Path(source)
    if path.is_dir() and (path / TASK_CODE).is_file():
        tasks = [read_task(path)]
    else:
        tasks = find_tasks(path)[:limit] if path.is_dir() else []
    if not tasks:
        from qd_llm.tasks.importers import import_benchmark

        tag = hashlib.sha256(f"{source}|{limit}|{seed}".encode()).hexdigest()[:8]
        out = Path(run_dir) / subdir / "imports" / f"{slugify(path.stem)}-{tag}"
        tasks = import_benchmark(source, out, limit=limit, seed=seed).tasks
    if not tasks:
        raise QdLlmError(f"task set {source} holds no tasks")
    tasks = sorted(tasks, key=lambda t: t.task_id)
    name = slugify(path.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json"))
    if path.name == "task.json":
        name = slugify(path.parent.name)
    return TaskSet(name=name, digest=_digest(tasks), tasks=tasks)


def combined_task_set(first: TaskSet, second: TaskSet) -> TaskSet:
    """One task set holding both (e.g. a validation set and a test set), named
    after ``second``.

    Raises:
        QdLlmError: The two share a task id.
    """
    shared = {t.task_id for t in first.tasks} & {t.task_id for t in second.tasks}
    if shared:
        raise QdLlmError(
            f"the task sets {first.name} and {second.name} share {len(shared)} task id(s), "
            f"e.g. {min(shared)}"
        )
    tasks = sorted(first.tasks + second.tasks, key=lambda t: t.task_id)
    return TaskSet(name=second.name, digest=_digest(tasks), tasks=tasks)


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


def _vote_curve(table: AnswerTable, order: Sequence[str], max_n: int) -> list[float]:
    """Majority-vote accuracy of the first k of ``order``, k = 1..max_n (beyond
    ``len(order)`` the whole of ``order``)."""
    return [
        best_of_n(table, order[: min(k, len(order))], MajorityPicker()).accuracy if order else 0.0
        for k in range(1, max_n + 1)
    ]


def _curves(val: np.ndarray, test: np.ndarray, orders: Sequence[Sequence[int]]) -> tuple:
    """coverage on both splits of the taskforces ``orders[k-1]`` (one per size k)."""
    return (
        [tf.coverage(val, members) for members in orders],
        [tf.coverage(test, members) for members in orders],
    )


def coverage_report(
    data: CoverageData, *, split: TaskSplit, max_n: int = 8, draws: int = 100, seed: int = 0
) -> dict:
    """coverage@N and majority-vote accuracy@N of every method and baseline.

    Taskforces are chosen on ``split.val`` and scored on ``split.test`` (see
    the module docstring).

    Args:
        data: From :func:`evaluate_task_set`.
        split: Validation and test tasks of ``data.task_set`` (disjoint).
        max_n: Largest taskforce size.
        draws: Random taskforces per size.
        seed: Seed of the random taskforces.

    Returns:
        A JSON-friendly dict: ``coverage_at_n`` (test) and ``val_coverage_at_n``
        (validation, in-sample), method → list over N = 1..max_n (exhaustive
        entries are None where the search is too large); ``majority_vote_at_n``
        (test); ``taskforce`` (the greedy taskforce of size ``max_n``: each
        member's validation fitness and unique test tasks); ``split`` (the
        rule and task ids) and the sizes.
    """
    val_ids, test_ids = split.val_ids, split.test_ids
    val_table, test_table = data.answers.subset(val_ids), data.answers.subset(test_ids)
    pools = {
        "genomes": (data.genomes, val_table, test_table),
        "seeds": (data.seeds, val_table, test_table),
    }
    if data.control:
        control_val = data.control_answers.subset(val_ids)
        pools["control"] = (data.control, control_val, data.control_answers.subset(test_ids))
    skills = {name: (v.skills(ids), t.skills(ids)) for name, (ids, v, t) in pools.items()}
    val, test = skills["genomes"]
    sizes = range(1, max_n + 1)
    greedy = tf.greedy_taskforce(val, max_n)
    orders = {
        "greedy": [greedy[:k] for k in sizes],
        "fitness": [tf.fitness_taskforce(val, k) for k in sizes],
    }
    coverage: dict[str, list] = {}
    in_sample: dict[str, list] = {}
    vote: dict[str, list] = {}
    for method, method_orders in orders.items():
        in_sample[method], coverage[method] = _curves(val, test, method_orders)
        vote[method] = _vote_curve(test_table, [data.genomes[i] for i in method_orders[-1]], max_n)
    coverage["random"] = [tf.random_coverage(test, k, draws=draws, seed=seed) for k in sizes]
    in_sample["random"] = [tf.random_coverage(val, k, draws=draws, seed=seed) for k in sizes]
    exhaustive = [
        tf.exhaustive_taskforce(val, k) if tf.exhaustive_feasible(len(val), k) else None
        for k in sizes
    ]
    in_sample["exhaustive"] = [None if m is None else tf.coverage(val, m) for m in exhaustive]
    coverage["exhaustive"] = [None if m is None else tf.coverage(test, m) for m in exhaustive]
    for name in ("seeds", "control"):
        if name not in pools:
            continue
        ids, _, table = pools[name]
        chosen = chosen_on_val(*skills[name], max_n)
        in_sample[name], coverage[name] = chosen["val"], chosen["test"]
        vote[name] = _vote_curve(table, [ids[i] for i in chosen["order"]], max_n)
    members = [data.genomes[i] for i in greedy]
    fitness = val.mean(axis=1)[greedy] if val.shape[1] else np.zeros(len(members))
    unique = tf.unique_contributions(test[greedy], range(len(members)))
    return {
        "taskset": data.task_set.name,
        "digest": data.task_set.digest,
        "num_tasks": len(data.answers.task_ids),
        "num_val": len(val_ids),
        "num_test": len(test_ids),
        "split": split.to_json(),
        "num_genomes": len(data.genomes),
        "num_seeds": len(data.seeds),
        "control_samples": len(data.control),
        "max_n": max_n,
        "coverage_at_n": coverage,
        "val_coverage_at_n": in_sample,
        "majority_vote_at_n": vote,
        "taskforce": [
            {"id": g, "val_fitness": float(f), "unique_test_tasks": int(u)}
            for g, f, u in zip(members, fitness, unique, strict=True)
        ],
    }


def write_result(run_dir: str | Path, report: dict) -> Path:
    """Writes ``report`` to ``RUN/coverage/<set key>/result.json`` (atomically)."""
    key = f"{report['taskset']}-{report['digest']}"
    result = Path(run_dir) / COVERAGE_DIR / key / RESULT_FILE
    atomic.write_text(result, json.dumps(report, indent=2) + "\n")
    return result
