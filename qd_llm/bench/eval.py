"""``qd-llm bench eval``: batched multi-LoRA evaluation vs one genome at a time.

Both sides generate the same completions (greedy) for P genomes × N prompts on
the same loaded base model:

* **batched** — every (genome, prompt) pair in mixed-adapter batches through
  :class:`~qd_llm.inference.hf.HFBackend` (one ``generate`` per batch);
* **naive** — genome by genome, prompt by prompt, one ``generate`` call each.

Adapter loading is counted on both sides. The ratio is naive / batched wall time.

``--backend vllm`` adds a third side on the same work: every pair in one
``generate`` call of a vLLM engine with one ``LoRARequest`` per genome
(:class:`~qd_llm.inference.vllm_backend.VLLMBackend`; engine start-up is
reported but not timed, like the hf model load). Its ``ratio`` is naive / vLLM
wall time; ``vllm_vs_hf_batched`` is hf batched / vLLM, and ``vllm_identical``
the share of vLLM completions identical to the hf ones. It also times the
reference code's approach on the same engine: each genome merged into a full
checkpoint (``full_swap_merge_seconds``, not in the ratio) and generated after
swapping the engine's weights to it (``full_swap_seconds``, one
``reload_weights`` per genome); ``vllm_vs_full_swap`` is full swap / vLLM
multi-LoRA, and ``full_swap_identical`` the share of completions equal to the
multi-LoRA ones.
"""

import argparse
import tempfile
import time

NAME = "eval"
HELP = "mixed-adapter batched evaluation vs one genome and one prompt at a time"

_PROMPT_TEMPLATES = (
    "What is {a} + {b}? Reply with only the number.",
    "Write the word '{w}' backwards. Reply with only the new word.",
    "What is the largest number in the list [{a}, {b}]? Reply with only the number.",
    "How many letters are in the word '{w}'? Reply with only the number.",
)
_WORDS = ("cat", "sun", "tree", "house", "river", "apple", "stone", "cloud")


def benchmark_prompts(n: int) -> list[str]:
    """``n`` short, varied instruction prompts."""
    return [
        _PROMPT_TEMPLATES[i % len(_PROMPT_TEMPLATES)].format(
            a=i % 9 + 1, b=(3 * i) % 7 + 2, w=_WORDS[i % len(_WORDS)]
        )
        for i in range(n)
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        default="hf",
        choices=["hf", "vllm"],
        help="batched backend; vllm is measured next to hf batched and naive",
    )
    parser.add_argument("--genomes", type=int, default=8, help="P, random rank-8 LoRA genomes")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per genome")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--base-model", default="smollm2-135m-instruct")


def run(args) -> dict:
    import torch

    from qd_llm.inference.base import GenerationConfig, GenerationRequest
    from qd_llm.inference.hf import HFBackend
    from qd_llm.inference.registry import require_backend
    from qd_llm.models.genome import GenomeStore
    from qd_llm.models.lora import linear_shapes, random_weights

    if args.backend == "vllm":
        require_backend("vllm")  # fail before minutes of hf timing, not after
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    prompts = benchmark_prompts(args.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        backend = HFBackend(base_model=args.base_model, batch_size=args.batch_size)
        store = GenomeStore(tmp, base_model=args.base_model)
        gen = torch.Generator().manual_seed(0)
        shapes = linear_shapes(backend.base)
        genomes = [
            store.save(random_weights(shapes, rank=8, std=0.004, generator=gen))
            for _ in range(args.genomes)
        ]
        requests = [
            GenerationRequest(prompt=p, genome_id=g.id, adapter=store.path(g.id))
            for g in genomes
            for p in prompts
        ]

        start = time.perf_counter()
        batched = backend.generate(requests, config)
        batched_s = time.perf_counter() - start

        # Naive: a fresh backend state per genome (adapter loaded when first needed),
        # then one unbatched generate call per prompt.
        backend.adapter_memory_mb = 0  # keep only the current genome resident
        start = time.perf_counter()
        naive = [backend.generate([r], config)[0] for r in requests]
        naive_s = time.perf_counter() - start

        if args.backend == "vllm":
            vllm_result = _run_vllm(args, requests, config, reference=batched, store=store)

    tokenizer = backend.tokenizer
    tokens = sum(len(tokenizer(t, add_special_tokens=False).input_ids) for t in batched)
    result = {
        "backend": args.backend,
        "genomes": args.genomes,
        "prompts": args.prompts,
        "requests": len(requests),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "generated_tokens": tokens,
        "batched_seconds": round(batched_s, 3),
        "naive_seconds": round(naive_s, 3),
        "batched_tokens_per_s": round(tokens / batched_s, 2),
        "naive_tokens_per_s": round(tokens / naive_s, 2),
        "same_outputs": batched == naive,
        "ratio": round(naive_s / batched_s, 2),
    }
    if args.backend == "vllm":
        vllm_s = vllm_result["vllm_seconds"]
        result.update(
            vllm_result,
            batched_ratio=result["ratio"],
            ratio=round(naive_s / vllm_s, 2),
            vllm_vs_hf_batched=round(batched_s / vllm_s, 2),
            vllm_vs_full_swap=round(vllm_result["full_swap_seconds"] / vllm_s, 2),
        )
    return result


def _run_vllm(args, requests, config, *, reference: list[str], store) -> dict:
    """Times vLLM multi-LoRA and full-weight swapping over ``requests``.

    Multi-LoRA is one ``generate`` over every request; full swapping merges each
    genome of ``store`` into a full checkpoint first (timed apart), then
    generates every request on its genome's checkpoint.
    """
    from qd_llm.inference.base import GenerationRequest
    from qd_llm.inference.registry import make_backend

    start = time.perf_counter()
    backend = make_backend("vllm", base_model=args.base_model, max_loras=args.genomes)
    start_s = time.perf_counter() - start
    try:
        start = time.perf_counter()
        outputs = backend.generate(requests, config)
        vllm_s = time.perf_counter() - start
        tokens = sum(len(backend.tokenizer(t, add_special_tokens=False).input_ids) for t in outputs)

        start = time.perf_counter()
        merged = {
            g: store.path(store.merge_adapter(store.path(g)).id)
            for g in dict.fromkeys(r.genome_id for r in requests)
        }
        merge_s = time.perf_counter() - start
        full_requests = [
            GenerationRequest(
                prompt=r.prompt, genome_id=f"full-{r.genome_id}", adapter=merged[r.genome_id]
            )
            for r in requests
        ]
        start = time.perf_counter()
        swapped = backend.generate(full_requests, config)
        swap_s = time.perf_counter() - start
    finally:
        backend.close()

    def share_equal(a, b) -> float:
        return round(sum(x == y for x, y in zip(a, b, strict=True)) / len(a), 3)

    return {
        "vllm_device": backend.device,
        "vllm_engine_start_seconds": round(start_s, 1),
        "vllm_seconds": round(vllm_s, 3),
        "vllm_generated_tokens": tokens,
        "vllm_tokens_per_s": round(tokens / vllm_s, 2),
        "vllm_identical": share_equal(outputs, reference),
        "full_swap_merge_seconds": round(merge_s, 3),
        "full_swap_seconds": round(swap_s, 3),
        "full_swap_identical": share_equal(swapped, outputs),
    }
