"""The LLM scientist: a language model writes tasks, tests them, and fixes them.

The flow is AC/DC's (after Automated Capability Discovery):

1. The scientist is shown the parent task (``task.json``, ``task.py`` and its
   pass rate) and a few other archive tasks, and asked for an initial, easier,
   harder or novel task as one JSON object: the ``task.json`` fields, a
   ``thought``, the full ``task.py`` source as ``task_family``, and ``done``.
2. Each reply is written to a scratch directory and run in the sandbox — the
   run's own pool when one is given, else one pool per request shared by its
   drafts (``get_tasks``, ``get_instructions``); the scientist then answers one
   instance itself and its answer is scored in the sandbox. What happened —
   errors, the instance count, an instruction, its own answer and score — goes
   back to it with a request to fix the task or reply ``done``.
3. A reply marked done whose task passes the smoke test (at least one
   instance, non-empty instructions, a score in [0, 1] for a dummy answer) is
   accepted; when the rounds run out, the last draft that passed is accepted;
   otherwise the request is rejected with the last problem seen.

Replies are parsed leniently (see :func:`parse_reply`) because models wrap
JSON in prose and fences, leave trailing commas, or put the code in its own
block. The chat client is anything with a ``chat`` method and a ``model``
name — :class:`qd_llm.inference.openai_client.OpenAIChatClient` in practice —
so this module never imports an inference backend. Task code only ever runs in
the sandbox.
"""

import ast
import dataclasses
import functools
import hashlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from qd_llm.errors import QdLlmError
from qd_llm.tasks import prompts
from qd_llm.tasks.extract import extract_answer
from qd_llm.tasks.sandbox import SandboxConfig, SandboxError, SandboxPool, ScoreJob
from qd_llm.tasks.scientist import Scientist, TaskRejected, TaskRequest
from qd_llm.tasks.taskdir import TASK_JSON_FIELDS, Lineage, TaskDir, TaskInfo, slugify, write_task

logger = logging.getLogger(__name__)

REQUIRED_METHODS = ("get_tasks", "get_instructions", "score")
# A submission no sensible task accepts; scoring it checks that score() runs and
# returns a number in [0, 1].
SMOKE_SUBMISSION = "qd-llm smoke test: not an answer"
_CODE_KEYS = ("task_family", "task_code", "code", "task_py")
_NESTED_INFO_KEYS = ("task_json", "task", "task_info")
_TRUE_WORDS = {"true", "yes", "y", "1", "done"}
_FALSE_WORDS = {"false", "no", "n", "0", "", "none", "null"}
_MAX_JSON_STARTS = 64  # '{' positions tried per reply; bounds the work on garbage
_MAX_REPLY_CHARS = 200_000
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)
_JSON_CONSTANTS = {"true": True, "false": False, "null": None}
_CLOSER_AHEAD = re.compile(r"\s*[}\]]")
_SHOWN_CHARS = 1500  # instruction / answer excerpt length in feedback


class ChatClient(Protocol):
    """What the scientist needs from a chat model (OpenAIChatClient fits)."""

    model: str

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int = 512,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> str: ...


# --- reading replies -------------------------------------------------------------------


class ReplyError(ValueError):
    """A scientist reply that holds no usable task; ``str(e)`` says why."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScientistReply:
    """One parsed scientist reply.

    Attributes:
        thought: The scientist's stated reasoning (may be empty).
        info: The ``task.json`` fields.
        code: The ``task.py`` source (not yet checked or run).
        done: Whether the scientist declared the task final.
    """

    thought: str
    info: TaskInfo
    code: str
    done: bool


def _outside_strings(text: str, start: int = 0):
    """Yields ``(index, char)`` for the characters of ``text`` outside JSON strings.

    Strings are double-quoted with backslash escapes, so braces and commas in
    code held in a JSON string are not mistaken for structure.
    """
    in_string, escaped = False, False
    for i in range(start, len(text)):
        char = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        else:
            yield i, char


def _object_end(text: str, start: int) -> int | None:
    """Index just past the ``}`` closing the ``{`` at ``start``; None if it never closes."""
    depth = 0
    for i, char in _outside_strings(text, start):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _drop_trailing_commas(text: str) -> str:
    """Removes commas that directly precede ``}`` or ``]`` outside strings."""
    drop = {
        i for i, char in _outside_strings(text) if char == "," and _CLOSER_AHEAD.match(text, i + 1)
    }
    return "".join(char for i, char in enumerate(text) if i not in drop)


class _JsonNames(ast.NodeTransformer):
    """Turns the bare names ``true``/``false``/``null`` into Python constants."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in _JSON_CONSTANTS:
            return ast.copy_location(ast.Constant(_JSON_CONSTANTS[node.id]), node)
        return node


def _python_literal(text: str):
    """Reads a dict written as a Python literal (single quotes, trailing commas).

    ``ast.literal_eval`` evaluates literals only, never calls or names, so this
    is safe on untrusted text.
    """
    tree = _JsonNames().visit(ast.parse(text.strip(), mode="eval"))
    return ast.literal_eval(tree)


def _load_object(span: str) -> dict | None:
    """``span`` as a dict, trying strict JSON, then repaired JSON, then a Python literal."""
    attempts = (
        lambda s: json.loads(s, strict=False),  # strict=False: raw newlines in strings
        lambda s: json.loads(_drop_trailing_commas(s), strict=False),
        _python_literal,
    )
    for attempt in attempts:
        try:
            obj = attempt(span)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _find_reply_object(text: str) -> dict:
    """The first JSON-like object in ``text`` that carries task fields."""
    expected = {*TASK_JSON_FIELDS, *_CODE_KEYS, *_NESTED_INFO_KEYS, "done", "thought"}
    starts = [m.start() for m in re.finditer(r"\{", text)][:_MAX_JSON_STARTS]
    unclosed = False
    for start in starts:
        end = _object_end(text, start)
        if end is None:
            unclosed = True
            continue
        obj = _load_object(text[start:end])
        if obj is not None and expected & set(obj):
            return obj
    if not starts:
        raise ReplyError("it contains no JSON object")
    if unclosed:
        raise ReplyError("its JSON object never closes (the reply looks truncated)")
    raise ReplyError("no JSON object in it could be read or has the task fields")


def _as_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    word = str(value).strip().strip(".!").lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ReplyError(f'"done" must be true or false, got {value!r}')


def _strip_fences(code: str) -> str:
    """The body of a fenced block wrapping ``code`` (models fence code inside JSON too)."""
    match = _FENCE.search(code)
    return match.group(2) if match and "TaskFamily" in match.group(2) else code


def _code_block(text: str) -> str | None:
    """The first fenced block in ``text`` that defines ``TaskFamily``."""
    for match in _FENCE.finditer(text):
        if "class TaskFamily" in match.group(2):
            return match.group(2)
    return None


def _difficulty(value) -> str:
    match = re.search(r"[1-5]", str(value))
    return match.group(0) if match else "1"


def parse_reply(text: str) -> ScientistReply:
    """Reads a scientist reply, tolerating the usual ways models bend the format.

    Accepted: the JSON object bare or in a ```json fence, with prose before or
    after; trailing commas; Python-style single quotes and True/False;
    ``done`` as a boolean or a word ("true", "True", "yes"); the task.json fields
    nested under ``task_json``; the code in its own ```python block instead of
    in ``task_family``.

    Raises:
        ReplyError: No usable task in the reply; the message says what is missing.
    """
    if not text or not text.strip():
        raise ReplyError("the reply is empty")
    if len(text) > _MAX_REPLY_CHARS:
        raise ReplyError(f"the reply is longer than {_MAX_REPLY_CHARS} characters")
    obj = _find_reply_object(text)
    for key in _NESTED_INFO_KEYS:
        if isinstance(obj.get(key), dict):
            obj = {**obj.pop(key), **obj}
    code = next((obj[k] for k in _CODE_KEYS if isinstance(obj.get(k), str) and obj[k].strip()), "")
    code = _strip_fences(code)
    if "class TaskFamily" not in code:
        code = _code_block(text) or code
    if not code.strip():
        raise ReplyError('it has no task code ("task_family" is missing or empty)')
    fields = {k: obj[k] for k in TASK_JSON_FIELDS if obj.get(k) not in (None, "")}
    fields["estimated_human_difficulty"] = _difficulty(fields.get("estimated_human_difficulty"))
    try:
        info = TaskInfo.from_json(fields)
    except QdLlmError as e:
        raise ReplyError(str(e)) from None
    return ScientistReply(
        thought=str(obj.get("thought", "")),
        info=info,
        code=code.strip() + "\n",
        done=_as_bool(obj.get("done", False)),
    )


def static_problems(code: str) -> list[str]:
    """Problems visible without running ``code``: syntax, a missing class or method.

    Only parses the source (nothing is executed).
    """
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        return [f"task.py does not parse: {e.msg} at line {e.lineno}"]
    family = next(
        (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TaskFamily"), None
    )
    if family is None:
        return ["task.py defines no top-level class TaskFamily"]
    defined = {n.name for n in family.body if isinstance(n, ast.FunctionDef)}
    missing = [m for m in REQUIRED_METHODS if m not in defined]
    return [f"TaskFamily lacks {', '.join(missing)}"] if missing else []


# --- the scientist ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class DraftReport:
    """What the sandbox made of one draft.

    Attributes:
        problems: Failures that keep the draft from being accepted (empty: it passed).
        text: The report shown to the scientist.
        own_score: The score of the scientist's own answer, if one was scored.
    """

    problems: tuple[str, ...]
    text: str
    own_score: float | None = None

    @property
    def passed(self) -> bool:
        return not self.problems


class LLMScientist(Scientist):
    """Writes tasks with a chat model, testing each draft in the sandbox.

    Args:
        client: The chat model (e.g. an :class:`~qd_llm.inference.openai_client.OpenAIChatClient`).
        sandbox: Where drafts run: a running pool (the run's, with its limits and
            judge; it stays open), or limits for a pool started per request
            (a pool running elsewhere, e.g. on Ray actors, lends its limits);
            defaults to ``SandboxConfig()``.
        max_reflections: Follow-up rounds after the first reply (so at most
            ``1 + max_reflections`` drafts per request).
        num_examples: Archive tasks shown besides the parent.
        temperature: Sampling temperature for drafts.
        max_tokens: Tokens per draft reply.
        answer_max_tokens: Tokens for the scientist's own answer to an instance.
    """

    name = "llm"

    def __init__(
        self,
        *,
        client: ChatClient,
        sandbox: SandboxPool | SandboxConfig | None = None,
        max_reflections: int = 3,
        num_examples: int = 3,
        temperature: float = 0.7,
        max_tokens: int = 2048,
        answer_max_tokens: int = 512,
    ):
        if max_reflections < 0 or num_examples < 0:
            raise QdLlmError("max_reflections and num_examples must be >= 0")
        if max_tokens < 1 or answer_max_tokens < 1:
            raise QdLlmError("max_tokens and answer_max_tokens must be >= 1")
        self.client = client
        self.sandbox = sandbox or SandboxConfig()
        self.max_reflections = max_reflections
        self.num_examples = num_examples
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.answer_max_tokens = answer_max_tokens
        self._drafts = 0

    @classmethod
    def from_config(cls, config, *, sandbox=None, client_factory=None) -> "LLMScientist":
        """Asks the environment's endpoint (``client_factory()``) and tries drafts in ``sandbox``.

        Raises:
            QdLlmError: No ``client_factory`` was given.
        """
        if client_factory is None:
            raise QdLlmError("the llm scientist needs a chat client factory")
        return cls(client=client_factory(), sandbox=sandbox)

    def propose(self, request: TaskRequest, out_root: Path) -> TaskDir:
        """Asks the model for a task, refines it for up to ``max_reflections`` rounds.

        Raises:
            TaskRejected: No draft passed the smoke test; the reason gives the
                last problem seen.
            QdLlmError: The chat server kept failing or refused the request
                (a configuration problem, not a bad task).
        """
        if isinstance(self.sandbox, SandboxPool):
            return self._propose(request, Path(out_root), self.sandbox)
        # A pool running elsewhere (Ray actors) cannot see local drafts: only its limits apply.
        config = getattr(self.sandbox, "config", self.sandbox)
        with SandboxPool(config=config, workers=1) as pool:
            return self._propose(request, Path(out_root), pool)

    def _propose(self, request: TaskRequest, out_root: Path, pool: SandboxPool) -> TaskDir:
        first = {"role": "user", "content": self._first_request(request)}
        history = [{"role": "system", "content": prompts.SYSTEM_PROMPT}, first]
        rounds = 1 + self.max_reflections
        accepted: tuple[ScientistReply, DraftReport, int] | None = None
        last_problem = "no reply"
        for round_index in range(rounds):
            text = self.client.chat(
                history,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                seed=request.seed + round_index,
            )
            try:
                reply = parse_reply(text)
            except ReplyError as e:
                last_problem = outcome = f"unreadable reply: {e}"
                follow_up = prompts.PARSE_FAILURE.format(
                    round=round_index + 2, rounds=rounds, reason=e
                )
            else:
                report = self._try_draft(reply, request.seed + round_index, pool)
                outcome = "; ".join(report.problems) or f"passed (done={reply.done})"
                if report.passed:
                    accepted = (reply, report, round_index)
                    if reply.done:
                        break
                else:
                    last_problem = outcome
                follow_up = prompts.FEEDBACK.format(
                    round=round_index + 2, rounds=rounds, report=report.text
                )
            logger.debug("scientist round %d of %d: %s", round_index + 1, rounds, outcome)
            # Earlier drafts are superseded: keep the first request and the latest round.
            history = [*history[:2], {"role": "assistant", "content": text}]
            history.append({"role": "user", "content": follow_up})
        if accepted is None:
            raise TaskRejected(f"no working task after {rounds} round(s); last: {last_problem}")
        return self._write(*accepted, request, out_root)

    # -- prompts ------------------------------------------------------------------

    def _first_request(self, request: TaskRequest) -> str:
        rate = prompts.pass_rate_text(request.parent_pass_rate)
        instruction = prompts.OPERATION_INSTRUCTIONS[request.operation].format(pass_rate_text=rate)
        blocks = []
        if request.parent is not None:
            code = prompts.PARENT_CODE.format(pass_rate_text=rate, code=request.parent.code.strip())
            blocks.append(_task_block("Parent task", request.parent, code))
        examples = [t for t in request.context if request.parent is None or t != request.parent]
        blocks += [_task_block("Existing task", t, "") for t in examples[: self.num_examples]]
        return prompts.FIRST_REQUEST.format(
            operation_instruction=instruction, tasks="\n".join(blocks)
        )

    # -- testing a draft ------------------------------------------------------------

    def _try_draft(self, reply: ScientistReply, seed: int, pool: SandboxPool) -> DraftReport:
        problems = static_problems(reply.code)
        if problems:
            return DraftReport(problems=tuple(problems), text="\n".join(problems))
        self._drafts += 1
        draft = write_task(
            _scratch().name,
            task_id=f"draft-{id(self):x}-{self._drafts}",
            code=reply.code,
            info=reply.info,
            lineage=Lineage(),
        )
        try:
            try:
                instances = pool.load_instances(draft.path)
            except SandboxError as e:
                return DraftReport(problems=(str(e),), text=str(e))
            empty = sorted(i for i, inst in instances.items() if not inst.instructions.strip())
            ids = sorted(instances)
            shown = instances[ids[seed % len(ids)]]
            answer_text = self.client.chat(
                [
                    {"role": "system", "content": prompts.ANSWER_SYSTEM_PROMPT},
                    {"role": "user", "content": shown.instructions},
                ],
                temperature=0.0,
                max_tokens=self.answer_max_tokens,
                seed=seed,
            )
            answer = extract_answer(answer_text)
            own, smoke = pool.score_many(
                [
                    ScoreJob(
                        task_dir=draft.path,
                        instance_id=shown.instance_id,
                        data=shown.data,
                        submission=submission,
                    )
                    for submission in (answer, SMOKE_SUBMISSION)
                ]
            )
        finally:
            shutil.rmtree(draft.path, ignore_errors=True)
        problems = []
        if empty:
            problems.append(f"get_instructions() returned empty text for {', '.join(empty[:5])}")
        if smoke.reason is not None:
            problems.append(f"score() failed on a dummy answer: {smoke.reason}")
        own_line = f"{own.score:.2f}" + (f" ({own.reason})" if own.reason else "")
        lines = [
            f"get_tasks() returned {len(instances)} instance(s).",
            f"Instructions of instance {shown.instance_id!r}:\n{_excerpt(shown.instructions)}",
            f"Your own answer to it:\n{_excerpt(answer_text)}",
            f"Extracted answer: {answer!r}; score(): {own_line}",
            *problems,
        ]
        return DraftReport(
            problems=tuple(problems),
            text="\n\n".join(lines),
            own_score=own.score,
        )

    def _write(
        self,
        reply: ScientistReply,
        report: DraftReport,
        round_index: int,
        request: TaskRequest,
        out_root: Path,
    ) -> TaskDir:
        digest = hashlib.sha256(reply.code.encode("utf-8")).hexdigest()[:8]
        lineage = Lineage(
            generation_type=request.operation,
            parent_task=request.parent.task_id if request.parent is not None else None,
            parent_pass_rate=request.parent_pass_rate,
            created_at_generation=request.generation,
            extra={
                "scientist": self.name,
                "model": self.client.model,
                "reflections": round_index,
                "declared_done": reply.done,
                "scientist_score": report.own_score,
            },
        )
        return write_task(
            out_root,
            task_id=f"{slugify(reply.info.name, max_len=48)}-{digest}",
            code=reply.code,
            info=reply.info,
            lineage=lineage,
        )


@functools.cache
def _scratch() -> tempfile.TemporaryDirectory:
    """Where drafts are written: one folder for the process's lifetime (removed at
    exit), so a pool binds it into its sandboxes once and it never vanishes while a
    pool still binds it."""
    return tempfile.TemporaryDirectory(prefix="qd-llm-drafts-")


def _excerpt(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + " …[cut]"


def _task_block(heading: str, task: TaskDir, extra: str) -> str:
    info = task.info
    return prompts.TASK_BLOCK.format(
        heading=heading,
        name=info.name,
        description=info.description,
        capability=info.capability,
        difficulty=info.difficulty,
        example=info.example_instruction or "(none)",
        extra=extra,
    )
