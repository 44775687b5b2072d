"""Task directories in the AC/DC reference layout.

A task directory holds three files::

    task.py        class TaskFamily with methods (static or plain)
                     get_tasks() -> {instance_id: data}
                     get_instructions(data) -> str
                     score(data, submission) -> float in [0, 1] (or None)
    task.json      name_of_task, description_of_task, capability_being_measured,
                   estimated_human_difficulty ("1".."5"), example_instruction
    metadata.json  lineage: parent_task, generation_type, parent_pass_rate,
                   created_at_generation, answer_extraction (plus free-form
                   extras such as the scientist that wrote it)

``answer_extraction`` says what ``score`` receives (see :mod:`qd_llm.tasks.extract`).
Task directories written for the AC/DC reference lack it (their metadata.json
is e.g. ``{"embedding": []}``) and get ``acdc``, the reference's own extraction,
so they score as they do there; a metadata.json without it but with
``created_at_generation`` was written by qd_llm before the field existed and
gets ``qd_llm``. The reference's adapted tasks say ``adaptation_harder`` etc.
as their generation type; that is read as ``harder``.

This module only reads and writes those files. ``task.py`` is untrusted code:
it is never imported here; everything it computes is computed by
:mod:`qd_llm.tasks.sandbox`.
"""

import dataclasses
import json
import re
from pathlib import Path

from qd_llm import atomic
from qd_llm.errors import QdLlmError
from qd_llm.tasks.extract import EXTRACTIONS

TASK_CODE = "task.py"
TASK_JSON = "task.json"
METADATA_JSON = "metadata.json"

TASK_JSON_FIELDS = (
    "name_of_task",
    "description_of_task",
    "capability_being_measured",
    "estimated_human_difficulty",
    "example_instruction",
)
GENERATION_TYPES = ("initial", "easier", "harder", "novel", "imported")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskInfo:
    """The ``task.json`` fields.

    Attributes:
        name: ``name_of_task``, a short snake_case name.
        description: ``description_of_task``; its embedding places the task in
            skill space.
        capability: ``capability_being_measured``.
        difficulty: ``estimated_human_difficulty``, "1" (easy) to "5" (hard).
        example_instruction: One instance's instructions, for humans and prompts.
    """

    name: str
    description: str
    capability: str
    difficulty: str = "1"
    example_instruction: str = ""

    def to_json(self) -> dict:
        return {
            "name_of_task": self.name,
            "description_of_task": self.description,
            "capability_being_measured": self.capability,
            "estimated_human_difficulty": str(self.difficulty),
            "example_instruction": self.example_instruction,
        }

    @classmethod
    def from_json(cls, obj: dict) -> "TaskInfo":
        missing = [k for k in TASK_JSON_FIELDS[:3] if not str(obj.get(k, "")).strip()]
        if missing:
            raise QdLlmError(f"task.json lacks required field(s): {', '.join(missing)}")
        return cls(
            name=str(obj["name_of_task"]),
            description=str(obj["description_of_task"]),
            capability=str(obj["capability_being_measured"]),
            difficulty=str(obj.get("estimated_human_difficulty", "1")),
            example_instruction=str(obj.get("example_instruction", "")),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lineage:
    """The ``metadata.json`` fields.

    Attributes:
        generation_type: One of :data:`GENERATION_TYPES`.
        parent_task: Directory name of the task this one was derived from.
        parent_pass_rate: The parent's pass rate when this task was made.
        created_at_generation: Loop generation at creation (0 for seeds).
        answer_extraction: What ``score`` receives of a reply, one of
            :data:`~qd_llm.tasks.extract.EXTRACTIONS`.
        extra: Anything else (scientist name, family, level, source file).
    """

    generation_type: str = "initial"
    parent_task: str | None = None
    parent_pass_rate: float | None = None
    created_at_generation: int = 0
    answer_extraction: str = "qd_llm"
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.generation_type not in GENERATION_TYPES:
            raise QdLlmError(
                f"generation_type must be one of {', '.join(GENERATION_TYPES)}, "
                f"got {self.generation_type!r}"
            )
        if self.answer_extraction not in EXTRACTIONS:
            raise QdLlmError(
                f"answer_extraction must be one of {', '.join(EXTRACTIONS)}, "
                f"got {self.answer_extraction!r}"
            )

    def to_json(self) -> dict:
        return {
            "parent_task": self.parent_task,
            "generation_type": self.generation_type,
            "parent_pass_rate": self.parent_pass_rate,
            "created_at_generation": self.created_at_generation,
            "answer_extraction": self.answer_extraction,
            **self.extra,
        }

    @classmethod
    def from_json(cls, obj: dict) -> "Lineage":
        known = {
            "parent_task",
            "generation_type",
            "parent_pass_rate",
            "created_at_generation",
            "answer_extraction",
        }
        written_by_qd_llm = "created_at_generation" in obj
        generation_type = str(obj.get("generation_type", "initial"))
        return cls(
            generation_type=generation_type.removeprefix("adaptation_"),
            parent_task=obj.get("parent_task"),
            parent_pass_rate=obj.get("parent_pass_rate"),
            created_at_generation=int(obj.get("created_at_generation", 0) or 0),
            answer_extraction=obj.get(
                "answer_extraction", "qd_llm" if written_by_qd_llm else "acdc"
            ),
            extra={k: v for k, v in obj.items() if k not in known},
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskDir:
    """A task directory on disk, read but never executed.

    Attributes:
        path: The directory.
        info: Its ``task.json``.
        lineage: Its ``metadata.json``.
    """

    path: Path
    info: TaskInfo
    lineage: Lineage

    @property
    def task_id(self) -> str:
        """The directory name, unique within a pool."""
        return self.path.name

    @property
    def code(self) -> str:
        return (self.path / TASK_CODE).read_text(encoding="utf-8")


_SLUG = re.compile(r"[^a-z0-9_]+")
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,199}")


def slugify(name: str, *, max_len: int = 60) -> str:
    """Turns a task name into a safe directory-name stem."""
    slug = _SLUG.sub("_", name.lower()).strip("_")
    return (slug or "task")[:max_len]


def write_task(
    root: str | Path,
    *,
    task_id: str,
    code: str,
    info: TaskInfo,
    lineage: Lineage,
    overwrite: bool = False,
) -> TaskDir:
    """Writes a task directory ``root/task_id`` atomically.

    Args:
        root: The pool folder.
        task_id: The directory name; must be a slug (see :func:`slugify`).
        code: The ``task.py`` source.
        info: The ``task.json`` fields.
        lineage: The ``metadata.json`` fields.
        overwrite: Replace an existing directory of that name.

    Returns:
        The written task.
    """
    if not _TASK_ID.fullmatch(task_id):
        raise QdLlmError(f"task id {task_id!r} is not a safe directory name")
    path = Path(root) / task_id
    with atomic.directory(path, overwrite=overwrite) as tmp:
        (tmp / TASK_CODE).write_text(code, encoding="utf-8")
        (tmp / TASK_JSON).write_text(json.dumps(info.to_json(), indent=2) + "\n")
        (tmp / METADATA_JSON).write_text(json.dumps(lineage.to_json(), indent=2) + "\n")
    return TaskDir(path=path, info=info, lineage=lineage)


def read_task(path: str | Path) -> TaskDir:
    """Reads a task directory's JSON files (``task.py`` is only checked to exist).

    Raises:
        QdLlmError: A file is missing or not valid JSON.
    """
    path = Path(path)
    if not (path / TASK_CODE).is_file():
        raise QdLlmError(f"{path} is not a task directory: no {TASK_CODE}")
    try:
        info = TaskInfo.from_json(json.loads((path / TASK_JSON).read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise QdLlmError(f"{path} is not a task directory: no {TASK_JSON}") from None
    except json.JSONDecodeError as e:
        raise QdLlmError(f"{path / TASK_JSON} is not valid JSON: {e}") from None
    meta_path = path / METADATA_JSON
    try:
        lineage = (
            Lineage.from_json(json.loads(meta_path.read_text(encoding="utf-8")))
            if meta_path.exists()
            else Lineage()
        )
    except json.JSONDecodeError as e:
        raise QdLlmError(f"{meta_path} is not valid JSON: {e}") from None
    return TaskDir(path=path, info=info, lineage=lineage)


def list_tasks(root: str | Path) -> list[TaskDir]:
    """Reads every task directory directly under ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise QdLlmError(f"task folder {root} does not exist")
    return [read_task(p) for p in sorted(root.iterdir()) if (p / TASK_CODE).is_file()]
