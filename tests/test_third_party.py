"""A scientist and an operator registered by decorator in a third-party module run
inside the loop, named by the config, with no edit to qd_llm."""

import importlib
import json
import sys

import pytest
from _tiny_loop import run_tiny_loop


@pytest.fixture
def third_party():
    """The module whose import registers the components (fresh, so its counters start at 0)."""
    sys.modules.pop("_third_party_components", None)
    yield importlib.import_module("_third_party_components")
    sys.modules.pop("_third_party_components", None)


@pytest.mark.slow
def test_registered_scientist_and_operator_run_inside_the_loop(world_readable, third_party):
    overrides = [
        "tasks.scientist=third_party_levels",
        'operators={"third_party_first_scaled": {"parents": 1, "scale": 0.5}}',
    ]
    run = run_tiny_loop(world_readable, "run", overrides)
    # The initial tasks and the adaptations after each generation came from our scientist.
    assert third_party.ThirdPartyScientist.requests.count("initial") >= 2
    assert set(third_party.ThirdPartyScientist.requests) - {"initial"}
    lineages = [json.loads((t / "metadata.json").read_text()) for t in run.tasks_dir.iterdir()]
    assert lineages and {lineage["family"] for lineage in lineages} == {"arithmetic"}
    # Every child was bred by our operator, with its parameter.
    assert third_party.FirstScaled.calls > 0
    genomes = [json.loads(p.read_text()) for p in run.genomes_dir.glob("*/genome.json")]
    children = [g for g in genomes if g["operator"] != "seed"]
    assert children and {g["operator"] for g in children} == {"third_party_first_scaled"}
    assert all(g["params"]["scale"] == 0.5 for g in children)
