"""Seed experts for the embedded default: short LoRA fine-tunes, one per skill.

The paper starts from real experts (Qwen2.5-7B Instruct / Coder / Math). The
embedded default makes its own: each seed expert is a rank-8 LoRA on every
attention and MLP projection of SmolLM2, trained for a few dozen steps on
examples of one procedural task family (:mod:`qd_llm.tasks.procedural`), so
the population starts from genuinely different skills.

The trained adapters for SmolLM2 are committed under ``qd_llm/data/seed_experts``
(bfloat16, ~5 MB each) so a fresh clone runs the demo without minutes of
training; ``qd-llm seeds train`` regenerates them bit for bit on the same
machine kind (fixed seeds, one thread order). For any other base model they
are trained on first use and cached.
"""

import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from qd_llm import atomic
from qd_llm.errors import QdLlmError
from qd_llm.models.genome import GenomeStore, state_dict_to_weights
from qd_llm.models.lora import DEFAULT_TARGET_MODULES
from qd_llm.models.resolve import DEFAULT_BASE_MODEL
from qd_llm.paths import cache_dir

logger = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "data" / "seed_experts"
INDEX = "seeds.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeedSkill:
    """A skill to make an expert for.

    Attributes:
        name: The expert's name.
        family: The procedural task family its examples come from.
        levels: The family's difficulty levels it trains and is tested on.
    """

    name: str
    family: str
    levels: tuple[int, ...] = (0,)


# The levels are the ones 40 steps can teach a 135M model (measured: reversing
# words and two-digit subtraction barely move), so each expert starts the loop
# with a skill of its own. Counting and word problems were added for the
# discovery experiment: on held-out items each of their experts scores 1.0 on
# its own level 0 and at most 0.04 on the other families' (the base model: 0.0
# on counting, 0.54 on word problems).
SEED_SKILLS = (
    SeedSkill(name="arithmetic", family="arithmetic", levels=(0, 1)),
    SeedSkill(name="strings", family="string_transform", levels=(0,)),
    SeedSkill(name="lists", family="lists", levels=(0, 1)),
    SeedSkill(name="counting", family="counting", levels=(0,)),
    SeedSkill(name="word_problem", family="word_problem", levels=(0,)),
)
#: The experts a run starts from with ``genomes.seeds = "builtin"``.
DEFAULT_SEEDS = ("arithmetic", "strings", "lists")


def seed_skills(names: Sequence[str]) -> list[SeedSkill]:
    """The :data:`SEED_SKILLS` named ``names``, in that order.

    Raises:
        QdLlmError: An unknown name (the message lists the known ones).
    """
    by_name = {skill.name: skill for skill in SEED_SKILLS}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise QdLlmError(
            f"unknown seed expert(s) {', '.join(unknown)}; built-in: {', '.join(by_name)}"
        )
    return [by_name[name] for name in names]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """Supervised fine-tuning of one seed expert.

    Attributes:
        rank: LoRA rank on every targeted projection.
        alpha: LoRA alpha (the scale alpha/rank is folded into B when stored).
        steps: Optimiser steps.
        batch_size: Examples per step.
        lr: AdamW learning rate.
        seed: Seed for the examples, the initialisation and the batch order.
        target_modules: Projection names that get a LoRA.
        threads: CPU threads used for training; fixed so that float reductions,
            and hence the trained weights, are the same on any machine.
    """

    rank: int = 8
    alpha: int = 16
    steps: int = 40
    batch_size: int = 8
    lr: float = 2e-3
    seed: int = 0
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    threads: int = 1


# Items are split by a hash of their prompt: about 30% are held out and never
# trained on, whatever the seed, so small item spaces (one-digit sums, short word
# lists) still leave unseen items to test on.
_HELD_OUT_PERCENT = 30
_HELD_OUT_SEED = 90_000


def is_held_out(prompt: str) -> bool:
    """Whether ``prompt`` belongs to the held-out split."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < _HELD_OUT_PERCENT


def _instances(skill: SeedSkill, *, held_out: bool, n: int, seed: int) -> list[dict]:
    """``n`` instances of ``skill`` from one split, drawn evenly from its levels."""
    from qd_llm.tasks.procedural import get_family

    family = get_family(skill.family)
    per_level = -(-n // len(skill.levels))
    items = []
    for level in skill.levels:
        draws = family.instances(level, 20 * per_level, seed + 1000 * level)
        items += [d for d in draws if is_held_out(d["prompt"]) == held_out][:per_level]
    random.Random(seed).shuffle(items)
    return items[:n]


def skill_examples(skill: SeedSkill, *, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (instruction, answer) training pairs of ``skill`` (never held out)."""
    from qd_llm.tasks.procedural.kernels import reference_answer

    items = _instances(skill, held_out=False, n=n, seed=seed)
    return [(d["prompt"], reference_answer(d)) for d in items]


def held_out_instances(skill: SeedSkill, *, n: int) -> list[dict]:
    """Up to ``n`` distinct held-out instance dicts of ``skill``."""
    unique = {
        d["prompt"]: d for d in _instances(skill, held_out=True, n=5 * n, seed=_HELD_OUT_SEED)
    }
    return list(unique.values())[:n]


def write_held_out_tasks(
    out: str | Path, skills: Sequence[SeedSkill], *, per_skill: int, seed: int = _HELD_OUT_SEED
) -> list[Path]:
    """Writes one-question procedural tasks of ``skills`` that no seed expert trained on.

    Each task holds a single instance (so a held-out task is a question, as for
    an imported benchmark) whose prompt is in the held-out split
    (:func:`is_held_out`); prompts are distinct within a skill. The folder is a
    held-out set for ``evaluation.heldout``.

    Args:
        out: The folder to write task directories into (created).
        skills: The skills (family and levels) to write questions of.
        per_skill: Questions per skill, split evenly over its levels; fewer when
            a level's item space holds fewer held-out prompts.
        seed: First task seed tried; task seeds count up from it.

    Returns:
        The task directories, in the order written.
    """
    from qd_llm.tasks.procedural import ProceduralScientist, get_family

    writer = ProceduralScientist(num_instances=1)
    written = []
    for skill in skills:
        family = get_family(skill.family)
        per_level = -(-per_skill // len(skill.levels))
        for level in skill.levels:
            prompts: set[str] = set()
            for task_seed in range(seed, seed + 50 * per_level):
                if len(prompts) == per_level:
                    break
                (instance,) = family.instances(level, 1, task_seed)
                if is_held_out(instance["prompt"]) and instance["prompt"] not in prompts:
                    prompts.add(instance["prompt"])
                    task = writer.write(out, family=family, level=level, seed=task_seed)
                    written.append(task.path)
    return written


def train_seed_expert(
    base_model: str, skill: SeedSkill, config: TrainingConfig = TrainingConfig()
) -> dict:
    """Fine-tunes a LoRA on ``skill`` and returns its factors (scale folded into B).

    The loss covers only the answer tokens (and the end-of-turn token), with
    the instruction in the model's chat template as the prompt.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(base_model, skill, config)
    finally:
        torch.set_num_threads(previous_threads)


def _train(base_model: str, skill: SeedSkill, config: TrainingConfig) -> dict:
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    from qd_llm.inference.hf import chat_prompt, load_base_model

    torch.manual_seed(config.seed)
    model, tokenizer = load_base_model(base_model)
    model = get_peft_model(
        model,
        LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=0.0,
            target_modules=list(config.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    model.train()
    examples = skill_examples(skill, n=config.steps * config.batch_size, seed=config.seed)
    end = tokenizer.eos_token or ""
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.0
    )
    from tqdm.auto import tqdm

    for step in tqdm(range(config.steps), desc=f"train {skill.name}", unit="step"):
        batch = examples[step * config.batch_size : (step + 1) * config.batch_size]
        input_ids, labels = _sft_batch(tokenizer, chat_prompt, batch, end)
        attention = (input_ids != -1).long()
        input_ids = input_ids.masked_fill(input_ids == -1, tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 10 == 0 or step == config.steps - 1:
            logger.debug("%s step %d loss %.4f", skill.name, step, loss.item())
    state = {k: v.detach() for k, v in get_peft_model_state_dict(model).items()}
    return state_dict_to_weights(state, scale=config.alpha / config.rank)


def _sft_batch(tokenizer, chat_prompt, batch, end: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (pad = -1) and labels masking everything but the answer."""
    rows, targets = [], []
    for instruction, answer in batch:
        prompt_ids = tokenizer(chat_prompt(tokenizer, instruction), add_special_tokens=False)
        answer_ids = tokenizer(answer + end, add_special_tokens=False)
        ids = prompt_ids.input_ids + answer_ids.input_ids
        rows.append(ids)
        targets.append([-100] * len(prompt_ids.input_ids) + answer_ids.input_ids)
    width = max(map(len, rows))
    input_ids = torch.tensor([r + [-1] * (width - len(r)) for r in rows])
    labels = torch.tensor([t + [-100] * (width - len(t)) for t in targets])
    return input_ids, labels


def write_seed_experts(
    out: str | Path,
    *,
    base_model: str = DEFAULT_BASE_MODEL,
    skills: Sequence[SeedSkill] = SEED_SKILLS,
    config: TrainingConfig = TrainingConfig(),
    dtype: str = "bfloat16",
) -> dict[str, Path]:
    """Trains the seed experts of ``skills`` and writes them as genomes plus an index.

    Experts already in ``out``'s index under other names are kept (one skill can
    be retrained alone); a retrained name points at its new adapter.

    Returns:
        Skill name → adapter folder, for every expert in the index.
    """
    out = Path(out)
    store = GenomeStore(out, base_model=base_model, dtype=dtype)
    experts = {}
    if (out / INDEX).exists():
        experts = json.loads((out / INDEX).read_text())["experts"]
    for skill in skills:
        weights = train_seed_expert(base_model, skill, config)
        info = store.save(
            weights,
            operator="seed",
            params={"family": skill.family, "levels": list(skill.levels)},
            name=skill.name,
        )
        experts[skill.name] = info.id
    index = {"base_model": base_model, "training": dataclasses.asdict(config), "experts": experts}
    atomic.write_json(out / INDEX, index)
    return {name: store.path(gid) for name, gid in experts.items()}


def read_seed_index(root: str | Path) -> dict[str, Path] | None:
    """Skill name → adapter folder from ``root/seeds.json``; None if missing or incomplete."""
    root = Path(root)
    path = root / INDEX
    if not path.exists():
        return None
    index = json.loads(path.read_text())
    folders = {name: root / gid for name, gid in index["experts"].items()}
    return folders if all((f / "adapter_config.json").exists() for f in folders.values()) else None


def seed_expert_folders(
    *, base_model: str = DEFAULT_BASE_MODEL, names: Sequence[str] | None = None
) -> dict[str, Path]:
    """Skill name → PEFT adapter folder of seed experts for ``base_model``.

    The built-in base model uses the committed adapters; other base models
    train theirs on first use into the cache.

    Args:
        base_model: The base model the experts adapt.
        names: Skill names (:data:`SEED_SKILLS`); default :data:`DEFAULT_SEEDS`.

    Raises:
        QdLlmError: An unknown skill name (the message lists the known ones).
    """
    skills = seed_skills(names or DEFAULT_SEEDS)
    names = [skill.name for skill in skills]
    if base_model.strip().lower() == DEFAULT_BASE_MODEL:
        folders = read_seed_index(BUILTIN_DIR) or {}
        if not set(names) <= set(folders):
            raise QdLlmError(
                f"built-in seed experts are missing from {BUILTIN_DIR}; "
                "run `qd-llm seeds train` to regenerate them"
            )
    else:
        root = cache_dir() / "seed_experts" / Path(base_model).name
        folders = read_seed_index(root) or {}
        missing = [skill for skill in skills if skill.name not in folders]
        if missing:
            logger.info("training seed experts for %s (once) into %s", base_model, root)
            folders = write_seed_experts(
                root, base_model=base_model, skills=missing, dtype="float32"
            )
    return {name: folders[name] for name in names}


def skill_accuracy(
    backend, items: Sequence[dict], *, adapter: Path | None, max_new_tokens: int = 24
) -> float:
    """Accuracy of a genome (or the base model) on held-out instance dicts.

    Scoring uses the family's own trusted checker in-process (these items are
    made by qd_llm, not by a scientist), after the standard answer extraction.
    """
    return skill_accuracies(backend, items, {"genome": adapter}, max_new_tokens=max_new_tokens)[
        "genome"
    ]


def skill_accuracies(
    backend,
    items: Sequence[dict],
    adapters: Mapping[str, Path | None],
    *,
    max_new_tokens: int = 24,
) -> dict[str, float]:
    """:func:`skill_accuracy` of several genomes at once, in one mixed-adapter batch.

    Args:
        backend: The inference backend.
        items: Held-out instance dicts.
        adapters: Name → adapter folder (None: the base model).
        max_new_tokens: Tokens per answer.

    Returns:
        Name → accuracy on ``items``.
    """
    from qd_llm.inference.base import GenerationConfig, GenerationRequest
    from qd_llm.tasks.extract import extract_answer
    from qd_llm.tasks.procedural.kernels import score_submission

    requests = [
        GenerationRequest(
            prompt=d["prompt"],
            genome_id=None if adapter is None else Path(adapter).name,
            adapter=adapter,
        )
        for adapter in adapters.values()
        for d in items
    ]
    replies = backend.generate(requests, GenerationConfig(max_new_tokens=max_new_tokens))
    scores = [
        score_submission(d, extract_answer(reply))
        for d, reply in zip([d for _ in adapters for d in items], replies, strict=True)
    ]
    n = len(items)
    return {name: sum(scores[k * n : (k + 1) * n]) / n for k, name in enumerate(adapters)}
