"""Best-of-N: one answer per task instance, picked from a taskforce's answers.

A taskforce of N genomes has answered every instance of a task set (an
:class:`AnswerTable`, read from evaluation records). A *picker* chooses one
of the N answers per instance; the picked answer keeps the score the sandbox
gave it, so no answer is re-scored. Pickers:

* :class:`MajorityPicker` — the most common answer after
  :func:`normalize_answer` (ties: the earliest member in taskforce order;
  empty answers only win when every answer is empty).
* :class:`JudgePicker` — an LLM judge sees the question and the N replies,
  numbered, and names the best (an unparseable verdict picks member 1).
* :class:`KnockoutPicker` — the same judge compares two replies at a time in a
  single-elimination bracket (an odd one out gets a bye).
* :class:`RewardPicker` — a Hugging Face sequence-classification reward model
  scores each (question, reply) pair; the highest logit of label 0 wins.

A judge is any callable from prompts to replies: :func:`backend_judge` wraps
an inference backend (e.g. the local base model), :func:`chat_judge` an
OpenAI-compatible server (:class:`~qd_llm.inference.openai_client.OpenAIChatClient`).

Pickers are registered by name in :data:`PICKERS` (``@PICKERS.register("name")``
on a class with ``name``, ``pick`` and a classmethod ``from_options(*, judge,
reward_model)`` taking what it needs); :func:`make_picker` builds one by name.

Accuracy is averaged over instances within a task and then over tasks.
"""

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from qd_llm.errors import QdLlmError
from qd_llm.registry import Registry

#: Best-of-N pickers by name (the class; its constructor arguments differ by picker).
PICKERS = Registry("best-of-N picker")

#: A judge: prompts in, replies out (one per prompt).
Judge = Callable[[list[str]], list[str]]


def make_picker(
    name: str, *, judge: Callable[[], Judge] | None = None, reward_model: str | Path | None = None
):
    """The registered picker ``name``, built from the options it needs.

    Args:
        name: A name in :data:`PICKERS`.
        judge: Makes the judge, called only by pickers that use one.
        reward_model: The reward model folder, for pickers that score with one.

    Raises:
        QdLlmError: ``name`` is unknown, or the picker lacks an option it needs.
    """
    return PICKERS.get(name).from_options(judge=judge, reward_model=reward_model)


def _require_judge(name: str, judge: Callable[[], Judge] | None) -> Judge:
    if judge is None:
        raise QdLlmError(f"the '{name}' picker needs a judge")
    return judge()


_SPACES = re.compile(r"\s+")
_TRAILING = ".,;:!"


def normalize_answer(text: str) -> str:
    """Canonical form of an extracted answer, for voting.

    Lower-cased, whitespace collapsed, trailing punctuation and wrapping
    quotes removed; numbers written the same way (``"42.0"`` → ``"42"``).
    """
    answer = _SPACES.sub(" ", text.strip().lower()).rstrip(_TRAILING).strip()
    if len(answer) >= 2 and answer[0] == answer[-1] and answer[0] in "\"'":
        answer = answer[1:-1].rstrip(_TRAILING).strip()
    try:
        number = float(answer.replace(",", ""))
    except ValueError:
        return answer
    if not np.isfinite(number):
        return answer
    return str(int(number)) if number == int(number) else repr(number)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Answer:
    """One genome's reply to one instance: raw, extracted, and its score."""

    completion: str
    extracted: str
    score: float


class AnswerTable:
    """Every answer of some genomes on the instances of some tasks.

    Args:
        records: Evaluation records (dicts with ``genome_id``, ``task_id``,
            ``instance_id``, ``completion``, ``extracted``, ``score``).
        instructions: ``(task_id, instance_id)`` → the prompt the genomes saw.
        pass_threshold: Mean instance score a genome needs to pass a task.
    """

    def __init__(
        self,
        *,
        records: Iterable[Mapping],
        instructions: Mapping[tuple[str, str], str],
        pass_threshold: float,
    ):
        self._answers: dict[tuple[str, str, str], Answer] = {}
        for r in records:
            self._answers[(r["genome_id"], r["task_id"], r["instance_id"])] = Answer(
                completion=r["completion"], extracted=r["extracted"], score=float(r["score"])
            )
        self.instructions = dict(instructions)
        self.pass_threshold = pass_threshold
        self.task_ids = sorted({t for t, _ in self.instructions})
        self._instances = {
            t: sorted(i for task, i in self.instructions if task == t) for t in self.task_ids
        }

    @classmethod
    def from_files(
        cls, evals: str | Path, instances_dir: str | Path, *, pass_threshold: float
    ) -> "AnswerTable":
        """Reads an ``evals.jsonl`` and its ``instances/<task_id>.json`` files."""
        evals = Path(evals)
        records = (
            [json.loads(line) for line in evals.read_text(encoding="utf-8").splitlines()]
            if evals.exists()
            else []
        )
        instructions = {}
        for path in sorted(Path(instances_dir).glob("*.json")):
            for instance_id, instance in json.loads(path.read_text(encoding="utf-8")).items():
                instructions[(path.stem, instance_id)] = instance["instructions"]
        return cls(records=records, instructions=instructions, pass_threshold=pass_threshold)

    def instances(self, task_id: str) -> list[str]:
        """Instance ids of ``task_id``, sorted (empty when its code failed)."""
        return self._instances.get(task_id, [])

    def answer(self, genome_id: str, task_id: str, instance_id: str) -> Answer:
        """The answer of ``genome_id`` (an empty, zero-score one if it never answered)."""
        return self._answers.get(
            (genome_id, task_id, instance_id), Answer(completion="", extracted="", score=0.0)
        )

    def scores(self, genome_ids: Sequence[str]) -> np.ndarray:
        """Mean instance score per (genome, task), shape ``(N, T)``; 0 for instance-less tasks."""
        return np.array(
            [
                [
                    np.mean([self.answer(g, t, i).score for i in self.instances(t)])
                    if self.instances(t)
                    else 0.0
                    for t in self.task_ids
                ]
                for g in genome_ids
            ],
            dtype=np.float64,
        ).reshape(len(genome_ids), len(self.task_ids))

    def skills(self, genome_ids: Sequence[str]) -> np.ndarray:
        """Boolean skill matrix ``(N, T)``: mean score >= ``pass_threshold``."""
        return self.scores(genome_ids) >= self.pass_threshold

    def subset(self, task_ids: Sequence[str]) -> "AnswerTable":
        """The same answers restricted to ``task_ids`` (e.g. one split of a task set)."""
        keep = set(task_ids)
        return AnswerTable(
            records=[
                {"genome_id": g, "task_id": t, "instance_id": i, **dataclasses.asdict(a)}
                for (g, t, i), a in self._answers.items()
                if t in keep
            ],
            instructions={k: v for k, v in self.instructions.items() if k[0] in keep},
            pass_threshold=self.pass_threshold,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Candidates:
    """What a picker sees for one instance: the prompt and the N answers."""

    question: str
    answers: list[Answer]


@PICKERS.register("majority")
class MajorityPicker:
    """Most common normalised extracted answer (see the module docstring)."""

    name = "majority"

    @classmethod
    def from_options(cls, **_) -> "MajorityPicker":
        return cls()

    def pick(self, items: Sequence[Candidates]) -> list[int]:
        return [majority_index([a.extracted for a in item.answers]) for item in items]


def majority_index(answers: Sequence[str]) -> int:
    """Index of the majority answer among ``answers`` (ties: earliest)."""
    keys = [normalize_answer(a) for a in answers]
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    voting = {k: c for k, c in counts.items() if k} or counts
    best = max(voting.values())
    return next(i for i, key in enumerate(keys) if voting.get(key) == best)


_PICK_PROMPT = """You are judging answers to a task. Pick the single best answer.

Task:
{question}

{candidates}

Reply with the number of the best answer only (1 to {n})."""

_PAIR_PROMPT = """You are judging two answers to a task. Which one is correct and better?

Task:
{question}

Answer A:
{a}

Answer B:
{b}

Reply with A or B only."""


def _first_choice(reply: str, n: int) -> int | None:
    for match in re.finditer(r"\d+", reply):
        value = int(match.group())
        if 1 <= value <= n:
            return value - 1
    return None


@PICKERS.register("judge")
class JudgePicker:
    """An LLM judge picks one of the N replies at once.

    Args:
        judge: Prompts → replies (see :data:`Judge`).

    Attributes:
        unparsed: Verdicts without a valid number (they pick member 1).
    """

    name = "judge"

    def __init__(self, judge: Judge):
        self.judge = judge
        self.unparsed = 0

    @classmethod
    def from_options(cls, *, judge: Callable[[], Judge] | None = None, **_) -> "JudgePicker":
        return cls(_require_judge(cls.name, judge))

    def pick(self, items: Sequence[Candidates]) -> list[int]:
        prompts = [
            _PICK_PROMPT.format(
                question=item.question,
                candidates="\n\n".join(
                    f"Answer {k}:\n{a.completion}" for k, a in enumerate(item.answers, 1)
                ),
                n=len(item.answers),
            )
            for item in items
        ]
        picks = []
        for reply, item in zip(self.judge(prompts), items, strict=True):
            choice = _first_choice(reply, len(item.answers))
            self.unparsed += choice is None
            picks.append(choice or 0)
        return picks


@PICKERS.register("knockout")
class KnockoutPicker:
    """Single-elimination bracket of pairwise judge calls, one batch per round.

    Attributes:
        unparsed: Pairwise verdicts naming neither A nor B (A advances).
    """

    name = "knockout"

    def __init__(self, judge: Judge):
        self.judge = judge
        self.unparsed = 0

    @classmethod
    def from_options(cls, *, judge: Callable[[], Judge] | None = None, **_) -> "KnockoutPicker":
        return cls(_require_judge(cls.name, judge))

    def pick(self, items: Sequence[Candidates]) -> list[int]:
        alive = [list(range(len(item.answers))) for item in items]
        while any(len(a) > 1 for a in alive):
            matches = [
                (k, a[j], a[j + 1]) for k, a in enumerate(alive) for j in range(0, len(a) - 1, 2)
            ]
            replies = self.judge(
                [
                    _PAIR_PROMPT.format(
                        question=items[k].question,
                        a=items[k].answers[x].completion,
                        b=items[k].answers[y].completion,
                    )
                    for k, x, y in matches
                ]
            )
            winners: dict[int, list[int]] = {}
            for (k, x, y), reply in zip(matches, replies, strict=True):
                verdict = re.search(r"\b([AB])\b", reply.strip().upper())
                self.unparsed += verdict is None
                winners.setdefault(k, []).append(y if verdict and verdict.group(1) == "B" else x)
            alive = [
                winners[k] + (a[-1:] if len(a) % 2 else []) if len(a) > 1 else a
                for k, a in enumerate(alive)
            ]
        return [a[0] for a in alive]


@PICKERS.register("reward")
class RewardPicker:
    """A sequence-classification reward model scores each (question, reply).

    Args:
        model: A Hugging Face folder or hub id of an
            ``AutoModelForSequenceClassification`` (the logit of label 0 is the reward).
        batch_size: Pairs per forward pass.
    """

    name = "reward"

    @classmethod
    def from_options(cls, *, reward_model: str | Path | None = None, **_) -> "RewardPicker":
        if not reward_model:
            raise QdLlmError("the 'reward' picker needs a reward model (--reward-model PATH)")
        return cls(reward_model)

    def __init__(self, model: str | Path, *, batch_size: int = 16):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(str(model)).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size = batch_size

    def rewards(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Reward per (question, reply) pair, shape ``(len(pairs),)``."""
        import torch

        texts = [self._text(q, a) for q, a in pairs]
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[i : i + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=1024,
                )
                out.append(self.model(**enc).logits[:, 0].float().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def _text(self, question: str, reply: str) -> str:
        if self.tokenizer.chat_template is None:
            return f"Question: {question}\nAnswer: {reply}"
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def pick(self, items: Sequence[Candidates]) -> list[int]:
        rewards = self.rewards(
            [(item.question, a.completion) for item in items for a in item.answers]
        )
        picks, start = [], 0
        for item in items:
            picks.append(int(np.argmax(rewards[start : start + len(item.answers)])))
            start += len(item.answers)
        return picks


def backend_judge(backend, *, max_new_tokens: int = 8) -> Judge:
    """A judge answering greedily with a backend's base model (no adapter)."""
    from qd_llm.inference.base import GenerationConfig, GenerationRequest

    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    return lambda prompts: backend.generate([GenerationRequest(prompt=p) for p in prompts], config)


def chat_judge(client, *, max_tokens: int = 8) -> Judge:
    """A judge on an OpenAI-compatible server (an ``OpenAIChatClient``)."""
    return lambda prompts: [
        client.chat([{"role": "user", "content": p}], temperature=0.0, max_tokens=max_tokens)
        for p in prompts
    ]


@dataclasses.dataclass(frozen=True, kw_only=True)
class BestOfNResult:
    """What a picker achieved with a taskforce.

    Attributes:
        method: The picker's name.
        members: The taskforce, in order.
        accuracy: Mean score of the picked answers (instances, then tasks).
        oracle: Accuracy if the best answer were always picked.
        mean_member: Mean accuracy of the members alone.
        best_member: Accuracy of the best member alone.
        picked: Times each member's answer was picked, by genome id.
        picks: ``task_id`` → the picked member's genome id per instance.
    """

    method: str
    members: list[str]
    accuracy: float
    oracle: float
    mean_member: float
    best_member: float
    picked: dict[str, int]
    picks: dict[str, list[str]]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def best_of_n(table: AnswerTable, members: Sequence[str], picker) -> BestOfNResult:
    """Picks one answer per instance among ``members``' answers and scores the picks.

    Args:
        table: The answers.
        members: The taskforce's genome ids (at least one).
        picker: An object with ``name`` and ``pick(list[Candidates]) -> list[int]``.
    """
    members = list(members)
    if not members:
        raise QdLlmError("best-of-N needs a taskforce of at least one genome")
    keys = [(t, i) for t in table.task_ids for i in table.instances(t)]
    items = [
        Candidates(
            question=table.instructions[(t, i)],
            answers=[table.answer(g, t, i) for g in members],
        )
        for t, i in keys
    ]
    choices = picker.pick(items) if items else []
    picked = dict.fromkeys(members, 0)
    picks: dict[str, list[str]] = {t: [] for t in table.task_ids}
    chosen = {t: [] for t in table.task_ids}
    best = {t: [] for t in table.task_ids}
    for (t, _), item, choice in zip(keys, items, choices, strict=True):
        picked[members[choice]] += 1
        picks[t].append(members[choice])
        chosen[t].append(item.answers[choice].score)
        best[t].append(max(a.score for a in item.answers))

    def task_mean(per_task: dict[str, list[float]]) -> float:
        # Tasks without instances count as failed, as they do in the skill matrix.
        return (
            float(np.mean([np.mean(v) if v else 0.0 for v in per_task.values()]))
            if per_task
            else 0.0
        )

    member_accuracy = (
        table.scores(members).mean(axis=1) if table.task_ids else np.zeros(len(members))
    )
    return BestOfNResult(
        method=picker.name,
        members=members,
        accuracy=task_mean(chosen),
        oracle=task_mean(best),
        mean_member=float(member_accuracy.mean()),
        best_member=float(member_accuracy.max()),
        picked=picked,
        picks=picks,
    )
