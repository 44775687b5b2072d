"""The AC/DC reference's two LLM checks of tasks, on any chat model.

* :class:`TaskJudge` answers ``sandbox_eval_helper.eval_with_llm_judge`` calls
  of task code (a :class:`~qd_llm.tasks.sandbox.SandboxPool` relays them here):
  the judge sees the instructions, the submission and optional criteria, and
  ends its reply with ``DECISION: Yes`` or ``DECISION: No``.
* :class:`InterestingCheck` is the reference's "is this task interestingly
  new" check: a candidate task and its nearest tasks in the pool are shown to
  the model, which ends with ``Decision: Yes`` or ``Decision: No``. It fits
  :class:`~qd_llm.tasks.archive.TaskArchive`'s ``is_interesting`` hook.

Both take anything with ``chat(messages, *, temperature, max_tokens) -> str``
(an :class:`~qd_llm.inference.openai_client.OpenAIChatClient` in practice), so
this module imports no inference backend. Sampling follows the reference
(temperature 0.7). An unreadable verdict is "No", as there.
"""

import re
import threading
from collections.abc import Callable, Sequence

from qd_llm.errors import QdLlmError
from qd_llm.tasks.taskdir import TaskInfo

JUDGE_SYSTEM_PROMPT = """\
You judge whether an AI assistant succeeded at a task. You are given the task's \
instructions, the assistant's submission and possibly additional criteria the \
submission must meet. Weigh correctness, relevance, helpfulness, depth and \
creativity as the task calls for, and check every additional criterion. The \
length of the submission must not sway you.

Reply in exactly this format:

THOUGHT:
<brief reasoning about the submission and the criteria>

DECISION:
<Yes or No>"""

JUDGE_PROMPT = '''Instructions: {instructions}
Submission: {submission}

Additional criteria:
"""
{criteria}
"""
'''

INTERESTING_SYSTEM_PROMPT = """\
You curate a collection of task families that probe the capabilities of \
language models. You are shown a task family that was just written and the \
most similar task families already in the collection. Decide whether the new \
one is interestingly new compared to them and so belongs in the collection. \
Consider, among other things, how new its subject area is, its difficulty, \
the capabilities it measures, and whether models succeeded at it.

First reason briefly about the new task family against the similar ones. Then \
give your decision on its own line as 'Decision: Yes' or 'Decision: No'; it is \
read automatically, so keep exactly that form."""

INTERESTING_PROMPT = '''The task family just written:
"""
{new_task}
"""

The most similar task families already in the collection:
"""
{closest_tasks}
"""

Is the new task family interestingly new compared to these? If yes, it should be added.'''

_JUDGE_DECISION = re.compile(r"DECISION:\s*(Yes|No)\s*$", re.IGNORECASE | re.MULTILINE)
_INTERESTING_DECISION = re.compile(r"Decision: (Yes|No)")


class _ChatCheck:
    """A yes/no check asked of a chat model.

    Args:
        client: A chat client.
        client_factory: Makes the chat client on first use, instead of ``client``
            (e.g. ``OpenAIChatClient``, reading the environment), so an endpoint
            is needed only once a check actually runs.
        temperature: Sampling temperature (the reference's 0.7).
        max_tokens: Tokens per reply.
    """

    def __init__(
        self,
        *,
        client=None,
        client_factory: Callable[[], object] | None = None,
        temperature: float = 0.7,
        max_tokens: int = 2048,
    ):
        if (client is None) == (client_factory is None):
            raise QdLlmError("give exactly one of client and client_factory")
        self._client = client
        self._factory = client_factory
        self._lock = threading.Lock()  # scorings run on several threads
        self.temperature = temperature
        self.max_tokens = max_tokens

    def _ask(self, system: str, prompt: str) -> str:
        """The model's reply to ``prompt`` under ``system``.

        Raises:
            QdLlmError: The chat server could not be reached or refused.
        """
        with self._lock:
            if self._client is None:
                self._client = self._factory()
        messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        return self._client.chat(messages, temperature=self.temperature, max_tokens=self.max_tokens)


class TaskJudge(_ChatCheck):
    """Judges submissions for task code (the host side of ``eval_with_llm_judge``)."""

    def __call__(self, instructions: str, submission: str, criteria: Sequence[str] = ()) -> bool:
        """True when the judge's reply ends in ``DECISION: Yes``."""
        prompt = JUDGE_PROMPT.format(
            instructions=instructions,
            submission=submission,
            criteria="\n".join(f"* {c}" for c in criteria) if criteria else "None",
        )
        match = _JUDGE_DECISION.search(self._ask(JUDGE_SYSTEM_PROMPT, prompt))
        return match is not None and match.group(1).lower() == "yes"


def describe_task(info: TaskInfo) -> str:
    """The ``task.json`` fields as the reference shows them to the model, one per line."""
    return "".join(
        f"{key.capitalize().replace('_', ' ')}: {value}\n" for key, value in info.to_json().items()
    )


class InterestingCheck(_ChatCheck):
    """The reference's "interestingly new" check, as a task archive's ``is_interesting`` hook."""

    def __call__(self, candidate: TaskInfo, nearest: Sequence[TaskInfo]) -> bool:
        """Whether ``candidate`` is interestingly new next to ``nearest`` (nearest first).

        With nothing to compare against the task is new, and the model is not asked.
        """
        if not nearest:
            return True
        closest = "\n".join(
            f"Task {i}:\n{describe_task(info)}" for i, info in enumerate(nearest, start=1)
        )
        prompt = INTERESTING_PROMPT.format(new_task=describe_task(candidate), closest_tasks=closest)
        match = _INTERESTING_DECISION.search(self._ask(INTERESTING_SYSTEM_PROMPT, prompt))
        return match is not None and match.group(1) == "Yes"
