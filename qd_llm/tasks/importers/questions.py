"""One benchmark question, and the self-contained task directory it becomes.

Every imported question becomes one task directory holding exactly one
instance (coverage counts questions, as in the AC/DC paper). The instance's
data is JSON carried inside ``task.py`` next to a verbatim copy of
:mod:`qd_llm.tasks.importers.scoring`, so the file runs under ``python3 -I -S``
in the sandbox with nothing but the standard library.
"""

import dataclasses
import inspect
import json
from pathlib import Path

from qd_llm.tasks.importers import scoring
from qd_llm.tasks.taskdir import Lineage, TaskDir, TaskInfo, write_task

INSTANCE_ID = "0"
KINDS = ("text", "choice", "code")
# How much of a question goes into description_of_task: enough that the
# sentence embedding (task archive, skill descriptors) tells questions apart.
DESCRIPTION_QUESTION_CHARS = 300

ANSWER_FORMAT = "End your response with a final line of the form 'Answer: <your answer>'."

_TASK_CODE = '''"""Imported benchmark question {question_id!r} from {source!r}.

Written by `qd-llm tasks import`; the scoring rules below are a copy of
qd_llm.tasks.importers.scoring.
"""

import json

{scoring}

INSTANCE = json.loads({data!r})


class TaskFamily:
    @staticmethod
    def get_tasks():
        return {{{instance_id!r}: INSTANCE}}

    @staticmethod
    def get_instructions(t):
        return t["instructions"]

    @staticmethod
    def score(t, submission):
        return score_instance(t, submission)
'''


@dataclasses.dataclass(frozen=True, kw_only=True)
class Question:
    """One benchmark question, ready to become a task directory.

    Attributes:
        task_id: The task directory name (``humaneval_000``, ``bigbench_<task>_0001``,
            ``jsonl_<stem>_0001``).
        question_id: The question's id in its source (``HumanEval/0``, line number, ...).
        data: The instance data handed to ``score``: ``kind`` (one of :data:`KINDS`),
            ``instructions`` and the fields its scoring rule reads (see
            :mod:`qd_llm.tasks.importers.scoring`). Must round-trip through JSON.
        info: The ``task.json`` fields.
    """

    task_id: str
    question_id: str
    data: dict
    info: TaskInfo

    def __post_init__(self):
        if self.data.get("kind") not in KINDS:
            raise ValueError(f"data['kind'] must be one of {KINDS}, got {self.data.get('kind')!r}")


def describe(prefix: str, question_text: str) -> str:
    """``description_of_task``: a fixed prefix plus the start of the question."""
    text = " ".join(question_text.split())
    if len(text) > DESCRIPTION_QUESTION_CHARS:
        text = text[:DESCRIPTION_QUESTION_CHARS].rstrip() + "..."
    return f"{prefix} Question: {text}"


def task_code(question: Question, *, source: str) -> str:
    """The ``task.py`` source for ``question``."""
    return _TASK_CODE.format(
        question_id=question.question_id,
        source=source,
        scoring=inspect.getsource(scoring).strip(),
        data=json.dumps(question.data, ensure_ascii=False, sort_keys=True),
        instance_id=INSTANCE_ID,
    )


def write_question(
    root: Path, question: Question, *, source: str, fmt: str, overwrite: bool = False
) -> TaskDir:
    """Writes ``question`` as the task directory ``root/question.task_id``.

    Args:
        root: The output folder.
        question: The question.
        source: Where it came from (recorded in ``metadata.json``).
        fmt: The source format (``humaneval``, ``bigbench``, ``jsonl``).
        overwrite: Replace an existing directory of the same name.

    Returns:
        The written task directory.
    """
    lineage = Lineage(
        generation_type="imported",
        extra={"source": source, "format": fmt, "question_id": question.question_id},
    )
    return write_task(
        root,
        task_id=question.task_id,
        code=task_code(question, source=source),
        info=question.info,
        lineage=lineage,
        overwrite=overwrite,
    )
