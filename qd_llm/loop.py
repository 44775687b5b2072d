"""The coevolution loop (AC/DC): orchestration only, no math of its own.

::

    resolve base + seed experts; seed tasks (scientist "initial", novelty-filtered)
    gen 0: seeds + children → evaluate → DNS population; niche map built
    each generation g = 1..G:
        bandit asks recipes → operators breed children → evaluate on active tasks
        → DNS over population ∪ children → niche-map insert → bandit told
        → (every K generations, except the last) adapt the task pool
        → metrics row → checkpoint

Task-pool adaptation, for ``new_task_attempts`` parent tasks drawn from the
pool: pass rate 0 → ask for an easier task; pass rate above the easy
threshold → a harder one; otherwise a novel one. Candidates pass the task
archive's novelty filter (the pool is capped, oldest out), the population and
the niche-map elites are evaluated on the new tasks, and an easier/harder
child *replaces* its parent — unless the child proves impossible (pass rate 0),
in which case the child goes and the parent stays (is "restored"); if the
parent was impossible too, both go. A task nobody solves whose family has no
easier level is dropped (``tasks.drop_unsolvable``). The pool never drops to
zero tasks. Then the skill descriptors are refitted on the active tasks and
the niche map is rebuilt from stored skill vectors.

Every random choice draws from one numpy generator seeded by ``config.seed``
(the bandit has its own, seeded from it), and decoding is greedy, so a run is a
function of its config: resumed runs reproduce uninterrupted ones exactly.
"""

import logging
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from qd_llm import atomic, faults
from qd_llm.config import RunConfig
from qd_llm.errors import QdLlmError
from qd_llm.evaluation.evaluate import INSTANCES_DIR, Evaluator, looks_like_gibberish
from qd_llm.inference.base import GenerationConfig
from qd_llm.models.genome import GenomeStore
from qd_llm.operators import get_operator
from qd_llm.qd.descriptors import SkillDescriptors
from qd_llm.qd.dns import dns_select
from qd_llm.qd.emitters import OperatorBandit, Recipe
from qd_llm.qd.niche_map import NicheMap
from qd_llm.random_state import (
    generator_from_state,
    generator_state,
    python_random_state,
    set_python_random_state,
)
from qd_llm.runs import RunDir
from qd_llm.tasks.archive import TaskArchive
from qd_llm.tasks.scientist import Scientist, TaskRejected, TaskRequest
from qd_llm.tasks.taskdir import TaskDir

logger = logging.getLogger(__name__)

_SEED_SPACE = 2**31


def _unique(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


# LoRA ranks vLLM accepts as max_lora_rank.
_VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)


def backend_kwargs(config: RunConfig) -> dict:
    """Constructor arguments of the backend ``config.inference.backend`` names.

    Raises:
        QdLlmError: ``genomes.rank`` is larger than any LoRA rank vLLM accepts.
    """
    inference = config.inference
    if inference.backend == "hf":
        return dict(
            base_model=config.base_model,
            dtype=inference.dtype,
            device=inference.device,
            batch_size=inference.batch_size,
            adapter_memory_mb=inference.adapter_memory_mb,
        )
    if inference.backend == "vllm":
        max_rank = next((r for r in _VLLM_LORA_RANKS if r >= config.genomes.rank), None)
        if max_rank is None:
            raise QdLlmError(f"genomes.rank {config.genomes.rank} is above vLLM's largest, 512")
        return dict(
            base_model=config.base_model,
            dtype=inference.dtype,
            max_loras=inference.max_loras,
            max_lora_rank=max_rank,
            max_model_len=inference.max_model_len,
            gpu_memory_utilization=inference.gpu_memory_utilization or None,
            seed=config.seed,
        )
    # openai: children are bred during the run, so the server is told to load
    # each new genome's adapter folder by path (a shared file system).
    return dict(
        base_model=config.base_model,
        base_url=inference.base_url or None,
        max_workers=inference.max_workers,
        load_adapters=True,
    )


class Coevolution:
    """One run of the loop over a run directory.

    Args:
        config: The resolved config.
        run: The run directory (created by the caller).
        is_gibberish: Check on a child's completions; True excludes it from
            selection. Used only when ``config.gibberish_filter`` is not ``off``;
            default: the one that setting names (the heuristic
            :func:`~qd_llm.evaluation.evaluate.looks_like_gibberish`, or a
            :class:`~qd_llm.evaluation.judge.GibberishJudge` on the environment's
            OpenAI-compatible endpoint).
    """

    def __init__(
        self,
        config: RunConfig,
        run: RunDir,
        *,
        is_gibberish: Callable[[Sequence[str]], bool] | None = None,
    ):
        self.config = config
        self.run = run
        self.is_gibberish = is_gibberish or self._default_gibberish_check()
        self.store = GenomeStore(
            run.genomes_dir, base_model=config.base_model, dtype=config.genomes.dtype
        )
        self._backend = self._sandbox = self._embedder = self._evaluator = None

    def _default_gibberish_check(self) -> Callable[[Sequence[str]], bool]:
        if self.config.gibberish_filter != "judge":
            return looks_like_gibberish
        from qd_llm.evaluation.judge import GibberishJudge
        from qd_llm.inference.openai_client import OpenAIChatClient

        return GibberishJudge(client=OpenAIChatClient())

    # --- components (built lazily: `status` and tests need none of them) ----------

    @property
    def backend(self):
        if self._backend is None:
            inference = self.config.inference
            kwargs = backend_kwargs(self.config)
            if inference.executor == "ray":
                from qd_llm.executors.ray_executor import RayBackend

                r = self.config.ray
                self._backend = RayBackend(
                    backend=inference.backend,
                    backend_kwargs=kwargs,  # no progress bars in remote actors
                    actors=r.actors,
                    cpus_per_actor=r.cpus_per_actor,
                    gpus_per_actor=r.gpus_per_actor,
                    address=r.address,
                    num_cpus=r.num_cpus or None,
                )
            else:
                from qd_llm.inference.registry import make_backend

                if inference.backend in ("hf", "vllm"):
                    kwargs["progress"] = self.config.progress
                self._backend = make_backend(inference.backend, **kwargs)
        return self._backend

    @property
    def sandbox(self):
        if self._sandbox is None:
            from qd_llm.tasks.sandbox import SandboxConfig, SandboxPool

            s = self.config.sandbox
            config = SandboxConfig(
                isolation=s.isolation, cpu_seconds=s.cpu_seconds, wall_seconds=s.wall_seconds
            )
            if self.config.inference.executor == "ray":
                from qd_llm.executors.ray_executor import RaySandboxPool

                r = self.config.ray
                self._sandbox = RaySandboxPool(
                    config=config,
                    workers=s.workers,
                    actors=r.sandbox_actors,
                    cpus_per_actor=r.cpus_per_actor,
                    address=r.address,
                    num_cpus=r.num_cpus or None,
                )
            else:
                from qd_llm.inference.openai_client import OpenAIChatClient
                from qd_llm.tasks.llm_judge import TaskJudge

                # Reference tasks' eval_with_llm_judge: the environment's endpoint, on first use.
                judge = TaskJudge(client_factory=OpenAIChatClient)
                self._sandbox = SandboxPool(config=config, workers=s.workers, judge=judge)
        return self._sandbox

    @property
    def embedder(self):
        if self._embedder is None:
            from sentence_transformers import SentenceTransformer

            from qd_llm.models.resolve import resolve_embedder

            self._embedder = SentenceTransformer(
                resolve_embedder(self.config.embedder), device="cpu"
            )
        return self._embedder

    @property
    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            d = self.config.decoding
            self._evaluator = Evaluator(
                run_dir=self.run.path,
                backend=self.backend,
                sandbox=self.sandbox,
                genomes=self.store,
                decoding=GenerationConfig(
                    max_new_tokens=d.max_new_tokens,
                    temperature=d.temperature,
                    seed=self.config.seed,
                    system_prompt=d.system_prompt or None,
                ),
                pass_threshold=self.config.tasks.pass_threshold,
                progress=self.config.progress,
            )
        return self._evaluator

    def make_scientist(self) -> Scientist:
        tasks = self.config.tasks
        if tasks.scientist == "procedural":
            from qd_llm.tasks.procedural import ProceduralScientist

            return ProceduralScientist(
                families=tasks.families or None, num_instances=tasks.instances_per_task
            )
        from qd_llm.inference.openai_client import OpenAIChatClient
        from qd_llm.tasks.llm_judge import InterestingCheck
        from qd_llm.tasks.llm_scientist import LLMScientist

        client = OpenAIChatClient()
        # The reference's "interestingly new" check on what the LLM scientist offers.
        self.tasks.is_interesting = InterestingCheck(client=client)
        return LLMScientist(client=client, sandbox=self.sandbox)

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
        if self._backend is not None:
            self._backend.close()

    # --- state ---------------------------------------------------------------------

    def _fresh_state(self) -> None:
        c = self.config
        random.seed(c.seed)
        torch.manual_seed(c.seed)
        self.rng = np.random.default_rng(c.seed)
        self.tasks = TaskArchive(
            embedder=self.embedder,
            k=c.tasks.novelty_k,
            threshold=c.tasks.novelty_threshold,
            capacity=c.tasks.pool_capacity,
        )
        self.niche = NicheMap(
            dims=c.niche_map.dims,
            kind=c.niche_map.kind,
            resolution=c.niche_map.resolution,
            cells=c.niche_map.cells,
            seed=c.seed,
        )
        self.bandit = OperatorBandit(self.niche.archive, operators=c.operators, seed=c.seed + 1)
        self.population: list[str] = []
        self.generation = -1

    def state_dict(self) -> dict:
        """Everything needed to continue exactly, as JSON types and numpy arrays."""
        return {
            "generation": self.generation,
            "population": list(self.population),
            "task_archive": self.tasks.state_dict(),
            "niche": self.niche.state_dict(),
            "bandit": self.bandit.state_dict(),
            "rng": generator_state(self.rng),
            "python_random": python_random_state(),
            "torch_random": torch.get_rng_state().numpy(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continues from :meth:`state_dict` (as read back from a checkpoint)."""
        self.generation = int(state["generation"])
        self.population = [str(genome_id) for genome_id in state["population"]]
        self.tasks = TaskArchive.from_state_dict(
            state["task_archive"], embedder=self.embedder, tasks_root=self.run.tasks_dir
        )
        self.niche = NicheMap.from_state_dict(state["niche"])
        # The emitters serve the niche map's archive, as in a fresh run.
        self.bandit = OperatorBandit.from_state_dict(state["bandit"], archive=self.niche.archive)
        self.rng = generator_from_state(state["rng"])
        set_python_random_state(state["python_random"])
        torch_random = np.asarray(state["torch_random"])
        if torch_random.dtype != np.uint8:
            raise ValueError(f"torch RNG state has dtype {torch_random.dtype}, not uint8")
        torch.set_rng_state(torch.from_numpy(torch_random.copy()))

    # --- the loop ------------------------------------------------------------------

    def run_generations(self) -> None:
        """Runs (or resumes) the loop up to ``population.generations``."""
        checkpoint = self.run.read_checkpoint()
        self._fresh_state()
        if checkpoint is not None:
            with self.run.restoring_state():
                self.load_state_dict(checkpoint.state)
            logger.info("resuming %s after generation %d", self.run.path, self.generation)
        # Only now, with the checkpoint known good, drop what a cut-short generation wrote.
        self.run.cut_back(checkpoint)
        self._clean_up_interrupted_writes()
        if checkpoint is not None and self.config.genomes.keeps_only_live_weights():
            # The kill may have come between the checkpoint and its drop.
            self._drop_dead_weights()
        total = self.config.population.generations
        bar = None
        if self.config.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total + 1, initial=self.generation + 1, desc="generations")
        try:
            while self.generation < total:
                start = time.perf_counter()
                timings: dict[str, float] = {}
                if self.generation < 0:
                    row = self._generation_zero(timings)
                else:
                    row = self._generation(self.generation + 1, timings)
                self.generation = row["generation"]
                row["timings"] = {k: round(v, 3) for k, v in timings.items()}
                row["seconds"] = round(time.perf_counter() - start, 3)
                self.run.append_metrics(row)
                faults.maybe_kill("loop.metrics_appended")
                self.run.save_checkpoint(self.generation, self.state_dict())
                faults.maybe_kill("loop.checkpoint_saved")
                if self.config.genomes.keeps_only_live_weights():
                    self._drop_dead_weights()
                    faults.maybe_kill("loop.weights_dropped")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(tasks=row["num_tasks"], best=f"{row['best_fitness']:.2f}")
        finally:
            if bar is not None:
                bar.close()
        if self.config.heatmap:
            from qd_llm.plots import niche_map_figure, save_figure

            figure = niche_map_figure(self.niche, generation=self.generation)
            if figure is not None:
                save_figure(figure, self.run.figures_dir / "niche_map.png")

    def _clean_up_interrupted_writes(self) -> None:
        """Removes what a killed process left half-written in the run directory.

        Atomic writes cut short leave temporary files and folders (a genome or
        task folder being filled, an instances file, the checkpoint), and a drop
        of weights cut short leaves a genome folder without its weights but
        with some of their files. Generations after the checkpoint are redone
        exactly, so their genomes, tasks and instances files are written again
        with the same names and content.
        """
        for folder in (
            self.run.path,
            self.run.genomes_dir,
            self.run.tasks_dir,
            self.run.path / INSTANCES_DIR,
        ):
            atomic.remove_leftovers(folder)
        self.store.finish_interrupted_drops()

    def _seed_genomes(self) -> list[str]:
        c = self.config
        if c.genomes.random_seed_count() and c.genomes.form == "lora":
            return _unique(
                [self.store.save(w, name=name).id for name, w in self._random_seeds().items()]
            )
        if c.genomes.random_seed_count():
            with tempfile.TemporaryDirectory() as scratch:
                adapters = GenomeStore(scratch, base_model=c.base_model)
                return _unique(
                    [
                        self.store.merge_adapter(adapters.path(adapters.save(w).id), name=name).id
                        for name, w in self._random_seeds().items()
                    ]
                )
        if c.genomes.seeds == "builtin":
            from qd_llm.models.seeds import seed_expert_folders

            folders = seed_expert_folders(base_model=c.base_model)
        else:
            folders = {Path(f).name: Path(f) for f in c.genomes.seeds}
        return _unique([self._import_seed(folders[name], name) for name in sorted(folders)])

    def _random_seeds(self) -> dict:
        """``random:N`` seeds: name -> LoRA weights, drawn from ``config.seed``."""
        from qd_llm.models.full_weights import checkpoint_linear_shapes
        from qd_llm.models.lora import random_weights

        c = self.config
        shapes = checkpoint_linear_shapes(self.store.base_folder)
        generator = torch.Generator().manual_seed(c.seed)
        return {
            f"random{i}": random_weights(
                shapes, rank=c.genomes.rank, std=c.genomes.random_std, generator=generator
            )
            for i in range(c.genomes.random_seed_count())
        }

    def _import_seed(self, folder: Path, name: str) -> str:
        """Stores a seed adapter or checkpoint in the run's genome form; returns its id."""
        from qd_llm.models.full_weights import extract_lora_from_checkpoint, is_full_checkpoint

        if not folder.is_dir():
            raise QdLlmError(f"seed genome folder {folder} does not exist")
        full = is_full_checkpoint(folder)
        if self.config.genomes.form == "full":
            if full:
                return self.store.import_checkpoint(folder, name=name).id
            return self.store.merge_adapter(folder, name=name).id
        if full:
            weights = extract_lora_from_checkpoint(
                folder, base_folder=self.store.base_folder, rank=self.config.genomes.rank
            )
            return self.store.save(weights, name=name, params={"extracted_from": str(folder)}).id
        return self.store.import_adapter(folder, name=name).id

    def _generation_zero(self, timings: dict) -> dict:
        c = self.config
        t = time.perf_counter()
        scientist = self.make_scientist()
        for _ in range(c.tasks.initial_tasks):
            request = TaskRequest(
                operation="initial",
                context=tuple(self.tasks.active()),
                generation=0,
                seed=int(self.rng.integers(_SEED_SPACE)),
            )
            self._offer_task(scientist, request, generation=0)
            faults.maybe_kill("loop.task_seeded")
        if not len(self.tasks):
            raise QdLlmError("the scientist produced no usable initial task")
        timings["tasks"] = time.perf_counter() - t
        seeds = self._seed_genomes()
        n_children = max(c.population.size - len(seeds), c.population.offspring)
        recipes = self.bandit.ask(seeds, n_children)
        children, timings["breed"] = self._breed(recipes, generation=0)
        candidates = _unique(seeds + children)
        t = time.perf_counter()
        self.evaluator.evaluate(candidates, self.tasks.active())
        timings["evaluate"] = time.perf_counter() - t
        t = time.perf_counter()
        candidates = self._valid(candidates, keep=seeds)
        self.population = self._select(candidates)
        self.bandit.tell(recipes, [child in self.population for child in children])
        self._rebuild_niche_map(candidates)
        timings["select"] = time.perf_counter() - t
        return self._metrics_row(0, num_offspring=len(children), adaptation=None)

    def _generation(self, g: int, timings: dict) -> dict:
        c = self.config
        recipes = self.bandit.ask(self.population, c.population.offspring)
        children, timings["breed"] = self._breed(recipes, generation=g)
        t = time.perf_counter()
        self.evaluator.evaluate(children, self.tasks.active())
        timings["evaluate"] = time.perf_counter() - t
        t = time.perf_counter()
        new = [x for x in self._valid(children) if x not in self.population]
        self.population = self._select(_unique(self.population + new))
        task_ids = self._task_ids()
        skills = self.evaluator.skills(new, task_ids)
        entered = {
            genome_id: bool(
                self.niche.insert([genome_id], skills[i : i + 1], skills[i : i + 1].mean(1))
            )
            for i, genome_id in enumerate(new)
        }
        self.bandit.tell(
            recipes, [child in self.population or entered.get(child, False) for child in children]
        )
        timings["select"] = time.perf_counter() - t
        adaptation = None
        if g % c.tasks.adapt_every == 0 and g < c.population.generations:
            t = time.perf_counter()
            adaptation = self._adapt_tasks(g)
            timings["adapt"] = time.perf_counter() - t
        return self._metrics_row(g, num_offspring=len(children), adaptation=adaptation)

    # --- steps ---------------------------------------------------------------------

    def _breed(self, recipes: Sequence[Recipe], *, generation: int) -> tuple[list[str], float]:
        """Applies recipes; returns the children's ids (unique, in recipe order)."""
        t = time.perf_counter()
        if self.config.genomes.form == "full":
            # Task vectors streamed tensor by tensor from the parents' files.
            children = [
                self.store.breed_full(
                    recipe.operator,
                    recipe.parents,
                    generator=recipe.seed,
                    generation=generation,
                    **recipe.params,
                ).id
                for recipe in recipes
            ]
            return children, time.perf_counter() - t
        parents = {p: self.store.load(p) for r in recipes for p in sorted(set(r.parents))}
        children = []
        for recipe in recipes:
            weights = get_operator(recipe.operator)(
                [parents[p] for p in recipe.parents],
                rank=self.config.genomes.rank,
                generator=recipe.seed,
                **recipe.params,
            )
            info = self.store.save(
                weights,
                parents=recipe.parents,
                operator=recipe.operator,
                params={**recipe.params, "seed": recipe.seed},
                generation=generation,
            )
            children.append(info.id)
            faults.maybe_kill("loop.child_saved")
        return children, time.perf_counter() - t

    def _drop_dead_weights(self) -> None:
        """Drops the weights of genomes neither in the population, the map nor seeds.

        Runs only after a checkpoint is saved, so whatever a resume can need
        (the checkpoint's population and elites) is always kept.
        """
        live = set(self.population) | {e.genome_id for e in self.niche.elites()}
        for genome_id in self.store.ids(with_weights=True):
            if genome_id not in live and self.store.info(genome_id).parents:
                self.store.drop_weights(genome_id)

    def _valid(self, genome_ids: Sequence[str], keep: Sequence[str] = ()) -> list[str]:
        if self.config.gibberish_filter == "off":
            return list(genome_ids)
        task_ids = self._task_ids()
        return [
            g
            for g in genome_ids
            if g in keep or not self.is_gibberish(self.evaluator.completions(g, task_ids))
        ]

    def _task_ids(self) -> list[str]:
        return [t.task_id for t in self.tasks.active()]

    def _select(self, candidates: Sequence[str]) -> list[str]:
        """DNS truncation of ``candidates`` to the population size (best first)."""
        skills = self.evaluator.skills(candidates, self._task_ids())
        kept = dns_select(
            skills, k=self.config.population.dns_k, capacity=self.config.population.size
        )
        return [candidates[i] for i in kept]

    def _rebuild_niche_map(self, genome_ids: Sequence[str]) -> None:
        task_ids = self._task_ids()
        skills = self.evaluator.skills(genome_ids, task_ids)
        descriptors = SkillDescriptors(dims=self.config.niche_map.dims).fit(
            self.tasks.embeddings(task_ids)
        )
        self.niche.rebuild(list(genome_ids), skills, skills.mean(axis=1), descriptors)

    def _offer_task(self, scientist: Scientist, request: TaskRequest, *, generation: int):
        """Asks the scientist for a task and offers it to the archive.

        Returns:
            The task if it was accepted into the pool, else None.
        """
        try:
            task = scientist.propose(request, self.run.tasks_dir)
        except TaskRejected as e:
            logger.debug("scientist declined %s: %s", request.operation, e)
            return None
        if not self.evaluator.instances(task):
            logger.debug("task %s has no instances; skipped", task.task_id)
            return None
        decision = self.tasks.consider(task, generation=generation)
        return task if decision.accepted else None

    def _adapt_tasks(self, g: int) -> dict:
        c = self.config.tasks
        active = self.tasks.active()
        pass_rates = self.evaluator.skills(self.population, self._task_ids()).mean(axis=0)
        rate_of = dict(zip(self._task_ids(), pass_rates.tolist(), strict=True))
        stats = {"attempts": c.new_task_attempts, "declined": 0, "accepted": 0}
        stats |= {"easier": 0, "harder": 0, "novel": 0, "replaced": 0, "restored": 0}
        stats["dropped"] = 0
        scientist = self.make_scientist()
        draws = self.rng.choice(
            len(active), c.new_task_attempts, replace=c.new_task_attempts > len(active)
        )
        replacements: list[tuple[str, TaskDir]] = []  # (child id, parent)
        unsolvable_without_easier: list[str] = []
        for index in draws.tolist():
            parent = active[index]
            rate = rate_of[parent.task_id]
            operation = "easier" if rate == 0 else "harder" if rate > c.easy_threshold else "novel"
            request = TaskRequest(
                operation=operation,
                parent=parent,
                parent_pass_rate=rate,
                context=tuple(self.tasks.active()),
                generation=g,
                seed=int(self.rng.integers(_SEED_SPACE)),
            )
            task = self._offer_task(scientist, request, generation=g)
            if task is None:
                stats["declined"] += 1
                if operation == "easier":
                    unsolvable_without_easier.append(parent.task_id)
                continue
            stats["accepted"] += 1
            stats[operation] += 1
            if operation != "novel":
                replacements.append((task.task_id, parent))
        faults.maybe_kill("loop.tasks_adapted")
        # Re-evaluate the population and the map's elites on the new pool.
        elites = [e.genome_id for e in self.niche.elites()]
        evaluated = _unique(self.population + sorted(elites))
        self.evaluator.evaluate(evaluated, self.tasks.active())
        for child_id, parent in replacements:
            if child_id not in self.tasks:
                continue
            child_rate = self.evaluator.skills(self.population, [child_id]).mean()
            parent_rate = rate_of[parent.task_id]
            if child_rate == 0:
                self._remove_task(child_id, stats)
                if parent_rate == 0:
                    self._remove_task(parent.task_id, stats)
                else:
                    stats["restored"] += 1
            elif self._remove_task(parent.task_id, stats):
                stats["replaced"] += 1
        if c.drop_unsolvable:
            for task_id in _unique(unsolvable_without_easier):
                self._remove_task(task_id, stats)
        self._rebuild_niche_map(evaluated)
        return stats

    def _remove_task(self, task_id: str, stats: dict) -> bool:
        """Drops a task from the pool unless it is absent or the last one."""
        if task_id not in self.tasks or len(self.tasks) <= 1:
            return False
        self.tasks.remove(task_id)
        stats["dropped"] += 1
        return True

    def _metrics_row(self, g: int, *, num_offspring: int, adaptation: dict | None) -> dict:
        task_ids = self._task_ids()
        skills = self.evaluator.skills(self.population, task_ids)
        fitness = skills.mean(axis=1)
        return {
            "generation": g,
            "population_size": len(self.population),
            "num_tasks": len(task_ids),
            "best_fitness": float(fitness.max()),
            "mean_fitness": float(fitness.mean()),
            "coverage": float(skills.any(axis=0).mean()),
            "niche_coverage": self.niche.coverage,
            "niche_size": len(self.niche),
            "qd_score": self.niche.qd_score,
            "num_offspring": num_offspring,
            "task_vendi": float(self.tasks.vendi_score()),
            "operators": self.bandit.generation_stats(),
            "task_adaptation": adaptation,
            "population": list(self.population),
        }
