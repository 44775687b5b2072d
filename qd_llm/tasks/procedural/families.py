"""The procedural task families: what each asks at each level, and its ``task.py``.

A :class:`Family` pairs one generator in :mod:`~qd_llm.tasks.procedural.kernels`
with the words that describe it (these descriptions are embedded to place a task
in skill space, so they name the concrete skill and knob at every level). The
same generator serves two callers:

* :meth:`Family.examples` makes (instruction, reference answer) pairs
  in-process for supervised training of seed experts;
* :meth:`Family.render` writes a self-contained ``task.py`` that regenerates the
  very same instances inside the sandbox.
"""

import ast
import dataclasses
import inspect
import random
from collections.abc import Callable

from qd_llm.errors import QdLlmError
from qd_llm.tasks.procedural import kernels

# Output formats a family can be composed with ("compute X, then format as Y").
WRAPS = ("json",)

_TASK_TEMPLATE = '''"""Procedural task: {title}.

Written by the qd_llm procedural scientist. Self-contained and standard-library
only, since it runs in the sandbox under `python3 -I -S`.
"""

import json
import random
import re

FAMILY = {family!r}
LEVEL = {level!r}
SEED = {seed!r}
NUM_INSTANCES = {num_instances!r}
WRAP = {wrap!r}


{kernels}


class TaskFamily:
    @staticmethod
    def get_tasks():
        rng = random.Random(SEED)
        return {{
            str(i): make_instance({generator}, rng, LEVEL, WRAP) for i in range(NUM_INSTANCES)
        }}

    @staticmethod
    def get_instructions(data):
        return data["prompt"]

    @staticmethod
    def score(data, submission):
        return score_submission(data, submission)
'''


@dataclasses.dataclass(frozen=True, kw_only=True)
class Family:
    """One task family and its difficulty ladder.

    Attributes:
        name: Short snake_case name, also the generator's suffix.
        capability: What the family measures (``capability_being_measured``).
        levels: One description per level, easiest first; ``levels[i]`` says what
            a level-``i`` task asks.
        composable: Whether the answer can be wrapped in a JSON output format.
    """

    name: str
    capability: str
    levels: tuple[str, ...]
    composable: bool = True

    @property
    def max_level(self) -> int:
        return len(self.levels) - 1

    @property
    def generator(self) -> Callable:
        return getattr(kernels, f"gen_{self.name}")

    def check(self, level: int, wrap: str | None = None) -> None:
        """Raises QdLlmError if ``level`` or ``wrap`` does not exist for this family."""
        if not 0 <= level <= self.max_level:
            raise QdLlmError(
                f"family {self.name!r} has levels 0..{self.max_level}, got level {level}"
            )
        if wrap is not None and (wrap not in WRAPS or not self.composable):
            raise QdLlmError(f"family {self.name!r} cannot be wrapped in format {wrap!r}")

    def instances(self, level: int, n: int, seed: int, wrap: str | None = None) -> list[dict]:
        """The first ``n`` instances a task with this seed holds, as JSON-ready dicts."""
        self.check(level, wrap)
        rng = random.Random(seed)
        return [kernels.make_instance(self.generator, rng, level, wrap) for _ in range(n)]

    def examples(
        self, level: int, n: int, seed: int, wrap: str | None = None
    ) -> list[tuple[str, str]]:
        """``n`` (instruction, reference answer) pairs for supervised training.

        The pairs are exactly the instances a task of this family, level and seed
        holds, and every reference answer scores 1.0.
        """
        return [
            (data["prompt"], kernels.reference_answer(data))
            for data in self.instances(level, n, seed, wrap)
        ]

    def describe(self, level: int, wrap: str | None = None) -> str:
        """The task description: specific to the family, the level and the format."""
        self.check(level, wrap)
        text = self.levels[level]
        if wrap == "json":
            text += ' The answer must be returned inside a JSON object {"answer": ...}.'
        return text

    def render(self, *, level: int, seed: int, num_instances: int, wrap: str | None = None) -> str:
        """The ``task.py`` source of a task of this family (stdlib only, seed baked in)."""
        self.check(level, wrap)
        title = f"{self.name} level {level}" + (f", answer wrapped as {wrap}" if wrap else "")
        return _TASK_TEMPLATE.format(
            title=title,
            family=self.name,
            level=level,
            seed=seed,
            num_instances=num_instances,
            wrap=wrap,
            kernels=_kernel_source(keep_generator=self.generator.__name__),
            generator=self.generator.__name__,
        )


def _kernel_source(*, keep_generator: str) -> str:
    """The kernels module without its docstring, imports and other generators."""
    source = inspect.getsource(kernels)
    lines = source.splitlines()
    pieces: list[str] = []
    previous_was_function = False
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the module docstring
        is_function = isinstance(node, ast.FunctionDef)
        if is_function and node.name.startswith("gen_") and node.name != keep_generator:
            continue
        if pieces:  # PEP 8: two blank lines around functions, none between constants
            pieces.append("\n\n\n" if is_function or previous_was_function else "\n")
        pieces.append("\n".join(lines[node.lineno - 1 : node.end_lineno]))
        previous_was_function = is_function
    return "".join(pieces)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            name="arithmetic",
            capability="mental arithmetic with whole numbers",
            levels=(
                "Add two small one-digit whole numbers and reply with the sum.",
                "Add or subtract a one-digit number to or from a two-digit number.",
                "Add or subtract two two-digit numbers, possibly giving a negative result.",
                "Multiply a one-digit number by a two-digit number, then add a number.",
                "Evaluate (three-digit minus two-digit) times a one-digit number.",
            ),
        ),
        Family(
            name="word_problem",
            capability="turning short everyday stories into arithmetic",
            levels=(
                "Story problem: a person has a few items and gets a few more; count the total.",
                "Story problem: a person gives some items away; how many are left.",
                "Story problem: several boxes each hold the same number of items; find the total.",
                "Two-step story problem: buy packs of items, then lose some; find the count.",
                "Story problem: share items equally among friends; find the remainder.",
            ),
        ),
        Family(
            name="letters",
            capability="spelling and inspecting the letters of English words",
            levels=(
                "Name the first letter of a short three-letter English word.",
                "Name the last letter of a five or six letter English word.",
                "Count how many letters an English word has.",
                "Name the letter at a given position (second to fourth) of a word.",
                "Count how often a given letter occurs in a long compound word.",
            ),
        ),
        Family(
            name="string_transform",
            capability="rewriting words character by character",
            levels=(
                "Rewrite a short three-letter word in capital (upper-case) letters.",
                "Spell a short three-letter word backwards.",
                "Spell a five or six letter word backwards.",
                "Spell a word backwards and in capital letters at the same time.",
                "Rearrange the letters of a word into alphabetical order.",
            ),
        ),
        Family(
            name="lists",
            capability="reading and aggregating lists of numbers",
            levels=(
                "Pick the largest of two single-digit numbers given as a Python list.",
                "Find the smallest number in a list of five numbers.",
                "Sum the four single-digit numbers in a list.",
                "Sort a list of five numbers in ascending order, comma separated.",
                "Find the median of a list of seven two-digit numbers.",
            ),
        ),
        Family(
            name="counting",
            capability="counting occurrences of things in text and lists",
            levels=(
                "Count how many words appear in a short comma-separated list of two or three.",
                "Count how many times a colour name repeats in a list of six colours.",
                "Count the vowels a, e, i, o, u in an English word.",
                "Count the even numbers in a list of eight numbers.",
                "Count the words longer than four letters in a list of eight words.",
            ),
        ),
        Family(
            name="unit_conversion",
            capability="converting between units of length, time, mass and temperature",
            levels=(
                "Convert a whole number of meters into centimeters, given that 1 m is 100 cm.",
                "Convert minutes into seconds, or hours into minutes.",
                "Convert a decimal number of kilograms into grams.",
                "Convert centimeters into meters, giving a decimal answer.",
                "Convert hours and minutes into minutes, or Celsius into Fahrenheit.",
            ),
        ),
        Family(
            name="sequences",
            capability="spotting the rule of a number sequence and extending it",
            levels=(
                "Give the next number of a sequence that counts up by one.",
                "Give the next number of an increasing arithmetic sequence with step 2 to 5.",
                "Give the next number of a decreasing arithmetic sequence.",
                "Give the next number of a geometric sequence that doubles or triples.",
                "Give the next perfect square in a run of consecutive square numbers.",
            ),
        ),
        Family(
            name="code",
            capability="writing small correct Python functions",
            composable=False,
            levels=(
                "Write a one-line Python function that adds a constant to its argument.",
                "Write a Python function of two numbers: product, difference or maximum.",
                "Write a Python function that reverses a string.",
                "Write a Python function that sums the even numbers of a list.",
                "Write a Python function that counts the vowels of a string in either case.",
            ),
        ),
        Family(
            name="structured",
            capability="producing exactly formatted structured output (JSON, lists)",
            composable=False,
            levels=(
                "Write a JSON object with one given string key and value.",
                "Write a JSON object with a given name string and an age number.",
                "List given words in alphabetical order, separated by commas.",
                "Write a JSON object holding a list of words and their count.",
                "Write a JSON object holding the sum and product of two numbers.",
            ),
        ),
        Family(
            name="comparison",
            capability="comparing numbers and judging simple number properties",
            levels=(
                "Say which of two single-digit numbers is larger.",
                "Answer yes or no: is one two-digit number greater than another.",
                "Answer yes or no: is a two-digit number even.",
                "Say which of two decimal numbers with one or two decimals is larger.",
                "Answer yes or no: is a two-digit number prime.",
            ),
        ),
    )
}


def get_family(name: str) -> Family:
    """The family called ``name``.

    Raises:
        QdLlmError: No such family.
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise QdLlmError(
            f"unknown task family {name!r}; choose from {', '.join(FAMILIES)}"
        ) from None
