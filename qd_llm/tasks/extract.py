r"""Answer extraction: the part of a model's reply that gets scored.

Each task says in its ``metadata.json`` (``answer_extraction``, see
:mod:`qd_llm.tasks.taskdir`) which of :data:`EXTRACTIONS` its ``score`` receives:

* ``qd_llm``: :func:`extract_answer`, this project's rule (below); the default of
  every task qd_llm writes.
* ``acdc``: :func:`extract_answer_acdc`, the AC/DC reference's rule, for task
  directories written for the reference, which expect exactly what it passes.
* ``raw``: the whole reply, untouched.

This project's rule, in order of precedence:

1. **Boxed**: the content of the last ``\boxed{...}`` with balanced braces
   (nested braces kept, e.g. ``\boxed{\frac{1}{2}}`` gives ``\frac{1}{2}``).
2. **Code after the marker**: if a fenced code block starts after the last
   answer marker (see 3), or the text after that marker on its line is empty
   and a code block exists anywhere, the code rule (4) applies: code-writing
   tasks need the code, not the sentence introducing it.
3. **Marker**: the text after the last answer marker up to the end of its
   line. Markers are ``answer`` or ``final answer`` followed by a colon,
   case-insensitive, optionally wrapped in Markdown emphasis: ``Answer:``,
   ``Final answer:``, ``**Answer:**``, ``**Final Answer**:``. If that line is
   empty and there is no code block, the next non-empty line is the answer.
4. **Code**: the body of the last fenced code block (```` ```lang ... ``` ````),
   without the fences and the language tag.
5. **Whole text**: the reply, stripped.

Extracted text is stripped of surrounding whitespace and of one level of
wrapping Markdown emphasis or inline-code/math delimiters (``**5**``, ```5```,
``$5$``); anything else, trailing punctuation included, is left for the task's
``score`` to judge.
"""

import re

EXTRACTIONS = ("qd_llm", "acdc", "raw")
#: What the reference passes to ``score`` when a reply has none of its markers.
ACDC_NO_ANSWER = "No answer found."
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_MARKER = re.compile(
    r"(?:\*\*|__)?\b(?:final\s+)?answer\b\s*(?:\*\*|__)?\s*:(?:\*\*|__)?",
    re.IGNORECASE,
)
_FENCE = re.compile(r"^[ \t]*```[^\n`]*\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE)
_WRAPPERS = ("**", "__", "`", "$", "*")
# The reference's patterns: greedy, from the first marker to the end of the text.
_ACDC_BOXED_LINE = re.compile(r"\\boxed\{(.*)\}")
_ACDC_BOXED = re.compile(r"\\boxed\{(.*)\}", re.DOTALL)
_ACDC_HASHES = re.compile(r"####(.*)", re.DOTALL)
_ACDC_ANSWER = re.compile(r"Answer:(.*)", re.DOTALL)


def _last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` whose braces balance."""
    found = None
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    found = text[start:i]
                    break
    return found


def _unwrap(answer: str) -> str:
    answer = answer.strip()
    for wrapper in _WRAPPERS:
        n = len(wrapper)
        if len(answer) > 2 * n and answer.startswith(wrapper) and answer.endswith(wrapper):
            return answer[n:-n].strip()
    return answer


def extract_answer(text: str) -> str:
    """Returns the answer part of a model reply (see the module docstring for the rule).

    Args:
        text: The model's full reply.

    Returns:
        The extracted answer; the stripped reply when no rule matches.
    """
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    fences = list(_FENCE.finditer(text))
    markers = list(_MARKER.finditer(text))
    if markers:
        marker = markers[-1]
        line_end = text.find("\n", marker.end())
        line_end = len(text) if line_end == -1 else line_end
        after = _unwrap(text[marker.end() : line_end])
        code_follows = bool(fences) and fences[-1].start() >= marker.end()
        if after and not code_follows:
            return after
        if not fences:
            rest = [line for line in text[line_end:].splitlines() if line.strip()]
            if rest:
                return _unwrap(rest[0])
    if fences:
        return fences[-1].group(1).strip("\n")
    return text.strip()


def extract_answer_acdc(text: str) -> str:
    r"""The AC/DC reference's answer extraction, reimplemented to give the same strings.

    On the stripped reply, the first rule that matches wins: from the first
    ``\boxed{`` to the last ``}`` (only when one line holds both); everything
    after the first ``####``, stripped; everything after the first ``Answer:``
    (case-sensitive, not stripped: tasks strip). A reply with none of them
    gives :data:`ACDC_NO_ANSWER`, as in the reference.

    Args:
        text: The model's full reply.
    """
    text = text.strip()
    if _ACDC_BOXED_LINE.search(text):
        return _ACDC_BOXED.search(text).group(1)
    hashes = _ACDC_HASHES.search(text)
    if hashes:
        return hashes.group(1).strip()
    answer = _ACDC_ANSWER.search(text)
    return answer.group(1) if answer else ACDC_NO_ANSWER


def extract_with(extraction: str, text: str) -> str:
    """The part of ``text`` a task with this ``answer_extraction`` scores.

    Args:
        extraction: One of :data:`EXTRACTIONS`.
        text: The model's full reply.

    Raises:
        ValueError: ``extraction`` is not one of :data:`EXTRACTIONS`.
    """
    if extraction == "qd_llm":
        return extract_answer(text)
    if extraction == "acdc":
        return extract_answer_acdc(text)
    if extraction == "raw":
        return text
    raise ValueError(f"answer extraction must be one of {EXTRACTIONS}, got {extraction!r}")
