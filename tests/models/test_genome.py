import json

import pytest
import torch

from qd_llm.errors import QdLlmError
from qd_llm.models.genome import GenomeStore, load_adapter_weights
from qd_llm.models.lora import LoraFactors, random_weights

SHAPES = {"model.layers.0.self_attn.q_proj": (12, 8), "model.layers.0.mlp.up_proj": (20, 8)}


def _weights(seed=0, rank=4):
    return random_weights(SHAPES, rank=rank, std=0.1, generator=torch.Generator().manual_seed(seed))


def test_save_writes_peft_folder_and_roundtrips_exactly(tmp_path):
    store = GenomeStore(tmp_path, base_model="base")
    w = _weights()
    info = store.save(w, parents=("p1", "p2"), operator="linear", params={"w": [0.5, 0.5]})
    folder = store.path(info.id)
    assert {p.name for p in folder.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "genome.json",
    }
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 4
    assert sorted(config["target_modules"]) == ["q_proj", "up_proj"]
    loaded = store.load(info.id)
    for name, f in w.items():
        torch.testing.assert_close(loaded[name].delta(), f.delta(), rtol=0, atol=0)
    again = store.info(info.id)
    assert again == info and again.parents == ("p1", "p2") and again.operator == "linear"
    assert store.ids() == [info.id] and info.id in store


def test_id_is_content_hash(tmp_path):
    store = GenomeStore(tmp_path, base_model="base")
    a = store.save(_weights(0))
    assert store.save(_weights(0), operator="other").id == a.id  # same content, one copy
    assert store.info(a.id).operator == "seed"
    assert store.save(_weights(1)).id != a.id
    assert len(store.ids()) == 2


def test_dropped_weights_keep_the_record_and_come_back_when_saved_again(tmp_path):
    store = GenomeStore(tmp_path, base_model="base")
    kept, dropped = store.save(_weights(0)), store.save(_weights(1), parents=("x",), generation=2)
    store.drop_weights(dropped.id)
    assert [p.name for p in store.path(dropped.id).iterdir()] == ["genome.json"]
    assert not store.has_weights(dropped.id) and store.has_weights(kept.id)
    assert store.ids() == sorted([kept.id, dropped.id])
    assert store.ids(with_weights=True) == [kept.id]
    assert store.info(dropped.id) == dropped  # lineage survives
    with pytest.raises(QdLlmError):
        store.load(dropped.id)
    again = store.save(_weights(1), parents=("y",), generation=7)  # bred again
    assert again == dropped  # the first birth's record is kept
    torch.testing.assert_close(
        store.load(dropped.id)[next(iter(SHAPES))].delta(), _weights(1)[next(iter(SHAPES))].delta()
    )


def test_lower_rank_layers_are_zero_padded(tmp_path):
    store = GenomeStore(tmp_path, base_model="base")
    w = dict(_weights(rank=4))
    small = w["model.layers.0.mlp.up_proj"]
    w["model.layers.0.mlp.up_proj"] = LoraFactors(small.A[:2], small.B[:, :2])
    info = store.save(w)
    loaded = store.load(info.id)
    assert loaded["model.layers.0.mlp.up_proj"].rank == 4
    torch.testing.assert_close(
        loaded["model.layers.0.mlp.up_proj"].delta(), w["model.layers.0.mlp.up_proj"].delta()
    )


def test_foreign_adapter_scale_is_folded_into_b(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=50,
    )
    model = get_peft_model(
        LlamaForCausalLM(cfg), LoraConfig(r=2, lora_alpha=8, target_modules=["q_proj"])
    )
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    torch.nn.init.normal_(layer.lora_B["default"].weight)
    model.save_pretrained(tmp_path / "foreign")
    w = load_adapter_weights(tmp_path / "foreign")
    expected = 4.0 * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    torch.testing.assert_close(w["model.layers.0.self_attn.q_proj"].delta(), expected)


def test_bad_inputs_fail_with_one_line(tmp_path):
    with pytest.raises(QdLlmError, match="dtype"):
        GenomeStore(tmp_path, base_model="b", dtype="int8")
    with pytest.raises(QdLlmError, match="no genome"):
        GenomeStore(tmp_path, base_model="b").info("deadbeef")
    with pytest.raises(QdLlmError, match="not a PEFT adapter"):
        load_adapter_weights(tmp_path)


def test_genome_json_without_form_reads_as_lora(tmp_path):
    store = GenomeStore(tmp_path, base_model="base")
    info = store.save(_weights())
    assert info.form == "lora"
    path = store.path(info.id) / "genome.json"
    old = json.loads(path.read_text())
    del old["form"]  # written before full-weight genomes existed
    path.write_text(json.dumps(old))
    assert store.info(info.id).form == "lora"
    assert not store.is_full(info.id)
    assert set(store.load(info.id)) == set(SHAPES)


def test_a_drop_cut_short_is_finished(tmp_path):
    store = GenomeStore(tmp_path, base_model="base")
    kept, cut_short = store.save(_weights(0)), store.save(_weights(1), parents=("x",))
    # What a kill inside drop_weights leaves: the weights file gone, the config not.
    (store.path(cut_short.id) / "adapter_model.safetensors").unlink()
    assert store.finish_interrupted_drops() == [cut_short.id]
    assert [p.name for p in store.path(cut_short.id).iterdir()] == ["genome.json"]
    assert {p.name for p in store.path(kept.id).iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "genome.json",
    }
    assert store.finish_interrupted_drops() == []
