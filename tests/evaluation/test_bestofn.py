"""Best-of-N pickers: hand-made answer tables, a real judge and a real (tiny) reward model."""

import re

import pytest

from qd_llm.errors import QdLlmError
from qd_llm.evaluation.bestofn import (
    AnswerTable,
    JudgePicker,
    KnockoutPicker,
    MajorityPicker,
    RewardPicker,
    backend_judge,
    best_of_n,
    majority_index,
    normalize_answer,
)


def _table(answers: dict[str, list[tuple[str, float]]], *, instances: int = 1) -> AnswerTable:
    """Genome → one (answer, score) per instance of a single task ``t``."""
    records = [
        {
            "genome_id": g,
            "task_id": "t",
            "instance_id": f"i{k}",
            "completion": f"Answer: {a}",
            "extracted": a,
            "score": s,
        }
        for g, rows in answers.items()
        for k, (a, s) in enumerate(rows)
    ]
    instructions = {("t", f"i{k}"): f"question {k}" for k in range(instances)}
    return AnswerTable(records=records, instructions=instructions, pass_threshold=0.5)


def test_normalize_answer():
    assert normalize_answer("  42.0 ") == normalize_answer("42") == "42"
    assert normalize_answer('"Paris."') == "paris"
    assert normalize_answer("1,000") == "1000"
    assert normalize_answer("New   York") == "new york"


def test_majority_ties_and_empty_answers():
    assert majority_index(["7", "8", "7.0"]) == 0
    assert majority_index(["8", "7", "7"]) == 1
    assert majority_index(["a", "b"]) == 0  # tie: earliest
    assert majority_index(["", "", "x"]) == 2  # empty answers do not vote
    assert majority_index(["", ""]) == 0


def test_majority_best_of_n_scores_and_credits_picks():
    table = _table(
        {
            "a": [("42", 1.0), ("x", 0.0)],
            "b": [("42.0", 1.0), ("y", 0.0)],
            "c": [("41", 0.0), ("z", 1.0)],
        },
        instances=2,
    )
    result = best_of_n(table, ["c", "a", "b"], MajorityPicker())
    # Instance 0: "42" wins 2-1 (first voter a); instance 1: three-way tie, c is first.
    assert result.picks["t"] == ["a", "c"]
    assert result.accuracy == 1.0 and result.oracle == 1.0
    assert result.picked == {"c": 1, "a": 1, "b": 0}
    assert result.best_member == 0.5
    with pytest.raises(QdLlmError):
        best_of_n(table, [], MajorityPicker())


def _scripted(replies):
    calls = []

    def judge(prompts):
        calls.append(prompts)
        return [replies(p) for p in prompts]

    return judge, calls


def test_judge_picker_parses_the_number_and_falls_back():
    table = _table({"a": [("1", 0.0)], "b": [("2", 1.0)], "c": [("3", 0.0)]})
    judge, calls = _scripted(lambda prompt: "The best is answer 2.")
    picker = JudgePicker(judge)
    assert best_of_n(table, ["a", "b", "c"], picker).accuracy == 1.0
    assert "Answer 3:" in calls[0][0] and "question 0" in calls[0][0]
    bad = JudgePicker(_scripted(lambda p: "none of them")[0])
    assert best_of_n(table, ["a", "b", "c"], bad).picks["t"] == ["a"] and bad.unparsed == 1


def test_knockout_bracket_with_a_bye():
    # The judge prefers whichever reply mentions the larger digit: the bracket must find "4".
    table = _table(
        {g: [(str(d), float(d == 4))] for g, d in zip("abcde", [1, 4, 2, 3, 0], strict=True)}
    )

    def prefer_larger(prompt):
        a = prompt.split("Answer A:\nAnswer: ")[1][0]
        b = prompt.split("Answer B:\nAnswer: ")[1][0]
        return "B" if int(b) > int(a) else "A"

    judge, calls = _scripted(prefer_larger)
    result = best_of_n(table, list("abcde"), KnockoutPicker(judge))
    assert result.picks["t"] == ["b"] and result.accuracy == 1.0
    assert [len(c) for c in calls] == [2, 1, 1]  # 5 → 3 (one bye) → 2 → 1


def test_local_base_model_judge_pick_follows_its_verdict(hf_backend):
    # Three answers to "What is 1 + 1?", the right one last. SmolLM2's greedy
    # verdict here names answer 3, so a picker stuck on member 1 fails this test.
    table = _table({"a": [("5", 0.0)], "b": [("7", 0.0)], "c": [("2", 1.0)]})
    table.instructions[("t", "i0")] = "What is 1 + 1?"
    judge = backend_judge(hf_backend)
    asked, verdicts = [], []

    def recorded(prompts):
        asked.extend(prompts)
        verdicts.extend(judge(prompts))
        return verdicts[-len(prompts) :]

    picker = JudgePicker(recorded)
    result = best_of_n(table, list("abc"), picker)
    [prompt], [verdict] = asked, verdicts
    assert "What is 1 + 1?" in prompt
    assert all(f"Answer {k}:\nAnswer: {a}" in prompt for k, a in ((1, 5), (2, 7), (3, 2)))
    assert judge([prompt]) == [verdict]  # temperature 0: the judge is deterministic
    # The documented rule, written out here: the first number from 1 to N names
    # the member; a verdict without one picks member 1.
    named = [int(n) for n in re.findall(r"\d+", verdict) if 1 <= int(n) <= 3]
    expected = "abc"[named[0] - 1] if named else "a"
    assert result.picks["t"] == [expected], verdict
    assert picker.unparsed == int(not named)
    assert result.accuracy == float(expected == "c")


def test_reward_picker_with_a_tiny_random_reward_model(tmp_path):
    # No reward model ships on PyPI: a randomly initialised sequence classifier
    # with SmolLM2's tokenizer stands in, saved and loaded like any HF model.
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from qd_llm.models.resolve import resolve_base_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model())
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
    )
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    picker = RewardPicker(tmp_path / "rm")
    table = _table({g: [(f"answer {g}", float(g == "b"))] for g in "abc"})
    rewards = picker.rewards([("question 0", f"Answer: answer {g}") for g in "abc"])
    result = best_of_n(table, list("abc"), picker)
    assert result.picks["t"] == [list("abc")[int(rewards.argmax())]]
    assert (
        len(set(rewards.round(6).tolist())) == 3
    )  # a real model: different texts, different rewards


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("nosuch", "unknown best-of-N picker 'nosuch'"),
        ("reward", "the 'reward' picker needs a reward model (--reward-model PATH)"),
    ],
)
def test_bestofn_cli_checks_the_picker_before_evaluating(tmp_path, capsys, method, expected):
    from qd_llm.cli import main

    # Neither the run nor the task set exists: the picker is checked first.
    argv = ["bestofn", str(tmp_path / "run"), "--tasks", str(tmp_path / "tasks"), "--n", "1"]
    assert main([*argv, "--method", method]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
