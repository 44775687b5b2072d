"""The openai backend against ``qd-llm serve``'s server on loopback, and the registry.

The server runs the real SmolLM2 through the session's HFBackend with two real
stored genomes, so the openai backend must reproduce the hf backend's greedy
completions exactly.
"""

import importlib.util

import pytest
import torch

from qd_llm.errors import QdLlmError
from qd_llm.inference.base import GenerationConfig, GenerationRequest
from qd_llm.inference.openai_backend import OpenAIBackend
from qd_llm.inference.registry import BACKEND_NAMES, make_backend
from qd_llm.inference.server import ChatCompletionServer
from qd_llm.models.genome import GenomeStore
from qd_llm.models.lora import random_weights

BASE = "smollm2-135m-instruct"
PROMPTS = [
    "What is 2+3? Reply with only the number.",
    "What is the capital of France?",
    "Name three colours.",
]
GREEDY = GenerationConfig(max_new_tokens=12)


@pytest.fixture(scope="module")
def genomes(tmp_path_factory, base_shapes):
    """Two stored genomes: a faint one and one strong enough to change replies."""
    store = GenomeStore(tmp_path_factory.mktemp("genomes"), base_model=BASE)
    gen = torch.Generator().manual_seed(3)
    infos = [
        store.save(random_weights(base_shapes, rank=4, std=std, generator=gen))
        for std in (0.004, 0.03)
    ]
    return {info.id: store.path(info.id) for info in infos}


@pytest.fixture(scope="module")
def server(hf_backend, genomes):
    with ChatCompletionServer(backend=hf_backend, base_model=BASE, adapters=genomes) as server:
        yield server.start()


@pytest.fixture(scope="module")
def backend(server):
    return OpenAIBackend(base_url=server.url, base_model=BASE, max_workers=4, max_retries=0)


def _requests(genomes, prompts=PROMPTS):
    reqs = [GenerationRequest(prompt=p) for p in prompts]
    for genome_id, folder in genomes.items():
        reqs += [GenerationRequest(prompt=p, genome_id=genome_id, adapter=folder) for p in prompts]
    return reqs


def test_greedy_outputs_equal_the_hf_backend(backend, hf_backend, genomes):
    reqs = _requests(genomes)
    served = backend.generate(reqs, GREEDY)
    assert served == hf_backend.generate(reqs, GREEDY)
    assert "Paris" in served[1]
    # The strong genome answers differently from the base model somewhere.
    n = len(PROMPTS)
    assert served[2 * n :] != served[:n]


def test_stop_strings_and_system_prompt_match_the_hf_backend(backend, hf_backend, genomes):
    config = GenerationConfig(max_new_tokens=16, stop=(",", "."), system_prompt="Be terse.")
    reqs = _requests(genomes, PROMPTS[1:])
    served = backend.generate(reqs, config)
    assert served == hf_backend.generate(reqs, config)
    assert all("," not in t and "." not in t for t in served)
    assert all(t == t.strip() for t in served)


def test_sampling_is_reproducible_for_a_seed(backend):
    reqs = [GenerationRequest(prompt=PROMPTS[2])] * 3
    config = GenerationConfig(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    first = backend.generate(reqs, config)
    assert first == backend.generate(reqs, config)
    # Each request gets its own seed, so identical prompts need not agree.
    assert len(set(first)) > 1


def test_unknown_genome_is_a_clear_error(backend, genomes):
    folder = next(iter(genomes.values()))
    with pytest.raises(QdLlmError, match="not-served"):
        backend.generate(
            [GenerationRequest(prompt="Hi", genome_id="not-served", adapter=folder)], GREEDY
        )


def test_new_genomes_are_loaded_into_the_server_by_path(hf_backend, genomes, base_shapes, tmp_path):
    """What the loop does: genomes bred after the server started are served on first use."""
    store = GenomeStore(tmp_path, base_model=BASE)
    gen = torch.Generator().manual_seed(9)
    child = store.save(random_weights(base_shapes, rank=4, std=0.03, generator=gen))
    known_id, known = next(iter(genomes.items()))
    reqs = [
        GenerationRequest(prompt=PROMPTS[0], genome_id=child.id, adapter=store.path(child.id)),
        GenerationRequest(prompt=PROMPTS[1], genome_id=known_id, adapter=known),
    ]
    with ChatCompletionServer(
        backend=hf_backend, base_model=BASE, adapters={known_id: known}, adapter_root=tmp_path
    ) as s:
        s.start()
        loading = OpenAIBackend(base_url=s.url, base_model=BASE, load_adapters=True)
        assert loading.generate(reqs, GREEDY) == hf_backend.generate(reqs, GREEDY)
        assert s.adapters[child.id] == store.path(child.id).resolve()
        assert loading.generate(reqs, GREEDY)  # already served: not loaded twice
        plain = OpenAIBackend(base_url=s.url, base_model=BASE, max_retries=0)
        assert plain.generate(reqs[:1], GREEDY)  # now served to every client


def test_empty_batch_and_bad_settings(backend, server):
    assert backend.generate([], GREEDY) == []
    with pytest.raises(QdLlmError, match="max_workers"):
        OpenAIBackend(base_url=server.url, max_workers=0)


def test_registry_builds_backends_by_name(server):
    assert set(BACKEND_NAMES) == {"hf", "vllm", "openai"}
    backend = make_backend("openai", base_url=server.url, base_model=BASE)
    assert isinstance(backend, OpenAIBackend)
    assert backend.generate([GenerationRequest(prompt=PROMPTS[1])], GREEDY)[0]
    with pytest.raises(QdLlmError, match="unknown backend 'llamacpp'"):
        make_backend("llamacpp")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_registry_says_how_to_install_a_missing_engine():
    with pytest.raises(QdLlmError, match="pip install vllm"):
        make_backend("vllm")
