"""Genomes and the genome store.

A genome is a LoRA adapter over the shared base model. On disk it is a standard
PEFT adapter folder plus a small ``genome.json``::

    <store>/<genome_id>/
        adapter_config.json        PEFT LoraConfig (lora_alpha = r, so scale 1)
        adapter_model.safetensors  base_model.model.<module>.lora_{A,B}.weight
        genome.json                id, parents, operator, params, generation, ...

so ``PeftModel.from_pretrained(base, folder)`` loads any stored genome
unchanged. The id is a content hash of the weights: breeding the same child
twice yields the same id and the store keeps one copy.
"""

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from qd_llm import atomic
from qd_llm.errors import QdLlmError
from qd_llm.models.lora import LoraFactors, LoraWeights, max_rank, pad_rank

GENOME_JSON = "genome.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_PEFT_PREFIX = "base_model.model."
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenomeInfo:
    """What ``genome.json`` records.

    Attributes:
        id: Content hash of the stored weights.
        parents: Ids of the genomes it was bred from (empty for seeds).
        operator: The operator that made it (``seed``, ``linear``, ``ties``...).
        params: The operator's parameters (weights, densities, noise scale...).
        generation: The loop generation it was born in.
        rank: LoRA rank of every layer.
        base_model: The base model name it adapts.
        created_at: UTC ISO-8601 time of creation.
        name: Optional human name (seed experts: their skill).
    """

    id: str
    parents: tuple[str, ...] = ()
    operator: str = "seed"
    params: dict = dataclasses.field(default_factory=dict)
    generation: int = 0
    rank: int = 0
    base_model: str = ""
    created_at: str = ""
    name: str = ""

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["parents"] = list(self.parents)
        return d

    @classmethod
    def from_json(cls, obj: dict) -> "GenomeInfo":
        fields = {f.name for f in dataclasses.fields(cls)}
        obj = {k: v for k, v in obj.items() if k in fields}
        obj["parents"] = tuple(obj.get("parents", ()))
        return cls(**obj)


def weights_to_state_dict(weights: LoraWeights, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """PEFT's on-disk key layout for ``weights`` (scale already folded into B)."""
    state = {}
    for module in sorted(weights):
        f = weights[module]
        state[f"{_PEFT_PREFIX}{module}.lora_A.weight"] = f.A.to(dtype).contiguous()
        state[f"{_PEFT_PREFIX}{module}.lora_B.weight"] = f.B.to(dtype).contiguous()
    return state


def state_dict_to_weights(state: Mapping[str, torch.Tensor], *, scale: float = 1.0) -> dict:
    """Inverse of :func:`weights_to_state_dict`; ``scale`` is folded into B."""
    weights = {}
    for key, A in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[: -len(".lora_A.weight")].removeprefix(_PEFT_PREFIX)
        B = state[key.replace(".lora_A.", ".lora_B.")]
        weights[module] = LoraFactors(A.float(), B.float() * scale)
    if not weights:
        raise QdLlmError("adapter has no LoRA A/B weights")
    return weights


def content_hash(state: Mapping[str, torch.Tensor]) -> str:
    """A stable 16-hex-digit hash over tensor names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _module_leaf_names(weights: LoraWeights) -> list[str]:
    return sorted({m.rsplit(".", 1)[-1] for m in weights})


class GenomeStore:
    """A folder of genomes, written atomically and addressed by content hash.

    Args:
        root: The folder (created if missing).
        base_model: The base model name recorded in each adapter config.
        dtype: Storage dtype of the factors (``float32``, ``bfloat16``, ``float16``).
    """

    def __init__(self, root: str | Path, *, base_model: str, dtype: str = "float32"):
        if dtype not in _DTYPES:
            raise QdLlmError(f"genome dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.base_model = base_model
        self.dtype = _DTYPES[dtype]

    def path(self, genome_id: str) -> Path:
        """The adapter folder of ``genome_id``."""
        return self.root / genome_id

    def __contains__(self, genome_id: str) -> bool:
        return (self.path(genome_id) / GENOME_JSON).exists()

    def ids(self) -> list[str]:
        """Every stored genome id, sorted."""
        return sorted(p.parent.name for p in self.root.glob(f"*/{GENOME_JSON}"))

    def __iter__(self) -> Iterator[GenomeInfo]:
        return (self.info(i) for i in self.ids())

    def save(
        self,
        weights: LoraWeights,
        *,
        parents: tuple[str, ...] = (),
        operator: str = "seed",
        params: dict | None = None,
        generation: int = 0,
        name: str = "",
    ) -> GenomeInfo:
        """Stores ``weights`` as a PEFT adapter and returns its info.

        Every layer is padded to the largest rank so one ``LoraConfig`` fits.
        Saving weights that are already stored returns the existing info.
        """
        from peft import LoraConfig

        rank = max_rank(weights)
        padded = {m: pad_rank(f, rank) for m, f in weights.items()}
        state = weights_to_state_dict(padded, self.dtype)
        genome_id = content_hash(state)
        if genome_id in self:
            return self.info(genome_id)
        info = GenomeInfo(
            id=genome_id,
            parents=tuple(parents),
            operator=operator,
            params=dict(params or {}),
            generation=generation,
            rank=rank,
            base_model=self.base_model,
            created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            name=name,
        )
        config = LoraConfig(
            r=rank,
            lora_alpha=rank,
            lora_dropout=0.0,
            target_modules=_module_leaf_names(padded),
            bias="none",
            task_type="CAUSAL_LM",
            base_model_name_or_path=self.base_model,
        )
        with atomic.directory(self.path(genome_id)) as tmp:
            save_file(state, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
            config.save_pretrained(str(tmp))
            (tmp / GENOME_JSON).write_text(json.dumps(info.to_json(), indent=2) + "\n")
        return info

    def info(self, genome_id: str) -> GenomeInfo:
        """Reads ``genome.json`` of ``genome_id``."""
        path = self.path(genome_id) / GENOME_JSON
        if not path.exists():
            raise QdLlmError(f"no genome {genome_id} in {self.root}")
        return GenomeInfo.from_json(json.loads(path.read_text()))

    def load(self, genome_id: str) -> dict[str, LoraFactors]:
        """Loads the factors of ``genome_id`` as float32 (``ΔW = B @ A``)."""
        return load_adapter_weights(self.path(genome_id))

    def import_adapter(self, folder: str | Path, **kwargs) -> GenomeInfo:
        """Stores any PEFT LoRA adapter folder as a genome (scale folded into B)."""
        return self.save(load_adapter_weights(folder), **kwargs)


def load_adapter_weights(folder: str | Path) -> dict[str, LoraFactors]:
    """Reads a PEFT LoRA adapter folder into factors with the scale folded into B.

    Raises:
        QdLlmError: The folder is not a LoRA adapter qd_llm can use.
    """
    folder = Path(folder)
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except FileNotFoundError:
        raise QdLlmError(f"{folder} is not a PEFT adapter: no {ADAPTER_CONFIG}") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise QdLlmError(f"{folder} is a {config.get('peft_type')} adapter; only LoRA is supported")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise QdLlmError(f"{folder}: per-layer rank/alpha patterns are not supported yet")
    r, alpha = config["r"], config.get("lora_alpha", config["r"])
    scale = alpha / (r**0.5 if config.get("use_rslora") else r)
    weights_file = folder / ADAPTER_WEIGHTS
    if not weights_file.exists():
        raise QdLlmError(f"{folder} has no {ADAPTER_WEIGHTS}")
    state = load_file(str(weights_file))
    state = {k.replace(".default.", "."): v for k, v in state.items()}
    return state_dict_to_weights(state, scale=scale)
