# %% [markdown]
# # Tutorial (b): MAP-Elites over LoRA merges of the seed experts
#
# qd_llm's loop (AC/DC) coevolves models and tasks, but its pieces are plain
# [pyribs](https://pyribs.org) parts. Here we use three of them with an ordinary
# `ribs.schedulers.Scheduler` and no loop at all:
#
# - a **genome archive** (`qd_llm.qd.genome_archive`): a ribs `GridArchive` whose
#   solutions are genome ids;
# - **operator emitters** (`qd_llm.qd.OperatorEmitter`): each `ask()` draws parents
#   from the archive, breeds children with a LoRA operator (`linear` merges,
#   `gaussian` mutations) into a `GenomeStore` and returns their ids;
# - the built-in **seed experts** (LoRA adapters of SmolLM2-135M-Instruct trained on
#   arithmetic, string rewriting and lists).
#
# The objective and the descriptor are written below, in this tutorial: the
# objective is the pass rate on a few procedural problems, the descriptor is
# *which* skills a genome has — its pass rate on arithmetic and on string problems.
# MAP-Elites then keeps the best genome for every mix of the two skills.
#
# Run it as a script (`python analysis/tutorials/b_map_elites_lora.py`) or open it
# as a notebook with jupytext. `QD_LLM_TUTORIAL_SCALE=tiny` runs tiny settings (the
# test suite does); `QD_LLM_TUTORIAL_OUT` chooses where the genomes and the figure
# land (default `archives/tutorial-b`).

# %%
import os
from pathlib import Path

import matplotlib
import numpy as np
from ribs.schedulers import Scheduler
from ribs.visualize import grid_archive_heatmap

from qd_llm import GenomeStore, HFBackend, seed_expert_folders
from qd_llm.inference.base import GenerationConfig, GenerationRequest
from qd_llm.models.resolve import DEFAULT_BASE_MODEL
from qd_llm.qd import ArchiveParents, OperatorEmitter, genome_archive

TINY = os.environ.get("QD_LLM_TUTORIAL_SCALE") == "tiny"
PROBLEMS_PER_SKILL = 1 if TINY else 8
ITERATIONS = 2 if TINY else 10
CHILDREN_PER_EMITTER = 1 if TINY else 4
matplotlib.use("Agg")  # figures go to files
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

workdir = Path(os.environ.get("QD_LLM_TUTORIAL_OUT", "archives/tutorial-b"))

# %% [markdown]
# ## The seed experts, in a genome store
#
# A `GenomeStore` holds genomes (PEFT adapters) by content hash; children bred by
# the emitters land here too, each with its parents, operator and seed.

# %%
store = GenomeStore(workdir / "genomes", base_model=DEFAULT_BASE_MODEL)
folders = seed_expert_folders(base_model=DEFAULT_BASE_MODEL)
seeds = {name: store.import_adapter(folders[name], name=name).id for name in sorted(folders)}
print(seeds)

# %% [markdown]
# ## An objective and a descriptor of our own
#
# A few problems per skill, each with an exact answer. A genome's completions come
# from the real SmolLM2 (greedy decoding, its LoRA adapter applied); a completion
# passes when its first word is the answer.

# %%
rng = np.random.default_rng(0)
WORDS = ["cat", "dog", "sun", "map", "red", "box", "pen", "cup"]


def make_problems(n: int) -> dict[str, list[tuple[str, str]]]:
    """``skill -> [(prompt, answer)]``: one-digit sums, upper-casing, the larger of two."""
    sums = [tuple(rng.integers(1, 10, 2)) for _ in range(n)]
    words = rng.choice(WORDS, n, replace=False)
    pairs = [tuple(rng.choice(10, 2, replace=False)) for _ in range(n)]
    return {
        "arithmetic": [
            (f"What is {a} + {b}? Reply with only the number.", str(a + b)) for a, b in sums
        ],
        "strings": [
            (f"Rewrite the word '{w}' in capital letters. Reply with only the word.", w.upper())
            for w in words
        ],
        "lists": [
            (f"Which is larger in the list [{a}, {b}]? Reply with only the number.", str(max(a, b)))
            for a, b in pairs
        ],
    }


PROBLEMS = make_problems(PROBLEMS_PER_SKILL)
backend = HFBackend(base_model=DEFAULT_BASE_MODEL, batch_size=32)
decoding = GenerationConfig(max_new_tokens=4 if TINY else 8)


def pass_rates(genome_ids) -> np.ndarray:
    """Pass rate of each genome on each skill, shape ``(n_genomes, n_skills)``."""
    skills = sorted(PROBLEMS)
    rows = [(g, s, p, a) for g in genome_ids for s in skills for p, a in PROBLEMS[s]]
    requests = [
        GenerationRequest(prompt=p, genome_id=g, adapter=store.path(g)) for g, _, p, _ in rows
    ]
    completions = backend.generate(requests, decoding)
    passed = [
        (text.strip().split() or [""])[0].strip(".'\"") == answer
        for (_, _, _, answer), text in zip(rows, completions, strict=True)
    ]
    return np.array(passed, dtype=float).reshape(len(genome_ids), len(skills), -1).mean(axis=2)


def objective_and_descriptor(genome_ids) -> tuple[np.ndarray, np.ndarray]:
    """Objective: mean pass rate over all problems, shape ``(n,)``.
    Descriptor: pass rates on arithmetic and on strings, shape ``(n, 2)``, in [0, 1]."""
    rates = pass_rates(list(genome_ids))
    skills = sorted(PROBLEMS)
    return rates.mean(axis=1), rates[:, [skills.index("arithmetic"), skills.index("strings")]]


# %% [markdown]
# ## The archive and the emitters
#
# The archive is a 5×5 grid over the descriptor's square. Both emitters draw
# parents from the archive's elites (`ArchiveParents`; the seeds until the archive
# holds some) and breed rank-8 LoRA children into the store.

# %%
archive = genome_archive(dims=2, resolution=5, ranges=[(0.0, 1.0), (0.0, 1.0)], seed=0)
parents = ArchiveParents(archive, initial=list(seeds.values()))
common = dict(batch_size=CHILDREN_PER_EMITTER, store=store, rank=8, parents=parents)
emitters = [
    OperatorEmitter(archive, operator="linear", num_parents=2, seed=1, **common),
    OperatorEmitter(archive, operator="gaussian", params={"scale": 0.3}, seed=2, **common),
]
scheduler = Scheduler(archive, emitters)

# The seeds go in first, as ordinary solutions.
seed_ids = np.array(list(seeds.values()), dtype=object)
archive.add(seed_ids, *objective_and_descriptor(seed_ids))
print(f"seeds: {len(archive)} cells, best objective {archive.stats.obj_max:.2f}")

# %% [markdown]
# ## MAP-Elites
#
# `scheduler.ask()` returns genome ids of freshly bred children; we score them
# with our objective and descriptor and `scheduler.tell` adds them to the archive
# and tells each emitter which of its children got in.

# %%
for iteration in range(1, ITERATIONS + 1):
    children = scheduler.ask()
    scheduler.tell(*objective_and_descriptor(children))
    print(
        f"iteration {iteration}: {len(children)} children, {len(archive)} cells, "
        f"QD score {archive.stats.qd_score:.2f}, best {archive.stats.obj_max:.2f}"
    )
for emitter in emitters:
    print(emitter.operator, emitter.stats.to_json())

# %% [markdown]
# ## The elites and their heatmap
#
# Each elite's store entry says how it was bred.

# %%
data = archive.data()
for i, genome_id in enumerate(data["solution"]):
    info = store.info(genome_id)
    print(
        f"{genome_id}  objective {data['objective'][i]:.2f}  measures {data['measures'][i]}  "
        f"bred by {info.operator} from {info.parents}"
    )

# %%
fig, ax = plt.subplots(figsize=(4, 3.5))
grid_archive_heatmap(archive, ax=ax, vmin=0, vmax=1)
ax.set_xlabel("arithmetic pass rate")
ax.set_ylabel("strings pass rate")
fig.savefig(workdir / "archive.png", dpi=100, bbox_inches="tight")
print("figure:", workdir / "archive.png")
backend.close()
