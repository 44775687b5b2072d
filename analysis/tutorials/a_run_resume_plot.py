# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Tutorial (a): run, resume and plot the loop from Python
#
# The `qd-llm run` command is a thin wrapper over three objects: a config
# (`qd_llm.load_config`), a run directory (`qd_llm.RunDir`) and the loop
# (`qd_llm.Coevolution`). This tutorial drives them directly: it runs one
# generation, stops as if the process had been killed, resumes from the
# checkpoint, and draws the run's figures — all on a laptop CPU with the real
# SmolLM2-135M.
#
# Run it as a script (`python analysis/tutorials/a_run_resume_plot.py`) or open
# it in Jupyter with jupytext. `QD_LLM_TUTORIAL_SCALE=tiny` shrinks every size
# so the test suite can run it in well under a minute; `QD_LLM_TUTORIAL_OUT`
# chooses where the run lands (default `archives/tutorial-a`).

# %%
import os
import shutil
from pathlib import Path

import qd_llm

TINY = os.environ.get("QD_LLM_TUTORIAL_SCALE") == "tiny"
OUT = Path(os.environ.get("QD_LLM_TUTORIAL_OUT", "archives/tutorial-a"))

# %% [markdown]
# ## A config
#
# A preset, then overrides as dotted `key=value` strings (the same syntax as
# `qd-llm run --set`). `genomes.seeds=random:3` starts from three random LoRA
# adapters, so nothing needs training first; the demo preset instead trains
# seed experts. Every key is validated here, before anything runs.

# %%
sizes = {
    "population.size": 3 if TINY else 6,
    "population.offspring": 1 if TINY else 4,
    "population.generations": 1 if TINY else 4,
    "tasks.initial_tasks": 2 if TINY else 6,
    "tasks.instances_per_task": 2 if TINY else 4,
    "decoding.max_new_tokens": 4 if TINY else 24,
}
overrides = [
    "seed=7",
    "genomes.seeds=random:3",
    "population.dns_k=2",
    "tasks.adapt_every=1",
    "sandbox.workers=1",
    "progress=false",
    *(f"{key}={value}" for key, value in sizes.items()),
]
config = qd_llm.load_config(preset="demo", overrides=overrides)
print(config.population)

# %% [markdown]
# ## One generation, then an interruption
#
# `RunDir.create` writes `config.json` into a new (or empty) folder.
# `Coevolution.step()` runs one generation — generation 0 evaluates the seeds —
# and returns its metrics row. Every generation ends with an atomic checkpoint,
# so closing the loop here loses nothing, exactly like `kill -9` after the step.

# %%
if OUT.exists():
    shutil.rmtree(OUT)
run = qd_llm.RunDir.create(OUT, config.to_dict())
loop = qd_llm.Coevolution(config, run)
try:
    row = loop.step()
finally:
    loop.close()
print(f"generation {row['generation']}: coverage {row['coverage']:.2f}, niches {row['niche_size']}")

# %% [markdown]
# ## Resume
#
# A new process would only know the folder: `RunDir.open` reads it back, the
# config comes from the run itself, and a new loop continues from the last
# checkpoint (`loop.generation` says where). `run()` goes to the last
# generation.

# %%
run = qd_llm.RunDir.open(OUT)
config = qd_llm.config_from_dict(run.config())
loop = qd_llm.Coevolution(config, run)
try:
    loop.start()
    print("resuming after generation", loop.generation)
    loop.run()
finally:
    loop.close()
generations = [row["generation"] for row in run.metrics()]
print("generations in metrics.jsonl:", generations)
assert generations == list(range(config.population.generations + 1)), generations

# %% [markdown]
# ## Plot
#
# `write_figures` draws every figure of a run into `RUN/figures/` (the niche
# map, coverage and QD score over generations, the task embeddings, the
# lineage...) and `write_report` links them in `RUN/report.html`.
# `RunSnapshot` reads a finished (or running) run without unpickling anything:
# here, the elite of each occupied niche.

# %%
from qd_llm.plots import write_figures  # noqa: E402
from qd_llm.report import write_report  # noqa: E402

figures = write_figures(run.path)
report = write_report(run.path, figures)
print("figures:", ", ".join(sorted(figures)))
print("report:", report)
for elite in qd_llm.RunSnapshot(run.path).elites():
    print(f"niche {elite.cell}: {elite.genome_id} fitness {elite.fitness:.2f}")
