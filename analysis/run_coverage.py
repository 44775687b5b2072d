"""Coverage of a run's final population on every task it ever had, against baselines.

Usage::

    python analysis/run_coverage.py RUN [--json]

"Every task it ever had" is the task archive's history: each task accepted
into the active pool at any generation (the pool itself is capped and
adapted, so the last pool alone flatters whoever was selected on it). Three
groups are evaluated on that union, greedily, with the run's own decoding and
pass threshold:

* the final population (what Dominated Novelty Search kept),
* the seed experts (the genomes the run started from),
* the base model (a zero LoRA update, which answers exactly as the base).

Answers are cached under ``RUN/coverage/history/`` so a second call costs
nothing. It also prints the in-run coverage per generation (fraction of the
*active* pool solved by the population, from ``metrics.jsonl``).
"""

import argparse
import json
import sys
from pathlib import Path

from qd_llm.evaluation.coverage import zero_adapters
from qd_llm.evaluation.evaluate import Evaluator
from qd_llm.inference.base import GenerationConfig
from qd_llm.inference.hf import HFBackend
from qd_llm.models.genome import GenomeStore
from qd_llm.models.lora import linear_shapes
from qd_llm.snapshot import RunSnapshot
from qd_llm.tasks.sandbox import SandboxConfig, SandboxPool


def run_coverage(run_dir: str | Path) -> dict:
    snapshot = RunSnapshot(run_dir)
    config = snapshot.config
    tasks = snapshot.tasks.history()
    task_ids = [t.task_id for t in tasks]
    cache = snapshot.run.path / "coverage" / "history"
    cache.mkdir(parents=True, exist_ok=True)
    backend = HFBackend(
        base_model=config["base_model"], batch_size=config["inference"]["batch_size"]
    )
    base_store = GenomeStore(cache / "base", base_model=config["base_model"])
    (base,) = zero_adapters(base_store, linear_shapes(backend.base), 1)
    seeds = [g for g in snapshot.store.ids() if not snapshot.store.info(g).parents]
    groups = {"final population": snapshot.population, "seed experts": seeds, "base model": [base]}
    decoding = GenerationConfig(
        max_new_tokens=config["decoding"]["max_new_tokens"],
        seed=config["seed"],
        system_prompt=config["decoding"]["system_prompt"] or None,
    )
    with SandboxPool(config=SandboxConfig(), workers=config["sandbox"]["workers"]) as sandbox:
        result = {}
        for name, genome_ids in groups.items():
            store = base_store if name == "base model" else snapshot.store
            evaluator = Evaluator(
                run_dir=cache,
                backend=backend,
                sandbox=sandbox,
                genomes=store,
                decoding=decoding,
                pass_threshold=snapshot.pass_threshold,
            )
            evaluator.evaluate(genome_ids, tasks)
            skills = evaluator.skills(genome_ids, task_ids)
            result[name] = {
                "genomes": len(genome_ids),
                "coverage": float(skills.any(axis=0).mean()),
                "mean_fitness": float(skills.mean()),
            }
    backend.close()
    return {
        "run": str(snapshot.run.path),
        "tasks_ever_active": len(tasks),
        "groups": result,
        "in_run_coverage": [
            {"generation": r["generation"], "coverage": r["coverage"], "num_tasks": r["num_tasks"]}
            for r in snapshot.metrics
        ],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run_coverage(args.run)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['tasks_ever_active']} tasks ever active in {result['run']}\n")
    print("| genomes | count | coverage | mean pass rate |\n|---|---|---|---|")
    for name, row in result["groups"].items():
        print(f"| {name} | {row['genomes']} | {row['coverage']:.3f} | {row['mean_fitness']:.3f} |")
    print("\n| generation | active tasks | in-run coverage |\n|---|---|---|")
    for row in result["in_run_coverage"]:
        print(f"| {row['generation']} | {row['num_tasks']} | {row['coverage']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
