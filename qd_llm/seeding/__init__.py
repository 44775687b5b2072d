"""Seed experts: the LoRA fine-tunes a run's population starts from.

Training and evaluating them needs a backend (:mod:`qd_llm.inference`) and the
procedural task families (:mod:`qd_llm.tasks.procedural`), so this package sits
above both and below the loop; :mod:`qd_llm.models` only stores genomes.
"""

from qd_llm._lazy import lazy_exports

_EXPERTS = "qd_llm.seeding.experts"
__all__ = [
    "BUILTIN_DIR",
    "DEFAULT_SEEDS",
    "SEED_SKILLS",
    "SeedSkill",
    "TrainingConfig",
    "held_out_instances",
    "is_held_out",
    "read_seed_index",
    "seed_expert_folders",
    "seed_skills",
    "skill_accuracies",
    "skill_accuracy",
    "skill_examples",
    "train_seed_expert",
    "write_held_out_tasks",
    "write_seed_experts",
]
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, _EXPERTS))
