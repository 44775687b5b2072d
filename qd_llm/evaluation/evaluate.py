"""Genome × task evaluation: prompts → backend → answer extraction → sandbox scores.

For a set of genomes and tasks, :meth:`Evaluator.evaluate` builds every
(genome, task, instance) request whose (genome, task) pair has no result yet,
generates all of them in one mixed-adapter batch, extracts each answer the way
its task asks (:func:`~qd_llm.tasks.extract.extract_with` and the task's
``answer_extraction``), scores them concurrently in the
sandbox and appends one record per instance to the folder's ``evals.jsonl``
(a :class:`~qd_llm.runs.EvalLog`, whose layout :class:`~qd_llm.runs.RunDir` owns). A pair is
never evaluated twice: records are read back on start, so a resumed run
reuses them.

Instances come from the sandbox once per task and are cached as
``instances/<task_id>.json`` (the task code is untrusted; only the sandbox
runs it). A task whose instances cannot be computed has none and every genome
scores 0 on it.

The skill matrix: a genome *passes* a task when its mean instance score is at
least ``pass_threshold``.
"""

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qd_llm import atomic, faults
from qd_llm.inference.base import Backend, GenerationConfig, GenerationRequest
from qd_llm.models.genome import GenomeStore
from qd_llm.runs import RunDir
from qd_llm.tasks.extract import extract_with
from qd_llm.tasks.sandbox import SandboxError, SandboxPool, ScoreJob
from qd_llm.tasks.taskdir import TaskDir


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalRecord:
    """One genome's answer to one task instance and its score."""

    genome_id: str
    task_id: str
    instance_id: str
    completion: str
    extracted: str
    score: float
    reason: str | None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def looks_like_gibberish(completions: Sequence[str]) -> bool:
    """True when no completion holds a word of at least two letters.

    A cheap guard against merges that broke the model (empty or symbol soup
    output everywhere); it is the default gibberish check of the loop.
    """
    return not any(
        any(sum(c.isalpha() for c in word) >= 2 for word in text.split()) for text in completions
    )


class Evaluator:
    """Evaluates genomes on tasks and remembers every result.

    Args:
        run_dir: The run directory, or a cache folder laid out like one: its
            :attr:`~qd_llm.runs.RunDir.evals` log and ``instances/`` are used.
        backend: Generates completions.
        sandbox: Computes instances and scores.
        genomes: The genome store (adapter folders).
        decoding: Decoding settings.
        pass_threshold: Mean instance score a genome needs to pass a task.
        progress: Show a progress bar while scoring.
    """

    def __init__(
        self,
        *,
        run_dir: str | Path,
        backend: Backend,
        sandbox: SandboxPool,
        genomes: GenomeStore,
        decoding: GenerationConfig,
        pass_threshold: float,
        progress: bool = False,
    ):
        self.folder = RunDir(run_dir)
        self.backend = backend
        self.sandbox = sandbox
        self.genomes = genomes
        self.decoding = decoding
        self.pass_threshold = pass_threshold
        self.progress = progress
        self._instances: dict[str, dict[str, dict]] = {}
        self._scores: dict[tuple[str, str], float] = {}
        self._completions: dict[tuple[str, str], list[str]] = {}
        self._load_records()

    # --- persistence -------------------------------------------------------------

    def _load_records(self) -> None:
        by_pair: dict[tuple[str, str], list[EvalRecord]] = {}
        for raw in self.folder.evals.records():
            record = EvalRecord(**raw)
            by_pair.setdefault((record.genome_id, record.task_id), []).append(record)
        for pair, records in by_pair.items():
            self._remember(pair, records)

    def _remember(self, pair: tuple[str, str], records: Sequence[EvalRecord]) -> None:
        scores = [r.score for r in records]
        self._scores[pair] = float(np.mean(scores)) if scores else 0.0
        self._completions[pair] = [r.completion for r in records]

    def _append(self, records: Sequence[EvalRecord]) -> None:
        self.folder.evals.append([r.to_json() for r in records])

    def instances(self, task: TaskDir) -> dict[str, dict]:
        """``{instance_id: {"instructions", "data"}}`` of ``task``, computed once.

        Returns an empty dict when the task code fails in the sandbox.
        """
        if task.task_id in self._instances:
            return self._instances[task.task_id]
        path = self.folder.instances_dir / f"{task.task_id}.json"
        if path.exists():
            instances = json.loads(path.read_text(encoding="utf-8"))
        else:
            try:
                loaded = self.sandbox.load_instances(task.path)
                instances = {
                    i: {"instructions": inst.instructions, "data": inst.data}
                    for i, inst in loaded.items()
                }
            except SandboxError:
                instances = {}
            atomic.write_json(path, instances)
        self._instances[task.task_id] = instances
        return instances

    # --- evaluation ----------------------------------------------------------------

    def has(self, genome_id: str, task_id: str) -> bool:
        return (genome_id, task_id) in self._scores

    def evaluate(self, genome_ids: Sequence[str], tasks: Sequence[TaskDir]) -> int:
        """Evaluates every pair not evaluated yet, in one generation batch.

        Returns:
            The number of (genome, task) pairs newly evaluated.
        """
        pairs = [(g, t) for g in genome_ids for t in tasks if not self.has(g, t.task_id)]
        if not pairs:
            return 0
        rows: list[tuple[str, TaskDir, str, dict]] = []
        for genome_id, task in pairs:
            for instance_id, instance in self.instances(task).items():
                rows.append((genome_id, task, instance_id, instance))
        requests = [
            GenerationRequest(
                prompt=instance["instructions"],
                genome_id=genome_id,
                adapter=self.genomes.path(genome_id),
            )
            for genome_id, _, _, instance in rows
        ]
        completions = self.backend.generate(requests, self.decoding)
        faults.maybe_kill("evaluate.generated")
        extracted = [
            extract_with(task.lineage.answer_extraction, text)
            for (_, task, _, _), text in zip(rows, completions, strict=True)
        ]
        results = self.sandbox.score_many(
            [
                ScoreJob(task_dir=task.path, instance_id=iid, data=inst["data"], submission=answer)
                for (_, task, iid, inst), answer in zip(rows, extracted, strict=True)
            ],
            progress=self.progress,
        )
        records = [
            EvalRecord(
                genome_id=genome_id,
                task_id=task.task_id,
                instance_id=iid,
                completion=completion,
                extracted=answer,
                score=float(result.score),
                reason=result.reason,
            )
            for (genome_id, task, iid, _), completion, answer, result in zip(
                rows, completions, extracted, results, strict=True
            )
        ]
        self._append(records)
        faults.maybe_kill("evaluate.appended")
        by_pair: dict[tuple[str, str], list[EvalRecord]] = {(g, t.task_id): [] for g, t in pairs}
        for record in records:
            by_pair[(record.genome_id, record.task_id)].append(record)
        for pair, pair_records in by_pair.items():
            self._remember(pair, pair_records)
        return len(pairs)

    def scores(self, genome_ids: Sequence[str], task_ids: Sequence[str]) -> np.ndarray:
        """Mean instance scores, shape ``(N, T)`` (every pair must be evaluated)."""
        return np.array(
            [[self._scores[(g, t)] for t in task_ids] for g in genome_ids], dtype=np.float64
        ).reshape(len(genome_ids), len(task_ids))

    def skills(self, genome_ids: Sequence[str], task_ids: Sequence[str]) -> np.ndarray:
        """Boolean skill matrix ``(N, T)``: mean score >= ``pass_threshold``."""
        return self.scores(genome_ids, task_ids) >= self.pass_threshold

    def completions(self, genome_id: str, task_ids: Sequence[str]) -> list[str]:
        """Every stored completion of ``genome_id`` on ``task_ids``."""
        return [c for t in task_ids for c in self._completions.get((genome_id, t), [])]
