"""The niche map: best genome per region of skill space, in a pyribs archive.

The map is a pyribs :class:`~ribs.archives.GridArchive` (default, 2-D) or
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

The map pickles (pyribs archives do); there is no other save format.
"""

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np
from ribs.archives import CVTArchive, GridArchive

from qd_llm.errors import QdLlmError
from qd_llm.qd.descriptors import SkillDescriptors
from qd_llm.qd.dns import difficulty_weights

MapKind = Literal["grid", "cvt"]
# Samples for the CVT's k-means centroids; fixed so a seed fixes the cells.
_CVT_SAMPLES = 20_000


@dataclasses.dataclass(frozen=True)
class Elite:
    """One occupied cell of the niche map."""

    genome_id: str
    fitness: float
    descriptor: np.ndarray
    cell: int


class NicheMap:
    """A pyribs archive of genome ids keyed by skill descriptors.

    Args:
        dims: Descriptor dimensions (must match the :class:`SkillDescriptors`).
        kind: ``"grid"`` (a ``resolution^dims`` grid) or ``"cvt"`` (``cells`` centroids).
        resolution: Cells per dimension of a grid map.
        cells: Number of cells of a CVT map.
        seed: Seed for the CVT centroids.
    """

    def __init__(
        self,
        *,
        dims: int = 2,
        kind: MapKind = "grid",
        resolution: int = 10,
        cells: int = 100,
        seed: int = 0,
    ):
        ranges = [(-1.0, 1.0)] * dims
        common = dict(solution_dim=(), solution_dtype=object, ranges=ranges, seed=seed)
        if kind == "grid":
            self.archive = GridArchive(dims=[resolution] * dims, **common)
        elif kind == "cvt":
            self.archive = CVTArchive(centroids=cells, samples=_CVT_SAMPLES, **common)
        else:
            raise QdLlmError(f"niche map kind must be 'grid' or 'cvt'; got '{kind}'")
        self.dims = dims
        self.kind = kind
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
