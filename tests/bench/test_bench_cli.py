"""Every benchmark runs end to end at a tiny size and prints one JSON object."""

import json

import pytest

from qd_llm.cli import main

TINY = {
    "eval": ["--genomes", "2", "--prompts", "3", "--max-new-tokens", "3", "--batch-size", "4"],
    "sandbox": ["--scorings", "6"],
    "merge": ["--size", "64", "--rank", "4", "--parents", "2", "--repeats", "1"],
    "dns": ["--sizes", "50", "--naive-size", "20"],
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_benchmark_prints_one_json_object_with_a_ratio(name, capsys):
    assert main(["bench", name, *TINY[name]]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == name
    assert result["ratio"] > 0
    assert result["machine"]["cpus"] >= 1
