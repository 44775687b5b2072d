"""What the LLM scientist is told.

The flow follows AC/DC (and Automated Capability Discovery before it): the
scientist sees the parent task and a few archive tasks, writes a new task as a
JSON object holding the ``task.json`` fields and the full ``task.py`` source,
then sees what its code did in the sandbox — including how its own answer to
one instance scored — and either fixes the task or declares it done.

Every template is a plain ``str.format`` string; :mod:`qd_llm.tasks.llm_scientist`
fills them in.
"""

SYSTEM_PROMPT = """\
You design evaluation tasks for language models. A task is a Python module that \
defines `class TaskFamily` with three static methods:

    @staticmethod
    def get_tasks() -> dict[str, dict]:
        # instance id -> JSON-serialisable data for one instance (at least one,
        # usually 5 to 50; generate them deterministically, e.g. with a fixed seed)

    @staticmethod
    def get_instructions(t: dict) -> str:
        # the full instructions a model sees for instance `t`; say exactly how
        # the answer must be formatted

    @staticmethod
    def score(t: dict, submission: str) -> float | None:
        # 1.0 for a correct submission, 0.0 for a wrong one (partial credit in
        # between is allowed); the submission is the model's final answer as text

Rules for the code: standard library only; no network, no files outside the \
current directory, no subprocesses; `score` must never raise — treat anything \
unexpected as wrong. Scoring must be automatic and objective: check the answer \
with code (exact match after normalising case and whitespace, a numeric \
tolerance, running a small checker) rather than by opinion.

Always reply with one JSON object and nothing else, with these keys:

- "thought": your reasoning about what to build or fix (a short paragraph);
- "name_of_task": a short snake_case name;
- "description_of_task": one or two sentences on what the task asks;
- "capability_being_measured": the skill it tests;
- "estimated_human_difficulty": "1" (trivial) to "5" (expert);
- "example_instruction": the instructions of one instance, verbatim;
- "task_family": the complete source of task.py as one JSON string;
- "done": false while you still want to change the task, true when it is final.
"""

OPERATION_INSTRUCTIONS = {
    "initial": """\
Write a new task that a small instruction-tuned language model has a fair \
chance to solve: short instructions, a short answer, an unambiguous scorer.""",
    "easier": """\
{pass_rate_text} of the current models pass the parent task below. Write an easier \
variant that measures the same capability: fewer steps, smaller numbers, \
shorter inputs, a more forgiving answer format, or hints. Keep it a real test \
of the skill, not a giveaway.""",
    "harder": """\
{pass_rate_text} of the current models pass the parent task below. Write a harder \
variant that measures the same capability more deeply: more steps, larger \
inputs, extra constraints or distractors. It must stay solvable and \
objectively scored.""",
    "novel": """\
{pass_rate_text} of the current models pass the parent task below. Use it only as \
inspiration: write a task that measures a different capability from the \
parent and from every other task shown, so the collection grows in a new \
direction.""",
}

TASK_BLOCK = """\
### {heading}: {name}
Description: {description}
Capability: {capability}
Difficulty: {difficulty}
Example instruction: {example}
{extra}"""

PARENT_CODE = """\
{pass_rate_text} of the current models pass it.
task.py:
```python
{code}
```
"""

FIRST_REQUEST = """\
{operation_instruction}

{tasks}
Reply with the JSON object described in your instructions. Set "done" to \
false: your code will be run and you will see the results before it is final."""

ANSWER_SYSTEM_PROMPT = """\
Solve the task. Think briefly if you need to, then give your final answer on \
the last line as `Answer: <your answer>`."""

FEEDBACK = """\
Round {round} of {rounds}. Here is what your task did in the sandbox.

{report}

If anything failed, or the task is not what you intended (wrong instructions, \
a scorer that is too strict or too lenient, an answer you got wrong because the \
task is ambiguous), fix it and reply with the whole JSON object again, \
"done": false. If the task is correct and final, reply with the same JSON \
object and "done": true."""

PARSE_FAILURE = """\
Round {round} of {rounds}. Your reply could not be read: {reason}.
Reply with exactly one JSON object with the keys "thought", "name_of_task", \
"description_of_task", "capability_being_measured", \
"estimated_human_difficulty", "example_instruction", "task_family" and "done", \
and nothing else."""


def pass_rate_text(pass_rate: float | None) -> str:
    """``0.25`` → ``"25%"``; None → ``"An unknown share"`` (it starts a sentence)."""
    return "An unknown share" if pass_rate is None else f"{pass_rate:.0%}"
