"""Full-weight genomes on the real SmolLM2 checkpoint: streaming I/O, merge, extract, breed."""

import inspect
import json

import pytest
import torch
from safetensors.torch import save_file

from qd_llm.errors import QdLlmError
from qd_llm.models.forms import is_full_checkpoint
from qd_llm.models.full_weights import (
    INDEX_FILE,
    SINGLE_FILE,
    Checkpoint,
    checkpoint_linear_shapes,
    checkpoint_tensors,
    content_hash,
    write_checkpoint,
)
from qd_llm.models.genome import GenomeStore
from qd_llm.models.lora import random_weights
from qd_llm.operators.task_vectors import breed_full, extract_lora_from_checkpoint

Q_PROJ = "model.layers.0.self_attn.q_proj.weight"
DOWN_PROJ = "model.layers.7.mlp.down_proj.weight"
NORM = "model.norm.weight"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return GenomeStore(tmp_path_factory.mktemp("genomes"), base_model="smollm2-135m-instruct")


@pytest.fixture(scope="module")
def lora_parents(store, base_shapes):
    """Two random LoRA genomes over every projection (ΔW entries of std 0.03)."""
    generator = torch.Generator().manual_seed(0)
    return [
        store.save(random_weights(base_shapes, rank=4, std=0.03, generator=generator))
        for _ in range(2)
    ]


@pytest.fixture(scope="module")
def full_parents(store, lora_parents):
    """The LoRA parents merged into full-weight genomes."""
    return [
        store.merge_adapter(store.path(info.id), name=f"merged{i}")
        for i, info in enumerate(lora_parents)
    ]


def _small_config_folder(tmp_path):
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "generation_config.json").write_text('{"do_sample": false}')
    return folder


def test_sharded_writing_round_trips_and_hashes_like_a_state_dict(tmp_path):
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "b.weight": torch.randn(8, 4, generator=generator),
        "a.bias": torch.randn(3, generator=generator).to(torch.bfloat16),
        "c.weight": torch.randn(16, 16, generator=generator),
        "d.scale": torch.tensor(2.0),
    }
    config_from = _small_config_folder(tmp_path)

    sharded = tmp_path / "sharded"
    digest = write_checkpoint(tensors, sharded, config_from=config_from, max_shard_bytes=256)
    index = json.loads((sharded / INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) >= 3
    assert not (sharded / SINGLE_FILE).exists()
    assert (sharded / "generation_config.json").read_text() == '{"do_sample": false}'
    assert is_full_checkpoint(sharded)

    stream = checkpoint_tensors(sharded)
    assert inspect.isgenerator(stream)
    read = list(stream)
    assert [name for name, _ in read] == sorted(tensors)
    for name, tensor in read:
        assert tensor.dtype == tensors[name].dtype and torch.equal(tensor, tensors[name])

    assert digest == content_hash(tensors)
    single = tmp_path / "single"
    assert write_checkpoint(iter(read), single, config_from=config_from) == digest
    assert (single / SINGLE_FILE).exists() and not (single / INDEX_FILE).exists()


def test_writer_refuses_unsorted_or_empty_streams(tmp_path):
    config_from = _small_config_folder(tmp_path)
    unsorted = [("b", torch.zeros(1)), ("a", torch.zeros(1))]
    with pytest.raises(QdLlmError, match="sorted name order"):
        write_checkpoint(iter(unsorted), tmp_path / "x", config_from=config_from)
    with pytest.raises(QdLlmError, match="no tensors"):
        write_checkpoint(iter([]), tmp_path / "y", config_from=config_from)


def test_merged_adapter_is_base_plus_lora_update(store, lora_parents, full_parents):
    info = full_parents[0]
    assert info.form == "full" and info.rank == 0 and info.name == "merged0"
    assert store.is_full(info.id) and not store.is_full(lora_parents[0].id)
    folder = store.path(info.id)
    assert is_full_checkpoint(folder)
    # ~540 MB of float32 in 256 MiB shards: the writer never held the whole model.
    assert len(set(json.loads((folder / INDEX_FILE).read_text())["weight_map"].values())) > 1
    base, merged = Checkpoint(store.base_folder), Checkpoint(folder)
    assert list(merged) == list(base)
    update = store.load(lora_parents[0].id)["model.layers.0.self_attn.q_proj"].delta()
    torch.testing.assert_close(merged[Q_PROJ], base[Q_PROJ] + update, rtol=0, atol=1e-6)
    assert torch.equal(merged[NORM], base[NORM])
    with pytest.raises(QdLlmError, match="full weights"):
        store.load(info.id)


def test_importing_a_stored_checkpoint_gives_the_same_id(store, full_parents):
    before = store.ids()
    again = store.import_checkpoint(store.path(full_parents[0].id), name="other")
    assert again == full_parents[0]  # same content hash, the first info kept
    assert store.ids() == before


def test_extract_lora_recovers_the_merged_update(store, lora_parents, full_parents, base_shapes):
    targets = ("k_proj", "v_proj")
    extracted = extract_lora_from_checkpoint(
        store.path(full_parents[0].id),
        base_folder=store.base_folder,
        rank=4,
        target_modules=targets,
    )
    assert set(extracted) == {m for m in base_shapes if m.rsplit(".", 1)[-1] in targets}
    original = store.load(lora_parents[0].id)
    for module, factors in extracted.items():
        assert factors.rank == 4
        expected = original[module].delta()
        error = (factors.delta() - expected).norm() / expected.norm()
        assert error < 1e-4, module
    assert store.info(store.save(extracted).id).form == "lora"


def test_breed_full_linear_adds_weighted_task_vectors(store, full_parents, lora_parents):
    a, b = full_parents
    child = breed_full(
        store, "linear", [a.id, b.id], generator=3, generation=2, weights=[0.7, -0.4]
    )
    assert child.form == "full" and child.operator == "linear" and child.generation == 2
    assert child.parents == (a.id, b.id)
    assert child.params == {"weights": [0.7, -0.4], "seed": 3}
    base, pa, pb = (Checkpoint(f) for f in (store.base_folder, store.path(a.id), store.path(b.id)))
    out = Checkpoint(store.path(child.id))
    for name in (Q_PROJ, DOWN_PROJ, NORM):
        expected = base[name] + 0.7 * (pa[name] - base[name]) - 0.4 * (pb[name] - base[name])
        torch.testing.assert_close(out[name], expected, rtol=0, atol=1e-6)
    with pytest.raises(QdLlmError, match="LoRA genome"):
        breed_full(store, "linear", [a.id, lora_parents[0].id], generator=0)


def test_import_checkpoint_rejects_a_mismatching_checkpoint_in_one_line(store, tmp_path):
    before = store.ids()
    cases = [
        ({NORM: torch.zeros(3)}, r"model\.norm\.weight has shape \(3,\)"),
        ({NORM: torch.zeros(576)}, "tensors of the base model are missing"),
        ({"extra.weight": torch.zeros(2)}, "extra.weight is not in the base model"),
    ]
    for case, (tensors, message) in enumerate(cases):
        folder = tmp_path / str(case)
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        save_file(tensors, str(folder / SINGLE_FILE))
        with pytest.raises(QdLlmError, match=message) as error:
            store.import_checkpoint(folder)
        assert "\n" not in str(error.value)
    with pytest.raises(QdLlmError, match="not a full checkpoint"):
        store.import_checkpoint(tmp_path)
    assert store.ids() == before


def test_checkpoint_linear_shapes_equal_the_loaded_models(store, base_shapes):
    shapes = checkpoint_linear_shapes(store.base_folder)
    assert shapes == base_shapes
    assert len(shapes) == 30 * 7  # 30 layers × (q, k, v, o, gate, up, down)


def test_checkpoint_linear_shapes_need_targeted_weights(store, tmp_path):
    with pytest.raises(QdLlmError, match=r"model\.safetensors"):
        checkpoint_linear_shapes(tmp_path)
    with pytest.raises(QdLlmError, match="no 2-D weights"):
        checkpoint_linear_shapes(store.base_folder, target_modules=("nope",))
