"""Operator emitters: pyribs emitters whose solutions are genome ids.

An :class:`OperatorEmitter` owns one operator (``linear``, ``slerp``,
``svd_mutation``...). Its :meth:`~OperatorEmitter.ask` draws parents from a
parent source, writes down how each child is bred as a :class:`Recipe` (the
operator, the parents, its parameters and a seed for its randomness), breeds
every child through the :class:`~qd_llm.models.genome.GenomeStore`
(:func:`breed`, the one place where both genome forms are bred) and returns the
children's genome ids, shape ``(n,)``, dtype object. Its
:meth:`~OperatorEmitter.tell` records which children were accepted
(``add_info["status"] > 0``). So the emitter runs unchanged under
``ribs.schedulers.Scheduler`` and ``BanditScheduler`` over a genome archive
(:func:`~qd_llm.qd.niche_map.genome_archive`)::

    emitter = OperatorEmitter(archive, operator="linear", num_parents=2, batch_size=4,
                              store=store, rank=8, parents=ArchiveParents(archive, initial=seeds))
    scheduler = Scheduler(archive, [emitter])
    children = scheduler.ask()                  # genome ids, bred and stored
    scheduler.tell(objective(children), measures(children))

Parents come from a parent source: :class:`ArchiveParents` (the archive's
elites; a fixed set while it is empty) or :class:`PopulationParents` (a given
set, e.g. the loop's DNS population), drawn by a parent selection of
:data:`~qd_llm.qd.selection.PARENT_SELECTIONS` (config
``population.parent_selection``: ``uniform`` or the fitness-biased
``tournament``; formulas in :mod:`qd_llm.qd.selection`).

An :class:`OperatorBandit` decides how many children each emitter breeds per
generation with UCB1 (Auer et al., 2002): emitter ``i`` with ``n_i`` children
asked so far and ``a_i`` accepted scores ``a_i / n_i + c · sqrt(ln N / n_i)``
(``N = Σ n_i``; emitters never asked come first). A generation's slots are
filled one at a time, each counting as a pull before outcomes arrive, so a
batch spreads over close arms instead of all going to one. pyribs'
``BanditScheduler`` uses the same UCB1 score, but to switch whole emitters on
and off (``num_active`` of them, each breeding its fixed ``batch_size``); the
loop needs a fixed number of children per generation spread over operators,
so it keeps this allocation and calls the same emitters' :meth:`~OperatorEmitter.ask`.

All randomness comes from one :class:`numpy.random.Generator` per emitter,
seeded from the bandit's seed (operators get torch generators seeded from the
recipes); :meth:`OperatorBandit.state_dict` saves the emitters' generator
states and statistics as plain data, so a bandit restored with
:meth:`OperatorBandit.from_state_dict` continues exactly.
"""

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from ribs.emitters import EmitterBase

from qd_llm import faults
from qd_llm.errors import QdLlmError
from qd_llm.models.genome import GenomeStore
from qd_llm.models.lora import LoraWeights
from qd_llm.operators import breed_full, get_operator
from qd_llm.qd.selection import PARENT_SELECTIONS
from qd_llm.random_state import generator_from_state, generator_state


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """How to breed one child.

    Attributes:
        operator: Operator registry name.
        parents: Parent genome ids, in the order the operator receives them.
        params: The operator's hyper-parameters.
        seed: Seed of the operator's ``torch.Generator``.
        emitter: Index of the emitter that asked for it (for :meth:`OperatorBandit.tell`).
    """

    operator: str
    parents: tuple[str, ...]
    params: dict
    seed: int
    emitter: int = 0


@dataclasses.dataclass
class OperatorStats:
    """Asked / accepted counts of one operator."""

    asked: int = 0
    accepted: int = 0

    @property
    def success_rate(self) -> float:
        return self.accepted / self.asked if self.asked else 0.0

    def to_json(self) -> dict:
        return {"asked": self.asked, "accepted": self.accepted, "success_rate": self.success_rate}


def breed(
    store: GenomeStore,
    recipe: Recipe,
    *,
    rank: int,
    generation: int = 0,
    load: Callable[[str], LoraWeights] | None = None,
) -> str:
    """Breeds one child as ``recipe`` says, stores it in ``store`` and returns its id.

    Full-weight parents are bred as task vectors streamed tensor by tensor
    (:func:`~qd_llm.operators.breed_full`); LoRA parents through the operator on
    their factors, the child truncated to ``rank``. The child's info records the
    parents, operator, parameters and seed (``params["seed"]``).

    Args:
        store: The store holding the parents; the child is saved into it.
        recipe: How to breed the child.
        rank: LoRA rank of LoRA children (ignored for full-weight parents).
        generation: The generation recorded in the child's info.
        load: Reads a LoRA parent (default ``store.load``); pass a cached reader to
            read each parent once for a batch of children.

    Raises:
        QdLlmError: The operator rejects the parents or parameters.
    """
    load = store.load if load is None else load
    if store.is_full(recipe.parents[0]):
        child = breed_full(
            store,
            recipe.operator,
            recipe.parents,
            generator=recipe.seed,
            generation=generation,
            **recipe.params,
        ).id
    else:
        weights = get_operator(recipe.operator)(
            [load(p) for p in recipe.parents],
            rank=rank,
            generator=recipe.seed,
            **recipe.params,
        )
        child = store.save(
            weights,
            parents=recipe.parents,
            operator=recipe.operator,
            params={**recipe.params, "seed": recipe.seed},
            generation=generation,
        ).id
    faults.maybe_kill("loop.child_saved")
    return child


@dataclasses.dataclass(frozen=True)
class PopulationParents:
    """A parent source over a fixed set of genomes.

    Attributes:
        genome_ids: The genomes parents are drawn from (their order never matters).
        fitness: Fitness of given genomes, shape ``(n,)``; needed only by
            fitness-biased parent selection.
    """

    genome_ids: Sequence[str]
    fitness: Callable[[Sequence[str]], np.ndarray] | None = None

    def pool(self) -> tuple[str, ...]:
        """The candidate parents, sorted."""
        return tuple(sorted(self.genome_ids))

    def fitness_of(self, genome_ids: Sequence[str]) -> np.ndarray:
        """Fitness of ``genome_ids``, shape ``(n,)``."""
        if self.fitness is None:
            raise QdLlmError("fitness-biased parent selection needs the population's fitness")
        return np.asarray(self.fitness(genome_ids), dtype=np.float64)


class ArchiveParents:
    """A parent source over the elites of a genome archive.

    Args:
        archive: A genome archive (:func:`~qd_llm.qd.niche_map.genome_archive`).
        initial: Genomes to draw from while the archive is empty (e.g. the seeds).
    """

    def __init__(self, archive, *, initial: Sequence[str] = ()):
        self.archive = archive
        self.initial = tuple(initial)

    def pool(self) -> tuple[str, ...]:
        """The archive's elites (or ``initial`` while it is empty), sorted."""
        if self.archive.empty:
            return tuple(sorted(self.initial))
        return tuple(sorted(str(g) for g in self.archive.data("solution")))

    def fitness_of(self, genome_ids: Sequence[str]) -> np.ndarray:
        """The elites' objectives (0 for genomes not in the archive), shape ``(n,)``."""
        data = self.archive.data(["solution", "objective"])
        objective = dict(zip(map(str, data["solution"]), data["objective"].tolist(), strict=True))
        return np.array([objective.get(g, 0.0) for g in genome_ids], dtype=np.float64)


class OperatorEmitter(EmitterBase):
    """Breeds children of one operator; asks return genome ids (see the module docstring).

    Args:
        archive: The archive the emitter serves (a genome archive).
        operator: Operator registry name.
        params: The operator's hyper-parameters (checked against the operator).
        num_parents: Parents per child.
        batch_size: Children per plain :meth:`ask`.
        seed: Seed of the emitter's generator.
        index: The emitter's index in its bandit (recorded in recipes).
        store: Where parents are read and children bred (needed by :meth:`ask`).
        rank: LoRA rank of LoRA children.
        parents: Where parents are drawn from; default the archive's elites.
        selection: A parent selection registered in
            :data:`~qd_llm.qd.selection.PARENT_SELECTIONS`.
    """

    def __init__(
        self,
        archive,
        *,
        operator: str,
        params: Mapping | None = None,
        num_parents: int = 1,
        batch_size: int = 1,
        seed: int | None = None,
        index: int = 0,
        store: GenomeStore | None = None,
        rank: int = 8,
        parents: PopulationParents | ArchiveParents | None = None,
        selection: str = "uniform",
    ):
        super().__init__(
            archive, solution_dim=(), bounds=None, lower_bounds=None, upper_bounds=None
        )
        self._select_parents = PARENT_SELECTIONS.get(selection)
        self.operator = operator
        self.params = dict(params or {})
        get_operator(operator).check(num_parents, self.params)
        self.num_parents = num_parents
        self.batch_size = batch_size
        self.index = index
        self.store = store
        self.rank = rank
        self.parents = parents if parents is not None else ArchiveParents(archive)
        self.selection = selection
        self.rng = np.random.default_rng(seed)
        self.stats = OperatorStats()
        #: Generation recorded in children's info; :meth:`tell` advances it.
        self.generation = 0
        #: The recipes of the last :meth:`ask`, in the order of its ids.
        self.last_recipes: list[Recipe] = []

    def _draw_parents(self, pool: tuple[str, ...]) -> tuple[str, ...]:
        chosen = self._select_parents(
            len(pool), self.num_parents, rng=self.rng, fitness=lambda: self.parents.fitness_of(pool)
        )
        return tuple(pool[j] for j in chosen)

    def draw(self, n: int | None = None) -> list[Recipe]:
        """``n`` (default ``batch_size``) recipes, parents drawn from the parent source.

        Parents are distinct when the pool allows. Nothing is bred.
        """
        n = self.batch_size if n is None else n
        pool = self.parents.pool()
        if not pool:
            raise QdLlmError("the emitter has no genomes to draw parents from")
        recipes = []
        for _ in range(n):
            recipes.append(
                Recipe(
                    operator=self.operator,
                    parents=self._draw_parents(pool),
                    params=dict(self.params),
                    seed=int(self.rng.integers(2**31)),
                    emitter=self.index,
                )
            )
        self.stats.asked += n
        return recipes

    def ask(self, n: int | None = None) -> np.ndarray:
        """Breeds ``n`` (default ``batch_size``) children; returns their ids.

        Returns:
            Genome ids, shape ``(n,)``, dtype object, in :attr:`last_recipes` order
            (a child bred twice appears twice).

        Raises:
            QdLlmError: The emitter has no store or no parents to draw from.
        """
        if self.store is None:
            raise QdLlmError("the emitter needs a genome store to breed children")
        self.last_recipes = self.draw(n)
        # Children share parents: read each LoRA parent once per ask, not once per child.
        load = functools.cache(self.store.load)
        children = np.empty(len(self.last_recipes), dtype=object)
        for i, recipe in enumerate(self.last_recipes):
            children[i] = breed(
                self.store, recipe, rank=self.rank, generation=self.generation, load=load
            )
        return children

    def tell(self, solution, objective, measures, add_info, **fields) -> None:
        """Records outcomes; ``add_info["status"] > 0`` marks an accepted child.

        Args:
            solution: The genome ids asked, shape ``(n,)``.
            objective: Children's fitness, shape ``(n,)`` (unused).
            measures: Children's descriptors (unused).
            add_info: ``{"status": (n,) int}``, nonzero where the child was accepted.
        """
        self.stats.accepted += int(np.count_nonzero(np.asarray(add_info["status"])))
        self.generation += 1

    def state_dict(self) -> dict:
        """What changes as the emitter runs, as JSON types (see :meth:`load_state_dict`)."""
        return {
            "operator": self.operator,
            "rng": generator_state(self.rng),
            "generation": self.generation,
            "asked": self.stats.asked,
            "accepted": self.stats.accepted,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continues from :meth:`state_dict` of an emitter made with the same arguments.

        Raises:
            QdLlmError: ``state`` belongs to another operator.
        """
        if state["operator"] != self.operator:
            raise QdLlmError(
                f"saved emitter state is for operator '{state['operator']}', not '{self.operator}'"
            )
        self.rng = generator_from_state(state["rng"])
        # Checkpoints from before emitters bred have no generation; the loop sets it
        # before every ask, so resuming such a run loses nothing.
        self.generation = int(state.get("generation", 0))
        self.stats = OperatorStats(asked=int(state["asked"]), accepted=int(state["accepted"]))


class OperatorBandit:
    """UCB1 over operator emitters (see the module docstring).

    Args:
        archive: The archive emitters serve.
        operators: Operator name → parameters, with ``parents`` (parents per
            child, default 1). Emitters are made in sorted name order.
        seed: Seed; emitter ``i`` uses ``seed + i``.
        exploration: UCB1 exploration constant ``c``.
        store: Where the emitters breed children.
        rank: LoRA rank of LoRA children.
        selection: A parent selection registered in
            :data:`~qd_llm.qd.selection.PARENT_SELECTIONS`.
        fitness: Fitness of given genomes, shape ``(n,)``, for fitness-biased selection.
    """

    def __init__(
        self,
        archive,
        *,
        operators: Mapping[str, Mapping],
        seed: int = 0,
        exploration: float = math.sqrt(2),
        store: GenomeStore | None = None,
        rank: int = 8,
        selection: str = "uniform",
        fitness: Callable[[Sequence[str]], np.ndarray] | None = None,
    ):
        if not operators:
            raise QdLlmError("the operator bandit needs at least one operator")
        self.emitters = []
        for index, name in enumerate(sorted(operators)):
            params = dict(operators[name])
            num_parents = int(params.pop("parents", 1))
            self.emitters.append(
                OperatorEmitter(
                    archive,
                    operator=name,
                    params=params,
                    num_parents=num_parents,
                    seed=seed + index,
                    index=index,
                    store=store,
                    rank=rank,
                    selection=selection,
                )
            )
        self.exploration = exploration
        self.fitness = fitness
        self.last_recipes: list[Recipe] = []
        self._last_children: list[str] = []
        self._generation: dict[str, OperatorStats] = {}

    def state_dict(self) -> dict:
        """The bandit as JSON types: its operators, emitters and last round's counts."""
        return {
            "operators": {
                e.operator: {**e.params, "parents": e.num_parents} for e in self.emitters
            },
            "exploration": self.exploration,
            "emitters": [e.state_dict() for e in self.emitters],
            "generation": {
                name: {"asked": s.asked, "accepted": s.accepted}
                for name, s in self._generation.items()
            },
        }

    @classmethod
    def from_state_dict(cls, state: dict, *, archive, **kwargs) -> "OperatorBandit":
        """The bandit saved by :meth:`state_dict`, serving ``archive``, continuing exactly.

        Args:
            state: What :meth:`state_dict` returned.
            archive: The archive emitters serve.
            **kwargs: What is not saved: ``store``, ``rank``, ``selection``, ``fitness``.

        Raises:
            QdLlmError: The saved emitters do not match the saved operators.
        """
        bandit = cls(
            archive, operators=state["operators"], exploration=state["exploration"], **kwargs
        )
        if len(state["emitters"]) != len(bandit.emitters):
            raise QdLlmError(
                f"saved bandit has {len(state['emitters'])} emitters for "
                f"{len(bandit.emitters)} operators"
            )
        for emitter, emitter_state in zip(bandit.emitters, state["emitters"], strict=True):
            emitter.load_state_dict(emitter_state)
        bandit._generation = {
            name: OperatorStats(asked=int(s["asked"]), accepted=int(s["accepted"]))
            for name, s in state["generation"].items()
        }
        return bandit

    def _ucb(self, counts: np.ndarray, accepted: np.ndarray) -> np.ndarray:
        total = counts.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = accepted / counts + self.exploration * np.sqrt(np.log(total) / counts)
        return np.where(counts == 0, np.inf, scores)

    def allocate(self, n: int) -> np.ndarray:
        """Children per emitter for a batch of ``n``, shape ``(num_emitters,)``."""
        counts = np.array([e.stats.asked for e in self.emitters], dtype=np.float64)
        accepted = np.array([e.stats.accepted for e in self.emitters], dtype=np.float64)
        allocation = np.zeros(len(self.emitters), dtype=int)
        for _ in range(n):
            best = int(np.argmax(self._ucb(counts, accepted)))  # ties: lowest index
            allocation[best] += 1
            counts[best] += 1
        return allocation

    def ask(self, population: Sequence[str], n: int, *, generation: int = 0) -> list[str]:
        """Breeds ``n`` children over the emitters, parents drawn from ``population``.

        Returns:
            The children's ids in :attr:`last_recipes` order (a child bred twice
            appears twice).
        """
        self._generation = {e.operator: OperatorStats() for e in self.emitters}
        parents = PopulationParents(tuple(population), fitness=self.fitness)
        self.last_recipes, children = [], []
        for emitter, count in zip(self.emitters, self.allocate(n), strict=True):
            if count:
                emitter.parents = parents
                emitter.generation = generation
                children += [str(child) for child in emitter.ask(int(count))]
                self.last_recipes += emitter.last_recipes
                self._generation[emitter.operator].asked += int(count)
        self._last_children = children
        return children

    def tell(self, accepted: Sequence[bool]) -> None:
        """Credits each emitter with whether its children of the last :meth:`ask` were
        accepted (``accepted`` in the order of the returned ids)."""
        accepted = np.asarray(accepted, dtype=bool)
        children = np.asarray(self._last_children, dtype=object)
        for emitter in self.emitters:
            mine = np.array([r.emitter == emitter.index for r in self.last_recipes], dtype=bool)
            if mine.any():
                status = accepted[mine].astype(int)
                emitter.tell(children[mine], np.zeros(len(status)), None, {"status": status})
                self._generation[emitter.operator].accepted += int(status.sum())

    def generation_stats(self) -> dict[str, dict]:
        """Asked / accepted / success rate per operator in the last ask–tell round."""
        return {name: s.to_json() for name, s in sorted(self._generation.items())}

    def total_stats(self) -> dict[str, dict]:
        """Asked / accepted / success rate per operator over the whole run."""
        return {e.operator: e.stats.to_json() for e in self.emitters}
