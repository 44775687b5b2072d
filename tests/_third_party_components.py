"""A scientist and an operator that a third party registers by decorator.

Imported by ``tests/test_third_party.py`` inside its test, not at collection, so
the names exist only while that test runs (conftest unregisters them after).
"""

from pathlib import Path
from typing import ClassVar

import torch

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
