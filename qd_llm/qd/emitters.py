"""Operator emitters: pyribs emitters whose solutions are breeding recipes.

An :class:`OperatorEmitter` owns one LoRA operator (``linear``, ``slerp``,
``svd_mutation``...). Its :meth:`~OperatorEmitter.ask` returns
:class:`Recipe` objects — the operator, parent genome ids drawn uniformly from
the population, the operator's parameters and a seed for its randomness — and
its :meth:`~OperatorEmitter.tell` records which children were accepted (kept by
DNS or entered the niche map). The loop applies the recipes; emitters never
touch weights.

An :class:`OperatorBandit` decides how many children each emitter breeds per
generation with UCB1 (Auer et al., 2002): emitter ``i`` with ``n_i`` children
asked so far and ``a_i`` accepted scores ``a_i / n_i + c · sqrt(ln N / n_i)``
(``N = Σ n_i``; emitters never asked come first). A generation's slots are
filled one at a time, each counting as a pull before outcomes arrive, so a
batch spreads over close arms instead of all going to one. pyribs'
``BanditScheduler`` is not used because it couples the bandit to archive
insertion of numeric solutions; the rule is the same UCB1.

All randomness comes from one :class:`numpy.random.Generator` per emitter,
seeded from the bandit's seed; :meth:`OperatorBandit.state_dict` saves the
emitters' generator states, populations and statistics as plain data, so a
bandit restored with :meth:`OperatorBandit.from_state_dict` continues exactly.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from ribs.emitters import EmitterBase

from qd_llm.errors import QdLlmError
from qd_llm.operators import get_operator
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


class OperatorEmitter(EmitterBase):
    """Asks for children of one operator from parents drawn uniformly.

    Args:
        archive: The archive the emitter serves (the niche map's pyribs archive).
        operator: Operator registry name.
        params: The operator's hyper-parameters (checked against the operator).
        num_parents: Parents per child.
        batch_size: Recipes per plain :meth:`ask`.
        seed: Seed of the emitter's generator.
        index: The emitter's index in its bandit (recorded in recipes).
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
    ):
        super().__init__(
            archive, solution_dim=(), bounds=None, lower_bounds=None, upper_bounds=None
        )
        self.operator = operator
        self.params = dict(params or {})
        get_operator(operator).check(num_parents, self.params)
        self.num_parents = num_parents
        self.batch_size = batch_size
        self.index = index
        self.rng = np.random.default_rng(seed)
        self.population: tuple[str, ...] = ()
        self.stats = OperatorStats()

    def set_population(self, genome_ids: Sequence[str]) -> None:
        """The genomes parents are drawn from (sorted, so order never matters)."""
        self.population = tuple(sorted(genome_ids))

    def ask(self, n: int | None = None) -> np.ndarray:
        """Returns ``n`` (default ``batch_size``) recipes, shape ``(n,)``, dtype object.

        Parents are distinct when the population allows, drawn uniformly.
        """
        n = self.batch_size if n is None else n
        if not self.population:
            raise QdLlmError("the emitter has no population to draw parents from")
        replace = len(self.population) < self.num_parents
        recipes = np.empty(n, dtype=object)
        for i in range(n):
            chosen = self.rng.choice(len(self.population), self.num_parents, replace=replace)
            recipes[i] = Recipe(
                operator=self.operator,
                parents=tuple(self.population[j] for j in chosen),
                params=dict(self.params),
                seed=int(self.rng.integers(2**31)),
                emitter=self.index,
            )
        self.stats.asked += n
        return recipes

    def tell(self, solution, objective, measures, add_info, **fields) -> None:
        """Records outcomes; ``add_info["status"] > 0`` marks an accepted child.

        Args:
            solution: The recipes asked, shape ``(n,)``.
            objective: Children's fitness, shape ``(n,)`` (unused).
            measures: Children's descriptors (unused).
            add_info: ``{"status": (n,) int}``, nonzero where the child was accepted.
        """
        self.stats.accepted += int(np.count_nonzero(np.asarray(add_info["status"])))

    def state_dict(self) -> dict:
        """What changes as the emitter runs, as JSON types (see :meth:`load_state_dict`)."""
        return {
            "operator": self.operator,
            "rng": generator_state(self.rng),
            "population": list(self.population),
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
        self.population = tuple(str(genome_id) for genome_id in state["population"])
        self.stats = OperatorStats(asked=int(state["asked"]), accepted=int(state["accepted"]))


class OperatorBandit:
    """UCB1 over operator emitters (see the module docstring).

    Args:
        archive: The archive emitters serve.
        operators: Operator name → parameters, with ``parents`` (parents per
            child, default 1). Emitters are made in sorted name order.
        seed: Seed; emitter ``i`` uses ``seed + i``.
        exploration: UCB1 exploration constant ``c``.
    """

    def __init__(
        self,
        archive,
        *,
        operators: Mapping[str, Mapping],
        seed: int = 0,
        exploration: float = math.sqrt(2),
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
                )
            )
        self.exploration = exploration
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
    def from_state_dict(cls, state: dict, *, archive) -> "OperatorBandit":
        """The bandit saved by :meth:`state_dict`, serving ``archive``, continuing exactly.

        Raises:
            QdLlmError: The saved emitters do not match the saved operators.
        """
        bandit = cls(archive, operators=state["operators"], exploration=state["exploration"])
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

    def ask(self, population: Sequence[str], n: int) -> list[Recipe]:
        """``n`` recipes over the emitters, parents drawn from ``population``."""
        self._generation = {e.operator: OperatorStats() for e in self.emitters}
        recipes: list[Recipe] = []
        for emitter, count in zip(self.emitters, self.allocate(n), strict=True):
            if count:
                emitter.set_population(population)
                recipes += list(emitter.ask(int(count)))
                self._generation[emitter.operator].asked += int(count)
        return recipes

    def tell(self, recipes: Sequence[Recipe], accepted: Sequence[bool]) -> None:
        """Credits each recipe's emitter with whether its child was accepted."""
        accepted = np.asarray(accepted, dtype=bool)
        for emitter in self.emitters:
            mine = np.array([r.emitter == emitter.index for r in recipes], dtype=bool)
            if mine.any():
                solutions = np.asarray([r for r in recipes if r.emitter == emitter.index])
                status = accepted[mine].astype(int)
                emitter.tell(solutions, np.zeros(len(status)), None, {"status": status})
                self._generation[emitter.operator].accepted += int(status.sum())

    def generation_stats(self) -> dict[str, dict]:
        """Asked / accepted / success rate per operator in the last ask–tell round."""
        return {name: s.to_json() for name, s in sorted(self._generation.items())}

    def total_stats(self) -> dict[str, dict]:
        """Asked / accepted / success rate per operator over the whole run."""
        return {e.operator: e.stats.to_json() for e in self.emitters}
