"""The niche map: best genome per region of skill space, in a pyribs archive.

The map's :attr:`NicheMap.archive` is a genome archive (:func:`genome_archive`):
a pyribs :class:`~ribs.archives.GridArchive` (default, 2-D) or
:class:`~ribs.archives.CVTArchive` over the descriptors of
:class:`~qd_llm.qd.descriptors.SkillDescriptors` (bounds ``[-1, 1]^d``). Its
solutions are genome ids (``solution_dim=()``, ``solution_dtype=object``) and
its objective is fitness. It is what heatmaps draw and what ``export`` reads.

When the task pool changes, the caller refits the descriptors on the new task
embeddings and calls :meth:`NicheMap.rebuild` with the stored skill vectors:
the archive is cleared and every genome re-inserted under the new projection
and difficulty weights. Between rebuilds, :meth:`NicheMap.insert` places new
genomes with the same projection and the weights frozen at the last rebuild,
so all descriptors in the map stay comparable.

:meth:`NicheMap.state_dict` / :meth:`NicheMap.from_state_dict` save and
restore the whole map as plain data (JSON types and numpy arrays, for
checkpoints that never need unpickling): the map's shape and seed, the CVT
centroids, the projection and frozen weights, and the pyribs archive's content
*in insertion order* with its statistics and its own generator (what
``sample_elites`` draws from), so a restored map behaves exactly like the
saved one. pyribs 0.12 (pinned) offers no save format but pickle, so that part
reads and writes the archive's ``ArrayStore`` and statistics directly.
"""

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np
from ribs.archives import ArchiveStats, CVTArchive, GridArchive

from qd_llm.errors import QdLlmError
from qd_llm.qd.descriptors import SkillDescriptors
from qd_llm.qd.dns import difficulty_weights
from qd_llm.random_state import generator_from_state, generator_state

MapKind = Literal["grid", "cvt"]
# Samples for the CVT's k-means centroids; fixed so a seed fixes the cells.
_CVT_SAMPLES = 20_000


def genome_archive(
    *,
    dims: int = 2,
    kind: MapKind = "grid",
    resolution: int = 10,
    cells: int = 100,
    seed: int = 0,
    centroids: np.ndarray | None = None,
    ranges: Sequence[tuple[float, float]] | None = None,
) -> GridArchive | CVTArchive:
    """A pyribs archive of LLM genomes: solutions are genome ids.

    A plain :class:`~ribs.archives.GridArchive` or :class:`~ribs.archives.CVTArchive`
    with ``solution_dim=()`` and ``solution_dtype=object``, so everything pyribs
    does with an archive works: ``add(solution, objective, measures)`` with
    ``solution`` an ``(n,)`` array of genome ids, ``data()``,
    ``sample_elites(n)``, ``ribs.schedulers.Scheduler`` with
    :class:`~qd_llm.qd.emitters.OperatorEmitter`, and
    ``ribs.visualize.grid_archive_heatmap`` / ``cvt_archive_heatmap``.

    Args:
        dims: Measure dimensions.
        kind: ``"grid"`` (``resolution`` cells per dimension) or ``"cvt"`` (``cells`` centroids).
        resolution: Cells per dimension of a grid archive.
        cells: Number of cells of a CVT archive.
        seed: Seed for the CVT centroids and the archive's generator.
        centroids: CVT centroids ``(cells, dims)`` to use instead of computing them from ``seed``.
        ranges: ``(low, high)`` per dimension; default ``[-1, 1]`` (skill descriptors' range).

    Raises:
        QdLlmError: ``kind`` is neither ``grid`` nor ``cvt``.
    """
    ranges = list(ranges) if ranges is not None else [(-1.0, 1.0)] * dims
    common = dict(solution_dim=(), solution_dtype=object, ranges=ranges, seed=seed)
    if kind == "grid":
        return GridArchive(dims=[resolution] * dims, **common)
    if kind == "cvt":
        if centroids is None:
            return CVTArchive(centroids=cells, samples=_CVT_SAMPLES, **common)
        return CVTArchive(centroids=np.asarray(centroids), **common)
    raise QdLlmError(f"niche map kind must be 'grid' or 'cvt'; got '{kind}'")


@dataclasses.dataclass(frozen=True)
class Elite:
    """One occupied cell of the niche map.

    Attributes:
        genome_id: The elite genome.
        fitness: Its fitness (mean skill over the active tasks).
        descriptor: Its skill descriptor, shape ``(dims,)``, in ``[-1, 1]``.
        cell: The archive cell index it occupies.
    """

    genome_id: str
    fitness: float
    descriptor: np.ndarray
    cell: int


class NicheMap:
    """The loop's genome archive (:attr:`archive`, from :func:`genome_archive`) with
    the skill descriptors that place genomes in it.

    Args:
        dims: Descriptor dimensions (must match the :class:`SkillDescriptors`).
        kind: ``"grid"`` (a ``resolution^dims`` grid) or ``"cvt"`` (``cells`` centroids).
        resolution: Cells per dimension of a grid map.
        cells: Number of cells of a CVT map.
        seed: Seed for the CVT centroids and the archive's generator.
        centroids: CVT centroids ``(cells, dims)`` to use instead of computing them
            from ``seed`` (a restored map passes the saved ones).
    """

    def __init__(
        self,
        *,
        dims: int = 2,
        kind: MapKind = "grid",
        resolution: int = 10,
        cells: int = 100,
        seed: int = 0,
        centroids: np.ndarray | None = None,
    ):
        self.archive = genome_archive(
            dims=dims, kind=kind, resolution=resolution, cells=cells, seed=seed, centroids=centroids
        )
        self.dims = dims
        self.kind = kind
        self.resolution = resolution
        self.cells = cells
        self.seed = seed
        self.descriptors: SkillDescriptors | None = None
        self.task_weights: np.ndarray | None = None

    def rebuild(
        self,
        genome_ids: Sequence[str],
        skills: np.ndarray,
        fitness: np.ndarray,
        descriptors: SkillDescriptors,
    ) -> None:
        """Clears the map and inserts every genome under a (re)fitted projection.

        Args:
            genome_ids: Ids of the ``N`` genomes.
            skills: Boolean skill matrix ``(N, T)`` on the tasks ``descriptors`` was fitted on;
                its difficulty weights are frozen for later :meth:`insert` calls.
            fitness: Fitness per genome ``(N,)``.
            descriptors: A fitted :class:`SkillDescriptors` with ``dims`` dimensions.
        """
        if descriptors.dims != self.dims:
            raise QdLlmError(f"descriptors have {descriptors.dims} dims; the map has {self.dims}")
        self.descriptors = descriptors
        self.task_weights = difficulty_weights(skills)
        self.archive.clear()
        self.insert(genome_ids, skills, fitness)

    def insert(self, genome_ids: Sequence[str], skills: np.ndarray, fitness: np.ndarray) -> int:
        """Offers genomes to the map; each goes in if it beats its cell's elite.

        Args:
            genome_ids: ``N`` genome ids.
            skills: Their skill matrix on the map's tasks, shape ``(N, T)``.
            fitness: Their fitness, shape ``(N,)``.

        Returns:
            How many of them entered the map (new cell or improvement).
        """
        if self.descriptors is None:
            raise RuntimeError("NicheMap.rebuild must be called before insert")
        ids = np.asarray(list(genome_ids), dtype=object)
        if len(ids) == 0:
            return 0
        measures = self.descriptors.transform(skills, self.task_weights)
        status = self.archive.add(ids, np.asarray(fitness, dtype=np.float64), measures)["status"]
        return int(np.count_nonzero(status))

    def elites(self) -> list[Elite]:
        """Every occupied cell's elite, fittest first (ties: lower cell index)."""
        data = self.archive.data()
        order = np.lexsort((data["index"], -data["objective"]))
        return [
            Elite(
                genome_id=str(data["solution"][i]),
                fitness=float(data["objective"][i]),
                descriptor=data["measures"][i],
                cell=int(data["index"][i]),
            )
            for i in order
        ]

    @property
    def coverage(self) -> float:
        """Fraction of cells occupied."""
        return float(self.archive.stats.coverage)

    @property
    def qd_score(self) -> float:
        """Sum of elite fitnesses (offset 0: fitness is already in ``[0, 1]``)."""
        return float(self.archive.stats.qd_score)

    def __len__(self) -> int:
        return len(self.archive)

    # --- checkpoints ---------------------------------------------------------------

    def state_dict(self) -> dict:
        """The whole map as JSON types and numpy arrays (see the module docstring)."""
        return {
            "dims": self.dims,
            "kind": self.kind,
            "resolution": self.resolution,
            "cells": self.cells,
            "seed": self.seed,
            # Stored rather than recomputed: k-means over 20k samples takes a while.
            "centroids": self.archive.centroids if self.kind == "cvt" else None,
            "descriptors": None if self.descriptors is None else self.descriptors.state_dict(),
            "task_weights": self.task_weights,
            "archive": _archive_state(self.archive),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "NicheMap":
        """The map saved by :meth:`state_dict`, continuing exactly as it would have.

        Raises:
            QdLlmError: The saved content does not fit the saved map shape.
        """
        niche_map = cls(
            dims=int(state["dims"]),
            kind=state["kind"],
            resolution=int(state["resolution"]),
            cells=int(state["cells"]),
            seed=int(state["seed"]),
            centroids=state["centroids"],
        )
        if state["descriptors"] is not None:
            niche_map.descriptors = SkillDescriptors.from_state_dict(state["descriptors"])
        if state["task_weights"] is not None:
            niche_map.task_weights = np.asarray(state["task_weights"], dtype=np.float64)
        _restore_archive(niche_map.archive, state["archive"])
        return niche_map


def _archive_state(archive: GridArchive | CVTArchive) -> dict:
    store = archive._store
    # occupied_list is in insertion order, which data() and sample_elites follow.
    cells = np.array(store.occupied_list, dtype=np.int32)
    _, data = store.retrieve(cells)
    best = archive.best_elite
    stats = archive.stats
    return {
        "occupied_cells": cells,
        "solution": [str(genome_id) for genome_id in data["solution"]],
        "objective": data["objective"],
        "measures": data["measures"],
        "threshold": data["threshold"],
        "updates": [int(n) for n in store._props["updates"]],
        # The running sum pyribs keeps (not a fresh sum: float addition order matters).
        "objective_sum": float(archive._objective_sum),
        "best_elite": None
        if best is None
        else {
            "index": int(best["index"]),
            "solution": str(best["solution"]),
            "objective": float(best["objective"]),
            "measures": np.asarray(best["measures"]),
            "threshold": float(best["threshold"]),
        },
        "stats": {
            "num_elites": int(stats.num_elites),
            **{
                name: None if getattr(stats, name) is None else float(getattr(stats, name))
                for name in ("coverage", "qd_score", "norm_qd_score", "obj_max", "obj_mean")
            },
        },
        "rng": generator_state(archive._rng),
    }


def _restore_archive(archive: GridArchive | CVTArchive, state: dict) -> None:
    """Fills a fresh, empty ``archive`` with what :func:`_archive_state` saved."""
    store = archive._store
    dtype = archive.dtypes["objective"]
    cells = np.asarray(state["occupied_cells"])
    n = len(cells)
    fields = {
        "solution": np.array(state["solution"], dtype=object).reshape(-1),
        "objective": np.asarray(state["objective"], dtype=dtype),
        "measures": np.asarray(state["measures"], dtype=archive.dtypes["measures"]),
        "threshold": np.asarray(state["threshold"], dtype=dtype),
    }
    if (
        cells.ndim != 1
        or not np.issubdtype(cells.dtype, np.integer)
        or len(np.unique(cells)) != n
        or (n and (cells.min() < 0 or cells.max() >= store.capacity))
        or any(len(values) != n for values in fields.values())
        or fields["measures"].shape[1:] != (archive.measure_dim,)
        or not all(isinstance(genome_id, str) for genome_id in fields["solution"])
    ):
        raise QdLlmError(
            f"the saved niche map content ({n} cells) does not fit a map of "
            f"{store.capacity} cells and {archive.measure_dim} dims"
        )
    for name, values in fields.items():
        store._fields[name][cells] = values
    store._props["occupied"][cells] = True
    store._props["occupied_list"][:n] = cells
    store._props["n_occupied"] = n
    store._props["updates"] = [int(count) for count in state["updates"]]
    archive._objective_sum = np.asarray(state["objective_sum"], dtype=dtype)
    best = state["best_elite"]
    archive._best_elite = (
        None
        if best is None
        else {
            "solution": best["solution"],
            "objective": dtype.type(best["objective"]),
            "measures": np.asarray(best["measures"], dtype=archive.dtypes["measures"]),
            "threshold": dtype.type(best["threshold"]),
            "index": np.int32(best["index"]),
        }
    )
    stats = state["stats"]
    archive._stats = ArchiveStats(
        num_elites=int(stats["num_elites"]),
        **{
            name: None if stats[name] is None else np.asarray(stats[name], dtype=dtype)
            for name in ("coverage", "qd_score", "norm_qd_score", "obj_max", "obj_mean")
        },
    )
    archive._rng = generator_from_state(state["rng"])
