"""Full-weight checkpoints, streamed one tensor at a time.

A full-weight genome (the AC/DC paper's form) is a whole Hugging Face
checkpoint of the base architecture: ``config.json`` (copied from the base),
``generation_config.json`` and the weights, either one ``model.safetensors``
or ``model.safetensors.index.json`` plus shards
``model-0000k-of-0000n.safetensors``. Nothing here holds a second full model
in memory: checkpoints are read lazily through ``safetensors.safe_open``
(memory-mapped, so a tensor costs page cache, not heap, until it is used) and
written shard by shard, so the peak is one shard being written plus one tensor
per input stream.

Every stream is a sequence of ``(parameter name, tensor)`` pairs in sorted
name order — the order :func:`checkpoint_tensors` yields, which operators on
task vectors preserve — and the content hash :func:`write_checkpoint` returns
is therefore :func:`content_hash` of the same tensors as one state dict.

A task vector ``δ = θ − θ_base`` (:func:`task_vector`) is such a stream too;
the operators (:mod:`qd_llm.operators.task_vectors`) merge task vectors and
extract LoRA factors from them.

Example:
    >>> base = Checkpoint(base_folder)
    >>> genome_id = write_checkpoint(checkpoint_tensors(folder), out, config_from=base_folder)
    >>> delta = dict(task_vector(checkpoint_tensors(out), base))
"""

import hashlib
import json
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from qd_llm.errors import QdLlmError
from qd_llm.models.forms import CONFIG_FILE
from qd_llm.models.lora import DEFAULT_TARGET_MODULES

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_OPTIONAL_CONFIG_FILES = ("generation_config.json",)
#: Shards stay below this size (a larger single tensor gets a shard of its own).
DEFAULT_MAX_SHARD_BYTES = 256 * 2**20
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


#: ``(parameter name, tensor)`` pairs in name order, or a mapping of them.
NamedTensors = Iterable[tuple[str, torch.Tensor]] | Mapping[str, torch.Tensor]


def named_tensor_pairs(tensors: NamedTensors) -> Iterator[tuple[str, torch.Tensor]]:
    """The ``(name, tensor)`` pairs of a stream or mapping, in its own order."""
    return iter(tensors.items()) if isinstance(tensors, Mapping) else iter(tensors)


def task_vector(
    finetuned: NamedTensors, base: Mapping[str, torch.Tensor]
) -> Iterator[tuple[str, torch.Tensor]]:
    """Streams ``θ − θ_base`` for every parameter of ``finetuned``.

    Args:
        finetuned: ``(name, θ)`` pairs (or a mapping), each of any shape.
        base: The base model's tensors by name (e.g. a :class:`Checkpoint`).

    Yields:
        ``(name, θ − θ_base)`` pairs, each of its parameter's shape, in
        ``finetuned``'s dtype.

    Raises:
        QdLlmError: A parameter is missing from ``base`` or has another shape.
    """
    for name, tensor in named_tensor_pairs(finetuned):
        if name not in base or base[name].shape != tensor.shape:
            raise QdLlmError(f"parameter {name} is missing from the base or has another shape")
        yield name, tensor - base[name].to(tensor.dtype)


class TensorSpec(NamedTuple):
    """Shape and dtype of one stored tensor, read from a file header."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def update_content_hash(digest, name: str, tensor: torch.Tensor) -> None:
    """Feeds one named tensor (name, dtype, shape, then raw bytes) into ``digest``."""
    tensor = tensor.contiguous()
    digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
    if tensor.numel():
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())


def content_hash(state: Mapping[str, torch.Tensor]) -> str:
    """A stable 16-hex-digit hash over tensor names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name in sorted(state):
        update_content_hash(digest, name, state[name])
    return digest.hexdigest()[:16]


class Checkpoint(Mapping[str, torch.Tensor]):
    """A lazy, read-only mapping over a checkpoint folder's tensors.

    Files are opened on first use and stay memory-mapped while the object
    lives; indexing reads one tensor. Returned tensors may share memory with
    the mapping (copy-on-write): treat them as read-only.

    Args:
        folder: A folder with ``model.safetensors`` or
            ``model.safetensors.index.json`` and its shards.

    Raises:
        QdLlmError: The folder holds neither.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._handles: dict[str, object] = {}
        if (self.folder / INDEX_FILE).exists():
            weight_map = json.loads((self.folder / INDEX_FILE).read_text())["weight_map"]
            self._file_of: dict[str, str] = dict(weight_map)
        elif (self.folder / SINGLE_FILE).exists():
            self._file_of = dict.fromkeys(self._open(SINGLE_FILE).keys(), SINGLE_FILE)
        else:
            raise QdLlmError(f"{self.folder} has no {SINGLE_FILE} or {INDEX_FILE}")

    def _open(self, file: str):
        if file not in self._handles:
            self._handles[file] = safe_open(str(self.folder / file), framework="pt")
        return self._handles[file]

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._open(self._file_of[name]).get_tensor(name)

    def __contains__(self, name: object) -> bool:
        return name in self._file_of

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._file_of))

    def __len__(self) -> int:
        return len(self._file_of)

    def layout(self) -> dict[str, TensorSpec]:
        """``{name: (shape, dtype)}`` of every tensor, from the headers alone."""
        layout = {}
        for name in self:
            header = self._open(self._file_of[name]).get_slice(name)
            layout[name] = TensorSpec(tuple(header.get_shape()), _dtype(header.get_dtype()))
        return layout


def _dtype(safetensors_dtype: str) -> torch.dtype:
    if safetensors_dtype not in _SAFETENSORS_DTYPES:
        raise QdLlmError(f"unsupported safetensors dtype {safetensors_dtype}")
    return _SAFETENSORS_DTYPES[safetensors_dtype]


def checkpoint_tensors(folder: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yields every ``(name, tensor)`` of a checkpoint in sorted name order, across shards.

    Only the tensor being yielded is read; see :class:`Checkpoint` for the
    read-only caveat.
    """
    checkpoint = Checkpoint(folder)
    for name in checkpoint:
        yield name, checkpoint[name]


def check_tensor(name: str, shape: Sequence[int], base: Mapping[str, TensorSpec]) -> None:
    """Raises unless ``base`` has a tensor ``name`` of this shape."""
    if name not in base:
        raise QdLlmError(f"tensor {name} is not in the base model")
    if tuple(shape) != base[name].shape:
        raise QdLlmError(
            f"tensor {name} has shape {tuple(shape)}; the base model's has {base[name].shape}"
        )


def check_layout(layout: Mapping[str, TensorSpec], base: Mapping[str, TensorSpec]) -> None:
    """Raises unless ``layout`` has exactly the base's tensor names and shapes."""
    for name, spec in layout.items():
        check_tensor(name, spec.shape, base)
    check_complete(layout, base)


def check_complete(names: Iterable[str], base: Mapping[str, TensorSpec]) -> None:
    """Raises unless ``names`` covers every tensor of ``base``."""
    missing = sorted(set(base) - set(names))
    if missing:
        raise QdLlmError(f"{len(missing)} tensors of the base model are missing, e.g. {missing[0]}")


def write_checkpoint(
    tensors: NamedTensors,
    folder: str | Path,
    *,
    config_from: str | Path,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> str:
    """Streams tensors into safetensors shards and returns their content hash.

    One shard is written as ``model.safetensors``; several as
    ``model-0000k-of-0000n.safetensors`` plus ``model.safetensors.index.json``.
    ``config.json`` (and ``generation_config.json`` when present) is copied
    from ``config_from``. The folder is not made atomic here: write into a
    fresh folder and move it into place (as :class:`~qd_llm.models.genome.GenomeStore`
    does).

    Args:
        tensors: ``(name, tensor)`` pairs in strictly increasing name order, or
            a mapping (written in sorted order).
        folder: A new or empty folder.
        config_from: The base model folder whose config files are copied.
        max_shard_bytes: Largest shard size; a bigger tensor gets its own shard.

    Returns:
        :func:`content_hash` of the tensors as one state dict (16 hex digits),
        computed while writing.

    Raises:
        QdLlmError: The stream is empty or out of order, or ``config_from`` has
            no ``config.json``.
    """
    folder, config_from = Path(folder), Path(config_from)
    if not (config_from / CONFIG_FILE).exists():
        raise QdLlmError(f"{config_from} has no {CONFIG_FILE} to copy into the checkpoint")
    folder.mkdir(parents=True, exist_ok=True)
    pairs = sorted(tensors.items()) if isinstance(tensors, Mapping) else tensors
    digest = hashlib.sha256()
    shard_names: list[list[str]] = []
    shard: dict[str, torch.Tensor] = {}
    shard_bytes = total_bytes = 0
    previous = None

    def flush() -> None:
        shard_names.append(list(shard))
        save_file(shard, str(folder / _shard_file(len(shard_names))), metadata={"format": "pt"})
        shard.clear()

    for name, tensor in pairs:
        if previous is not None and name <= previous:
            raise QdLlmError(f"checkpoint tensors must come in sorted name order; {name} did not")
        previous = name
        tensor = tensor.detach().contiguous()
        update_content_hash(digest, name, tensor)
        size = tensor.numel() * tensor.element_size()
        if shard and shard_bytes + size > max_shard_bytes:
            flush()
            shard_bytes = 0
        shard[name] = tensor
        shard_bytes += size
        total_bytes += size
    if previous is None:
        raise QdLlmError("no tensors to write into the checkpoint")
    flush()
    _name_shards(folder, shard_names, total_bytes)
    for config_file in (CONFIG_FILE, *_OPTIONAL_CONFIG_FILES):
        if (config_from / config_file).exists():
            shutil.copyfile(config_from / config_file, folder / config_file)
    return digest.hexdigest()[:16]


def _shard_file(index: int, count: int | None = None) -> str:
    # The count is unknown while streaming; shards are renamed once it is.
    suffix = "" if count is None else f"-of-{count:05d}"
    return f"model-{index:05d}{suffix}.safetensors"


def _name_shards(folder: Path, shard_names: list[list[str]], total_bytes: int) -> None:
    """Renames streamed shards to Hugging Face's names and writes the index if sharded."""
    count = len(shard_names)
    if count == 1:
        (folder / _shard_file(1)).rename(folder / SINGLE_FILE)
        return
    weight_map = {}
    for index, names in enumerate(shard_names, start=1):
        final = _shard_file(index, count)
        (folder / _shard_file(index)).rename(folder / final)
        weight_map.update(dict.fromkeys(names, final))
    index_json = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index_json, indent=2) + "\n")


def checkpoint_linear_shapes(
    folder: str | Path, target_modules: Iterable[str] = DEFAULT_TARGET_MODULES
) -> dict[str, tuple[int, int]]:
    """:func:`~qd_llm.models.lora.linear_shapes` read from a checkpoint's headers.

    Needs no model in memory (backends such as vLLM never hold one here): a
    targeted module is any 2-D ``<module>.weight`` whose last name part is in
    ``target_modules``, so the keys match ``model.named_modules()``.

    Raises:
        QdLlmError: ``folder`` is not a checkpoint or has no targeted weight.
    """
    targets = set(target_modules)
    shapes = {
        name.removesuffix(".weight"): (spec.shape[0], spec.shape[1])
        for name, spec in Checkpoint(folder).layout().items()
        if name.endswith(".weight")
        and len(spec.shape) == 2
        and name.removesuffix(".weight").rsplit(".", 1)[-1] in targets
    }
    if not shapes:
        raise QdLlmError(f"{folder} has no 2-D weights of modules {sorted(targets)}")
    return shapes
