"""The "openai" backend: genomes served by an external OpenAI-compatible server.

Each request is sent as one chat completion whose ``model`` is the request's
genome id (or the base model's served name for ``genome_id=None``), so any
server that exposes LoRA adapters as model names works unchanged::

    vllm serve BASE --enable-lora --lora-modules ID1=DIR1 ID2=DIR2 ...
    qd-llm serve --adapter ID1=DIR1 --adapter ID2=DIR2 ...

By default the server must already know every genome it is asked for. With
``load_adapters=True`` (what the loop uses, since it breeds genomes as it goes)
the backend first asks the server to load each genome it has not served yet
from its adapter folder, through ``POST /v1/load_lora_adapter`` (``vllm serve``
with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, or ``qd-llm serve``); the
folder must be visible to the server at the same path. Weights never travel
over HTTP. Requests run concurrently on a thread pool so the server can
batch them; completions are cut at the stop strings and stripped exactly like
the in-process backends' so scores do not depend on where a genome runs.
"""

import concurrent.futures
from collections.abc import Sequence
from pathlib import Path

from qd_llm.errors import QdLlmError
from qd_llm.inference.base import Backend, GenerationConfig, GenerationRequest, truncate_at_stop
from qd_llm.inference.openai_client import OpenAIChatClient
from qd_llm.models.resolve import DEFAULT_BASE_MODEL


class OpenAIBackend(Backend):
    """Generates through an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        base_url: Server base URL (``http://host:port/v1``); defaults to
            ``$QD_LLM_OPENAI_BASE_URL`` then ``$OPENAI_BASE_URL``.
        base_model: The name the server uses for the bare base model.
        api_key: Bearer token; defaults to ``$OPENAI_API_KEY`` (may be absent).
        max_workers: Requests in flight at once.
        timeout_s: Seconds to wait for one response.
        max_retries: Retries of a transient failure (connection error, 429, 5xx).
        load_adapters: Have the server load genomes it does not list yet.

    Raises:
        QdLlmError: No server URL was given or found, or ``max_workers < 1``.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        base_model: str = DEFAULT_BASE_MODEL,
        api_key: str | None = None,
        max_workers: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        load_adapters: bool = False,
    ):
        if max_workers < 1:
            raise QdLlmError(f"max_workers must be >= 1, got {max_workers}")
        self.base_model = base_model
        self.max_workers = max_workers
        # One client per served model name, all sharing these settings; the
        # client validates the URL and reads the environment once, here.
        self._template = OpenAIChatClient(
            base_url=base_url,
            model=base_model,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
        )
        self._clients: dict[str, OpenAIChatClient] = {base_model: self._template}
        self.load_adapters = load_adapters
        self._served: set[str] | None = None  # genome names the server is known to have

    @property
    def base_url(self) -> str:
        """The server's OpenAI-compatible API root, normalised (a bare host gets ``/v1``)."""
        return self._template.base_url

    def _client(self, model: str) -> OpenAIChatClient:
        if model not in self._clients:
            t = self._template
            self._clients[model] = OpenAIChatClient(
                base_url=t.base_url,
                model=model,
                api_key=t.api_key,
                timeout_s=t.timeout_s,
                max_retries=t.max_retries,
                backoff_s=t.backoff_s,
                max_backoff_s=t.max_backoff_s,
            )
        return self._clients[model]

    def _load_missing_adapters(self, requests: Sequence[GenerationRequest]) -> None:
        if self._served is None:
            self._served = set(self._template.list_models())
        for r in requests:
            if r.genome_id is not None and r.genome_id not in self._served:
                self._template.load_lora_adapter(r.genome_id, str(Path(r.adapter).resolve()))
                self._served.add(r.genome_id)

    def generate(
        self, requests: Sequence[GenerationRequest], config: GenerationConfig
    ) -> list[str]:
        """Returns one completion per request, in request order.

        Request ``i`` samples with seed ``config.seed + i`` (greedy ignores it),
        so a sampled batch is reproducible on servers that honour seeds.

        Raises:
            QdLlmError: The server refused a request (e.g. an unknown genome) or
                kept failing after every retry.
        """
        if not requests:
            return []
        if self.load_adapters:
            self._load_missing_adapters(requests)
        messages_head = []
        if config.system_prompt:
            messages_head.append({"role": "system", "content": config.system_prompt})
        # Clients are created here, not in the worker threads, so the dict is never raced.
        clients = [self._client(r.genome_id or self.base_model) for r in requests]

        def complete(i: int) -> str:
            text = clients[i].chat(
                [*messages_head, {"role": "user", "content": requests[i].prompt}],
                temperature=config.temperature,
                top_p=config.top_p,
                max_tokens=config.max_new_tokens,
                stop=config.stop,
                seed=config.seed + i,
            )
            # Servers already drop the stop string; cutting again also catches a
            # stop string that only appears after detokenisation joins tokens.
            return truncate_at_stop(text, config.stop).strip()

        workers = min(self.max_workers, len(requests))
        with concurrent.futures.ThreadPoolExecutor(workers, "qd-llm-openai") as pool:
            return list(pool.map(complete, range(len(requests))))
