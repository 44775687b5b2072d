"""The procedural scientist: the offline, model-free default task writer.

It writes tasks from the families in :mod:`qd_llm.tasks.procedural.families`.
A task is fixed by (family, level, seed, number of instances, output wrap);
those knobs are recorded in ``metadata.json`` so that later requests can read
a parent back and move from it:

* ``initial`` — a random family at one of the initial levels;
* ``easier`` / ``harder`` — the parent's family one level down / up, with fresh
  instances; declined at the family's lowest / highest level;
* ``novel`` — the family least represented among the request's context tasks
  (never the parent's); once every family is represented, a composition of a
  family with a JSON output format is counted as a family of its own.

Every choice is drawn from ``random.Random(request.seed)``, so a request always
writes byte-identical task directories.
"""

import collections
import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

from qd_llm.errors import QdLlmError
from qd_llm.tasks.procedural.families import FAMILIES, WRAPS, Family, get_family
from qd_llm.tasks.scientist import Scientist, TaskRejected, TaskRequest
from qd_llm.tasks.taskdir import Lineage, TaskDir, TaskInfo, slugify, write_task

SCIENTIST_NAME = "procedural"

# A task's identity in skill space: its family and the output format it is wrapped in.
Kind = tuple[str, str | None]


class ProceduralScientist(Scientist):
    """Writes procedurally generated task directories.

    Args:
        families: Names of the families to draw from (default: all).
        initial_levels: Levels an ``initial`` task may start at.
        num_instances: Instances per task.
    """

    name = SCIENTIST_NAME

    def __init__(
        self,
        *,
        families: Sequence[str] | None = None,
        initial_levels: Sequence[int] = (0, 1),
        num_instances: int = 5,
    ):
        self.families = tuple(get_family(name) for name in (families or FAMILIES))
        if not self.families:
            raise QdLlmError("the procedural scientist needs at least one family")
        # Families may have ladders of different lengths; a level past a family's
        # top is clamped to it, a level past every family's top is a mistake.
        top = max(family.max_level for family in self.families)
        if not initial_levels or not all(0 <= level <= top for level in initial_levels):
            raise QdLlmError(
                f"initial_levels must be levels 0..{top} of the chosen families, "
                f"got {tuple(initial_levels)}"
            )
        if num_instances < 1:
            raise QdLlmError(f"num_instances must be at least 1, got {num_instances}")
        self.initial_levels = tuple(initial_levels)
        self.num_instances = num_instances

    @classmethod
    def from_config(cls, config, *, sandbox=None, client_factory=None) -> "ProceduralScientist":
        """The ``tasks.families`` and ``tasks.instances_per_task`` of the run's config."""
        tasks = config.tasks
        return cls(families=tasks.families or None, num_instances=tasks.instances_per_task)

    def propose(self, request: TaskRequest, out_root: Path) -> TaskDir:
        rng = random.Random(request.seed)
        if request.operation == "initial":
            family, level = self._fresh_start(request, rng)
            wrap = None
        elif request.operation == "novel":
            family, wrap = self._least_represented(request, rng)
            parent_level = _parent_knobs(request.parent)[1] if _is_ours(request.parent) else 0
            level = min(parent_level, family.max_level)
        else:
            if not _is_ours(request.parent):
                raise TaskRejected(
                    f"parent {request.parent.task_id} was not written by the procedural "
                    f"scientist, so it has no level to move"
                )
            family, level, wrap = _parent_knobs(request.parent)
            step = 1 if request.operation == "harder" else -1
            if not 0 <= level + step <= family.max_level:
                bound = "highest" if step > 0 else "lowest"
                raise TaskRejected(
                    f"{family.name} is already at its {bound} level ({level}); "
                    f"no {request.operation} task in this family"
                )
            level += step
        return self.write(
            out_root,
            family=family,
            level=level,
            wrap=wrap,
            seed=rng.randrange(2**31),
            request=request,
        )

    def write(
        self,
        out_root: str | Path,
        *,
        family: Family,
        level: int,
        seed: int,
        wrap: str | None = None,
        request: TaskRequest | None = None,
    ) -> TaskDir:
        """Writes the task (family, level, seed, wrap) under ``out_root``.

        Args:
            out_root: The pool folder.
            family: The task family.
            level: Its difficulty level.
            seed: The seed baked into ``task.py``; it fixes the instances.
            wrap: An output format from :data:`~qd_llm.tasks.procedural.families.WRAPS`.
            request: The request being served, for the lineage (None: an initial task).

        Returns:
            The task directory; its name is ``<family>_l<level>[_<wrap>]_<hash>``.
        """
        code = family.render(level=level, seed=seed, num_instances=self.num_instances, wrap=wrap)
        example = family.examples(level, 1, seed, wrap)[0][0]
        stem = f"{family.name}_l{level}" + (f"_{wrap}" if wrap else "")
        task_id = f"{slugify(stem)}_{hashlib.sha256(code.encode()).hexdigest()[:8]}"
        info = TaskInfo(
            name=stem,
            description=family.describe(level, wrap),
            capability=family.capability,
            difficulty=str(min(level + 1, 5)),
            example_instruction=example,
        )
        request = request or TaskRequest(operation="initial")
        lineage = Lineage(
            generation_type=request.operation,
            parent_task=request.parent.task_id if request.parent else None,
            parent_pass_rate=request.parent_pass_rate,
            created_at_generation=request.generation,
            extra={
                "scientist": SCIENTIST_NAME,
                "family": family.name,
                "level": level,
                "params": {"seed": seed, "num_instances": self.num_instances, "wrap": wrap},
            },
        )
        return write_task(out_root, task_id=task_id, code=code, info=info, lineage=lineage)

    def _fresh_start(self, request: TaskRequest, rng: random.Random) -> tuple[Family, int]:
        """An initial (family, level) pair, among those least common in the context.

        Without context every pair is equally likely; with it, a pool seeded one
        request at a time spreads over families instead of repeating one.
        """
        counts = collections.Counter(
            (family.name, level)
            for family, level, _ in (_parent_knobs(t) for t in request.context if _is_ours(t))
        )
        options = sorted(
            {(family.name, min(level, family.max_level)) for family in self.families
             for level in self.initial_levels}
        )  # fmt: skip
        fewest = min(counts[option] for option in options)
        name, level = rng.choice([option for option in options if counts[option] == fewest])
        return get_family(name), level

    def _least_represented(
        self, request: TaskRequest, rng: random.Random
    ) -> tuple[Family, str | None]:
        """The (family, wrap) kind least common among the context tasks."""
        counts = collections.Counter(_kind(task) for task in request.context)
        parent_family = _kind(request.parent)[0]
        options = [family for family in self.families if family.name != parent_family]
        if not options:
            raise TaskRejected(
                f"no family other than the parent's ({parent_family}) to make a novel task from"
            )
        kinds: list[tuple[Family, str | None]] = [(family, None) for family in options]
        if all(counts[(family.name, None)] for family, _ in kinds):
            kinds += [(family, wrap) for family in options if family.composable for wrap in WRAPS]
        fewest = min(counts[(family.name, wrap)] for family, wrap in kinds)
        return rng.choice([(f, w) for f, w in kinds if counts[(f.name, w)] == fewest])


def _is_ours(task: TaskDir | None) -> bool:
    return (
        task is not None
        and task.lineage.extra.get("scientist") == SCIENTIST_NAME
        and task.lineage.extra.get("family") in FAMILIES
    )


def _kind(task: TaskDir | None) -> Kind:
    """A task's (family, wrap), with (None, None) for tasks other scientists wrote."""
    if not _is_ours(task):
        return (None, None)
    extra = task.lineage.extra
    return (extra["family"], (extra.get("params") or {}).get("wrap"))


def _parent_knobs(parent: TaskDir) -> tuple[Family, int, str | None]:
    """The parent's family, level and wrap, read back from its metadata.json."""
    extra = parent.lineage.extra
    family = get_family(extra["family"])
    try:
        level = int(extra["level"])
    except (KeyError, TypeError, ValueError):
        raise TaskRejected(f"parent {parent.task_id} has no valid level in metadata") from None
    return family, level, (extra.get("params") or {}).get("wrap")
