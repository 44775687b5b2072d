"""The coevolution loop (AC/DC): orchestration only, no math of its own.

::

    resolve base + seed experts; seed tasks (scientist "initial", novelty-filtered)
    gen 0: seeds + children → evaluate → DNS population; niche map built
    each generation g = 1..G:
        bandit's emitters breed children (qd.emitters) → evaluate on active tasks
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
(the bandit has its own, seeded from it; operators get torch generators seeded
from it), and decoding is greedy, so a run is a function of its config:
resumed runs reproduce uninterrupted ones exactly. The global ``random``,
NumPy and torch generators are neither seeded nor used.
"""

import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from qd_llm import atomic, components, faults
from qd_llm.config import RunConfig
from qd_llm.errors import QdLlmError
from qd_llm.evaluation.evaluate import Evaluator
from qd_llm.evaluation.heldout import HeldOutTracker
from qd_llm.models.genome import GenomeStore
from qd_llm.qd.descriptors import SkillDescriptors
from qd_llm.qd.emitters import OperatorBandit
from qd_llm.qd.niche_map import NicheMap
from qd_llm.qd.selection import SURVIVOR_SELECTIONS
from qd_llm.random_state import generator_from_state, generator_state
from qd_llm.runs import HELDOUT_DIR, RunDir, cut_back_logs, log_sizes
from qd_llm.tasks.archive import TaskArchive
from qd_llm.tasks.scientist import Scientist, TaskRejected, TaskRequest
from qd_llm.tasks.taskdir import TaskDir, slugify
from qd_llm.trackers import Trackers

#: ``evaluation.heldout`` prefix naming held-out questions of built-in seed skills.
SEED_SKILL_SOURCE = "seeds:"

logger = logging.getLogger(__name__)

_SEED_SPACE = 2**31
_NOT_BUILT = object()  # a lazily built component that may legitimately be None


def _unique(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


class Coevolution:
    """One run of the loop over a run directory.

    Components not given are built from ``config`` by :mod:`qd_llm.components`
    when first needed, and closed by :meth:`close`; given ones are the caller's
    to close. The loop draws every random choice from its own generators and
    leaves the global ``random``, NumPy and torch generators alone.

    Example:
        >>> loop = Coevolution(config, RunDir.create(path, config.to_dict()))
        >>> row = loop.step()        # generation 0: its metrics row
        >>> loop.run()               # the remaining generations
        >>> loop.close()

    Args:
        config: The resolved config.
        run: The run directory (created by the caller).
        backend: Generates completions (:class:`~qd_llm.inference.base.Backend`).
        sandbox: Runs task code (:class:`~qd_llm.tasks.sandbox.SandboxPool`).
        embedder: Embeds task texts (a SentenceTransformer, or a callable from
            n texts to an ``(n, d)`` array).
        scientist: Proposes tasks (:class:`~qd_llm.tasks.scientist.Scientist`).
        is_gibberish: Check on a child's completions; True excludes it from
            selection. Used only when ``config.gibberish_filter`` is not ``off``;
            default: the one that setting names.
    """

    def __init__(
        self,
        config: RunConfig,
        run: RunDir,
        *,
        backend=None,
        sandbox=None,
        embedder=None,
        scientist: Scientist | None = None,
        is_gibberish: Callable[[Sequence[str]], bool] | None = None,
    ):
        self.config = config
        self.run_dir = run
        self.is_gibberish = is_gibberish or components.make_gibberish_check(config)
        self.store = GenomeStore(
            run.genomes_dir, base_model=config.base_model, dtype=config.genomes.dtype
        )
        self._backend, self._sandbox, self._embedder = backend, sandbox, embedder
        self._scientist = scientist
        self._interesting_check = _NOT_BUILT
        self._owned: list = []  # components built here, closed by close()
        self._evaluator: Evaluator | None = None
        self._heldout: HeldOutTracker | None = None
        self._trackers: Trackers | None = None
        self._started = False

    # --- components (built lazily: `status` and tests need none of them) ----------

    @property
    def backend(self):
        if self._backend is None:
            self._backend = components.make_backend(self.config)
            self._owned.append(self._backend)
        return self._backend

    @property
    def sandbox(self):
        if self._sandbox is None:
            self._sandbox = components.make_sandbox(self.config)
            self._owned.append(self._sandbox)
        return self._sandbox

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = components.make_embedder(self.config)
        return self._embedder

    @property
    def scientist(self) -> Scientist:
        if self._scientist is None:
            self._scientist = components.make_scientist(self.config, sandbox=self.sandbox)
        return self._scientist

    @property
    def interesting_check(self):
        """The task archive's last check on new tasks: the reference's "is it
        interestingly new" question to the judge for LLM-scientist runs, else None."""
        if self._interesting_check is _NOT_BUILT:
            self._interesting_check = components.make_interesting_check(self.config)
        return self._interesting_check

    @property
    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = Evaluator(
                run_dir=self.run_dir.path,
                backend=self.backend,
                sandbox=self.sandbox,
                genomes=self.store,
                decoding=components.make_decoding(self.config),
                pass_threshold=self.config.tasks.pass_threshold,
                progress=self.config.progress,
            )
        return self._evaluator

    def close(self) -> None:
        """Closes the metrics trackers and the components this loop built
        (sandbox workers, backend)."""
        if self._trackers is not None:
            self._trackers.close()
            self._trackers = None
        for component in reversed(self._owned):
            component.close()
        self._owned.clear()

    @property
    def heldout(self) -> HeldOutTracker | None:
        """The held-out tracker (``evaluation.heldout``), or None when off."""
        if self._heldout is None and self.config.evaluation.heldout:
            self._heldout = self._make_heldout()
        return self._heldout

    def _make_heldout(self) -> HeldOutTracker:
        from qd_llm.evaluation.coverage import load_task_set, zero_adapters
        from qd_llm.evaluation.heldout import SPLIT_FILE, split_tasks

        e = self.config.evaluation
        source = e.heldout
        if source.startswith(SEED_SKILL_SOURCE):
            source = self._write_seed_skill_heldout(source)
        # A fixed shuffle (seed 0), so every run of an experiment sees the same questions.
        task_set = load_task_set(
            source,
            run_dir=self.run_dir.path,
            limit=e.heldout_limit or None,
            seed=0,
            subdir=HELDOUT_DIR,
        )
        split = split_tasks(task_set.tasks, val_fraction=e.heldout_val_fraction)
        directory = self.run_dir.path / HELDOUT_DIR / task_set.key
        atomic.write_json(directory / SPLIT_FILE, split.to_json())
        evaluator = Evaluator(
            run_dir=directory,
            backend=self.backend,
            sandbox=self.sandbox,
            genomes=self.store,
            decoding=self.evaluator.decoding,
            pass_threshold=self.config.tasks.pass_threshold,
        )
        control: list[str] = []
        control_evaluator = None
        if e.control_samples and self.config.genomes.form == "lora":
            control_store = GenomeStore(
                directory / "control" / "genomes", base_model=self.config.base_model
            )
            some_seed = self._seed_ids()[0]
            shapes = {m: f.shape for m, f in self.store.load(some_seed).items()}
            control = zero_adapters(control_store, shapes, e.control_samples)
            control_evaluator = Evaluator(
                run_dir=directory / "control",
                backend=self.backend,
                sandbox=self.sandbox,
                genomes=control_store,
                decoding=dataclasses.replace(
                    self.evaluator.decoding, temperature=e.control_temperature
                ),
                pass_threshold=self.config.tasks.pass_threshold,
            )
        return HeldOutTracker(
            directory=directory,
            split=split,
            evaluator=evaluator,
            control_evaluator=control_evaluator,
            control=control,
            max_n=e.heldout_max_n,
        )

    def _write_seed_skill_heldout(self, source: str) -> Path:
        """Writes the held-out questions of ``"seeds:NAME,...[:K]"`` into the run, once."""
        from qd_llm.seeding.experts import write_held_out_tasks

        skills, per_skill = _seed_skill_source(source)
        folder = self.run_dir.path / HELDOUT_DIR / "imports" / slugify(source)
        if not folder.exists():
            # Written aside and renamed, so a kill never leaves half a task set.
            scratch = folder.with_name(f".{folder.name}.partial")
            shutil.rmtree(scratch, ignore_errors=True)
            write_held_out_tasks(scratch, skills, per_skill=per_skill)
            scratch.rename(folder)
        return folder

    def _heldout_due(self, generation: int) -> bool:
        every = self.config.evaluation.heldout_every
        last = self.config.population.generations
        return bool(self.config.evaluation.heldout) and (
            generation % every == 0 or generation == last
        )

    def _evaluate_heldout(self) -> dict:
        """The population and niche elites against the seeds and the control, held out."""
        elites = [e.genome_id for e in self.niche.elites()]
        # Control sampling seeds torch; the run's own random streams stay untouched.
        with torch.random.fork_rng(devices=[]):
            return self.heldout.evaluate(evolved=self.population + elites, seeds=self._seed_ids())

    def _seed_ids(self) -> list[str]:
        return [g for g in self.store.ids() if not self.store.info(g).parents]

    # --- state ---------------------------------------------------------------------

    def _fresh_state(self) -> None:
        c = self.config
        self.rng = np.random.default_rng(c.seed)
        self.tasks = TaskArchive(
            embedder=self.embedder,
            k=c.tasks.novelty_k,
            threshold=c.tasks.novelty_threshold,
            capacity=c.tasks.pool_capacity,
            is_interesting=self.interesting_check,
        )
        self.niche = NicheMap(
            dims=c.niche_map.dims,
            kind=c.niche_map.kind,
            resolution=c.niche_map.resolution,
            cells=c.niche_map.cells,
            seed=c.seed,
        )
        self.bandit = OperatorBandit(
            self.niche.archive, operators=c.operators, seed=c.seed + 1, **self._breeding()
        )
        self.population: list[str] = []
        self.generation = -1

    def _breeding(self) -> dict:
        """What the bandit's emitters breed with: the store, the LoRA rank, the
        parent selection and, for fitness-biased selection, parents' fitness."""
        return {
            "store": self.store,
            "rank": self.config.genomes.rank,
            "selection": self.config.population.parent_selection,
            "fitness": self._fitness,
        }

    def _fitness(self, genome_ids: Sequence[str]) -> np.ndarray:
        """Mean skill of genomes on the active tasks (evaluated first if need be)."""
        self.evaluator.evaluate(genome_ids, self.tasks.active())
        return self.evaluator.skills(genome_ids, self._task_ids()).mean(axis=1)

    def state_dict(self) -> dict:
        """Everything needed to continue exactly, as JSON types and numpy arrays."""
        return {
            "generation": self.generation,
            "population": list(self.population),
            "task_archive": self.tasks.state_dict(),
            "niche": self.niche.state_dict(),
            "bandit": self.bandit.state_dict(),
            "rng": generator_state(self.rng),
            "heldout_logs": log_sizes(self.run_dir.path / HELDOUT_DIR),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continues from :meth:`state_dict` (as read back from a checkpoint)."""
        self.generation = int(state["generation"])
        self.population = [str(genome_id) for genome_id in state["population"]]
        self.tasks = TaskArchive.from_state_dict(
            state["task_archive"],
            embedder=self.embedder,
            tasks_root=self.run_dir.tasks_dir,
            is_interesting=self.interesting_check,
        )
        self.niche = NicheMap.from_state_dict(state["niche"])
        # The emitters serve the niche map's archive, as in a fresh run.
        self.bandit = OperatorBandit.from_state_dict(
            state["bandit"], archive=self.niche.archive, **self._breeding()
        )
        self.rng = generator_from_state(state["rng"])

    # --- the loop ------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once ``population.generations`` generations have run."""
        return self._started and self.generation >= self.config.population.generations

    def start(self) -> None:
        """Starts a fresh run, or resumes from the run directory's checkpoint.

        Called by :meth:`step` and :meth:`run` when needed; calling it again
        does nothing.
        """
        if self._started:
            return
        if self.config.evaluation.heldout.startswith(SEED_SKILL_SOURCE):
            _seed_skill_source(self.config.evaluation.heldout)  # a typo fails now, not later
        checkpoint = self.run_dir.read_checkpoint()
        self._fresh_state()
        if checkpoint is not None:
            with self.run_dir.restoring_state():
                self.load_state_dict(checkpoint.state)
            logger.info("resuming %s after generation %d", self.run_dir.path, self.generation)
        # Only now, with the checkpoint known good, drop what a cut-short generation wrote.
        self.run_dir.cut_back(checkpoint)
        cut_back_logs(
            self.run_dir.path / HELDOUT_DIR,
            checkpoint.state.get("heldout_logs", {}) if checkpoint else {},
        )
        self._clean_up_interrupted_writes()
        if checkpoint is not None and self.config.genomes.keeps_only_live_weights():
            # The kill may have come between the checkpoint and its drop.
            self._drop_dead_weights()
        self._trackers = Trackers.for_run(
            self.config.tracking, self.run_dir.path, self.config.to_dict()
        )
        self._started = True

    def step(self) -> dict:
        """Runs the next generation, logs its metrics row and checkpoints it.

        Returns:
            The generation's metrics row (as appended to ``metrics.jsonl``).

        Raises:
            QdLlmError: Every generation has already run.
        """
        self.start()
        if self.done:
            raise QdLlmError(
                f"{self.run_dir.path} has run all {self.config.population.generations} generations"
            )
        start = time.perf_counter()
        timings: dict[str, float] = {}
        if self.generation < 0:
            row = self._generation_zero(timings)
        else:
            row = self._generation(self.generation + 1, timings)
        self.generation = row["generation"]
        if self._heldout_due(self.generation):
            t = time.perf_counter()
            row["heldout"] = self._evaluate_heldout()
            timings["heldout"] = time.perf_counter() - t
        row["timings"] = {k: round(v, 3) for k, v in timings.items()}
        row["seconds"] = round(time.perf_counter() - start, 3)
        self.run_dir.append_metrics(row)
        self._trackers.log(row)
        faults.maybe_kill("loop.metrics_appended")
        self.run_dir.save_checkpoint(self.generation, self.state_dict())
        faults.maybe_kill("loop.checkpoint_saved")
        if self.config.genomes.keeps_only_live_weights():
            self._drop_dead_weights()
            faults.maybe_kill("loop.weights_dropped")
        return row

    def run(self) -> None:
        """Runs (or resumes) the loop up to ``population.generations``, with a
        progress bar (``progress``)."""
        self.start()
        bar = None
        if self.config.progress:
            from tqdm.auto import tqdm

            total = self.config.population.generations + 1
            bar = tqdm(total=total, initial=self.generation + 1, desc="generations")
        try:
            while not self.done:
                row = self.step()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(tasks=row["num_tasks"], best=f"{row['best_fitness']:.2f}")
        finally:
            if bar is not None:
                bar.close()

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
            self.run_dir.path,
            self.run_dir.genomes_dir,
            self.run_dir.tasks_dir,
            self.run_dir.instances_dir,
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
        if c.genomes.seeds == "builtin" or c.genomes.builtin_seed_names():
            from qd_llm.seeding import seed_expert_folders

            folders = seed_expert_folders(
                base_model=c.base_model, names=c.genomes.builtin_seed_names() or None
            )
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
        from qd_llm.models.forms import is_full_checkpoint
        from qd_llm.operators.task_vectors import extract_lora_from_checkpoint

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
        scientist = self.scientist
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
        t = time.perf_counter()
        children = self.bandit.ask(seeds, n_children, generation=0)
        timings["breed"] = time.perf_counter() - t
        candidates = _unique(seeds + children)
        t = time.perf_counter()
        self.evaluator.evaluate(candidates, self.tasks.active())
        timings["evaluate"] = time.perf_counter() - t
        t = time.perf_counter()
        candidates = self._valid(candidates, keep=seeds)
        self.population = self._select(candidates)
        self.bandit.tell([child in self.population for child in children])
        self._rebuild_niche_map(candidates)
        timings["select"] = time.perf_counter() - t
        return self._metrics_row(0, num_offspring=len(children), adaptation=None)

    def _generation(self, g: int, timings: dict) -> dict:
        c = self.config
        t = time.perf_counter()
        children = self.bandit.ask(self.population, c.population.offspring, generation=g)
        timings["breed"] = time.perf_counter() - t
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
            [child in self.population or entered.get(child, False) for child in children]
        )
        timings["select"] = time.perf_counter() - t
        adaptation = None
        if g % c.tasks.adapt_every == 0 and g < c.population.generations:
            t = time.perf_counter()
            adaptation = self._adapt_tasks(g)
            timings["adapt"] = time.perf_counter() - t
        return self._metrics_row(g, num_offspring=len(children), adaptation=adaptation)

    # --- steps ---------------------------------------------------------------------

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
        """Survivors of ``candidates``, at most the population size, by the
        ``population.selection`` registered in :data:`SURVIVOR_SELECTIONS`."""
        select = SURVIVOR_SELECTIONS.get(self.config.population.selection)
        return select(
            candidates,
            skills=lambda: self.evaluator.skills(candidates, self._task_ids()),
            population=self.config.population,
            rng=self.rng,
        )

    def _rebuild_niche_map(self, genome_ids: Sequence[str]) -> None:
        task_ids = self._task_ids()
        skills = self.evaluator.skills(genome_ids, task_ids)
        descriptors = SkillDescriptors(
            dims=self.config.niche_map.dims, projection=self.config.niche_map.projection
        ).fit(self.tasks.embeddings(task_ids))
        self.niche.rebuild(list(genome_ids), skills, skills.mean(axis=1), descriptors)

    def _offer_task(self, scientist: Scientist, request: TaskRequest, *, generation: int):
        """Asks the scientist for a task and offers it to the archive.

        Returns:
            The task if it was accepted into the pool, else None.
        """
        try:
            task = scientist.propose(request, self.run_dir.tasks_dir)
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
        scientist = self.scientist
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


def _seed_skill_source(source: str) -> tuple[list, int]:
    """The seed skills and questions per skill of ``"seeds:NAME,...[:K]"`` (K: 24).

    Raises:
        QdLlmError: An unknown skill name or a K that is not a positive integer.
    """
    from qd_llm.seeding.experts import seed_skills

    names, _, per_skill = source.removeprefix(SEED_SKILL_SOURCE).partition(":")
    per_skill = per_skill or "24"
    if not per_skill.isdigit() or int(per_skill) < 1:
        raise QdLlmError(
            f"config key 'evaluation.heldout': {source!r} must be 'seeds:NAME,...[:K]' with K >= 1"
        )
    try:
        return seed_skills(names.split(",")), int(per_skill)
    except QdLlmError as e:
        raise QdLlmError(f"config key 'evaluation.heldout': {source!r}: {e}") from None
