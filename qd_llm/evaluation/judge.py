"""Checks of a genome's output by a judge model (any OpenAI-compatible endpoint).

Merging can break a model: a child that answers every prompt with symbol soup
should not enter the population just because it is "different". The loop's
gibberish filter (config ``gibberish_filter``) excludes such children before
selection, either with :func:`~qd_llm.evaluation.evaluate.looks_like_gibberish`
(a cheap heuristic) or with :class:`GibberishJudge`, which shows a judge model
a few of the child's completions and asks whether they are meaningful.
"""

import re
from collections.abc import Sequence

_PROMPT = """Below are {n} replies that a language model gave to different short tasks.
Replies may be wrong, terse or badly formatted; that is fine. Decide only whether the
model is producing gibberish: text that is not meaningful language, numbers or code
(random symbols, repeated fragments, broken words) in essentially every reply.

{replies}

Is this model producing gibberish? Answer with one word: yes or no."""

_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_verdict(reply: str) -> bool | None:
    """True for "yes", False for "no" (the first one said), None if neither appears."""
    match = _VERDICT.search(reply)
    return None if match is None else match.group(1).lower() == "yes"


class GibberishJudge:
    """A gibberish check backed by a judge model.

    Args:
        client: Anything with ``chat(messages, *, temperature, max_tokens) -> str``
            (e.g. :class:`~qd_llm.inference.openai_client.OpenAIChatClient`).
        max_replies: How many completions the judge sees (the first ones).
        max_chars: Each completion is cut to this many characters.
    """

    def __init__(self, *, client, max_replies: int = 6, max_chars: int = 300):
        self.client = client
        self.max_replies = max_replies
        self.max_chars = max_chars

    def __call__(self, completions: Sequence[str]) -> bool:
        """Whether the judge calls ``completions`` gibberish.

        An empty list or an unreadable verdict counts as not gibberish: the
        filter only removes children the judge clearly rejects.
        """
        shown = [c[: self.max_chars] for c in completions[: self.max_replies]]
        if not shown:
            return False
        replies = "\n".join(f"Reply {i + 1}: {text!r}" for i, text in enumerate(shown))
        prompt = _PROMPT.format(n=len(shown), replies=replies)
        verdict = self.client.chat(
            [{"role": "user", "content": prompt}], temperature=0.0, max_tokens=4
        )
        return parse_verdict(verdict) is True
