"""What every scientist (task writer) implements.

A scientist turns a request — make an initial task, or an easier / harder /
novel one relative to a parent — into a task directory on disk, or declines
with a reason. The procedural scientist (:mod:`qd_llm.tasks.procedural`) and
the LLM scientist (:mod:`qd_llm.tasks.llm_scientist`) both implement it.

Scientists are looked up by name (``tasks.scientist`` in a config) in
:data:`SCIENTISTS`; register your own with :func:`register_scientist`::

    @register_scientist("mine")
    class MyScientist(Scientist):
        def propose(self, request, out_root): ...
"""

import abc
import dataclasses
from collections.abc import Callable
from pathlib import Path

from qd_llm.registry import Registry
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
    """Writes task directories.

    Class attributes:
        name: Registry name, set by :func:`register_scientist`; recorded in
            every task the scientist writes.
    """

    name: str = "scientist"

    @classmethod
    def from_config(cls, config, *, sandbox=None, client_factory=None) -> "Scientist":
        """The scientist a run's config asks for; override to read settings from it.

        Args:
            config: The run's :class:`~qd_llm.config.RunConfig`.
            sandbox: The run's sandbox pool, to try drafted tasks in.
            client_factory: Makes the environment's chat client (an
                OpenAI-compatible endpoint), for scientists that ask a model.

        Returns:
            ``cls()`` unless overridden.
        """
        return cls()

    @abc.abstractmethod
    def propose(self, request: TaskRequest, out_root: Path) -> TaskDir:
        """Writes one new task directory under ``out_root`` and returns it.

        Raises:
            TaskRejected: No acceptable task came out; the reason says why.
        """


SCIENTISTS = Registry("scientist")
SCIENTISTS.register_lazy("procedural", "qd_llm.tasks.procedural.scientist:ProceduralScientist")
SCIENTISTS.register_lazy("llm", "qd_llm.tasks.llm_scientist:LLMScientist")


def register_scientist(name: str) -> Callable[[type[Scientist]], type[Scientist]]:
    """Class decorator that registers a :class:`Scientist` subclass under ``name``.

    A config then selects it with ``tasks.scientist=NAME``; the run builds it
    with :meth:`Scientist.from_config`.

    Raises:
        ValueError: ``name`` is taken by another scientist.
    """

    return SCIENTISTS.register_class(name)
