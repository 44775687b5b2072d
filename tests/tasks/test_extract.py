"""The answer-extraction rule: each branch and their precedence."""

import pytest

from qd_llm.tasks.extract import extract_answer


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        # 1. boxed: last one, balanced braces, beats a marker
        (r"so \boxed{3} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        ("Answer: 7\nbut really \\boxed{8}", "8"),
        (r"unbalanced \boxed{1 + {2}", r"unbalanced \boxed{1 + {2}"),
        # 3. marker: last one, to end of line, emphasis unwrapped, case-insensitive
        ("Let me think.\nAnswer: 42\nThanks!", "42"),
        ("answer: 1\nFINAL ANSWER: 12", "12"),
        ("**Answer:** **blue**", "blue"),
        ("Sum.\nAnswer: **5**", "5"),
        ("**Final Answer**: `x = 3`", "x = 3"),
        ("Answer: 5.", "5."),
        ("The answer:\n\n  9  \n", "9"),
        # 2. code after the marker wins
        ("Answer: here it is\n```python\ndef f():\n    return 1\n```", "def f():\n    return 1"),
        ("Final answer:\n```\nprint(1)\n```", "print(1)"),
        # ... but a block before the marker does not
        ("```\nscratch\n```\nAnswer: 4", "4"),
        # 4. code: last fenced block, language tag dropped
        ("```py\na = 1\n```\ntext\n```python\nb = 2\n```\n", "b = 2"),
        # 5. whole text
        ("  HELLO  \n", "HELLO"),
        ("The answers are many", "The answers are many"),
    ],
)
def test_extract_answer(reply, expected):
    assert extract_answer(reply) == expected
