"""The vllm backend on the real SmolLM2 with real stored genomes (run in .venv-vllm).

One engine serves the whole module (starting it takes ~30-50 s on 2 cores).
The last test shuts it down, so keep it last.
"""

import multiprocessing

import pytest
import torch

pytest.importorskip("vllm")

from qd_llm.bench.eval import benchmark_prompts
from qd_llm.errors import QdLlmError
from qd_llm.inference import vllm_cpu_lora
from qd_llm.inference.base import GenerationConfig, GenerationRequest
from qd_llm.inference.vllm_backend import VLLMBackend
from qd_llm.models.genome import GenomeStore
from qd_llm.models.lora import random_weights
from qd_llm.seeding.experts import BUILTIN_DIR, INDEX, seed_expert_folders

pytestmark = pytest.mark.vllm

BASE = "smollm2-135m-instruct"
PROMPTS = [
    "What is 2+3? Reply with only the number.",
    "Write the word cat in upper case.",
    "What is the capital of France?",
    "Name three colours.",
]
GREEDY = GenerationConfig(max_new_tokens=12)


# Fewer LoRA slots than the module's genomes, so every test runs with slot eviction.
MAX_LORAS = 2


@pytest.fixture(scope="module")
def engine():
    backend = VLLMBackend(base_model=BASE, max_loras=MAX_LORAS, max_cpu_loras=MAX_LORAS)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def genomes(tmp_path_factory, base_shapes):
    """Genome id -> folder: two faint and one strong random LoRA, plus the seed experts."""
    store = GenomeStore(tmp_path_factory.mktemp("genomes"), base_model=BASE)
    gen = torch.Generator().manual_seed(5)
    folders = {}
    for std in (0.004, 0.004, 0.03):
        info = store.save(random_weights(base_shapes, rank=8, std=std, generator=gen))
        folders[info.id] = store.path(info.id)
    if (BUILTIN_DIR / INDEX).exists():
        folders.update({f.name: f for f in seed_expert_folders(base_model=BASE).values()})
    return folders


def _requests(genomes, prompts=PROMPTS):
    reqs = [GenerationRequest(prompt=p) for p in prompts]
    for genome_id, folder in genomes.items():
        reqs += [GenerationRequest(prompt=p, genome_id=genome_id, adapter=folder) for p in prompts]
    return reqs


def _agreement(a, b) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def test_greedy_generation_is_deterministic_and_sensible(engine):
    reqs = [GenerationRequest(prompt=p) for p in PROMPTS]
    first = engine.generate(reqs, GREEDY)
    assert first == engine.generate(reqs, GREEDY)
    assert "Paris" in first[2]
    assert all(t and t == t.strip() for t in first)


def test_mixed_lora_batch_equals_per_genome_generation(engine, genomes):
    reqs = _requests(genomes)
    mixed = engine.generate(reqs, GREEDY)
    n = len(PROMPTS)
    per_genome = [
        text for i in range(0, len(reqs), n) for text in engine.generate(reqs[i : i + n], GREEDY)
    ]
    assert mixed == per_genome
    # The strong genome (third stored) changes behaviour relative to the base model.
    assert mixed[3 * n : 4 * n] != mixed[:n]


def test_base_rows_stay_base_once_every_lora_slot_is_taken(engine, genomes):
    """vLLM's CPU ops read "no LoRA" (-1) as the last slot; base rows must not."""
    assert len(genomes) > MAX_LORAS
    if engine.device == "cpu":  # the plugin, not the zero-adapter fallback, keeps them exact
        assert vllm_cpu_lora.is_active()
    base_reqs = [GenerationRequest(prompt=p) for p in PROMPTS]
    base_before = engine.generate(base_reqs, GREEDY)
    strong_id, strong = list(genomes.items())[2]
    strong_reqs = [
        GenerationRequest(prompt=p, genome_id=strong_id, adapter=strong) for p in PROMPTS
    ]
    engine.generate(_requests(genomes), GREEDY)  # cycle every genome through the slots
    mixed = engine.generate(strong_reqs + base_reqs, GREEDY)
    assert mixed[len(PROMPTS) :] == base_before
    assert mixed[: len(PROMPTS)] != base_before
    assert engine.generate(base_reqs, GREEDY) == base_before


def test_outputs_agree_with_the_hf_backend(engine, hf_backend, genomes):
    prompts = PROMPTS + benchmark_prompts(8)
    base_reqs = [GenerationRequest(prompt=p) for p in prompts]
    base_rate = _agreement(
        engine.generate(base_reqs, GREEDY), hf_backend.generate(base_reqs, GREEDY)
    )
    # A faint and the strong random genome, plus the seed experts when committed.
    lora_reqs = _requests(dict(list(genomes.items())[1:]))[len(PROMPTS) :]
    lora_rate = _agreement(
        engine.generate(lora_reqs, GREEDY), hf_backend.generate(lora_reqs, GREEDY)
    )
    print(f"identical completions vs hf: base {base_rate:.0%}, LoRA genomes {lora_rate:.0%}")
    # Float differences between engines may flip a few greedy tokens on a 135M model.
    assert base_rate >= 0.75
    assert lora_rate >= 0.6


def test_stop_strings_and_system_prompt(engine, hf_backend):
    config = GenerationConfig(max_new_tokens=16, stop=(",", "."), system_prompt="Be terse.")
    reqs = [GenerationRequest(prompt=p) for p in PROMPTS]
    outputs = engine.generate(reqs, config)
    assert all("," not in t and "." not in t and t == t.strip() for t in outputs)
    assert outputs != engine.generate(reqs, GREEDY)
    assert _agreement(outputs, hf_backend.generate(reqs, config)) >= 0.75


def test_sampling_is_reproducible_for_a_seed(engine):
    reqs = [GenerationRequest(prompt=PROMPTS[3])] * 4
    config = GenerationConfig(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=11)
    first = engine.generate(reqs, config)
    assert first == engine.generate(reqs, config)
    assert len(set(first)) > 1
    assert first != engine.generate(reqs, GenerationConfig(**{**vars(config), "seed": 12}))


def test_full_weight_genome_is_generated_and_base_weights_restored(engine, genomes, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from qd_llm.models.resolve import resolve_base_model

    genome_id, adapter = list(genomes.items())[2]  # the strong LoRA
    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(resolve_base_model(BASE)), str(adapter)
    ).merge_and_unload()
    full = tmp_path / "full-genome"
    merged.save_pretrained(full)
    del merged

    base_reqs = [GenerationRequest(prompt=p) for p in PROMPTS]
    lora_reqs = [GenerationRequest(prompt=p, genome_id=genome_id, adapter=adapter) for p in PROMPTS]
    full_reqs = [GenerationRequest(prompt=p, genome_id="full", adapter=full) for p in PROMPTS]
    base_before = engine.generate(base_reqs, GREEDY)
    mixed = engine.generate(base_reqs + lora_reqs + full_reqs, GREEDY)
    n = len(PROMPTS)
    assert mixed[:n] == base_before
    # Merged weights equal base + LoRA up to rounding: mostly the same greedy replies.
    assert _agreement(mixed[2 * n :], mixed[n : 2 * n]) >= 0.75
    assert mixed[2 * n :] != base_before
    assert engine.generate(base_reqs, GREEDY) == base_before


def test_bad_genomes_are_clear_errors(engine, base_shapes, tmp_path):
    store = GenomeStore(tmp_path, base_model=BASE)
    gen = torch.Generator().manual_seed(0)
    wide = store.save(random_weights(base_shapes, rank=32, std=0.004, generator=gen))
    with pytest.raises(QdLlmError, match="max_lora_rank"):
        engine.generate(
            [GenerationRequest(prompt="Hi", genome_id=wide.id, adapter=store.path(wide.id))], GREEDY
        )
    with pytest.raises(QdLlmError, match="not a PEFT adapter"):
        engine.generate([GenerationRequest(prompt="Hi", genome_id="x", adapter=tmp_path)], GREEDY)
    assert engine.generate([], GREEDY) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_engine_runs_mixed_lora_batches_in_bfloat16(engine, genomes):
    assert engine.device == "cuda"
    assert engine.llm.llm_engine.model_config.dtype == torch.bfloat16
    reqs = _requests(genomes)
    assert engine.generate(reqs, GREEDY) == engine.generate(reqs, GREEDY)


def test_close_shuts_the_engine_down(engine):
    """Runs last: it closes the module's engine."""
    assert multiprocessing.active_children()
    engine.close()
    engine.close()  # idempotent
    assert engine.llm is None
    assert not multiprocessing.active_children()
