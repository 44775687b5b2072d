"""Genomes and the genome store.

A genome is an expert over the shared base model, in one of two forms that
live side by side in one store (``GenomeInfo.form``):

* ``lora`` — a LoRA adapter: a standard PEFT adapter folder plus a small
  ``genome.json``, so ``PeftModel.from_pretrained(base, folder)`` loads it
  unchanged::

    <store>/<genome_id>/
        adapter_config.json        PEFT LoraConfig (lora_alpha = r, so scale 1)
        adapter_model.safetensors  base_model.model.<module>.lora_{A,B}.weight
        genome.json                id, form, parents, operator, params, generation, ...

* ``full`` — full weights (the AC/DC paper's form): a Hugging Face checkpoint
  of the base architecture, written and read one tensor at a time
  (:mod:`qd_llm.models.full_weights`); ``from_pretrained(folder)`` loads it::

    <store>/<genome_id>/
        config.json, generation_config.json          copied from the base model
        model.safetensors  or  model.safetensors.index.json + model-0000k-of-0000n.safetensors
        genome.json

  Full genomes keep the base checkpoint's dtype (the store's ``dtype`` applies
  to LoRA factors only) and are bred as task vectors ``θ − θ_base``
  (:func:`qd_llm.operators.task_vectors.breed_full`); they cost a model's size
  on disk each.

The id is a content hash of the weights: breeding the same child twice yields
the same id and the store keeps one copy.
"""

import dataclasses
import datetime
import functools
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from qd_llm import atomic, faults
from qd_llm.errors import QdLlmError
from qd_llm.models.forms import ADAPTER_CONFIG, is_full_checkpoint
from qd_llm.models.full_weights import (
    Checkpoint,
    NamedTensors,
    TensorSpec,
    check_complete,
    check_layout,
    check_tensor,
    checkpoint_tensors,
    content_hash,
    write_checkpoint,
)
from qd_llm.models.lora import LoraFactors, LoraWeights, max_rank, pad_rank
from qd_llm.models.resolve import resolve_base_model

GENOME_JSON = "genome.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenomeInfo:
    """What ``genome.json`` records.

    Attributes:
        id: Content hash of the stored weights.
        form: ``lora`` (a PEFT adapter) or ``full`` (full weights); a
            ``genome.json`` written before full genomes existed reads as ``lora``.
        parents: Ids of the genomes it was bred from (empty for seeds).
        operator: The operator that made it (``seed``, ``linear``, ``ties``...).
        params: The operator's parameters (weights, densities, noise scale...).
        generation: The loop generation it was born in.
        rank: LoRA rank of every layer (0 for full weights).
        base_model: The base model name it adapts.
        created_at: UTC ISO-8601 time of creation.
        name: Optional human name (seed experts: their skill).
    """

    id: str
    form: str = "lora"
    parents: tuple[str, ...] = ()
    operator: str = "seed"
    params: dict = dataclasses.field(default_factory=dict)
    generation: int = 0
    rank: int = 0
    base_model: str = ""
    created_at: str = ""
    name: str = ""

    def to_json(self) -> dict:
        """The record as ``genome.json`` holds it (parents as a list)."""
        d = dataclasses.asdict(self)
        d["parents"] = list(self.parents)
        return d

    @classmethod
    def from_json(cls, obj: dict) -> "GenomeInfo":
        """Reads a ``genome.json`` record; keys this version does not know are ignored."""
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


def _module_leaf_names(weights: LoraWeights) -> list[str]:
    return sorted({m.rsplit(".", 1)[-1] for m in weights})


class GenomeStore:
    """A folder of genomes, written atomically and addressed by content hash.

    Args:
        root: The folder (created if missing).
        base_model: The base model name recorded in each genome; full-weight
            genomes also resolve it to its local checkpoint
            (:func:`~qd_llm.models.resolve.resolve_base_model`) on first use.
        dtype: Storage dtype of LoRA factors (``float32``, ``bfloat16``,
            ``float16``); full-weight genomes keep the base checkpoint's dtype.
    """

    def __init__(self, root: str | Path, *, base_model: str, dtype: str = "float32"):
        if dtype not in _DTYPES:
            raise QdLlmError(f"genome dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.base_model = base_model
        self.dtype = _DTYPES[dtype]

    def path(self, genome_id: str) -> Path:
        """The folder of ``genome_id`` (a PEFT adapter, or a checkpoint for full weights)."""
        return self.root / genome_id

    def __contains__(self, genome_id: str) -> bool:
        return (self.path(genome_id) / GENOME_JSON).exists()

    def ids(self, *, with_weights: bool = False) -> list[str]:
        """Every stored genome id, sorted; only those whose weights are kept if asked."""
        ids = sorted(p.parent.name for p in self.root.glob(f"*/{GENOME_JSON}"))
        return [g for g in ids if self.has_weights(g)] if with_weights else ids

    def has_weights(self, genome_id: str) -> bool:
        """Whether ``genome_id``'s weights are stored (see :meth:`drop_weights`)."""
        folder = self.path(genome_id)
        return (folder / ADAPTER_WEIGHTS).exists() or is_full_checkpoint(folder)

    def drop_weights(self, genome_id: str) -> None:
        """Deletes ``genome_id``'s weights and keeps its ``genome.json``.

        Lineage, plots and cached evaluations need only the record; saving the
        same weights again (a child bred twice) stores them again. The files
        that mark a genome as having weights go first, so an interrupted drop
        never leaves a genome that looks complete but is not.
        """
        folder = self.path(genome_id)
        markers = [folder / ADAPTER_WEIGHTS, folder / "config.json"]
        rest = sorted(f for f in folder.iterdir() if f.name != GENOME_JSON and f not in markers)
        for file in markers:
            file.unlink(missing_ok=True)
        faults.maybe_kill("genome.markers_dropped")
        for file in rest:
            if file.is_dir():
                shutil.rmtree(file)
            else:
                file.unlink(missing_ok=True)

    def finish_interrupted_drops(self) -> list[str]:
        """Finishes every :meth:`drop_weights` a kill cut short.

        Such a genome has lost the files that mark weights but kept others;
        they are deleted so its folder holds ``genome.json`` alone.

        Returns:
            The ids of the genomes cleaned up.
        """
        interrupted = [
            genome_id
            for genome_id in self.ids()
            if not self.has_weights(genome_id)
            and any(f.name != GENOME_JSON for f in self.path(genome_id).iterdir())
        ]
        for genome_id in interrupted:
            self.drop_weights(genome_id)
        return interrupted

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
        if genome_id in self and self.has_weights(genome_id):
            return self.info(genome_id)
        info = self._existing_or_new_info(
            genome_id,
            form="lora",
            rank=rank,
            parents=parents,
            operator=operator,
            params=params,
            generation=generation,
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
        with atomic.directory(self.path(genome_id), overwrite=True) as tmp:
            save_file(state, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
            config.save_pretrained(str(tmp))
            faults.maybe_kill("genome.weights_written")
            _write_info(tmp, info)
        return info

    def _existing_or_new_info(
        self,
        genome_id: str,
        *,
        form: str,
        rank: int,
        parents: Sequence[str],
        operator: str,
        params: dict | None,
        generation: int,
        name: str,
    ) -> GenomeInfo:
        """The stored record of a genome whose weights were dropped, else a new one."""
        if genome_id in self:
            return self.info(genome_id)
        return GenomeInfo(
            id=genome_id,
            form=form,
            parents=tuple(parents),
            operator=operator,
            params=dict(params or {}),
            generation=generation,
            rank=rank,
            base_model=self.base_model,
            created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            name=name,
        )

    def info(self, genome_id: str) -> GenomeInfo:
        """Reads ``genome.json`` of ``genome_id``."""
        path = self.path(genome_id) / GENOME_JSON
        if not path.exists():
            raise QdLlmError(f"no genome {genome_id} in {self.root}")
        return GenomeInfo.from_json(json.loads(path.read_text()))

    def is_full(self, genome_id: str) -> bool:
        """Whether ``genome_id`` is a full-weight genome (else a LoRA adapter)."""
        return self.info(genome_id).form == "full"

    def load(self, genome_id: str) -> dict[str, LoraFactors]:
        """Loads the factors of a LoRA genome as float32 (``ΔW = B @ A``).

        Raises:
            QdLlmError: ``genome_id`` is a full-weight genome (too big to load whole).
        """
        if self.is_full(genome_id):
            raise QdLlmError(
                f"genome {genome_id} holds full weights; stream them with "
                f"qd_llm.models.full_weights.checkpoint_tensors(store.path(id))"
            )
        return load_adapter_weights(self.path(genome_id))

    def import_adapter(self, folder: str | Path, **kwargs) -> GenomeInfo:
        """Stores any PEFT LoRA adapter folder as a genome (scale folded into B)."""
        return self.save(load_adapter_weights(folder), **kwargs)

    # -- full-weight genomes ------------------------------------------------------

    @functools.cached_property
    def base_folder(self) -> Path:
        """The local checkpoint of ``base_model`` that full-weight genomes are stored against.

        Raises:
            QdLlmError: ``base_model`` does not resolve to a local checkpoint folder.
        """
        folder = Path(resolve_base_model(self.base_model))
        if not is_full_checkpoint(folder):
            raise QdLlmError(
                f"full-weight genomes need a local base model folder; "
                f"{self.base_model!r} resolved to {folder}"
            )
        return folder

    @functools.cached_property
    def _base_layout(self) -> dict[str, TensorSpec]:
        return Checkpoint(self.base_folder).layout()

    def save_full(
        self,
        tensors: NamedTensors,
        *,
        parents: Sequence[str] = (),
        operator: str = "seed",
        params: dict | None = None,
        generation: int = 0,
        name: str = "",
    ) -> GenomeInfo:
        """Streams full model weights into the store and returns their info.

        The checkpoint is written shard by shard into a staging folder while
        its content hash is computed, then moved into place atomically (or
        dropped when that id is already stored, whose info is returned). Each
        tensor is stored in the base checkpoint's dtype.

        Args:
            tensors: ``(name, tensor)`` pairs of every base tensor in sorted name
                order (as :func:`~qd_llm.models.full_weights.checkpoint_tensors`
                yields them), or a mapping.
            parents: Ids of the genomes it was bred from.
            operator: The operator that made it.
            params: The operator's parameters.
            generation: The loop generation it was born in.
            name: Optional human name.

        Raises:
            QdLlmError: A tensor is not in the base model or has another shape,
                or a base tensor is missing.
        """
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".full-", suffix=".tmp"))
        try:
            genome_id = write_checkpoint(
                self._conforming(tensors), staging, config_from=self.base_folder
            )
            if genome_id in self and self.has_weights(genome_id):
                return self.info(genome_id)
            info = self._existing_or_new_info(
                genome_id,
                form="full",
                rank=0,
                parents=parents,
                operator=operator,
                params=params,
                generation=generation,
                name=name,
            )
            with atomic.directory(self.path(genome_id), overwrite=True) as tmp:
                for child in staging.iterdir():
                    child.rename(tmp / child.name)
                _write_info(tmp, info)
            return info
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _conforming(self, tensors: NamedTensors) -> Iterator[tuple[str, torch.Tensor]]:
        """Checks a stream against the base model's tensors and casts to their dtypes."""
        base = self._base_layout
        pairs = sorted(tensors.items()) if isinstance(tensors, Mapping) else tensors
        seen = set()
        for name, tensor in pairs:
            check_tensor(name, tensor.shape, base)
            seen.add(name)
            yield name, tensor.to(base[name].dtype)
        check_complete(seen, base)

    def import_checkpoint(self, folder: str | Path, **kwargs) -> GenomeInfo:
        """Stores a full checkpoint of the base architecture as a full-weight genome.

        Every tensor name and shape is checked against the base model from the
        file headers before anything is written.

        Args:
            folder: A Hugging Face checkpoint folder (``config.json`` + safetensors).
            **kwargs: :meth:`save_full`'s bookkeeping arguments (``name``, ``parents``...).

        Raises:
            QdLlmError: The folder is not a full checkpoint, or its tensors do
                not match the base model's.
        """
        if not is_full_checkpoint(folder):
            raise QdLlmError(f"{folder} is not a full checkpoint (config.json and no adapter)")
        check_layout(Checkpoint(folder).layout(), self._base_layout)
        return self.save_full(checkpoint_tensors(folder), **kwargs)

    def merge_adapter(self, adapter_folder: str | Path, **kwargs) -> GenomeInfo:
        """Stores ``θ_base + B @ A`` of a PEFT LoRA adapter as a full-weight genome.

        Args:
            adapter_folder: A LoRA adapter of the base model (e.g. a seed expert).
            **kwargs: :meth:`save_full`'s bookkeeping arguments.
        """
        return self.save_full(merged_lora_tensors(self.base_folder, adapter_folder), **kwargs)


def _write_info(folder: Path, info: GenomeInfo) -> None:
    (folder / GENOME_JSON).write_text(json.dumps(info.to_json(), indent=2) + "\n")


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


def merged_lora_tensors(
    base_folder: str | Path, adapter_folder: str | Path
) -> Iterator[tuple[str, torch.Tensor]]:
    """Streams ``θ_base + B @ A`` (LoRA scale folded in) for every base tensor.

    Tensors the adapter does not target pass through unchanged; merged ones
    keep the base tensor's dtype (the sum runs in float32).

    Args:
        base_folder: The base model checkpoint.
        adapter_folder: A PEFT LoRA adapter of that base model.

    Raises:
        QdLlmError: The adapter targets a module the base checkpoint lacks, or
            an update's shape differs from the base weight's.
    """
    base = Checkpoint(base_folder)
    weights = load_adapter_weights(adapter_folder)
    layout = base.layout()
    for module, factors in weights.items():
        check_tensor(f"{module}.weight", factors.shape, layout)
    for name in base:
        tensor = base[name]
        factors = weights.get(name.removesuffix(".weight"))
        if factors is not None and name.endswith(".weight"):
            tensor = (tensor.float() + factors.B @ factors.A).to(tensor.dtype)
        yield name, tensor
