"""The hf backend on the real SmolLM2: greedy, mixed batches, PEFT interop, full weights."""

import pytest
import torch
from safetensors.torch import save_file

from qd_llm.errors import QdLlmError
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


@pytest.fixture(scope="module")
def peft_backend():
    """The PEFT path (``fused_lora=False``), the reference for the fused one."""
    from qd_llm.inference.hf import HFBackend

    backend = HFBackend(batch_size=16, fused_lora=False)
    yield backend
    backend.close()


def test_fused_lora_equals_peft_on_a_mixed_batch(hf_backend, peft_backend, base_shapes, tmp_path):
    # Base rows and three genomes in one padded batch of 16 rows.
    store, infos = _store_genomes(tmp_path, base_shapes, n=3, std=0.02)
    reqs = _requests(store, infos, PROMPTS)
    fused = hf_backend.generate(reqs, GREEDY)
    assert fused == peft_backend.generate(reqs, GREEDY)
    n = len(PROMPTS)
    assert any(fused[i * n : (i + 1) * n] != fused[:n] for i in range(1, len(infos) + 1))
    # Not only the same tokens: the same logits, bit for bit (same operations as PEFT).
    from qd_llm.inference.hf import BASE_ADAPTER, chat_prompt

    tok = hf_backend.tokenizer
    texts = [chat_prompt(tok, r.prompt) for r in reqs]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        with hf_backend._multi_lora.rows([hf_backend._adapters.get(r.genome_id) for r in reqs]):
            ours = hf_backend.base(**enc).logits
        names = [r.genome_id or BASE_ADAPTER for r in reqs]
        theirs = peft_backend.model(**enc, adapter_names=names).logits
    assert torch.equal(ours, theirs)


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


@pytest.fixture(scope="module")
def lora_and_merged(base_shapes, tmp_path_factory):
    """A LoRA genome that changes answers and the same genome merged into full weights."""
    store = GenomeStore(tmp_path_factory.mktemp("full"), base_model="smollm2-135m-instruct")
    generator = torch.Generator().manual_seed(0)
    lora = store.save(random_weights(base_shapes, rank=4, std=0.03, generator=generator))
    return store, lora, store.merge_adapter(store.path(lora.id))


def test_full_genome_answers_like_its_lora_and_the_base_weights_come_back(
    hf_backend, lora_and_merged
):
    store, lora, full = lora_and_merged
    base_requests = [GenerationRequest(prompt=p) for p in PROMPTS]
    before = hf_backend.generate(base_requests, GREEDY)
    # One call mixing base, LoRA and full-weight rows.
    mixed = hf_backend.generate(_requests(store, [lora, full], PROMPTS), GREEDY)
    n = len(PROMPTS)
    base_rows, lora_rows, full_rows = mixed[:n], mixed[n : 2 * n], mixed[2 * n :]
    assert base_rows == before
    # W + B·A and W·x + B·(A·x) round differently; a rare flipped token is allowed.
    assert sum(f == lo for f, lo in zip(full_rows, lora_rows, strict=True)) >= n - 1
    assert full_rows != before
    assert hf_backend.generate(base_requests, GREEDY) == before


def test_a_checkpoint_that_does_not_fit_is_refused_before_touching_weights(hf_backend, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    save_file({"model.norm.weight": torch.zeros(576)}, str(folder / "model.safetensors"))
    request = GenerationRequest(prompt=PROMPTS[2])
    before = hf_backend.generate([request], GREEDY)
    with pytest.raises(QdLlmError, match="does not fit the base model"):
        hf_backend.generate(
            [GenerationRequest(prompt=PROMPTS[2], genome_id="bad", adapter=folder)], GREEDY
        )
    assert hf_backend.generate([request], GREEDY) == before


def test_the_shared_prompt_prefix_is_computed_once_per_genome(hf_backend, base_shapes, tmp_path):
    # Base rows and two genomes over batches of 3 rows, so that prefix states
    # computed for one batch are handed to the next.
    store, infos = _store_genomes(tmp_path, base_shapes, n=2, std=0.02)
    reqs = _requests(store, infos, PROMPTS)
    from qd_llm.inference.hf import chat_prompt

    tok = hf_backend.tokenizer
    ids = [tok(chat_prompt(tok, p), add_special_tokens=False).input_ids for p in PROMPTS]
    shared = next(i for i in range(len(ids[0])) if len({row[i] for row in ids}) > 1)
    assert shared > 10  # the system turn and the start of the user turn

    embedded = []
    embed = hf_backend.base.get_input_embeddings()
    handle = embed.register_forward_hook(lambda m, inputs, out: embedded.append(inputs[0].numel()))
    batch_size, reuse = hf_backend.batch_size, hf_backend.reuse_prefix
    try:
        hf_backend.batch_size = 3
        hf_backend.reuse_prefix = False
        plain = hf_backend.generate(reqs, GREEDY)
        plain_tokens, embedded[:] = sum(embedded), []
        hf_backend.reuse_prefix = True
        reused = hf_backend.generate(reqs, GREEDY)
        reused_tokens = sum(embedded)
    finally:
        handle.remove()
        hf_backend.batch_size, hf_backend.reuse_prefix = batch_size, reuse
    assert reused == plain
    genomes = 1 + len(infos)  # the base model counts as one
    assert plain_tokens - reused_tokens == shared * (len(reqs) - genomes)
