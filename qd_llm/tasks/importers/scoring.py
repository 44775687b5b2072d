"""Scoring rules for imported benchmark questions, inlined into each ``task.py``.

This module is copied verbatim into every imported task's ``task.py`` (which
runs only in the sandbox under ``python3 -I -S``), so it must stay stdlib-only
and self-contained. It is also importable, so the rules can be read and linted
in one place. The entry point is :func:`score_instance`; ``data["kind"]`` picks
the rule:

- ``"text"``: the submission matches any of ``data["targets"]`` after
  normalisation (lowercase, no punctuation, no articles a/an/the, collapsed
  whitespace), or both read as numbers that agree within a relative tolerance
  of 1e-4 (absolute 1e-6).
- ``"choice"``: ``data["options"]`` are shown lettered A, B, C, ...; the
  submission may be the letter (``B``, ``(B)``, ``B.``, ``B) text``) or the
  option text; any option in ``data["correct"]`` (indices) scores 1.
- ``"code"``: HumanEval-style unit tests. The code is the last fenced block
  of the submission if it has one, else the submission. If it does not define
  ``data["entry_point"]`` it is a completion and the program is
  ``data["prompt"]`` + code; if it does, it is a whole function and the
  program is the code, preceded by the prompt when the prompt compiles on its
  own (HumanEval prompts do), so the prompt's imports and helper functions
  stay available. Then ``data["test"]`` runs and ``check(entry_point)`` must
  not raise. Any exception, ``SystemExit`` or a
  run over ``data["timeout_s"]`` scores 0.
"""

import contextlib
import io
import math
import re
import signal
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
_FRACTION = re.compile(r"([-+]?\d+)\s*/\s*(\d+)")
_LETTER = re.compile(r"^\(?\s*([A-Za-z])\s*(?:[).:\]]\s*(.*))?$", re.DOTALL)
_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)


def normalize_text(text):
    """Lowercases, drops punctuation and articles, collapses whitespace."""
    text = str(text).lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def parse_number(text):
    """Reads ``text`` as one number (``1,234``, ``$5``, ``50%``, ``3/4``), else None."""
    text = str(text).strip().rstrip(".").replace(",", "").replace("$", "").rstrip("%").strip()
    fraction = _FRACTION.fullmatch(text)
    if fraction:
        denominator = int(fraction.group(2))
        return int(fraction.group(1)) / denominator if denominator else None
    return float(text) if _NUMBER.fullmatch(text) else None


def answers_match(submission, target):
    """Whether ``submission`` equals ``target`` up to normalisation or numeric tolerance."""
    wanted, got = parse_number(target), parse_number(submission)
    if wanted is not None and got is not None:
        return math.isclose(got, wanted, rel_tol=1e-4, abs_tol=1e-6)
    return normalize_text(submission) == normalize_text(target)


def score_text(data, submission):
    return float(any(answers_match(submission, target) for target in data["targets"]))


def score_choice(data, submission):
    options, correct = data["options"], set(data["correct"])
    # Option text first: an option may itself look like a letter ("a", "I").
    for index, option in enumerate(options):
        if answers_match(submission, option):
            return float(index in correct)
    letter = _LETTER.match(str(submission).strip())
    if letter:
        index = ord(letter.group(1).upper()) - ord("A")
        rest = (letter.group(2) or "").strip()
        if 0 <= index < len(options) and (not rest or answers_match(rest, options[index])):
            return float(index in correct)
    return 0.0


class _TimeUp(Exception):
    pass


def _raise_time_up(signum, frame):
    raise _TimeUp()


def _program(data, submission):
    fenced = _FENCE.findall(submission)
    code = fenced[-1] if fenced else submission
    defines_entry = re.search(rf"^\s*def\s+{re.escape(data['entry_point'])}\s*\(", code, re.M)
    if not defines_entry:
        return data["prompt"] + code
    try:
        compile(data["prompt"], "<prompt>", "exec")
    except SyntaxError:
        return code
    return data["prompt"] + "\n\n" + code


def score_code(data, submission):
    program = _program(data, str(submission))
    namespace = {"__name__": "__submission__"}
    previous = signal.signal(signal.SIGALRM, _raise_time_up)
    signal.setitimer(signal.ITIMER_REAL, float(data.get("timeout_s", 10.0)))
    try:
        # The program's own output must not reach the sandbox runner's streams.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            exec(compile(program, "<submission>", "exec"), namespace)
            exec(compile(data["test"], "<test>", "exec"), namespace)
            namespace["check"](namespace[data["entry_point"]])
    except BaseException:  # a failing, crashing or exiting program scores 0
        return 0.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return 1.0


_SCORERS = {"text": score_text, "choice": score_choice, "code": score_code}


def score_instance(data, submission):
    """Scores an extracted ``submission`` against one imported instance; 0.0 or 1.0."""
    if submission is None:
        return 0.0
    return _SCORERS[data["kind"]](data, str(submission))
