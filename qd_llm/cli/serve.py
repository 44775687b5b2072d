"""``qd-llm serve``: the base model and LoRA genomes behind an OpenAI-compatible API."""

import os
from pathlib import Path

from qd_llm.errors import QdLlmError
from qd_llm.models.resolve import DEFAULT_BASE_MODEL

API_KEY_ENV = "QD_LLM_SERVE_API_KEY"  # read when --api-key is absent, like vLLM's VLLM_API_KEY


def parse_adapter(spec: str) -> tuple[str, Path]:
    """Splits ``NAME=DIR`` into the model name clients use and the adapter folder."""
    name, sep, folder = spec.partition("=")
    if not sep or not name.strip() or not folder.strip():
        raise QdLlmError(f"--adapter must look like NAME=DIR, got {spec!r}")
    return name.strip(), Path(folder.strip()).expanduser()


def _serve(args) -> int:
    from qd_llm.inference.hf import HFBackend
    from qd_llm.inference.server import ChatCompletionServer

    adapters = dict(parse_adapter(spec) for spec in args.adapter)
    if len(adapters) != len(args.adapter):
        raise QdLlmError("each --adapter NAME must be unique")
    if args.batch_size < 1:
        raise QdLlmError(f"--batch-size must be >= 1, got {args.batch_size}")
    backend = HFBackend(
        base_model=args.base_model,
        dtype=args.dtype,
        device=args.device,
        batch_size=args.batch_size,
    )
    server = ChatCompletionServer(
        backend=backend,
        base_model=args.base_model,
        adapters=adapters,
        host=args.host,
        port=args.port,
        default_max_tokens=args.default_max_tokens,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        adapter_root=args.adapter_root,
        batch_window_ms=args.batch_window_ms,
    )
    print(f"serving {', '.join(server.model_names)} at {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()
        backend.close()
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the base model and LoRA genomes over an OpenAI-compatible HTTP API",
        description="Start an OpenAI-compatible server (GET /v1/models, "
        "POST /v1/chat/completions). A request's `model` picks the base model or one "
        "of the --adapter names. Point the LLM scientist, a judge or any OpenAI client "
        "at the printed URL (e.g. QD_LLM_OPENAI_BASE_URL=http://127.0.0.1:8000/v1). "
        "Concurrent requests are batched into one forward pass. The loop's openai backend "
        "loads each new genome by path: give it --adapter-root RUNS_DIR.",
    )
    p.add_argument("--base-model", default=DEFAULT_BASE_MODEL, help="base model name or folder")
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="serve the PEFT adapter in DIR as model NAME (repeatable)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (beyond loopback, set an API key)",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (0 picks a free one)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument(
        "--default-max-tokens",
        type=int,
        default=512,
        help="max_tokens for requests that leave it out",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' on every route (default: "
        f"${API_KEY_ENV}; the variable keeps the key out of the process list); "
        "clients send it from OPENAI_API_KEY",
    )
    p.add_argument(
        "--adapter-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="allow POST /v1/load_lora_adapter and /v1/unload_lora_adapter, for adapter "
        "folders inside DIR only (symlinks resolved); without it both routes are off",
    )
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=10.0,
        help="gather requests arriving this close together into one batch "
        "(0: one request at a time)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="rows per forward pass of the model")
    p.set_defaults(func=_serve)
