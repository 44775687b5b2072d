# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Tutorial (c): bring your own task set, scientist and operator
#
# The loop coevolves genomes with tasks written by a *scientist*. qd_llm ships
# two (procedural and LLM-written tasks); this tutorial brings a third: one
# that serves questions of **your own benchmark**, a small JSONL file, turned
# into task directories by qd_llm's benchmark importer. The scientist and a
# small merge operator are registered by decorator, so a config names them
# like the built-in ones (`tasks.scientist=benchmark`,
# `operators={"scaled_mean": ...}`) and is checked against them when it loads.
# Nothing in qd_llm is edited.
#
# Run it as a script (`python analysis/tutorials/c_own_tasks_and_scientist.py`)
# or open it in Jupyter with jupytext. `QD_LLM_TUTORIAL_SCALE=tiny` shrinks
# every size so the test suite runs it in well under a minute;
# `QD_LLM_TUTORIAL_OUT` chooses where files land (default `archives/tutorial-c`).

# %%
import json
import os
import shutil
from pathlib import Path

import torch

import qd_llm
from qd_llm.operators import Operator, OperatorSignature, Param, lowrank, register_operator
from qd_llm.tasks.importers import import_benchmark
from qd_llm.tasks.scientist import Scientist, TaskRejected, TaskRequest, register_scientist
from qd_llm.tasks.taskdir import Lineage, TaskDir, write_task

TINY = os.environ.get("QD_LLM_TUTORIAL_SCALE") == "tiny"
OUT = Path(os.environ.get("QD_LLM_TUTORIAL_OUT", "archives/tutorial-c"))
shutil.rmtree(OUT, ignore_errors=True)
OUT.mkdir(parents=True)
OUT.chmod(0o755)  # sandboxed task code runs as another user and reads the tasks

# %% [markdown]
# ## A benchmark of your own
#
# One JSON object per line: a `question` and its `answer` (a string, a number
# or a list of accepted answers; `choices` makes it multiple choice). Short
# questions, so the 135M-parameter base model gets some right.

# %%
BENCHMARK = OUT / "quiz.jsonl"
questions = [
    {"question": "What is 2 + 3?", "answer": 5},
    {"question": "What is the capital of France?", "answer": "Paris"},
    {"question": "What colour is the sky on a clear day?", "answer": "blue"},
    {"question": "What is the opposite of hot?", "answer": "cold"},
    {"question": "How many legs does a spider have?", "answer": [8, "eight"]},
    {"question": "Which animal says moo?", "answer": "cow"},
    {"question": "What is the first letter of the alphabet?", "answer": "A"},
    {"question": "What do bees make?", "answer": "honey"},
]
BENCHMARK.write_text("".join(json.dumps(q) + "\n" for q in questions))

# %% [markdown]
# `import_benchmark` (what `qd-llm tasks import` runs) writes one task
# directory per question: a `task.py` that scores the extracted answer in the
# sandbox, a `task.json` description (embedded to place the task in skill
# space) and its lineage.

# %%
imported = import_benchmark(BENCHMARK, OUT / "imported")
print(imported.summary())
print(imported.tasks[0].info.description)

# %% [markdown]
# ## A scientist that serves it
#
# A scientist turns a `TaskRequest` (`initial`, or `easier` / `harder` /
# `novel` relative to a parent task) into a task directory under `out_root`,
# or raises `TaskRejected`. This one ignores the difficulty asked for and hands
# out the benchmark's next unused question, recording the request in the
# task's lineage. `from_config` is how the run builds a registered scientist
# from its config; this one reads only the benchmark written above.


# %%
@register_scientist("benchmark")
class BenchmarkScientist(Scientist):
    """Serves a benchmark's imported questions, one per request, in order."""

    def __init__(self, *, source: Path, staging: Path):
        self.pending: list[TaskDir] = import_benchmark(source, staging, overwrite=True).tasks

    @classmethod
    def from_config(cls, config, *, sandbox=None, client_factory=None):
        return cls(source=BENCHMARK, staging=OUT / "staging")

    def propose(self, request: TaskRequest, out_root: Path) -> TaskDir:
        if not self.pending:
            raise TaskRejected("every benchmark question has been served")
        question = self.pending.pop(0)
        lineage = Lineage(
            generation_type=request.operation,
            parent_task=request.parent.task_id if request.parent else None,
            parent_pass_rate=request.parent_pass_rate,
            created_at_generation=request.generation,
            extra={"scientist": self.name, "question": question.task_id},
        )
        return write_task(
            out_root,
            task_id=question.task_id,
            code=question.code,
            info=question.info,
            lineage=lineage,
            overwrite=True,
        )


# %% [markdown]
# ## An operator of your own
#
# An operator combines parent genomes, once per genome form: `apply_layer`
# on one LoRA layer of every parent (factors `B_i` `(out, r_i)`, `A_i`
# `(r_i, in)`; the update is `ΔW_i = B_i A_i`) and `apply_tensor` on dense
# task-vector tensors (full-weight genomes). This one is the parents' mean
# update, scaled. In factored form it stays exact and cheap:
# `lowrank.combine` merges a weighted sum of LoRA layers into one layer of the
# target rank without forming any `out × in` matrix. Its `signature` declares
# how many parents it takes and its typed parameters, which every config is
# checked against.


# %%
@register_operator("scaled_mean")
class ScaledMean(Operator):
    """``ΔW = scale · mean_i ΔW_i``: the parents' average update, stretched or shrunk."""

    signature = OperatorSignature(
        min_parents=2,
        params=(
            Param(name="scale", kind="number", default=1.0, meaning="factor on the mean", low=0.0),
        ),
    )

    def apply_layer(self, layers, *, rank, generator, scale=1.0):
        return lowrank.combine([(scale / len(layers), layer) for layer in layers], rank)

    def apply_tensor(self, tensors, *, generator, scale=1.0):
        return scale * torch.stack(tensors).mean(dim=0)


# %% [markdown]
# A bad value is one line when the config loads, before any model is touched:

# %%
try:
    qd_llm.load_config(overrides=['operators={"scaled_mean": {"parents": 2, "scale": -1}}'])
except qd_llm.QdLlmError as e:
    print(e)

# %% [markdown]
# ## A run with them
#
# The config names the scientist and the operator like built-in ones.
# `genomes.seeds=random:2` starts from two random LoRA adapters, so nothing
# needs training first.

# %%
overrides = [
    "seed=3",
    "genomes.seeds=random:2",
    "population.size=2",
    "population.dns_k=2",
    f"population.offspring={1 if TINY else 2}",
    f"population.generations={2 if TINY else 3}",
    "tasks.scientist=benchmark",
    "tasks.initial_tasks=2",
    "tasks.adapt_every=1",
    "tasks.new_task_attempts=1",
    f"decoding.max_new_tokens={4 if TINY else 8}",
    "sandbox.workers=1",
    "progress=false",
    "heatmap=false",
    'operators={"scaled_mean": {"parents": 2, "scale": 1.5}}',
]
config = qd_llm.load_config(preset="demo", overrides=overrides)
run = qd_llm.RunDir.create(OUT / "run", config.to_dict())
loop = qd_llm.Coevolution(config, run)
try:
    loop.run()
finally:
    loop.close()

# %% [markdown]
# The run's tasks are the benchmark's questions, each with the request that
# brought it in; its genomes record the operator that bred them.

# %%
for task in sorted(run.tasks_dir.iterdir()):
    lineage = json.loads((task / "metadata.json").read_text())
    print(task.name, lineage["generation_type"], lineage["scientist"])
bred = [json.loads(path.read_text())["operator"] for path in run.genomes_dir.glob("*/genome.json")]
print("genomes by operator:", {name: bred.count(name) for name in sorted(set(bred))})
print("last generation:", run.metrics()[-1]["generation"])
