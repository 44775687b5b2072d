"""Benchmark import: one task directory per benchmark question.

``import_benchmark("humaneval", out)`` writes ``out/humaneval_000`` ... each an
AC/DC task directory with a single instance whose stdlib-only ``task.py``
scores an extracted answer (see :mod:`qd_llm.tasks.importers.scoring` for the
rules and :mod:`qd_llm.tasks.importers.readers` for the formats).
"""

import dataclasses
import random
from pathlib import Path

from qd_llm.errors import QdLlmError
from qd_llm.tasks.importers.questions import INSTANCE_ID, Question, write_question
from qd_llm.tasks.importers.readers import read_source
from qd_llm.tasks.taskdir import TaskDir

__all__ = ["INSTANCE_ID", "ImportResult", "Question", "import_benchmark", "read_source"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImportResult:
    """What an import wrote.

    Attributes:
        format: ``humaneval``, ``bigbench`` or ``jsonl``.
        out: The output folder.
        tasks: The task directories, in the order they were selected.
    """

    format: str
    out: Path
    tasks: list[TaskDir]

    def summary(self) -> dict:
        return {"count": len(self.tasks), "out": str(self.out), "format": self.format}


def import_benchmark(
    source: str | Path,
    out: str | Path,
    *,
    limit: int | None = None,
    seed: int | None = None,
    overwrite: bool = False,
) -> ImportResult:
    """Writes one task directory per question of ``source`` under ``out``.

    Args:
        source: ``humaneval``, a ``.jsonl``/``.jsonl.gz`` file, a BIG-bench
            ``task.json`` or its directory (see :func:`read_source`).
        out: The output folder (created if needed).
        limit: Keep at most this many questions.
        seed: Shuffle the questions with this seed before applying ``limit``;
            without it the first ``limit`` questions in source order are kept.
        overwrite: Replace task directories that already exist (else they are kept).

    Returns:
        The format and the written task directories.
    """
    if limit is not None and limit < 1:
        raise QdLlmError(f"--limit must be at least 1, got {limit}")
    fmt, questions = read_source(source)
    if seed is not None:
        random.Random(seed).shuffle(questions)
    questions = questions[:limit]
    out = Path(out)
    source_name = str(source)
    tasks = [
        write_question(out, question, source=source_name, fmt=fmt, overwrite=overwrite)
        for question in questions
    ]
    return ImportResult(format=fmt, out=out, tasks=tasks)
