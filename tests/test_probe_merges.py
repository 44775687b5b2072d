"""analysis/probe_merges.py on a tiny real setting: one seed pair, two instances per task."""

import json
from pathlib import Path

import pytest
import torch
from _scripts import load_analysis_script
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
SEED_DIR = REPO / "qd_llm" / "data" / "seed_experts"


def _load_probe():
    return load_analysis_script("probe_merges")


def _updates(folder: Path) -> dict[str, torch.Tensor]:
    """``{lora_A key: scale · B @ A}`` of a PEFT adapter folder, read straight from its files."""
    config = json.loads((folder / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    state = load_file(str(folder / "adapter_model.safetensors"))
    return {
        key: scale * state[key.replace("lora_A", "lora_B")].double() @ state[key].double()
        for key in state
        if "lora_A" in key
    }


def test_wilson_interval_matches_the_textbook_value():
    lo, hi = _load_probe().wilson_interval(8, 10)
    # 8/10 at 95 %: [0.4902, 0.9433], as scipy.stats.binomtest(8, 10).proportion_ci("wilson").
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)


@pytest.mark.slow
def test_probe_writes_its_table_and_the_sum_child_adds_both_updates(tmp_path):
    out = tmp_path / "probe"
    argv = [str(out), "--pairs", "arithmetic+strings", "--children", "sum", "--instances", "2"]
    argv += ["--levels-above", "0", "--max-new-tokens", "4", "--batch-size", "16"]
    assert _load_probe().main(argv) == 0

    result = json.loads((out / "probe.json").read_text())
    # Seeds train arithmetic at levels 0-1 and string_transform at level 0.
    assert sorted((t["family"], t["level"]) for t in result["tasks"]) == [
        ("arithmetic", 0),
        ("arithmetic", 1),
        ("string_transform", 0),
    ]
    rows = {row["label"]: row for row in result["genomes"]}
    assert set(rows) == {"base", "arithmetic", "strings", "sum(arithmetic+strings)"}
    for row in rows.values():
        assert set(row["families"]) == {"arithmetic", "string_transform"}
        for family, cell in row["families"].items():
            tasks = 2 if family == "arithmetic" else 1
            assert cell["tasks"] == tasks and cell["instances"] == 2 * tasks
            lo, hi = cell["ci95"]
            assert 0.0 <= lo <= cell["mean_score"] <= hi <= 1.0
    assert "| sum(arithmetic+strings) |" in (out / "probe.md").read_text()

    seeds = json.loads((SEED_DIR / "seeds.json").read_text())["experts"]
    arithmetic = _updates(SEED_DIR / seeds["arithmetic"])
    strings = _updates(SEED_DIR / seeds["strings"])
    child = _updates(Path(result["adapters"]["sum(arithmetic+strings)"]))
    assert set(child) == set(arithmetic) == set(strings)
    for key, delta in child.items():
        expected = arithmetic[key] + strings[key]
        assert expected.norm() > 0
        assert (delta - expected).norm() <= 1e-4 * expected.norm(), key
