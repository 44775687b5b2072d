"""Do merged seed experts keep both parents' skills? A cheap probe (issue 11, item 4).

Usage::

    python analysis/probe_merges.py OUT [--pairs arithmetic+strings,...] [--instances 16]

For each pair of built-in seed experts (:mod:`qd_llm.seeding.experts`: one LoRA per
procedural family) it breeds children with the project's own operators through a
:class:`~qd_llm.models.genome.GenomeStore`, exactly as the loop does
(:func:`qd_llm.qd.emitters.breed`):

* ``mean`` — ``linear`` with weights [0.5, 0.5] (what the loop's merges do by default);
* ``sum`` — ``linear`` with weights [1, 1] (task arithmetic: both task vectors added);
* ``ties`` / ``dare`` (optional) — with weights [1, 1].

Every child has rank = the sum of its parents' ranks, so ``mean`` and ``sum`` are
exact (``ΔW = Σ w_i B_i A_i``, no truncation); ``--rank 8`` breeds at the demo
loop's rank instead (the best rank-8 approximation). The parents, the children and the
base model (a zero LoRA update) are then evaluated with the real
:class:`~qd_llm.evaluation.evaluate.Evaluator` (SmolLM2 on the hf backend, greedy,
the demo preset's ``max_new_tokens``, real sandbox) on procedural tasks of each
parent's family: one task per level the seed was trained on and per level above
it (``--levels-above``). Seeds and the base model are scored on every family (is
each seed's skill its own?); children on their parents' families.

Per genome and family the output gives the mean instance score (scores are 0/1,
so it is a pass rate over instances) with a 95 % Wilson interval, and how many
of the family's tasks the genome passes (mean score >= the pass threshold). The
question: does a child keep BOTH parents' skills? If it does, N merged children
can cover more than N single-skill seeds.

Writes ``OUT/probe.json`` and ``OUT/probe.md``. Answers are cached in
``OUT/evals.jsonl`` (task ids are content hashes of the task code), so the probe
can run in pieces: call it once per ``--pairs`` entry into the same ``OUT`` and
the seeds and the base model are evaluated only once.
"""

import argparse
import dataclasses
import itertools
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from qd_llm import atomic
from qd_llm.config import DEMO
from qd_llm.errors import QdLlmError
from qd_llm.evaluation.coverage import zero_adapters
from qd_llm.evaluation.evaluate import Evaluator
from qd_llm.inference.base import GenerationConfig
from qd_llm.inference.hf import HFBackend
from qd_llm.models.genome import GenomeStore
from qd_llm.models.lora import linear_shapes
from qd_llm.models.resolve import DEFAULT_BASE_MODEL
from qd_llm.qd.emitters import Recipe, breed
from qd_llm.runs import RunDir
from qd_llm.seeding.experts import SEED_SKILLS, SeedSkill, is_held_out, seed_expert_folders
from qd_llm.tasks.procedural.families import get_family
from qd_llm.tasks.procedural.scientist import ProceduralScientist
from qd_llm.tasks.sandbox import SandboxConfig, SandboxPool
from qd_llm.tasks.taskdir import TaskDir

# Child kind → (operator, parameters). Weights of ties/dare sum to 2 like the sum's.
CHILD_RECIPES = {
    "mean": ("linear", {"weights": [0.5, 0.5]}),
    "sum": ("linear", {"weights": [1.0, 1.0]}),
    "ties": ("ties", {"weights": [1.0, 1.0], "density": 0.5}),
    "dare": ("dare", {"weights": [1.0, 1.0], "drop_prob": 0.5}),
}
BASE_LABEL = "base"
PASS_THRESHOLD = 0.5  # the loop's default (config.evaluation.pass_threshold)
TASK_SEED = 1234  # fixes every task's instances, so pieces of a probe share tasks
WILSON_Z = 1.96  # 95 %


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeTask:
    """One procedural task of the probe and whether the seed of its family trained on its level."""

    family: str
    level: int
    trained_level: bool
    task: TaskDir


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeGenome:
    """A genome of the probe: a seed, a child of two seeds, or the base model."""

    label: str
    genome_id: str
    kind: str  # "seed", "base" or a CHILD_RECIPES key
    parents: tuple[str, ...]  # parent labels
    families: tuple[str, ...]  # the families it is evaluated on


def wilson_interval(successes: float, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``(0, 1)`` when ``n`` is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def parse_pairs(text: str, skills: dict[str, SeedSkill]) -> list[tuple[str, str]]:
    """``"a+b,c+d"`` → ``[("a", "b"), ("c", "d")]``; ``"all"`` → every pair of seeds."""
    if text == "all":
        return list(itertools.combinations(skills, 2))
    pairs = []
    for item in text.split(","):
        names = tuple(name.strip() for name in item.split("+"))
        if len(names) != 2 or names[0] == names[1] or not set(names) <= set(skills):
            raise QdLlmError(
                f"--pairs wants pairs of distinct seeds joined by '+' from {sorted(skills)}; "
                f"got {item!r}"
            )
        pairs.append(names)
    return pairs


def write_tasks(
    root: Path, skills: Sequence[SeedSkill], *, instances: int, levels_above: int
) -> list[ProbeTask]:
    """One task per trained level of each skill's family and per level above it."""
    scientist = ProceduralScientist(families=[s.family for s in skills], num_instances=instances)
    tasks = []
    for skill in skills:
        family = get_family(skill.family)
        top = min(max(skill.levels) + levels_above, family.max_level)
        for level in range(min(skill.levels), top + 1):
            task = scientist.write(root, family=family, level=level, seed=TASK_SEED + level)
            tasks.append(
                ProbeTask(
                    family=skill.family,
                    level=level,
                    trained_level=level in skill.levels,
                    task=task,
                )
            )
    return tasks


def build_genomes(
    store: GenomeStore,
    *,
    pairs: Sequence[tuple[str, str]],
    kinds: Sequence[str],
    skills: dict[str, SeedSkill],
    base_model: str,
    rank: int | None,
    shapes: dict[str, tuple[int, int]],
) -> list[ProbeGenome]:
    """Imports the seeds of ``pairs``, breeds their children and adds a base-model control."""
    folders = seed_expert_folders(
        base_model=base_model, names=list(dict.fromkeys(name for pair in pairs for name in pair))
    )
    every_family = tuple(dict.fromkeys(skills[name].family for pair in pairs for name in pair))
    (base_id,) = zero_adapters(store, shapes, 1)
    genomes = [
        ProbeGenome(label=BASE_LABEL, genome_id=base_id, kind="base", parents=(),
                    families=every_family)
    ]  # fmt: skip
    seed_ids = {}
    for name in dict.fromkeys(name for pair in pairs for name in pair):
        seed_ids[name] = store.import_adapter(folders[name], name=name).id
        genomes.append(
            ProbeGenome(label=name, genome_id=seed_ids[name], kind="seed", parents=(),
                        families=every_family)
        )  # fmt: skip
    for pair in pairs:
        parent_ids = tuple(seed_ids[name] for name in pair)
        exact_rank = sum(store.info(genome_id).rank for genome_id in parent_ids)
        for kind in kinds:
            operator, params = CHILD_RECIPES[kind]
            # Seed 0 fixes dare's masks, as a recipe's seed does in the loop.
            recipe = Recipe(operator=operator, parents=parent_ids, params=dict(params), seed=0)
            child_id = breed(store, recipe, rank=rank or exact_rank)
            genomes.append(
                ProbeGenome(
                    label=f"{kind}({'+'.join(pair)})",
                    genome_id=child_id,
                    kind=kind,
                    parents=pair,
                    families=tuple(skills[name].family for name in pair),
                )
            )
    return genomes


def evaluate(
    evaluator: Evaluator, genomes: Sequence[ProbeGenome], tasks: Sequence[ProbeTask]
) -> None:
    """Evaluates each genome on its families' tasks, grouped so each group is one batch."""
    by_families: dict[tuple[str, ...], list[str]] = {}
    for genome in genomes:
        by_families.setdefault(genome.families, []).append(genome.genome_id)
    for families, genome_ids in by_families.items():
        evaluator.evaluate(
            list(dict.fromkeys(genome_ids)), [t.task for t in tasks if t.family in families]
        )


def instance_scores(run_dir: Path) -> dict[tuple[str, str], list[float]]:
    """``(genome_id, task_id)`` → every instance score the evaluator recorded."""
    scores: dict[tuple[str, str], list[float]] = {}
    for record in RunDir(run_dir).evals.records():
        scores.setdefault((record["genome_id"], record["task_id"]), []).append(record["score"])
    return scores


def summarize(
    scores: dict[tuple[str, str], list[float]],
    genomes: Sequence[ProbeGenome],
    tasks: Sequence[ProbeTask],
) -> list[dict]:
    """Per genome: per family and per task mean instance score, Wilson interval, passes."""
    rows = []
    for genome in genomes:
        families = {}
        for family in genome.families:
            family_tasks = [t for t in tasks if t.family == family]
            per_task = []
            for t in family_tasks:
                task_scores = scores[(genome.genome_id, t.task.task_id)]
                per_task.append(
                    {
                        "task_id": t.task.task_id,
                        "level": t.level,
                        "trained_level": t.trained_level,
                        "instances": len(task_scores),
                        "mean_score": _mean(task_scores),
                        "ci95": wilson_interval(sum(task_scores), len(task_scores)),
                        "passed": _mean(task_scores) >= PASS_THRESHOLD,
                    }
                )
            pooled = [s for t in family_tasks for s in scores[(genome.genome_id, t.task.task_id)]]
            families[family] = {
                "instances": len(pooled),
                "mean_score": _mean(pooled),
                "ci95": wilson_interval(sum(pooled), len(pooled)),
                "tasks_passed": sum(t["passed"] for t in per_task),
                "tasks": len(per_task),
                "per_task": per_task,
            }
        rows.append({**dataclasses.asdict(genome), "families": families})
    return rows


def _mean(scores: Sequence[float]) -> float:
    return sum(scores) / len(scores) if scores else 0.0


def markdown_table(rows: Sequence[dict], families: Sequence[str]) -> str:
    """One row per genome, one column per family: ``mean [lo, hi] (passed/tasks)``."""
    lines = [
        "| genome | " + " | ".join(families) + " |",
        "|---|" + "---|" * len(families),
    ]
    for row in rows:
        cells = []
        for family in families:
            cell = row["families"].get(family)
            if cell is None:
                cells.append("–")
                continue
            lo, hi = cell["ci95"]
            cells.append(
                f"{cell['mean_score']:.2f} [{lo:.2f}, {hi:.2f}] "
                f"({cell['tasks_passed']}/{cell['tasks']})"
            )
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def task_score_table(rows: Sequence[dict], tasks: Sequence[ProbeTask]) -> str:
    """One row per genome, one column per task: its mean instance score (– if not evaluated)."""
    lines = [
        "| genome | " + " | ".join(f"{t.family} l{t.level}" for t in tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    for row in rows:
        scores = {
            task["task_id"]: task["mean_score"]
            for family in row["families"].values()
            for task in family["per_task"]
        }
        cells = [
            f"{scores[t.task.task_id]:.2f}" if t.task.task_id in scores else "–" for t in tasks
        ]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def task_table(tasks: Sequence[ProbeTask], held_out_share: dict[str, float]) -> str:
    """The probe's tasks and the share of their prompts the seeds never trained on."""
    lines = ["| task | family | level | seed trained on level | held-out prompts |",
             "|---|---|---|---|---|"]  # fmt: skip
    for t in tasks:
        lines.append(
            f"| {t.task.task_id} | {t.family} | {t.level} | {t.trained_level} | "
            f"{held_out_share[t.task.task_id]:.2f} |"
        )
    return "\n".join(lines) + "\n"


def run_probe(
    out: Path,
    *,
    pairs_spec: str = "all",
    kinds: Sequence[str] = ("mean", "sum"),
    instances: int = 16,
    levels_above: int = 1,
    rank: int | None = None,
    max_new_tokens: int = DEMO["decoding"]["max_new_tokens"],
    batch_size: int = DEMO["inference"]["batch_size"],
    workers: int = 2,
    base_model: str = DEFAULT_BASE_MODEL,
) -> dict:
    """Runs the probe into ``out`` and returns what ``probe.json`` holds."""
    unknown = set(kinds) - set(CHILD_RECIPES)
    if unknown or not kinds:
        raise QdLlmError(f"--children must name some of {sorted(CHILD_RECIPES)}; got {kinds}")
    if instances < 1 or levels_above < 0 or (rank is not None and rank < 1):
        raise QdLlmError("--instances and --rank must be >= 1 and --levels-above >= 0")
    skills = {s.name: s for s in SEED_SKILLS}
    pairs = parse_pairs(pairs_spec, skills)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    task_root = Path(tempfile.mkdtemp(prefix="qd-probe-tasks-"))
    task_root.chmod(0o755)  # the sandbox's unprivileged uid reads the tasks
    backend = HFBackend(base_model=base_model, batch_size=batch_size)
    try:
        used = [skills[name] for name in dict.fromkeys(n for pair in pairs for n in pair)]
        tasks = write_tasks(task_root, used, instances=instances, levels_above=levels_above)
        store = GenomeStore(out / "genomes", base_model=base_model)  # float32: sums stay exact
        genomes = build_genomes(
            store,
            pairs=pairs,
            kinds=kinds,
            skills=skills,
            base_model=base_model,
            rank=rank,
            shapes=linear_shapes(backend.base),
        )
        decoding = GenerationConfig(max_new_tokens=max_new_tokens)
        with SandboxPool(config=SandboxConfig(), workers=workers) as sandbox:
            evaluator = Evaluator(
                run_dir=out,
                backend=backend,
                sandbox=sandbox,
                genomes=store,
                decoding=decoding,
                pass_threshold=PASS_THRESHOLD,
            )
            evaluate(evaluator, genomes, tasks)
            held_out_share = {
                t.task.task_id: _mean(
                    [is_held_out(i["data"]["prompt"]) for i in evaluator.instances(t.task).values()]
                )
                for t in tasks
            }
        rows = summarize(instance_scores(out), genomes, tasks)
    finally:
        backend.close()
        shutil.rmtree(task_root, ignore_errors=True)
    families = list(dict.fromkeys(t.family for t in tasks))
    result = {
        "settings": {
            "pairs": [list(p) for p in pairs],
            "children": {kind: CHILD_RECIPES[kind] for kind in kinds},
            "instances_per_task": instances,
            "levels_above": levels_above,
            "child_rank": rank or "sum of the parents' ranks",
            "max_new_tokens": max_new_tokens,
            "temperature": decoding.temperature,
            "pass_threshold": PASS_THRESHOLD,
            "base_model": base_model,
            "task_seed": TASK_SEED,
        },
        "tasks": [
            {
                "task_id": t.task.task_id,
                "family": t.family,
                "level": t.level,
                "trained_level": t.trained_level,
                "held_out_share": held_out_share[t.task.task_id],
            }
            for t in tasks
        ],
        "genomes": rows,
        "adapters": {row["label"]: str(store.path(row["genome_id"])) for row in rows},
        "wall_seconds": time.perf_counter() - started,
    }
    atomic.write_json(out / "probe.json", result)
    (out / "probe.md").write_text(
        "# Merge probe\n\n"
        "Mean instance score [95 % Wilson CI] (tasks passed / tasks) per family.\n\n"
        + markdown_table(rows, families)
        + "\nMean instance score per task (pass: >= "
        + f"{PASS_THRESHOLD}).\n\n"
        + task_score_table(rows, tasks)
        + "\n"
        + task_table(tasks, held_out_share)
        + f"\nWall time: {result['wall_seconds']:.0f} s.\n",
        encoding="utf-8",
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", type=Path, help="output folder (probe.json, probe.md, caches)")
    parser.add_argument(
        "--pairs",
        default="all",
        help="seed pairs as 'a+b,c+d' from "
        f"{', '.join(s.name for s in SEED_SKILLS)}; 'all' (default): every pair",
    )
    parser.add_argument(
        "--children",
        default="mean,sum",
        help=f"comma-separated child kinds from {', '.join(CHILD_RECIPES)} (default: mean,sum)",
    )
    parser.add_argument("--instances", type=int, default=16, help="instances per task (16)")
    parser.add_argument(
        "--levels-above",
        type=int,
        default=1,
        help="levels above the seeds' trained ones to test on too (1)",
    )
    parser.add_argument(
        "--rank",
        type=int,
        help="rank of every child (default: the sum of its parents' ranks, so mean and sum "
        "are exact; the demo loop breeds at genomes.rank=8, a truncation)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEMO["decoding"]["max_new_tokens"],
        help="tokens per answer (default: the demo preset's)",
    )
    parser.add_argument("--batch-size", type=int, default=DEMO["inference"]["batch_size"])
    parser.add_argument("--workers", type=int, default=2, help="concurrent sandboxes (2)")
    args = parser.parse_args(argv)
    try:
        result = run_probe(
            args.out,
            pairs_spec=args.pairs,
            kinds=[k.strip() for k in args.children.split(",") if k.strip()],
            instances=args.instances,
            levels_above=args.levels_above,
            rank=args.rank,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            workers=args.workers,
        )
    except QdLlmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((args.out / "probe.md").read_text(encoding="utf-8"))
    print(f"wrote {args.out / 'probe.json'} in {result['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
