"""What every scientist (task writer) implements.

A scientist turns a request — make an initial task, or an easier / harder /
novel one relative to a parent — into a task directory on disk, or declines
with a reason. The procedural scientist (:mod:`qd_llm.tasks.procedural`) and
the LLM scientist (:mod:`qd_llm.tasks.llm_scientist`) both implement it.
"""

import abc
import dataclasses
from pathlib import Path

from qd_llm.tasks.taskdir import TaskDir

OPERATIONS = ("initial", "easier", "harder", "novel")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskRequest:
    """What to make.

    Attributes:
        operation: One of :data:`OPERATIONS`.
        parent: The task to derive from (None for ``initial``).
        parent_pass_rate: The parent's pass rate over the population.
        context: Other tasks in the archive, to steer away from (``novel``).
        generation: The loop generation the task is made at.
        seed: Seed for every random choice the scientist makes.
    """

    operation: str
    parent: TaskDir | None = None
    parent_pass_rate: float | None = None
    context: tuple[TaskDir, ...] = ()
    generation: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {OPERATIONS}, got {self.operation!r}")
        if self.operation != "initial" and self.parent is None:
            raise ValueError(f"operation {self.operation!r} needs a parent task")


class TaskRejected(Exception):
    """The scientist could not make an acceptable task; ``str(e)`` says why."""


class Scientist(abc.ABC):
    """Writes task directories."""

    name: str = "scientist"

    @abc.abstractmethod
    def propose(self, request: TaskRequest, out_root: Path) -> TaskDir:
        """Writes one new task directory under ``out_root`` and returns it.

        Raises:
            TaskRejected: No acceptable task came out; the reason says why.
        """
