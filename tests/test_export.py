"""`qd-llm export`: adapters that load in PEFT and answer as in qd_llm; merged checkpoints."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from _analysis_run import tiny_run

from qd_llm.cli import main
from qd_llm.inference.base import GenerationConfig, GenerationRequest
from qd_llm.runs import RunDir
from qd_llm.snapshot import RunSnapshot

PROMPTS = ["What is 2 + 3? Answer with a number.", "Spell 'dog' backwards."]

# Every test here exports the shared tiny run, which a whole loop run builds first.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    assert main(["export", str(tiny_run()), "--out", str(out / "all")]) == 0
    assert (
        main(["export", str(tiny_run()), "--out", str(out / "top"), "--top", "1", "--merged"]) == 0
    )
    return out


def _archive_rows(run):
    """(genome id, cell, fitness, descriptor) of every occupied cell, read from the
    checkpoint's pyribs archive and put in the documented order: fittest first,
    ties by lower cell."""
    archive = RunDir(run).read_checkpoint().state["niche"]["archive"]
    rows = zip(
        archive["solution"],
        archive["occupied_cells"].tolist(),
        archive["objective"].tolist(),
        archive["measures"],
        strict=True,
    )
    return sorted(rows, key=lambda row: (-row[2], row[1]))


def test_manifest_matches_the_run_archive(exported):
    manifest = json.loads((exported / "all" / "manifest.json").read_text())
    rows = _archive_rows(tiny_run())
    assert [e["id"] for e in manifest["elites"]] == [str(row[0]) for row in rows]
    for rank, (entry, (genome_id, cell, fitness, descriptor)) in enumerate(
        zip(manifest["elites"], rows, strict=True), start=1
    ):
        assert entry["cell"] == cell
        assert entry["fitness"] == pytest.approx(fitness)
        assert entry["descriptor"] == pytest.approx(list(descriptor))
        assert entry["path"] == f"{rank:02d}-cell{cell:04d}-{genome_id}"
        stored = tiny_run() / "genomes" / genome_id
        genome = json.loads((stored / "genome.json").read_text())
        assert (entry["parents"], entry["operator"]) == (genome["parents"], genome["operator"])
        folder = exported / "all" / entry["path"]
        copied = ["adapter_model.safetensors", "genome.json"]
        written = ["adapter_config.json", "README.md"]
        assert sorted(p.name for p in folder.iterdir()) == sorted([*copied, *written])
        for name in copied:  # copied unchanged from the run's genome store
            assert (folder / name).read_bytes() == (stored / name).read_bytes(), name
        # The config is the store's, naming the base by its hub id.
        config = json.loads((folder / "adapter_config.json").read_text())
        stored_config = json.loads((stored / "adapter_config.json").read_text())
        assert config == {**stored_config, "base_model_name_or_path": HUB_ID}
        card = (folder / "README.md").read_text()
        assert entry["id"] in card and f"| niche cell | {cell} |" in card
        assert "LoRARequest" in card and "peft=" in card


def test_top_selects_the_fittest(exported):
    manifest = json.loads((exported / "top" / "manifest.json").read_text())
    assert len(manifest["elites"]) == 1
    assert manifest["elites"][0]["id"] == RunSnapshot(tiny_run()).elites()[0].genome_id


def _greedy(model, tokenizer):
    from qd_llm.inference.hf import chat_prompt

    answers = []
    for prompt in PROMPTS:
        enc = tokenizer(
            chat_prompt(tokenizer, prompt), return_tensors="pt", add_special_tokens=False
        )
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        answers.append(
            tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        )
    return answers


def _answers_in_qd_llm(hf_backend, genome_id, folder):
    """The adapter's greedy answers to PROMPTS through qd_llm's hf backend.

    One prompt per call: no padding, so the comparison with plain transformers is exact.
    """
    return [
        hf_backend.generate(
            [GenerationRequest(prompt=p, genome_id=genome_id, adapter=folder)],
            GenerationConfig(max_new_tokens=8),
        )[0]
        for p in PROMPTS
    ]


def test_exported_adapter_loads_in_peft_and_answers_as_in_qd_llm(exported, hf_backend):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qd_llm.models.resolve import resolve_base_model

    entry = json.loads((exported / "top" / "manifest.json").read_text())["elites"][0]
    folder = exported / "top" / entry["path"]
    inside = _answers_in_qd_llm(hf_backend, entry["id"], folder)
    base_path = resolve_base_model()
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_path), str(folder)
    ).eval()
    assert _greedy(peft_model, tokenizer) == inside

    merged = AutoModelForCausalLM.from_pretrained(exported / "top" / entry["merged"]).eval()
    merged_tokenizer = AutoTokenizer.from_pretrained(exported / "top" / entry["merged"])
    assert _greedy(merged, merged_tokenizer) == inside


def test_taskforce_export_and_option_clash(tmp_path, capsys):
    assert main(["export", str(tiny_run()), "--out", str(tmp_path / "tf"), "--taskforce", "2"]) == 0
    manifest = json.loads((tmp_path / "tf" / "manifest.json").read_text())
    ids = [e["id"] for e in manifest["elites"]]
    assert len(ids) == min(2, len(RunSnapshot(tiny_run()).elites())) and len(set(ids)) == len(ids)
    with pytest.raises(SystemExit):
        main(
            [
                "export",
                str(tiny_run()),
                "--out",
                str(tmp_path / "x"),
                "--top",
                "1",
                "--taskforce",
                "1",
            ]
        )
    shutil.rmtree(tmp_path / "tf")


HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_default_export_names_the_base_by_its_hub_id(exported):
    manifest = json.loads((exported / "all" / "manifest.json").read_text())
    assert manifest["base_model_name_or_path"] == HUB_ID
    folder = exported / "all" / manifest["elites"][0]["path"]
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == HUB_ID
    card = (folder / "README.md").read_text()
    front_matter = card.split("---")[1]
    assert f"base_model: {HUB_ID}" in front_matter.splitlines()
    # The card says the built-in base is not the hub's bf16 weights.
    assert "dequantised" in card and "--base-path" in card


def test_export_with_base_path_loads_offline_with_auto_peft(tmp_path, hf_backend):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    from qd_llm.models.resolve import resolve_base_model

    base = resolve_base_model()
    out = tmp_path / "local"
    assert (
        main(["export", str(tiny_run()), "--out", str(out), "--top", "1", "--base-path", base]) == 0
    )
    entry = json.loads((out / "manifest.json").read_text())["elites"][0]
    folder = out / entry["path"]
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(base).resolve())
    inside = _answers_in_qd_llm(hf_backend, entry["id"], folder)
    model = AutoPeftModelForCausalLM.from_pretrained(str(folder)).eval()
    assert _greedy(model, AutoTokenizer.from_pretrained(base)) == inside


def test_base_path_without_a_model_is_one_line(tmp_path, capsys):
    code = main(
        ["export", str(tiny_run()), "--out", str(tmp_path / "x"), "--base-path", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--base-path" in err and "config.json" in err
    assert not (tmp_path / "x").exists()
