"""Stdlib-only kernels of the procedural task families.

This module is the single source of truth for what a procedural task asks and
how it is scored. Trusted callers import it (to make supervised pairs); the
scientist copies its source, minus the generators of the other families, into
each generated ``task.py``, which then runs in the sandbox under
``python3 -I -S``. So everything here must use the standard library only and
must not import from ``qd_llm``.

An instance is a JSON-serialisable dict made by a family generator
``gen_<family>(rng, level)``:

* ``question`` — what to do; ``format`` — how to reply ("Reply with only the
  number."); ``make_instance`` joins them into ``prompt``.
* ``kind`` — how :func:`score_submission` compares: ``number``, ``text``,
  ``list``, ``json`` or ``code``.
* ``answer`` — the reference reply (a string); ``case`` — whether ``text``
  comparison is case-sensitive; ``function`` and ``tests`` for ``code``.
* ``wrap`` — set by :func:`make_instance` when the task is composed with a
  JSON output format: the reply must be ``{"answer": ...}``.
"""

import json
import re

WORDS3 = (
    "cat", "dog", "sun", "hat", "pen", "cup", "bus", "egg", "box", "map", "red", "fox",
    "bat", "bed", "big", "car", "cow", "day", "ear", "fan", "fig", "fun", "gum", "hen",
    "hop", "ice", "jam", "jet", "kid", "leg", "lip", "mud", "net", "nut", "owl", "pig",
    "pot", "rat", "rug", "sea", "sky", "tea", "toy", "van", "web", "wig", "yak", "zip",
)  # fmt: skip
WORDS5 = (
    "apple", "house", "table", "green", "river", "pencil", "garden", "yellow",
    "window", "planet", "orange", "rabbit", "bottle", "silver", "banana", "summer",
)  # fmt: skip
NAMES = ("Sam", "Mia", "Tom", "Ana", "Leo", "Zoe", "Ben", "Eva")
ITEMS = ("apples", "pencils", "stickers", "cookies", "marbles", "books", "coins", "cards")
COLORS = ("red", "blue", "green", "black", "white", "pink")

_CODE_BUILTINS = (
    "abs", "all", "any", "bool", "dict", "enumerate", "filter", "float", "int", "isinstance",
    "len", "list", "map", "max", "min", "range", "reversed", "round", "set", "sorted", "str",
    "sum", "tuple", "zip", "ValueError", "TypeError", "IndexError", "KeyError", "Exception",
    "True", "False", "None", "ord", "chr", "divmod", "pow", "print",
)  # fmt: skip
_CODE_MODULES = ("math", "string", "re", "itertools", "collections", "functools")

# ---------------------------------------------------------------- scoring helpers


def normalise(text, keep_case=False):
    """Collapses whitespace and strips quotes, brackets and end punctuation."""
    text = re.sub(r"\s+", " ", str(text)).strip(" \"'`.,;:!?*()[]{}<>")
    return text if keep_case else text.lower()


def numbers_in(text):
    """Every number in ``text``, in order (thousands separators allowed)."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", str(text))
    return [float(match) for match in re.findall(r"-?\d+(?:\.\d+)?", text)]


def stated_number(reply, question=""):
    """The number a reply gives as its answer, or None.

    Only what follows the reply's last '=' counts ("3 + 4 = 7"). Of those
    numbers, the first one the question does not mention wins: small models
    restate the question ("The largest number in [8, 2] is 16"), and the new
    number is the one they assert. If every number is from the question (the
    answer may be one of them: "which is larger, 3 or 8?"), the first wins.
    """
    found = numbers_in(str(reply).rsplit("=", 1)[-1])
    given = set(numbers_in(question))
    new = [number for number in found if number not in given]
    return (new or found or [None])[0]


def candidates(submission, keep_case):
    """The readings of a reply that count as 'the answer'.

    The whole reply, its first line, and its first and last words, each
    normalised: a tiny model often wraps a right answer in a few words.
    """
    text = str(submission).strip()
    lines = [line for line in text.splitlines() if line.strip()] or [""]
    words = text.split() or [""]
    readings = (text, lines[0], words[0], words[-1])
    return {normalise(reading, keep_case) for reading in readings}


def split_items(text):
    """A reply read as a list: comma-separated, else whitespace-separated items.

    A lead-in ending in a colon ("Sorted: 1, 2, 3") is dropped.
    """
    text = normalise(str(text).rsplit(":", 1)[-1])
    parts = text.split(",") if "," in text else text.split()
    return [normalise(part) for part in parts if normalise(part)]


def parse_json_object(text):
    """The first-to-last-brace JSON object in ``text``, or None."""
    text = str(text)
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(text[start : end + 1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def same_json(expected, got):
    """JSON equality that forgives case and spacing inside strings and 2 vs 2.0."""
    if isinstance(expected, dict):
        return (
            isinstance(got, dict)
            and set(got) == set(expected)
            and all(same_json(expected[k], got[k]) for k in expected)
        )
    if isinstance(expected, list):
        return (
            isinstance(got, list)
            and len(got) == len(expected)
            and all(same_json(e, g) for e, g in zip(expected, got, strict=True))
        )
    if isinstance(expected, bool) or isinstance(got, bool):
        return expected == got
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)):
        return abs(expected - got) < 1e-6
    return normalise(expected) == normalise(got)


def extract_code(submission):
    """The last fenced code block of a reply, else the whole reply."""
    blocks = re.findall(r"```[a-zA-Z0-9_]*\n(.*?)```", str(submission), flags=re.S)
    return blocks[-1] if blocks else str(submission)


def _restricted_import(name, globals=None, locals=None, fromlist=(), level=0):
    if name.split(".")[0] not in _CODE_MODULES:
        raise ImportError(f"import of {name} is not allowed")
    return __import__(name, globals, locals, fromlist, level)


def passes_tests(code, function, tests):
    """Whether ``code`` defines ``function`` and it returns every expected value.

    The code runs in a namespace with a small set of builtins; isolation from
    the host is the sandbox's job, this only keeps honest mistakes contained.
    """
    import builtins

    allowed = {name: getattr(builtins, name) for name in _CODE_BUILTINS}
    allowed["__build_class__"] = builtins.__build_class__
    allowed["__import__"] = _restricted_import
    namespace = {"__builtins__": allowed, "__name__": "submission"}
    try:
        exec(compile(extract_code(code), "<submission>", "exec"), namespace)
        func = namespace[function]
        return all(json.loads(json.dumps(func(*args))) == want for args, want in tests)
    except Exception:
        return False


def score_submission(data, submission):
    """1.0 when the reply gives the instance's answer, else 0.0."""
    if submission is None:
        return 0.0
    if data.get("wrap") == "json":
        obj = parse_json_object(submission)
        if obj is None or "answer" not in obj:
            return 0.0
        submission = obj["answer"]
        if isinstance(submission, list):
            submission = ", ".join(str(item) for item in submission)
    kind, answer = data["kind"], data["answer"]
    if kind == "number":
        got = stated_number(submission, data.get("question", ""))
        ok = got is not None and abs(got - float(answer)) <= 1e-6 * max(1.0, abs(float(answer)))
    elif kind == "text":
        keep_case = bool(data.get("case"))
        ok = normalise(answer, keep_case) in candidates(submission, keep_case)
    elif kind == "list":
        ok = split_items(submission) == split_items(answer)
    elif kind == "json":
        ok = same_json(json.loads(answer), parse_json_object(submission))
    elif kind == "code":
        ok = passes_tests(submission, data["function"], data["tests"])
    else:
        raise ValueError(f"unknown answer kind {kind!r}")
    return 1.0 if ok else 0.0


def make_instance(generate, rng, level, wrap=None):
    """One instance of a family: its generator's output plus the full prompt."""
    data = generate(rng, level)
    if wrap == "json":
        data["wrap"] = "json"
        data["format"] = (
            'Reply with only a JSON object of the form {"answer": ...} holding your answer.'
        )
    data["prompt"] = data["question"] + " " + data["format"]
    return data


def reference_answer(data):
    """The reply that scores 1.0."""
    if data.get("wrap") == "json":
        answer = data["answer"]
        if data["kind"] == "number":
            number = float(answer)
            answer = int(number) if number.is_integer() else number
        return json.dumps({"answer": answer})
    return data["answer"]


def _num(value):
    """A number as its shortest exact string (3.0 -> '3')."""
    value = round(value, 6)
    return str(int(value)) if float(value).is_integer() else str(value)


def _number_item(question, answer):
    return {
        "question": question,
        "format": "Reply with only the number.",
        "kind": "number",
        "answer": _num(answer),
    }


def _text_item(question, answer, reply="Reply with only the answer.", case=False):
    return {"question": question, "format": reply, "kind": "text", "answer": answer, "case": case}


def _yes_no_item(question, yes):
    return _text_item(question, "yes" if yes else "no", "Reply with only yes or no.")


def _list_item(question, items):
    return {
        "question": question,
        "format": "Reply with only the items, separated by commas.",
        "kind": "list",
        "answer": ", ".join(str(item) for item in items),
    }


# ---------------------------------------------------------------- family generators


def gen_arithmetic(rng, level):
    """Arithmetic with more digits and operations as the level rises."""
    if level == 0:
        a, b = rng.randint(1, 5), rng.randint(1, 4)
        return _number_item(f"What is {a} + {b}?", a + b)
    if level == 1:
        a, b = rng.randint(10, 49), rng.randint(1, 9)
        op = rng.choice("+-")
        return _number_item(f"What is {a} {op} {b}?", a + b if op == "+" else a - b)
    if level == 2:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        op = rng.choice("+-")
        return _number_item(f"What is {a} {op} {b}?", a + b if op == "+" else a - b)
    if level == 3:
        a, b, c = rng.randint(2, 9), rng.randint(11, 49), rng.randint(1, 30)
        return _number_item(f"What is {a} * {b} + {c}?", a * b + c)
    a, b, c = rng.randint(101, 999), rng.randint(11, 99), rng.randint(2, 9)
    return _number_item(f"What is ({a} - {b}) * {c}?", (a - b) * c)


def gen_word_problem(rng, level):
    """Short story problems: add, take away, groups, two steps, sharing."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    if level == 0:
        a, b = rng.randint(1, 4), rng.randint(1, 3)
        q = f"{name} has {a} {item}. {name} gets {b} more. How many {item} does {name} have now?"
        return _number_item(q, a + b)
    if level == 1:
        a, b = rng.randint(6, 15), rng.randint(1, 5)
        q = f"{name} has {a} {item} and gives {b} away. How many {item} are left?"
        return _number_item(q, a - b)
    if level == 2:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        q = f"{name} buys {a} boxes with {b} {item} in each box. How many {item} is that?"
        return _number_item(q, a * b)
    if level == 3:
        a, b, c, d = rng.randint(5, 20), rng.randint(2, 5), rng.randint(2, 6), rng.randint(1, 5)
        q = (
            f"{name} has {a} {item}, buys {b} packs of {c} {item}, then loses {d}. "
            f"How many {item} does {name} have?"
        )
        return _number_item(q, a + b * c - d)
    friends, total = rng.randint(3, 8), rng.randint(20, 90)
    q = (
        f"{name} shares {total} {item} equally among {friends} friends, giving each "
        f"as many as possible. How many {item} are left over?"
    )
    return _number_item(q, total % friends)


def gen_letters(rng, level):
    """Questions about the letters of a word: first, last, length, position, count."""
    if level == 0:
        word = rng.choice(WORDS3)
        return _text_item(f"What is the first letter of the word '{word}'?", word[0])
    if level == 1:
        word = rng.choice(WORDS5)
        return _text_item(f"What is the last letter of the word '{word}'?", word[-1])
    if level == 2:
        word = rng.choice(WORDS5)
        return _number_item(f"How many letters are in the word '{word}'?", len(word))
    if level == 3:
        word = rng.choice(WORDS5)
        position = rng.randint(2, 4)
        ordinal = {2: "second", 3: "third", 4: "fourth"}[position]
        return _text_item(f"What is the {ordinal} letter of the word '{word}'?", word[position - 1])
    word = rng.choice(WORDS5) + rng.choice(WORDS5)
    letter = rng.choice(sorted(set(word)))
    return _number_item(
        f"How many times does the letter '{letter}' appear in '{word}'?", word.count(letter)
    )


def gen_string_transform(rng, level):
    """Rewrite a word: upper-case, reverse, combinations, sorting letters."""
    reply = "Reply with only the new word."
    if level == 0:
        word = rng.choice(WORDS3)
        return _text_item(f"Write the word '{word}' in capital letters.", word.upper(), reply, True)
    if level == 1:
        word = rng.choice(WORDS3)
        return _text_item(f"Write the word '{word}' backwards.", word[::-1], reply)
    if level == 2:
        word = rng.choice(WORDS5)
        return _text_item(f"Write the word '{word}' backwards.", word[::-1], reply)
    if level == 3:
        word = rng.choice(WORDS5)
        return _text_item(
            f"Write the word '{word}' backwards and in capital letters.",
            word[::-1].upper(),
            reply,
            True,
        )
    word = rng.choice(WORDS5)
    return _text_item(
        f"Write the letters of '{word}' in alphabetical order.", "".join(sorted(word)), reply
    )


def gen_lists(rng, level):
    """Read a list of numbers: largest, smallest, sum, sorted, median."""
    if level == 0:
        numbers = rng.sample(range(1, 10), 2)
        return _number_item(f"What is the largest number in the list {numbers}?", max(numbers))
    if level == 1:
        numbers = rng.sample(range(1, 30), 5)
        return _number_item(f"What is the smallest number in the list {numbers}?", min(numbers))
    if level == 2:
        numbers = [rng.randint(1, 9) for _ in range(4)]
        return _number_item(f"What is the sum of the numbers in {numbers}?", sum(numbers))
    if level == 3:
        numbers = rng.sample(range(1, 50), 5)
        return _list_item(f"Sort the numbers {numbers} from smallest to largest.", sorted(numbers))
    numbers = rng.sample(range(1, 100), 7)
    return _number_item(f"What is the median of the numbers {numbers}?", sorted(numbers)[3])


def gen_counting(rng, level):
    """Count things: words in a list, repeats, vowels, even numbers, long words."""
    if level == 0:
        words = rng.sample(WORDS3, rng.randint(2, 3))
        return _number_item(f"How many words are in this list: {', '.join(words)}?", len(words))
    if level == 1:
        target = rng.choice(COLORS)
        words = [rng.choice((target, *COLORS)) for _ in range(6)]
        return _number_item(
            f"How many times does '{target}' appear in: {', '.join(words)}?", words.count(target)
        )
    if level == 2:
        word = rng.choice(WORDS5)
        return _number_item(
            f"How many vowels (a, e, i, o, u) are in the word '{word}'?",
            sum(letter in "aeiou" for letter in word),
        )
    if level == 3:
        numbers = [rng.randint(1, 40) for _ in range(8)]
        return _number_item(
            f"How many even numbers are in the list {numbers}?", sum(n % 2 == 0 for n in numbers)
        )
    words = [rng.choice(WORDS3 + WORDS5) for _ in range(8)]
    return _number_item(
        f"How many of these words have more than 4 letters: {' '.join(words)}?",
        sum(len(word) > 4 for word in words),
    )


def gen_unit_conversion(rng, level):
    """Convert lengths, times, masses and temperatures."""
    if level == 0:
        meters = rng.randint(1, 9)
        return _number_item(
            f"One meter is 100 centimeters. How many centimeters are in {meters} meters?",
            meters * 100,
        )
    if level == 1:
        if rng.random() < 0.5:
            minutes = rng.randint(2, 10)
            return _number_item(f"How many seconds are in {minutes} minutes?", minutes * 60)
        hours = rng.randint(2, 10)
        return _number_item(f"How many minutes are in {hours} hours?", hours * 60)
    if level == 2:
        tenths = rng.randint(11, 95)
        return _number_item(
            f"How many grams are in {tenths / 10} kilograms?", tenths * 100
        )  # 1 kg = 1000 g
    if level == 3:
        centimeters = rng.randint(11, 99) * 10
        return _number_item(f"How many meters are in {centimeters} centimeters?", centimeters / 100)
    if rng.random() < 0.5:
        hours, minutes = rng.randint(1, 5), rng.randint(5, 55)
        return _number_item(
            f"How many minutes are in {hours} hours and {minutes} minutes?", hours * 60 + minutes
        )
    celsius = rng.randint(0, 20) * 5
    return _number_item(
        f"What is {celsius} degrees Celsius in degrees Fahrenheit?", celsius * 9 / 5 + 32
    )


def gen_sequences(rng, level):
    """Continue a number sequence: counting, steps, descending, geometric, squares."""
    if level == 0:
        start = rng.randint(1, 6)
        terms, answer = [start + i for i in range(4)], start + 4
    elif level == 1:
        start, step = rng.randint(1, 10), rng.randint(2, 5)
        terms, answer = [start + i * step for i in range(4)], start + 4 * step
    elif level == 2:
        step = rng.randint(3, 9)
        start = rng.randint(5 * step, 9 * step)
        terms, answer = [start - i * step for i in range(4)], start - 4 * step
    elif level == 3:
        start, ratio = rng.randint(1, 5), rng.choice((2, 3))
        terms, answer = [start * ratio**i for i in range(4)], start * ratio**4
    else:
        offset = rng.randint(1, 4)
        terms, answer = [(offset + i) ** 2 for i in range(4)], (offset + 4) ** 2
    listed = ", ".join(str(term) for term in terms)
    return _number_item(f"What number comes next in the sequence {listed}, ...?", answer)


def _code_item(signature, behaviour, reference, tests):
    return {
        "question": f"Write a Python function `{signature}` that {behaviour}.",
        "format": "Reply with only the code.",
        "kind": "code",
        "answer": reference,
        "function": signature.split("(")[0],
        "tests": tests,
    }


def gen_code(rng, level):
    """Write a small Python function; it is run against hidden tests."""
    if level == 0:
        k = rng.randint(1, 9)
        return _code_item(
            f"add_{k}(x)",
            f"returns x plus {k}",
            f"def add_{k}(x):\n    return x + {k}\n",
            [[[x], x + k] for x in (0, 3, -2, 10)],
        )
    if level == 1:
        name, behaviour, expression, apply = rng.choice(
            (
                ("multiply", "returns a times b", "a * b", lambda a, b: a * b),
                ("larger", "returns the larger of a and b", "max(a, b)", max),
                ("difference", "returns a minus b", "a - b", lambda a, b: a - b),
            )
        )
        pairs = [(rng.randint(-9, 20), rng.randint(-9, 20)) for _ in range(4)]
        return _code_item(
            f"{name}(a, b)",
            behaviour,
            f"def {name}(a, b):\n    return {expression}\n",
            [[[a, b], apply(a, b)] for a, b in pairs],
        )
    words = rng.sample(WORDS5, 3)
    if level == 2:
        return _code_item(
            "reverse_text(s)",
            "returns the string s reversed",
            "def reverse_text(s):\n    return s[::-1]\n",
            [[[word], word[::-1]] for word in (*words, "")],
        )
    if level == 3:
        lists = [[rng.randint(-5, 20) for _ in range(rng.randint(0, 6))] for _ in range(4)]
        return _code_item(
            "sum_even(numbers)",
            "returns the sum of the even numbers in the list numbers",
            "def sum_even(numbers):\n    return sum(n for n in numbers if n % 2 == 0)\n",
            [[[numbers], sum(n for n in numbers if n % 2 == 0)] for numbers in lists],
        )
    texts = [*words, words[0] + " " + words[1].upper()]
    return _code_item(
        "count_vowels(s)",
        "returns how many vowels (a, e, i, o, u, either case) the string s has",
        "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s)\n",
        [[[text], sum(c in "aeiouAEIOU" for c in text)] for text in texts],
    )


def _json_item(question, expected):
    return {
        "question": question,
        "format": "Reply with only the JSON object.",
        "kind": "json",
        "answer": json.dumps(expected),
    }


def gen_structured(rng, level):
    """Produce structured output: JSON objects and comma-separated lists."""
    if level == 0:
        color = rng.choice(COLORS)
        return _json_item(
            f'Write a JSON object with the key "color" set to "{color}".', {"color": color}
        )
    if level == 1:
        name, age = rng.choice(NAMES), rng.randint(5, 60)
        return _json_item(
            f'Write a JSON object with the key "name" set to "{name}" and the key "age" '
            f"set to the number {age}.",
            {"name": name, "age": age},
        )
    if level == 2:
        words = rng.sample(WORDS5, 4)
        return _list_item(
            f"List these words in alphabetical order: {' '.join(words)}.", sorted(words)
        )
    if level == 3:
        words = rng.sample(WORDS3, 3)
        return _json_item(
            f'Write a JSON object with the key "items" holding the list of words '
            f'{", ".join(words)} in that order, and the key "count" holding how many there are.',
            {"items": words, "count": len(words)},
        )
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return _json_item(
        f'Write a JSON object with the key "sum" holding {a} + {b} and the key "product" '
        f"holding {a} * {b}.",
        {"sum": a + b, "product": a * b},
    )


def gen_comparison(rng, level):
    """Compare numbers: larger of two, greater-than, parity, decimals, primes."""
    if level == 0:
        a, b = rng.sample(range(1, 10), 2)
        return _number_item(f"Which is larger, {a} or {b}?", max(a, b))
    if level == 1:
        a, b = rng.sample(range(10, 99), 2)
        return _yes_no_item(f"Is {a} greater than {b}?", a > b)
    if level == 2:
        n = rng.randint(10, 99)
        return _yes_no_item(f"Is {n} an even number?", n % 2 == 0)
    if level == 3:
        a = rng.randint(1, 9) / 10
        b = round(a + rng.choice((-1, 1)) * rng.randint(1, 9) / 100, 2)
        return _number_item(f"Which is larger, {a} or {b}?", max(a, b))
    n = rng.randint(20, 99)
    return _yes_no_item(f"Is {n} a prime number?", all(n % d for d in range(2, n)))
