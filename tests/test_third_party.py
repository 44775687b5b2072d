"""A scientist and an operator registered by decorator in this module run inside the
loop, named by the config, with no edit to qd_llm."""

import json
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from _tiny_loop import run_tiny_loop

from qd_llm.operators import Operator, OperatorSignature, Param, lowrank, register_operator
from qd_llm.tasks.procedural import ProceduralScientist
from qd_llm.tasks.scientist import Scientist, TaskRequest, register_scientist
from qd_llm.tasks.taskdir import TaskDir


@register_scientist("third_party_levels")
class ThirdPartyScientist(Scientist):
    """Procedural tasks of one family, with every request it served recorded."""

    requests: ClassVar[list[str]] = []

    def __init__(self):
        self.inner = ProceduralScientist(families=["arithmetic"], num_instances=2)

    def propose(self, request: TaskRequest, out_root: Path) -> TaskDir:
        type(self).requests.append(request.operation)
        return self.inner.propose(request, out_root)


@register_operator("third_party_first_scaled")
class FirstScaled(Operator):
    """``ΔW = scale · ΔW_1``: the first parent's update, scaled."""

    signature = OperatorSignature(
        min_parents=1,
        params=(Param(name="scale", kind="number", default=1.0, meaning="factor", low=0.0),),
    )
    calls = 0

    def apply_layer(self, layers, *, rank, generator, scale=1.0):
        type(self).calls += 1
        return lowrank.combine([(scale, layers[0])], rank)

    def apply_tensor(self, tensors, *, generator, scale=1.0):
        return scale * tensors[0].to(torch.float32)


@pytest.mark.slow
def test_registered_scientist_and_operator_run_inside_the_loop(world_readable):
    overrides = [
        "tasks.scientist=third_party_levels",
        'operators={"third_party_first_scaled": {"parents": 1, "scale": 0.5}}',
    ]
    run = run_tiny_loop(world_readable, "run", overrides)
    # The initial tasks and the adaptations after each generation came from our scientist.
    assert ThirdPartyScientist.requests.count("initial") >= 2
    assert set(ThirdPartyScientist.requests) - {"initial"}
    lineages = [json.loads((t / "metadata.json").read_text()) for t in run.tasks_dir.iterdir()]
    assert lineages and {lineage["family"] for lineage in lineages} == {"arithmetic"}
    # Every child was bred by our operator, with its parameter.
    assert FirstScaled.calls > 0
    genomes = [json.loads(p.read_text()) for p in run.genomes_dir.glob("*/genome.json")]
    children = [g for g in genomes if g["operator"] != "seed"]
    assert children and {g["operator"] for g in children} == {"third_party_first_scaled"}
    assert all(g["params"]["scale"] == 0.5 for g in children)
