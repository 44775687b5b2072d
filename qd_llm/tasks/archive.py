"""The task archive: the active task pool, kept diverse by embedding novelty.

Each task is placed in skill space by a unit sentence embedding of the text
:func:`task_text` builds from its ``task.json``::

    "{name_of_task with _ as spaces}: {description_of_task} Capability: {capability_being_measured}"

A candidate's **novelty** is the mean cosine distance (``1 - cos``) to its
``k`` nearest tasks in the *active* pool (fewer when the pool is smaller). It
is accepted when ``novelty >= threshold``, and then, if an ``is_interesting``
hook is set, only if the hook also says yes. Candidates are compared one at a
time, so the second of two near-identical candidates offered together is
compared with the first and rejected.

Threshold convention. ``threshold`` is a *distance*: larger means stricter.
The AC/DC reference (and the paper preset's "novelty cosine threshold 0.7")
instead caps the cosine *similarity* to the nearest task: reject when
``max cos > 0.7``. That is exactly ``k=1, threshold=0.3`` here;
:func:`threshold_from_similarity_cap` converts.

Why not :class:`ribs.archives.ProximityArchive`: it has no way to remove an
elite, and this pool must evict its oldest task at the cap and drop tasks on
request (:meth:`TaskArchive.remove`); it also measures novelty as a mean
*Euclidean* distance, which on unit vectors is a monotone function of the
cosine distance for ``k=1`` only. The pool is small (the paper caps it at 250),
so an exact brute-force cosine search over it costs microseconds.

The pool also keeps a never-pruned **history** (every task ever accepted, in
order) and an embedding cache keyed by task id, so no task is embedded twice.
The whole state round-trips through :meth:`TaskArchive.state_dict` /
:meth:`TaskArchive.from_state_dict` (plain JSON-friendly types) for checkpoints.
"""

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from qd_llm.errors import QdLlmError
from qd_llm.tasks.taskdir import Lineage, TaskDir, TaskInfo

# A sentence embedder: a callable mapping n texts to an (n, d) array, or any
# object with SentenceTransformer's ``encode(texts, normalize_embeddings=...)``.
Embedder = Callable[[list[str]], np.ndarray]
# is_interesting(candidate_info, nearest_infos) -> bool; nearest first.
InterestingHook = Callable[[TaskInfo, list[TaskInfo]], bool]

STATE_VERSION = 1


def task_text(info: TaskInfo) -> str:
    """The text embedded for a task (see the module docstring)."""
    return f"{info.name.replace('_', ' ')}: {info.description} Capability: {info.capability}"


def threshold_from_similarity_cap(max_similarity: float) -> float:
    """The distance threshold equal to a cosine-similarity cap (use with ``k=1``)."""
    return 1.0 - max_similarity


def vendi_score(embeddings: np.ndarray) -> float:
    """The Vendi score of a set of unit embeddings: its effective number of distinct items.

    ``exp(-sum(l * log l))`` over the eigenvalues ``l`` of ``K / n``, where ``K``
    is the cosine-similarity kernel. It is 1 for ``n`` identical items and ``n``
    for ``n`` orthogonal ones.

    Args:
        embeddings: (n, d) array of unit-norm rows.

    Returns:
        The score (0.0 for an empty set).
    """
    n = len(embeddings)
    if n == 0:
        return 0.0
    kernel = embeddings @ embeddings.T / n
    eigenvalues = np.clip(np.linalg.eigvalsh(kernel), 0.0, None)
    eigenvalues = eigenvalues[eigenvalues > 1e-12]
    return float(np.exp(-np.sum(eigenvalues * np.log(eigenvalues))))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    """The archive's verdict on one candidate.

    Attributes:
        accepted: Whether the task joined the active pool.
        novelty: Mean cosine distance to its nearest active tasks (``threshold``
            when the pool was empty, as in pyribs' ProximityArchive).
        reason: Why, in a few words (also says which task was nearest).
        evicted: Task ids pushed out of the active pool by the cap.
    """

    accepted: bool
    novelty: float
    reason: str
    evicted: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Entry:
    """A task in the history, with the generation it was accepted at."""

    task: TaskDir
    generation: int

    def to_json(self) -> dict:
        return {
            "path": str(self.task.path),
            "info": self.task.info.to_json(),
            "lineage": self.task.lineage.to_json(),
            "generation": self.generation,
        }

    @classmethod
    def from_json(cls, obj: dict, *, tasks_root: Path | None = None) -> "_Entry":
        path = Path(obj["path"])
        task = TaskDir(
            path=path if tasks_root is None else tasks_root / path.name,
            info=TaskInfo.from_json(obj["info"]),
            lineage=Lineage.from_json(obj["lineage"]),
        )
        return cls(task=task, generation=int(obj["generation"]))


class TaskArchive:
    """The active task pool with a novelty filter, a cap and a full history.

    Args:
        embedder: Maps texts to embeddings (see :data:`Embedder`); rows are
            normalised here, so any scale works.
        k: Number of nearest active tasks whose mean distance is the novelty.
        threshold: Minimum novelty (mean cosine distance, 0..2) to accept.
        capacity: Maximum active tasks; accepting past it evicts the oldest
            accepted ones. None means unbounded.
        is_interesting: Optional final check on candidates that pass the novelty
            test, given the candidate's info and its nearest active tasks' infos
            (nearest first); False rejects. An LLM judge plugs in here.
    """

    def __init__(
        self,
        *,
        embedder: Embedder,
        k: int = 1,
        threshold: float = 0.3,
        capacity: int | None = None,
        is_interesting: InterestingHook | None = None,
    ):
        if k < 1:
            raise QdLlmError(f"task archive k must be at least 1, got {k}")
        if not 0.0 <= threshold <= 2.0:
            raise QdLlmError(f"novelty threshold is a cosine distance in [0, 2], got {threshold}")
        if capacity is not None and capacity < 1:
            raise QdLlmError(f"task pool capacity must be at least 1, got {capacity}")
        self.embedder = embedder
        self.k = int(k)
        self.threshold = float(threshold)
        self.capacity = capacity
        self.is_interesting = is_interesting
        self._history: dict[str, _Entry] = {}  # insertion order = acceptance order
        self._active: list[str] = []  # oldest first
        self._cache: dict[str, np.ndarray] = {}

    # --- embeddings ----------------------------------------------------------

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        if hasattr(self.embedder, "encode"):
            vectors = self.embedder.encode(texts, convert_to_numpy=True, show_progress_bar=False)
        else:
            vectors = self.embedder(texts)
        vectors = np.asarray(vectors, dtype=np.float64).reshape(len(texts), -1)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise QdLlmError("the embedder returned a zero vector")
        return vectors / norms

    def embed(self, tasks: Sequence[TaskDir]) -> np.ndarray:
        """Unit embeddings of ``tasks``, computing only those not cached yet.

        Returns:
            (len(tasks), d) array.
        """
        missing = {t.task_id: t for t in tasks if t.task_id not in self._cache}
        if missing:
            vectors = self._embed_texts([task_text(t.info) for t in missing.values()])
            self._cache.update(zip(missing, vectors, strict=True))
        return self.embeddings([t.task_id for t in tasks])

    def embeddings(self, task_ids: Sequence[str]) -> np.ndarray:
        """Cached unit embeddings of ``task_ids`` (each must have been seen).

        Returns:
            (len(task_ids), d) array; (0, 0) when ``task_ids`` is empty.
        """
        unknown = [i for i in task_ids if i not in self._cache]
        if unknown:
            raise QdLlmError(f"no embedding for task(s) {', '.join(unknown)}")
        if not task_ids:
            return np.zeros((0, 0))
        return np.stack([self._cache[i] for i in task_ids])

    # --- the pool --------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._active)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._active

    def active(self) -> list[TaskDir]:
        """The active pool, oldest first."""
        return [self._history[i].task for i in self._active]

    def history(self) -> list[TaskDir]:
        """Every task ever accepted, in acceptance order (never pruned)."""
        return [entry.task for entry in self._history.values()]

    def accepted_at(self, task_id: str) -> int:
        """The generation at which ``task_id`` was accepted."""
        if task_id not in self._history:
            raise QdLlmError(f"task {task_id} was never accepted")
        return self._history[task_id].generation

    def novelty(self, task: TaskDir) -> tuple[float, list[str]]:
        """A task's novelty against the active pool, and its nearest active task ids.

        Returns:
            The mean cosine distance to the ``k`` nearest active tasks (other
            than itself), ``threshold`` for an empty pool, and their ids,
            nearest first.
        """
        candidate = self.embed([task])[0]  # even into an empty pool: later tasks need it
        others = [i for i in self._active if i != task.task_id]
        if not others:
            return self.threshold, []
        distances = 1.0 - self.embeddings(others) @ candidate
        # Stable sort: ties resolve by age, so results are deterministic.
        nearest = np.argsort(distances, kind="stable")[: self.k]
        return float(distances[nearest].mean()), [others[i] for i in nearest]

    def consider(self, task: TaskDir, *, generation: int) -> Decision:
        """Accepts ``task`` into the active pool if it is novel (and interesting).

        Args:
            task: The candidate task directory.
            generation: The loop generation (recorded for accepted tasks).

        Returns:
            The decision; on acceptance, any tasks the cap evicted.
        """
        if task.task_id in self._history:
            return Decision(
                accepted=False, novelty=0.0, reason=f"task id {task.task_id} already in history"
            )
        novelty, nearest = self.novelty(task)
        nearest_note = f" (nearest: {nearest[0]})" if nearest else ""
        if novelty < self.threshold:
            return Decision(
                accepted=False,
                novelty=novelty,
                reason=f"novelty {novelty:.3f} below threshold {self.threshold:.3f}{nearest_note}",
            )
        if self.is_interesting is not None and not self.is_interesting(
            task.info, [self._history[i].task.info for i in nearest]
        ):
            return Decision(
                accepted=False, novelty=novelty, reason=f"judged not interesting{nearest_note}"
            )
        self._history[task.task_id] = _Entry(task=task, generation=int(generation))
        self._active.append(task.task_id)
        evicted = []
        while self.capacity is not None and len(self._active) > self.capacity:
            evicted.append(self._active.pop(0))
        return Decision(
            accepted=True,
            novelty=novelty,
            reason=f"novelty {novelty:.3f} >= threshold {self.threshold:.3f}{nearest_note}",
            evicted=tuple(evicted),
        )

    def consider_many(self, tasks: Sequence[TaskDir], *, generation: int) -> list[Decision]:
        """:meth:`consider` each task in order, so later ones see earlier acceptances."""
        self.embed(list(tasks))  # one embedder call for the whole batch
        return [self.consider(task, generation=generation) for task in tasks]

    def remove(self, task_id: str) -> None:
        """Drops ``task_id`` from the active pool (it stays in the history)."""
        if task_id not in self._active:
            raise QdLlmError(f"task {task_id} is not in the active pool")
        self._active.remove(task_id)

    def vendi_score(self) -> float:
        """The Vendi score of the active pool (see :func:`vendi_score`)."""
        return vendi_score(self.embeddings(self._active))

    # --- checkpoints -------------------------------------------------------------

    def state_dict(self) -> dict:
        """The archive's state as JSON-friendly types (not the embedder or hook)."""
        return {
            "version": STATE_VERSION,
            "k": self.k,
            "threshold": self.threshold,
            "capacity": self.capacity,
            "history": [entry.to_json() for entry in self._history.values()],
            "active": list(self._active),
            "embeddings": {i: v.tolist() for i, v in self._cache.items()},
        }

    @classmethod
    def from_state_dict(
        cls,
        state: dict,
        *,
        embedder: Embedder,
        is_interesting: InterestingHook | None = None,
        tasks_root: str | Path | None = None,
    ) -> "TaskArchive":
        """Rebuilds an archive saved by :meth:`state_dict`.

        Args:
            state: What :meth:`state_dict` returned.
            embedder: See the class.
            is_interesting: See the class.
            tasks_root: The folder the task directories are in now (a run
                directory's ``tasks/``), so a run that was moved or copied
                finds them; None keeps the paths as saved.
        """
        if state.get("version") != STATE_VERSION:
            raise QdLlmError(
                f"task archive state version {state.get('version')!r} is not {STATE_VERSION}"
            )
        archive = cls(
            embedder=embedder,
            k=state["k"],
            threshold=state["threshold"],
            capacity=state["capacity"],
            is_interesting=is_interesting,
        )
        for obj in state["history"]:
            entry = _Entry.from_json(
                obj, tasks_root=None if tasks_root is None else Path(tasks_root)
            )
            archive._history[entry.task.task_id] = entry
        archive._active = list(state["active"])
        archive._cache = {
            i: np.asarray(v, dtype=np.float64) for i, v in state["embeddings"].items()
        }
        return archive
