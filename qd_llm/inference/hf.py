"""The "hf" backend: one base model in memory, mixed-adapter batches.

Every request names a genome (a PEFT adapter folder) or the bare base model.
Requests are sorted by genome and prompt length, cut into batches, and each
batch is generated in one ``generate`` call with one adapter per row, so a
whole population is evaluated in a handful of forward passes instead of one
model load per genome. The per-row adapters are applied by
:class:`~qd_llm.inference.multi_lora.MultiLora` (segment matmuls in forward
hooks, adapters read straight from their safetensors), or — with
``fused_lora=False``, kept for benchmarks and as a reference — by PEFT's
``adapter_names`` (``"__base__"`` for no adapter); both give the same results.

Prompts in a call usually share a long head: the chat template's system turn
and the start of the user turn (24 of SmolLM2's ~40-token evaluation prompts).
With the fused path, that shared prefix is run once per adapter and call, and
its keys and values are handed to every batch that adapter appears in; each
row then prefills only its own suffix. Rows are laid out as
``prefix · padding · suffix`` with the padding masked, so every real token
keeps the position it has in the plain left-padded batch.

Adapters are loaded once and kept in an LRU cache bounded by a memory budget;
the least recently used are deleted from the model when the budget is
exceeded.

Full-weight genomes — a request whose folder is a whole checkpoint of the base
architecture rather than a LoRA adapter (see
:mod:`qd_llm.models.full_weights`) — cannot share a batch with anything else:
after the LoRA and base rows, each full genome's rows are generated on their
own with its weights copied into the base model in place, tensor by tensor,
and the base weights are copied back from the base checkpoint at the end of
the call. That costs one full weight load per full genome per ``generate``
call plus one to restore the base (about a second per load for SmolLM2 on a
CPU), so pass all of a genome's requests in one call.
"""

import collections
import contextlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from qd_llm.errors import QdLlmError
from qd_llm.inference.base import (
    Backend,
    GenerationConfig,
    GenerationRequest,
    group_by_weights,
    truncate_at_stop,
)
from qd_llm.inference.multi_lora import MultiLora
from qd_llm.models.full_weights import Checkpoint
from qd_llm.models.genome import load_adapter_weights
from qd_llm.models.lora import LoraFactors, linear_shapes
from qd_llm.models.resolve import DEFAULT_BASE_MODEL, resolve_base_model

logger = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in mixed batches
_MIXED_WEIGHTS = Path("<partially loaded weights>")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_base_model(name: str = DEFAULT_BASE_MODEL, *, dtype: str = "float32", device="cpu"):
    """Loads the base causal LM and its tokenizer (left padding, pad token set).

    Returns:
        ``(model, tokenizer)`` with the model in eval mode.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in _DTYPES:
        raise QdLlmError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    path = resolve_base_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype]).to(device)
    model.eval()
    return model, tokenizer


def chat_prompt(tokenizer, prompt: str, system_prompt: str | None = None) -> str:
    """``prompt`` as a user turn in the model's chat template, ready to generate."""
    messages = [{"role": "user", "content": prompt}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    if tokenizer.chat_template is None:
        return prompt
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class HFBackend(Backend):
    """Batched multi-LoRA generation with transformers + PEFT.

    Args:
        base_model: Base model name or folder (see :mod:`qd_llm.models.resolve`).
        dtype: Compute dtype of the base model.
        device: Torch device.
        batch_size: Rows per ``generate`` call.
        adapter_memory_mb: Budget for loaded adapters; least recently used
            adapters are evicted beyond it.
        progress: Show a progress bar over batches.
        fused_lora: Apply adapters with :class:`~qd_llm.inference.multi_lora.MultiLora`
            (the default) rather than PEFT.

    Attributes:
        reuse_prefix: Run the prompt prefix shared by a call's requests once per
            genome (fused path only; on by default there). The prefix's keys and
            values live for one ``generate`` call: about 1 MB per genome for
            SmolLM2's 24-token chat head.
    """

    def __init__(
        self,
        *,
        base_model: str = DEFAULT_BASE_MODEL,
        dtype: str = "float32",
        device: str = "cpu",
        batch_size: int = 32,
        adapter_memory_mb: float = 2048,
        progress: bool = False,
        fused_lora: bool = True,
    ):
        if batch_size < 1:
            raise QdLlmError(f"batch_size must be >= 1, got {batch_size}")
        self.base_model_name = base_model
        self.device = device
        self.batch_size = batch_size
        self.adapter_memory_mb = adapter_memory_mb
        self.progress = progress
        self.base, self.tokenizer = load_base_model(base_model, dtype=dtype, device=device)
        self.model = self.base  # becomes a PeftModel once an adapter is loaded
        self._loaded: collections.OrderedDict[str, float] = collections.OrderedDict()
        # Checkpoint names of the base parameters, taken before PEFT wraps the model
        # (a wrapped projection's weight moves to ``...q_proj.base_layer.weight``,
        # but the Parameter objects stay the same). Tied weights appear once.
        self._parameters = dict(self.base.named_parameters())
        self._weights: Path | None = None  # the full-weight genome loaded in place, if any
        self._multi_lora = MultiLora(self.base, linear_shapes(self.base)) if fused_lora else None
        self._adapters: dict[str, dict[str, LoraFactors]] = {}  # fused: factors by genome
        self.reuse_prefix = fused_lora

    # -- adapters ---------------------------------------------------------------

    @property
    def loaded_adapters(self) -> list[str]:
        """Adapter names in memory, least recently used first."""
        return list(self._loaded)

    def _ensure_adapter(self, name: str, folder: Path) -> None:
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return
        folder = Path(folder)
        if not (folder / "adapter_config.json").exists():
            raise QdLlmError(f"{folder} is not a PEFT adapter folder")
        if self._multi_lora is not None:
            weights = load_adapter_weights(folder)
            self._multi_lora.check(weights, folder)
            self._adapters[name] = weights
            self._loaded[name] = _adapter_mb(folder)
            return
        from peft import PeftModel

        # PEFT initialises the new LoRA layers at random before loading the
        # weights; that draw must not move the caller's torch generator.
        with self._private_rng():
            if self.model is self.base:
                self.model = PeftModel.from_pretrained(self.base, str(folder), adapter_name=name)
            else:
                self.model.load_adapter(str(folder), adapter_name=name)
        self.model.eval()
        self._loaded[name] = _adapter_mb(folder)

    def _private_rng(self):
        """A context in which torch's global generators may be used and are
        restored afterwards (CPU, plus every CUDA device when on CUDA)."""
        return torch.random.fork_rng(devices=[] if self.device == "cpu" else None)

    def _evict(self, *, pinned: set[str]) -> None:
        """Deletes least recently used adapters, never those of the current batch."""
        while sum(self._loaded.values()) > self.adapter_memory_mb:
            victim = next((n for n in self._loaded if n not in pinned), None)
            if victim is None:
                return
            if self._multi_lora is not None:
                del self._adapters[victim]
            else:
                self._delete_peft_adapter(victim)
            del self._loaded[victim]
            logger.debug("evicted adapter %s", victim)

    def _delete_peft_adapter(self, name: str) -> None:
        with warnings.catch_warnings():
            # PEFT warns when the deleted adapter was the active one; rows name
            # their adapter explicitly, so which one is "active" never matters.
            warnings.filterwarnings("ignore", message=".*was active which is now deleted")
            self.model.delete_adapter(name)

    # -- full-weight genomes ----------------------------------------------------

    @torch.no_grad()
    def _load_weights(self, folder: Path | None) -> None:
        """Copies a full checkpoint's tensors (``None``: the base's) into the model in place.

        Names and shapes are checked from the headers before any weight is
        touched; then one tensor at a time is read and copied.
        """
        if folder == self._weights:
            return
        checkpoint = Checkpoint(folder or resolve_base_model(self.base_model_name))
        layout = checkpoint.layout()
        names = set(layout)
        if names != set(self._parameters):
            odd = sorted(names ^ set(self._parameters))[0]
            raise QdLlmError(f"{checkpoint.folder} does not fit the base model: tensor {odd}")
        for name, spec in layout.items():
            if spec.shape != tuple(self._parameters[name].shape):
                raise QdLlmError(
                    f"{checkpoint.folder}: tensor {name} has shape {spec.shape}, "
                    f"the base model's {tuple(self._parameters[name].shape)}"
                )
        logger.info("loading weights from %s", checkpoint.folder)
        # Until the copy completes the weights are a mix; a failure halfway must
        # not let the next load believe they are already right.
        self._weights = _MIXED_WEIGHTS
        for name in checkpoint:
            self._parameters[name].copy_(checkpoint[name])
        self._weights = folder

    # -- generation -------------------------------------------------------------

    def generate(
        self, requests: Sequence[GenerationRequest], config: GenerationConfig
    ) -> list[str]:
        """Generates one completion per request, batching across genomes.

        Each batch mixes whichever LoRA genomes (and base rows) its rows need;
        its adapters are pinned in memory while it runs. Full-weight genomes
        follow, one at a time, with their weights loaded in place; the base
        weights are back when this returns.
        """
        if not requests:
            return []
        texts = [chat_prompt(self.tokenizer, r.prompt, config.system_prompt) for r in requests]
        token_ids = [self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
        prefix = shared_prefix(token_ids) if self.reuse_prefix else []
        outputs: list[str | None] = [None] * len(requests)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(requests), desc="generate", unit="req", leave=False)
        batch_index = 0
        try:
            for folder, rows in group_by_weights(requests):
                self._load_weights(folder)
                prefix_states: dict[str | None, _LayerStates] = {}  # by genome, these weights
                # Rows of one genome sit together (one LoRA run per distinct adapter
                # in a batch, so fewer per batch is faster), shortest first.
                order = sorted(rows, key=lambda i: (requests[i].genome_id or "", len(token_ids[i])))
                for start in range(0, len(order), self.batch_size):
                    batch = order[start : start + self.batch_size]
                    # A full genome's rows run as base rows over its loaded weights.
                    batch_requests = [
                        requests[i]
                        if folder is None
                        else GenerationRequest(prompt=requests[i].prompt)
                        for i in batch
                    ]
                    completions = self._generate_batch(
                        batch_requests,
                        [token_ids[i][len(prefix) :] for i in batch],
                        config,
                        seed=config.seed + batch_index,
                        prefix=prefix,
                        prefix_states=prefix_states,
                    )
                    for i, text in zip(batch, completions, strict=True):
                        outputs[i] = text
                    batch_index += 1
                    if bar is not None:
                        bar.update(len(batch))
        finally:
            self._load_weights(None)
            if bar is not None:
                bar.close()
        return outputs  # type: ignore[return-value]

    @torch.inference_mode()
    def _generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        suffixes: Sequence[Sequence[int]],
        config: GenerationConfig,
        *,
        seed: int,
        prefix: Sequence[int],
        prefix_states: dict[str | None, "_LayerStates"],
    ) -> list[str]:
        """Generates one batch; row ``i``'s prompt is ``prefix + suffixes[i]``.

        ``prefix_states`` caches the prefix's per-layer keys and values by
        genome for the weights now loaded; missing entries are computed here.
        """
        pinned = {r.genome_id for r in requests if r.genome_id is not None}
        for r in requests:
            if r.genome_id is not None:
                self._ensure_adapter(r.genome_id, r.adapter)
        self._evict(pinned=pinned)
        pad = self.tokenizer.pad_token_id
        width = max(len(s) for s in suffixes)
        input_ids = torch.tensor(
            [[*prefix, *[pad] * (width - len(s)), *s] for s in suffixes], device=self.device
        )
        attention_mask = torch.tensor(
            [[1] * len(prefix) + [0] * (width - len(s)) + [1] * len(s) for s in suffixes],
            device=self.device,
        )
        kwargs = dict(
            max_new_tokens=config.max_new_tokens,
            pad_token_id=pad,
            do_sample=config.temperature > 0,
        )
        if config.temperature > 0:
            kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=0)
        else:
            # Neutralise sampling defaults from generation_config (no warnings, pure greedy).
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if config.stop:
            kwargs.update(stop_strings=list(config.stop), tokenizer=self.tokenizer)
        if self._multi_lora is not None:
            genomes = [r.genome_id for r in requests]
            if prefix:
                kwargs["past_key_values"] = self._prefix_cache(prefix, genomes, prefix_states)
            applying = self._multi_lora.rows([self._adapters.get(g) for g in genomes])
        else:
            applying = contextlib.nullcontext()
            if self.model is not self.base:
                kwargs["adapter_names"] = [r.genome_id or BASE_ADAPTER for r in requests]
        with self._private_rng(), applying:
            torch.manual_seed(seed)  # sampling draws from a stream fixed by the batch's seed
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        new_tokens = out[:, input_ids.shape[1] :]
        decoded = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [truncate_at_stop(t, config.stop).strip() for t in decoded]

    def _prefix_cache(
        self,
        prefix: Sequence[int],
        genomes: Sequence[str | None],
        states: dict[str | None, "_LayerStates"],
    ):
        """A fresh cache holding ``prefix``'s keys and values for each row's genome.

        Genomes not in ``states`` yet get their prefix run now, in one batch.
        """
        from transformers import DynamicCache

        missing = list(dict.fromkeys(g for g in genomes if g not in states))
        if missing:
            rows = torch.tensor([list(prefix)] * len(missing), device=self.device)
            with self._multi_lora.rows([self._adapters.get(g) for g in missing]):
                cache = self.model(input_ids=rows, use_cache=True).past_key_values
            for row, genome in enumerate(missing):
                states[genome] = [(layer.keys[row], layer.values[row]) for layer in cache.layers]
        per_layer = zip(*(states[g] for g in genomes), strict=True)
        return DynamicCache(
            ddp_cache_data=[
                (torch.stack([k for k, _ in layer]), torch.stack([v for _, v in layer]))
                for layer in per_layer
            ],
            config=self.model.config,
        )

    def close(self) -> None:
        if self._multi_lora is not None:
            self._multi_lora.close()
        self.model = self.base = None
        self._loaded.clear()
        self._adapters.clear()


_LayerStates = list[tuple[torch.Tensor, torch.Tensor]]  # one prefix's (keys, values) per layer


def shared_prefix(token_ids: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix all rows share, leaving every row one token of its own.

    The last prompt token must be prefilled with the row (its logits pick the
    first generated token), hence the one-token reserve.
    """
    limit = min(len(ids) for ids in token_ids) - 1
    first = token_ids[0]
    length = 0
    while length < limit and all(ids[length] == first[length] for ids in token_ids):
        length += 1
    return list(first[:length])


def _adapter_mb(folder: Path) -> float:
    """An adapter's memory cost as the LRU budget counts it: its weights file's size."""
    return (folder / "adapter_model.safetensors").stat().st_size / 2**20
