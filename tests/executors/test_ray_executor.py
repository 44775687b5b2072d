"""The Ray executor on a real local Ray cluster: real SmolLM2 actors, real bubblewrap sandboxes.

One two-CPU cluster serves the whole module. Everything the Ray pools return
is compared with what the local backend and sandbox pool return for the same
inputs, and a tiny loop run on Ray must reproduce a local run's metrics.
"""

import pytest

ray = pytest.importorskip("ray")

import torch  # noqa: E402
from _tiny_loop import eval_records, run_tiny_loop  # noqa: E402

from qd_llm.errors import QdLlmError  # noqa: E402
from qd_llm.executors.ray_executor import (  # noqa: E402
    RayBackend,
    RaySandboxPool,
    contiguous_shards,
    init_ray,
)
from qd_llm.inference.base import GenerationConfig, GenerationRequest  # noqa: E402
from qd_llm.models.genome import GenomeStore  # noqa: E402
from qd_llm.models.lora import random_weights  # noqa: E402
from qd_llm.runs import RunDir, without_timings  # noqa: E402
from qd_llm.tasks.procedural import ProceduralScientist, get_family  # noqa: E402
from qd_llm.tasks.sandbox import (  # noqa: E402
    SandboxConfig,
    SandboxError,
    SandboxPool,
    ScoreJob,
    resolve_isolation,
)
from qd_llm.tasks.taskdir import Lineage, TaskInfo, write_task  # noqa: E402

pytestmark = pytest.mark.ray

SANDBOX = SandboxConfig(cpu_seconds=1, wall_seconds=3)
ACTOR_CPUS = 0.25  # every actor of the module fits on the two-CPU cluster at once
GREEDY = GenerationConfig(max_new_tokens=8)
PROMPTS = ["What is 2 + 3?", "Name a colour.", "Say hello in French."]

HOSTILE = """
class TaskFamily:
    @staticmethod
    def get_tasks():
        return {"1": {}}

    @staticmethod
    def get_instructions(t):
        return "Anything."

    @staticmethod
    def score(t, submission):
        while True:
            pass
"""

BROKEN = """
class TaskFamily:
    @staticmethod
    def get_tasks():
        raise RuntimeError("no instances today")
"""


@pytest.fixture(scope="module")
def cluster():
    assert init_ray(address="local", num_cpus=2), "Ray was already running in this process"
    yield
    ray.shutdown()


# --- sharding ----------------------------------------------------------------------------


def test_contiguous_shards_keep_groups_whole_and_balanced():
    assert contiguous_shards([3, 1, 1, 3], 2) == [range(0, 2), range(2, 4)]
    assert contiguous_shards([1] * 5, 2) == [range(0, 2), range(2, 5)]
    assert contiguous_shards([10, 1], 4) == [range(0, 1), range(1, 2)]
    assert contiguous_shards([4], 3) == [range(0, 1)]
    assert contiguous_shards([], 3) == []
    shards = contiguous_shards([2] * 7, 3)
    assert [i for run in shards for i in run] == list(range(7)) and len(shards) == 3
    with pytest.raises(ValueError, match="shards must be >= 1"):
        contiguous_shards([1], 0)


# --- inference -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def requests_(world_readable, base_shapes):
    store = GenomeStore(world_readable / "genomes", base_model="smollm2-135m-instruct")
    generator = torch.Generator().manual_seed(0)
    ids = [
        store.save(random_weights(base_shapes, rank=4, std=0.02, generator=generator)).id
        for _ in range(2)
    ]
    # Interleaved genomes and a base-model row: the order must come back intact.
    return [
        GenerationRequest(prompt=prompt, genome_id=g, adapter=store.path(g) if g else None)
        for prompt in PROMPTS
        for g in [*ids, None]
    ]


@pytest.fixture(scope="module")
def ray_backend(cluster):
    backend = RayBackend(
        backend="hf", backend_kwargs={"batch_size": 16}, actors=2, cpus_per_actor=ACTOR_CPUS
    )
    yield backend
    backend.close()


def test_ray_backend_equals_the_local_backend(ray_backend, hf_backend, requests_):
    local = hf_backend.generate(requests_, GREEDY)
    assert ray_backend.generate(requests_, GREEDY) == local
    assert len(set(local)) > 1  # the genomes really answer differently from one another
    assert ray_backend.generate(requests_[::-1], GREEDY) == local[::-1]
    assert ray_backend.generate([], GREEDY) == []
    assert len(ray_backend.nodes) == 2


def test_dead_inference_actor_is_a_clear_error(cluster, requests_):
    backend = RayBackend(backend_kwargs={"batch_size": 4}, actors=1, cpus_per_actor=ACTOR_CPUS)
    try:
        ray.kill(backend._pool.actors[0])
        with pytest.raises(QdLlmError, match="Ray inference actor died"):
            backend.generate(requests_[:2], GREEDY)
    finally:
        backend.close()
    with pytest.raises(QdLlmError, match="pool is closed"):
        backend.generate(requests_[:2], GREEDY)


def test_actor_that_cannot_start_is_a_clear_error(cluster):
    with pytest.raises(QdLlmError, match=r"failed to start: .*does not exist"):
        RayBackend(backend_kwargs={"base_model": "/no/such/model"}, cpus_per_actor=ACTOR_CPUS)


# --- scoring -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tasks(world_readable):
    if resolve_isolation(SANDBOX) != "bwrap":
        pytest.skip("bubblewrap cannot create sandboxes here")
    root = world_readable / "tasks"
    scientist = ProceduralScientist()
    procedural = [
        scientist.write(root, family=get_family(name), level=0, seed=seed)
        for name, seed in (("arithmetic", 0), ("arithmetic", 1), ("letters", 0))
    ]
    info = TaskInfo(name="hostile", description="never returns", capability="testing")
    hostile = write_task(root, task_id="hostile", code=HOSTILE, info=info, lineage=Lineage())
    info = TaskInfo(name="broken", description="cannot list instances", capability="testing")
    broken = write_task(root, task_id="broken", code=BROKEN, info=info, lineage=Lineage())
    return {"procedural": procedural, "hostile": hostile, "broken": broken}


@pytest.fixture(scope="module")
def local_pool(tasks):
    with SandboxPool(config=SANDBOX, workers=2) as pool:
        yield pool


@pytest.fixture(scope="module")
def ray_pool(cluster, tasks):
    with RaySandboxPool(config=SANDBOX, workers=1, actors=2, cpus_per_actor=ACTOR_CPUS) as pool:
        yield pool


def _jobs(tasks, local_pool):
    """Right, wrong and empty answers to every instance of the procedural tasks."""
    jobs = []
    for task in tasks["procedural"]:
        for instance_id, instance in local_pool.load_instances(task.path).items():
            for answer in (instance.data["answer"], "wrong", ""):
                jobs.append(
                    ScoreJob(
                        task_dir=task.path,
                        instance_id=instance_id,
                        data=instance.data,
                        submission=answer,
                    )
                )
    return jobs


def test_ray_pool_loads_the_same_instances(ray_pool, local_pool, tasks):
    for task in tasks["procedural"]:
        assert ray_pool.load_instances(task.path) == local_pool.load_instances(task.path)
    with pytest.raises(SandboxError, match="no instances today"):
        ray_pool.load_instances(tasks["broken"].path)


def test_ray_pool_scores_equal_the_local_pool(ray_pool, local_pool, tasks):
    jobs = _jobs(tasks, local_pool)
    expected = [r.score for r in local_pool.score_many(jobs)]
    assert [r.score for r in ray_pool.score_many(jobs, progress=True)] == expected
    assert expected.count(1.0) == len(jobs) // 3  # only the right answers score
    assert ray_pool.score(jobs[0]).score == 1.0
    assert ray_pool.score_many([]) == []


def test_hostile_task_scores_zero_and_the_pool_keeps_working(ray_pool, local_pool, tasks):
    hostile = ScoreJob(task_dir=tasks["hostile"].path, instance_id="1", data={}, submission="x")
    good = _jobs(tasks, local_pool)[0]
    results = ray_pool.score_many([hostile, good, hostile])
    assert [r.score for r in results] == [0.0, 1.0, 0.0]
    assert results[0].reason and results[2].reason
    assert ray_pool.score(good).score == 1.0


# --- the loop ------------------------------------------------------------------------------


def _run_loop(root, executor: str) -> RunDir:
    ray_keys = ["ray.actors=2", "ray.sandbox_actors=2", f"ray.cpus_per_actor={ACTOR_CPUS}"]
    return run_tiny_loop(root, executor, [f"inference.executor={executor}", *ray_keys])


@pytest.mark.slow
def test_loop_on_ray_matches_the_local_loop(cluster, world_readable):
    local = _run_loop(world_readable, "local")
    remote = _run_loop(world_readable, "ray")
    for run in (local, remote):
        assert run.metrics_path.exists() and run.checkpoint_path.exists()
        assert any(run.genomes_dir.iterdir()) and any(run.tasks_dir.iterdir())
    rows = remote.metrics()
    assert [r["generation"] for r in rows] == [0, 1, 2]
    assert rows[1]["task_adaptation"]["attempts"] == 1
    assert [without_timings(r) for r in rows] == [without_timings(r) for r in local.metrics()]

    assert eval_records(remote) == eval_records(local)  # same completions, extractions and scores
    assert sorted(p.name for p in remote.genomes_dir.iterdir()) == sorted(
        p.name for p in local.genomes_dir.iterdir()
    )
    assert ray.is_initialized()  # the loop did not own the cluster, so it left it running
