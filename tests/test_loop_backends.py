"""The loop on other backends and genome forms, against the same tiny local run.

Through an OpenAI-compatible server: ``qd-llm serve``'s server (real SmolLM2
through the session's hf backend) starts knowing no genome, and the loop's
openai backend has it load every seed and child by path as the run breeds
them, as it would with ``vllm serve``. (The vllm backend's loop test runs in
the vLLM environment: tests/test_loop_vllm.py.) With full-weight genomes:
seeds merged into whole checkpoints, children bred as streamed task vectors,
evaluation by loading weights in place.
"""

import pytest
from _tiny_loop import eval_records, run_tiny_loop

from qd_llm.config import load_config
from qd_llm.errors import QdLlmError
from qd_llm.inference.server import ChatCompletionServer
from qd_llm.runs import without_timings


@pytest.fixture(scope="module")
def local(world_readable):
    return run_tiny_loop(world_readable, "local")


@pytest.mark.slow
def test_loop_through_an_openai_server_matches_the_local_loop(world_readable, local, hf_backend):
    with ChatCompletionServer(
        backend=hf_backend, base_model="smollm2-135m-instruct", adapter_root=world_readable
    ) as server:
        server.start()
        served = run_tiny_loop(
            world_readable, "openai", ["backend=openai", f"inference.base_url={server.url}"]
        )
        loaded = set(server.adapters)
    rows = served.metrics()
    assert [r["generation"] for r in rows] == [0, 1, 2]
    assert [without_timings(r) for r in rows] == [without_timings(r) for r in local.metrics()]
    assert eval_records(served) == eval_records(local)
    assert loaded == {p.name for p in served.genomes_dir.iterdir()}


def test_full_weight_genomes_cannot_use_an_openai_server():
    with pytest.raises(QdLlmError, match=r"genomes\.form"):
        load_config(overrides=["backend=openai", "genomes.form=full"])


@pytest.mark.slow
def test_full_weight_run_breeds_checkpoints_and_exports_them(world_readable, local, tmp_path):
    from transformers import AutoModelForCausalLM

    from qd_llm.export import export_elites
    from qd_llm.models.forms import is_full_checkpoint
    from qd_llm.models.genome import GenomeStore
    from qd_llm.snapshot import RunSnapshot

    run = run_tiny_loop(world_readable, "full", ["genomes.form=full"])
    assert [r["generation"] for r in run.metrics()] == [0, 1, 2]
    store = GenomeStore(run.genomes_dir, base_model="smollm2-135m-instruct")
    infos = [store.info(g) for g in store.ids()]
    assert all(i.form == "full" for i in infos)
    assert all(is_full_checkpoint(store.path(g)) for g in store.ids(with_weights=True))
    children = [i for i in infos if i.parents]
    assert children and all("seed" in i.params for i in children)
    # keep_weights=auto keeps only live full genomes' weights: population, map, seeds.
    snapshot = RunSnapshot(run.path)
    live = set(snapshot.population) | {e.genome_id for e in snapshot.elites()}
    for info in infos:
        assert store.has_weights(info.id) == (info.id in live or not info.parents)
    assert {i.operator for i in children} <= {"linear", "gaussian"}

    # The seeds are the LoRA run's random seeds merged into the base: same answers.
    def seed_answers(r):
        names = {"random0", "random1"}
        s = GenomeStore(r.genomes_dir, base_model="smollm2-135m-instruct")
        seeds = {g: s.info(g).name for g in s.ids() if s.info(g).name in names}
        return {
            (seeds[e["genome_id"]], e["task_id"], e["instance_id"]): e["completion"]
            for e in eval_records(r)
            if e["genome_id"] in seeds
        }

    full_answers, lora_answers = seed_answers(run), seed_answers(local)
    shared = full_answers.keys() & lora_answers.keys()
    assert len(shared) >= 4
    assert sum(full_answers[k] == lora_answers[k] for k in shared) >= 0.75 * len(shared)

    (elite,) = export_elites(run.path, tmp_path / "export", top=1, merged=True)
    folder = tmp_path / "export" / elite.path
    assert elite.merged is None and is_full_checkpoint(folder)
    assert "library_name: transformers" in (folder / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
