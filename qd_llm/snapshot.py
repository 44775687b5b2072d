"""A read-only view of a run directory at its last checkpoint.

:class:`RunSnapshot` reads the checkpoint *without* touching the run (unlike
:meth:`~qd_llm.runs.RunDir.load_checkpoint`, which cuts ``metrics.jsonl`` and
``evals.jsonl`` back for a resume): the population, the niche map, the task
archive, the genome store and the evaluation records the checkpoint covers.
Plots, the report, coverage and export all read runs through it.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qd_llm.errors import QdLlmError
from qd_llm.models.genome import GenomeStore
from qd_llm.qd.niche_map import Elite, NicheMap
from qd_llm.runs import RunDir
from qd_llm.tasks.archive import TaskArchive


class RunSnapshot:
    """A read-only view of a run directory at its last checkpoint.

    Args:
        path: The run directory.

    Raises:
        QdLlmError: ``path`` is not a run directory, has no finished generation, or
            its checkpoint cannot be read (see :meth:`~qd_llm.runs.RunDir.read_checkpoint`).
    """

    def __init__(self, path: str | Path):
        self.run = RunDir.open(path)
        self.config = self.run.config()
        checkpoint = self.run.read_checkpoint()
        if checkpoint is None:
            raise QdLlmError(f"run {self.run.path} has no checkpoint: no generation finished yet")
        self.run.check_logs(
            metrics_bytes=checkpoint.metrics_bytes, evals_bytes=checkpoint.evals_bytes
        )
        state = checkpoint.state
        self.generation: int = checkpoint.generation
        with self.run.restoring_state():
            self.population: list[str] = [str(genome_id) for genome_id in state["population"]]
            self.niche = NicheMap.from_state_dict(state["niche"])
            # The embedder is only needed to embed new tasks; a snapshot embeds none.
            self.tasks = TaskArchive.from_state_dict(
                state["task_archive"], embedder=None, tasks_root=self.run.tasks_dir
            )
        self.metrics = self.run.metrics()[: self.generation + 1]
        self.store = GenomeStore(
            self.run.genomes_dir,
            base_model=self.config["base_model"],
            dtype=self.config["genomes"]["dtype"],
        )
        self.pass_threshold = float(self.config["tasks"]["pass_threshold"])
        self._evals_bytes = checkpoint.evals_bytes
        self._scores: dict[tuple[str, str], float] | None = None

    @property
    def base_model(self) -> str:
        """The run's base model, as its config names it."""
        return self.config["base_model"]

    def elites(self) -> list[Elite]:
        """The niche map's elites, fittest first."""
        return self.niche.elites()

    def active_task_ids(self) -> list[str]:
        """Ids of the tasks active at the checkpoint, oldest first."""
        return [t.task_id for t in self.tasks.active()]

    def stored_task_embeddings(self) -> dict[str, np.ndarray]:
        """Task id → unit embedding (shape ``(D,)``), for every accepted task the
        checkpoint stored one of."""
        vectors = {}
        for task in self.tasks.history():
            try:
                vectors[task.task_id] = self.tasks.embeddings([task.task_id])[0]
            except QdLlmError:
                continue
        return vectors

    def task_names(self) -> dict[str, str]:
        """Task id → ``name_of_task`` for every task ever accepted."""
        return {t.task_id: t.info.name for t in self.tasks.history()}

    def scores(self) -> dict[tuple[str, str], float]:
        """Mean instance score per evaluated ``(genome_id, task_id)`` pair."""
        if self._scores is None:
            sums: dict[tuple[str, str], list[float]] = {}
            for record in self.run.evals.records(covered_bytes=self._evals_bytes):
                sums.setdefault((record["genome_id"], record["task_id"]), []).append(
                    float(record["score"])
                )
            self._scores = {pair: float(np.mean(v)) for pair, v in sums.items()}
        return self._scores

    def skills(self, genome_ids: Sequence[str], task_ids: Sequence[str]) -> np.ndarray:
        """Boolean skill matrix ``(N, T)``; pairs never evaluated count as unsolved."""
        scores = self.scores()
        return np.array(
            [
                [scores.get((g, t), 0.0) >= self.pass_threshold for t in task_ids]
                for g in genome_ids
            ],
            dtype=bool,
        ).reshape(len(genome_ids), len(task_ids))

    def ancestors(self, genome_ids: Sequence[str]) -> list[str]:
        """``genome_ids`` and every ancestor of them in the store, each once."""
        seen: dict[str, None] = {}
        stack = list(genome_ids)
        while stack:
            genome_id = stack.pop()
            if genome_id in seen or genome_id not in self.store:
                continue
            seen[genome_id] = None
            stack.extend(self.store.info(genome_id).parents)
        return list(seen)
