"""The hf backend on the real SmolLM2: greedy, mixed batches, PEFT interop."""

import torch

from qd_llm.inference.base import GenerationConfig, GenerationRequest
from qd_llm.models.genome import GenomeStore
from qd_llm.models.lora import random_weights

PROMPTS = [
    "What is 2+3? Reply with only the number.",
    "Write the word cat in upper case.",
    "What is the capital of France?",
    "Name three colours.",
]
GREEDY = GenerationConfig(max_new_tokens=12)


def _store_genomes(tmp_path, shapes, n, std=0.004):
    store = GenomeStore(tmp_path, base_model="smollm2-135m-instruct")
    gen = torch.Generator().manual_seed(1)
    return store, [
        store.save(random_weights(shapes, rank=4, std=std, generator=gen)) for _ in range(n)
    ]


def _requests(store, infos, prompts):
    reqs = [GenerationRequest(prompt=p) for p in prompts]
    for info in infos:
        reqs += [
            GenerationRequest(prompt=p, genome_id=info.id, adapter=store.path(info.id))
            for p in prompts
        ]
    return reqs


def test_greedy_generation_is_deterministic_and_sensible(hf_backend):
    reqs = [GenerationRequest(prompt=p) for p in PROMPTS]
    first = hf_backend.generate(reqs, GREEDY)
    assert first == hf_backend.generate(reqs, GREEDY)
    assert "Paris" in first[2]
    assert all(isinstance(t, str) and t for t in first)


def test_mixed_batch_equals_per_genome_generation(hf_backend, base_shapes, tmp_path):
    store, infos = _store_genomes(tmp_path, base_shapes, n=3)
    reqs = _requests(store, infos, PROMPTS)
    mixed = hf_backend.generate(reqs, GREEDY)
    one_by_one = [hf_backend.generate([r], GREEDY)[0] for r in reqs]
    assert mixed == one_by_one
    # The adapters change behaviour: not every genome answers like the base model.
    n = len(PROMPTS)
    assert any(mixed[i * n : (i + 1) * n] != mixed[:n] for i in range(1, len(infos) + 1))


def test_stored_genome_reloads_through_peft_unchanged(hf_backend, base_shapes, tmp_path):
    from peft import PeftModel

    store, (info,) = _store_genomes(tmp_path, base_shapes, n=1)
    ours = hf_backend.generate(_requests(store, [info], PROMPTS)[len(PROMPTS) :], GREEDY)
    from qd_llm.inference.hf import chat_prompt, load_base_model

    base, tok = load_base_model()
    peft_model = PeftModel.from_pretrained(base, str(store.path(info.id))).eval()
    theirs = []
    for p in PROMPTS:
        enc = tok(chat_prompt(tok, p), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = peft_model.generate(
                **enc,
                max_new_tokens=12,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        theirs.append(
            tok.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True).strip()
        )
    assert ours == theirs


def test_stop_strings_cut_the_completion(hf_backend):
    full = hf_backend.generate([GenerationRequest(prompt=PROMPTS[2])], GREEDY)[0]
    assert " " in full
    word = full.split(" ")[1]
    cut = hf_backend.generate(
        [GenerationRequest(prompt=PROMPTS[2])],
        GenerationConfig(max_new_tokens=12, stop=(word,)),
    )[0]
    assert word not in cut and full.startswith(cut)


def test_sampling_is_reproducible_for_a_seed(hf_backend):
    reqs = [GenerationRequest(prompt="Tell me a story.")] * 3
    cfg = GenerationConfig(max_new_tokens=10, temperature=1.0, seed=7)
    a = hf_backend.generate(reqs, cfg)
    assert a == hf_backend.generate(reqs, cfg)
    assert a != hf_backend.generate(
        reqs, GenerationConfig(max_new_tokens=10, temperature=1.0, seed=8)
    )


def test_adapters_are_evicted_beyond_the_memory_budget(hf_backend, base_shapes, tmp_path):
    store, infos = _store_genomes(tmp_path, base_shapes, n=3)
    size_mb = (store.path(infos[0].id) / "adapter_model.safetensors").stat().st_size / 2**20
    old_budget = hf_backend.adapter_memory_mb
    hf_backend.adapter_memory_mb = 1.5 * size_mb
    try:
        for info in infos:
            hf_backend.generate(_requests(store, [info], PROMPTS[:1])[1:], GREEDY)
        assert hf_backend.loaded_adapters == [infos[-1].id]
        # A batch needing all three keeps them all (pinned), then shrinks later.
        hf_backend.generate(_requests(store, infos, PROMPTS[:1])[1:], GREEDY)
        assert set(infos[i].id for i in range(3)) <= set(hf_backend.loaded_adapters)
    finally:
        hf_backend.adapter_memory_mb = old_budget
