"""``qd-llm seeds train|eval``: train the seed experts or measure their skills."""

import json

from qd_llm.errors import QdLlmError


def _train(args) -> int:
    from qd_llm.seeding import experts

    skills = _skills(args.skills)
    config = experts.TrainingConfig(steps=args.steps, seed=args.seed)
    folders = experts.write_seed_experts(
        args.out or experts.BUILTIN_DIR, base_model=args.base_model, skills=skills, config=config
    )
    print(json.dumps({name: str(path) for name, path in folders.items()}, indent=2))
    return 0


def _eval(args) -> int:
    from qd_llm.inference.hf import HFBackend
    from qd_llm.seeding import experts

    if args.seeds:
        folders = experts.read_seed_index(args.seeds)
        if folders is None:
            raise QdLlmError(f"{args.seeds} holds no complete seeds.json; train into it first")
    else:
        every_expert = [skill.name for skill in experts.SEED_SKILLS]
        folders = experts.seed_expert_folders(base_model=args.base_model, names=every_expert)
    backend = HFBackend(base_model=args.base_model, batch_size=32, progress=True)
    table = {}
    for skill in _skills(args.skills):
        items = experts.held_out_instances(skill, n=args.n)
        row = {"base": experts.skill_accuracy(backend, items, adapter=None)}
        for name, folder in folders.items():
            row[name] = experts.skill_accuracy(backend, items, adapter=folder)
        table[skill.name] = {"held_out_items": len(items), "accuracy": row}
    print(json.dumps(table, indent=2))
    return 0


def _skills(names: str | None):
    from qd_llm.seeding.experts import SEED_SKILLS, seed_skills

    return seed_skills(names.split(",")) if names else SEED_SKILLS


def register(subparsers) -> None:
    seeds = subparsers.add_parser(
        "seeds",
        help="train or evaluate the seed experts",
        description="Seed experts are short LoRA fine-tunes of the base model, one per "
        "skill (a procedural task family). The built-in ones are committed; `train` "
        "regenerates them, `eval` prints each expert's held-out accuracy per skill.",
    )
    sub = seeds.add_subparsers(dest="seeds_command", metavar="SUBCOMMAND", required=True)
    train = sub.add_parser("train", help="train seed experts into a folder")
    train.add_argument("--out", help="default: the built-in folder, qd_llm/data/seed_experts")
    train.add_argument("--base-model", default="smollm2-135m-instruct")
    train.add_argument("--skills", help="comma-separated subset (default: all)")
    train.add_argument("--steps", type=int, default=40)
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=_train)
    ev = sub.add_parser("eval", help="held-out accuracy of each expert and the base model")
    ev.add_argument("--seeds", help="a seed-expert folder (default: the built-in ones)")
    ev.add_argument("--base-model", default="smollm2-135m-instruct")
    ev.add_argument("--skills", help="comma-separated subset (default: all)")
    ev.add_argument("--n", type=int, default=30, help="held-out items per skill")
    ev.set_defaults(func=_eval)
