"""Held-out evaluation: taskforces chosen on a validation split, scored on a test split.

A coverage number is only unbiased when the taskforce was not chosen on the
questions it is scored on. Every held-out number here follows one protocol:

1. **Split.** The task set is split by a hash of each task's question
   (:func:`question_fraction`): a task whose hash falls below ``val_fraction``
   is a *validation* task, the rest are *test* tasks. The same question always
   lands in the same split, whatever else is in the set, so duplicated
   questions cannot leak across. The split is written down (:meth:`TaskSplit.to_json`).
2. **Selection on validation.** For a pool of genomes (the evolved population
   and its niche elites, the seed experts, or base-model control samples), the
   greedy max-coverage taskforce of size N = 1..``max_n`` is chosen on the
   validation tasks (:func:`~qd_llm.evaluation.taskforce.greedy_taskforce`).
3. **Score on test.** test coverage@N is the fraction of test tasks that at
   least one of those N members passes. The best single genome is the one
   with the highest validation pass rate; its test pass rate is reported as
   ``best_accuracy``.

:class:`HeldOutTracker` runs this inside the loop every few generations,
caching every (genome, task) evaluation under ``RUN/heldout/<set>/``.
"""

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qd_llm.errors import QdLlmError
from qd_llm.evaluation import taskforce as tf
from qd_llm.tasks.taskdir import TaskDir

SPLIT_FILE = "split.json"
POOLS = ("evolved", "seeds", "control")


def question_text(task: TaskDir) -> str:
    """The text a task's split is decided by: its example instruction (the
    question itself for imported benchmarks), else its description."""
    return task.info.example_instruction.strip() or task.info.description.strip()


def question_fraction(text: str) -> float:
    """A uniform number in [0, 1) fixed by ``text``: the first 8 bytes of its
    SHA-256 read as a big-endian integer, divided by 2**64."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskSplit:
    """Disjoint validation and test tasks.

    Attributes:
        val: Validation tasks (taskforces are chosen on them), sorted by id.
        test: Test tasks (taskforces are scored on them), sorted by id.
        rule: How the split was made, for the record.
    """

    val: list[TaskDir]
    test: list[TaskDir]
    rule: str

    def __post_init__(self):
        check_disjoint(self.val, self.test)

    @property
    def val_ids(self) -> list[str]:
        return [t.task_id for t in self.val]

    @property
    def test_ids(self) -> list[str]:
        return [t.task_id for t in self.test]

    def to_json(self) -> dict:
        return {"rule": self.rule, "val": self.val_ids, "test": self.test_ids}


def check_disjoint(val: Sequence[TaskDir], test: Sequence[TaskDir]) -> None:
    """Refuses validation and test sets that share a task or a question.

    Raises:
        QdLlmError: Naming how many test tasks overlap and one example.
    """
    if not val or not test:
        raise QdLlmError(
            f"a held-out split needs validation and test tasks; got {len(val)} validation "
            f"and {len(test)} test tasks (use a larger task set or another validation fraction)"
        )
    val_ids = {t.task_id for t in val}
    val_questions = {question_text(t) for t in val}
    overlap = [t for t in test if t.task_id in val_ids or question_text(t) in val_questions]
    if overlap:
        raise QdLlmError(
            f"the test split overlaps the validation split: {len(overlap)} of {len(test)} test "
            f"tasks (e.g. {overlap[0].task_id}) also appear among the validation tasks"
        )


def split_tasks(tasks: Sequence[TaskDir], *, val_fraction: float) -> TaskSplit:
    """Splits ``tasks`` by question hash (see the module docstring).

    Args:
        tasks: The task set.
        val_fraction: Expected share of validation tasks, in (0, 1).

    Raises:
        QdLlmError: ``val_fraction`` outside (0, 1), or a split comes out empty.
    """
    if not 0.0 < val_fraction < 1.0:
        raise QdLlmError(f"the validation fraction must be in (0, 1), got {val_fraction}")
    ordered = sorted(tasks, key=lambda t: t.task_id)
    is_val = [question_fraction(question_text(t)) < val_fraction for t in ordered]
    return TaskSplit(
        val=[t for t, v in zip(ordered, is_val, strict=True) if v],
        test=[t for t, v in zip(ordered, is_val, strict=True) if not v],
        rule=f"sha256(question)[:8] / 2**64 < {val_fraction:g} -> val",
    )


def explicit_split(val: Sequence[TaskDir], test: Sequence[TaskDir]) -> TaskSplit:
    """A split from two separately given task sets (refused when they overlap)."""
    return TaskSplit(
        val=sorted(val, key=lambda t: t.task_id),
        test=sorted(test, key=lambda t: t.task_id),
        rule="given: separate validation and test sets",
    )


def chosen_on_val(val_skills: np.ndarray, test_skills: np.ndarray, max_n: int) -> dict:
    """Greedy taskforces chosen on validation, scored on both splits.

    Args:
        val_skills: Pass matrix on validation tasks, shape ``(G, V)``.
        test_skills: Pass matrix of the same genomes on test tasks, shape ``(G, T)``.
        max_n: Largest taskforce size.

    Returns:
        ``{"order": greedy member indices (length <= max_n), "val": coverage@1..max_n
        on validation, "test": coverage@1..max_n on test}``. Beyond the pool's size
        (or once greedy stops finding members) the whole chosen order is used.
    """
    val_skills = np.asarray(val_skills, dtype=bool)
    test_skills = np.asarray(test_skills, dtype=bool)
    if val_skills.shape[0] != test_skills.shape[0]:
        raise ValueError(
            f"val and test skills must have one row per genome: {val_skills.shape[0]} != "
            f"{test_skills.shape[0]}"
        )
    order = tf.greedy_taskforce(val_skills, max_n) if len(val_skills) else []
    curves: dict[str, list[float]] = {"val": [], "test": []}
    for k in range(1, max_n + 1):
        members = order[: min(k, len(order))]
        curves["val"].append(tf.coverage(val_skills, members) if members else 0.0)
        curves["test"].append(tf.coverage(test_skills, members) if members else 0.0)
    return {"order": [int(i) for i in order], **curves}


def best_single(val_scores: np.ndarray, test_skills: np.ndarray) -> float:
    """Test pass rate of the genome with the highest validation pass rate.

    Args:
        val_scores: Validation pass matrix (or mean scores), shape ``(G, V)``.
        test_skills: Test pass matrix, shape ``(G, T)``.

    Returns:
        A pass rate in [0, 1]; ties go to the first genome; 0.0 for an empty pool.
    """
    if not len(val_scores):
        return 0.0
    best = int(np.argmax(np.asarray(val_scores, dtype=np.float64).mean(axis=1)))
    return float(np.asarray(test_skills, dtype=bool)[best].mean())


def pool_summary(
    val_skills: np.ndarray, test_skills: np.ndarray, ids: Sequence[str], *, max_n: int
) -> dict:
    """One pool's held-out numbers: curves on both splits, the best single
    genome's test accuracy and the chosen taskforce's ids."""
    chosen = chosen_on_val(val_skills, test_skills, max_n)
    return {
        "val": chosen["val"],
        "test": chosen["test"],
        "best_accuracy": best_single(val_skills, test_skills),
        "taskforce": [ids[i] for i in chosen["order"]],
    }


class HeldOutTracker:
    """Evaluates pools of genomes on a split held-out task set, with a cache.

    Args:
        directory: Cache folder (``evals.jsonl``, ``instances/``, ``split.json``,
            ``control/``), e.g. ``RUN/heldout/<set key>``.
        split: The validation/test split of the held-out tasks.
        evaluator: Evaluates run genomes on tasks, caching in ``directory``.
        control_evaluator: Evaluates the control samples (``None``: no control).
        control: Control sample genome ids (zero LoRA updates), possibly empty.
        max_n: Largest taskforce size reported.
    """

    def __init__(
        self,
        *,
        directory: str | Path,
        split: TaskSplit,
        evaluator,
        control_evaluator=None,
        control: Sequence[str] = (),
        max_n: int = 3,
    ):
        self.directory = Path(directory)
        self.split = split
        self.evaluator = evaluator
        self.control_evaluator = control_evaluator
        self.control = list(control)
        self.max_n = max_n

    def _summary(self, evaluator, ids: Sequence[str]) -> dict:
        tasks = self.split.val + self.split.test
        evaluator.evaluate(ids, tasks)
        return pool_summary(
            evaluator.skills(ids, self.split.val_ids),
            evaluator.skills(ids, self.split.test_ids),
            ids,
            max_n=self.max_n,
        )

    def evaluate(self, *, evolved: Sequence[str], seeds: Sequence[str]) -> dict:
        """Evaluates what is not cached yet and summarises every pool.

        Args:
            evolved: The pool under test (e.g. population and niche elites).
            seeds: The seed experts.

        Returns:
            The metrics-row entry: ``{"taskset", "num_val", "num_test", "test":
            {pool: coverage@1..max_n}, "val": {...}, "best_accuracy": {pool: float},
            "taskforce": {pool: [ids]}}`` for the pools ``evolved``, ``seeds`` and
            (with control samples) ``control``.
        """
        pools = {
            "evolved": self._summary(self.evaluator, sorted(set(evolved))),
            "seeds": self._summary(self.evaluator, sorted(set(seeds))),
        }
        if self.control_evaluator is not None and self.control:
            pools["control"] = self._summary(self.control_evaluator, self.control)
        return {
            "taskset": self.directory.name,
            "num_val": len(self.split.val),
            "num_test": len(self.split.test),
            **{
                key: {name: pool[key] for name, pool in pools.items()}
                for key in ("test", "val", "best_accuracy", "taskforce")
            },
        }
