"""Embedding-derived skill descriptors: where a genome sits in skill space.

Each active task ``t`` has a unit sentence embedding ``e(t)`` (row ``t`` of
``E``, shape ``(T, D)``). A genome's *skill embedding* is the
difficulty-weighted mean of the embeddings of the tasks it solves,

    z(m) = Σ_t w(t) s(m, t) e(t) / Σ_t w(t) s(m, t),

with ``w`` the DNS difficulty weights over the population (or given). If the
genome solves only tasks of weight 0 (tasks everyone solves), the plain mean of
their embeddings is used; if it solves nothing, ``z = 0``.

A projection fitted once on the task embeddings — any scikit-learn transformer,
PCA to ``dims`` components by default — maps ``z`` to descriptor space, scaled
per component so that every projected task lies in ``[-1, 1]`` and clipped to
those bounds. With PCA a skill embedding (a convex combination of task
embeddings) lands inside the tasks' box, so only the "solves nothing" point can
ever need clipping; a non-linear projection may need it for any genome.

Projections are named in config (``niche_map.projection``, see
:data:`PROJECTIONS`) or passed as an estimator
(``SkillDescriptors(dims=2, projection=Isomap(n_components=2))``), which is
cloned and fitted on the task embeddings at every :meth:`SkillDescriptors.fit`;
wrap an already fitted estimator in :class:`sklearn.frozen.FrozenEstimator` to
keep it as it is. PCA follows scikit-learn's sign convention (each component's
largest loading is positive).

Checkpoints hold plain data only. PCA is saved as its linear map (mean,
components, scale), which is what it applies. Another named projection is saved
as its name, scale and task embeddings and refitted on restore; the refit must
give the saved scale again, or the restore fails rather than resume inexactly.
An estimator passed in Python cannot be saved as plain data: pass it again to
:meth:`SkillDescriptors.from_state_dict`.
"""

from collections.abc import Callable
from typing import Any

import numpy as np

from qd_llm.errors import QdLlmError
from qd_llm.qd.dns import difficulty_weights

# scikit-learn takes seconds to import, so the factories import it when called: loading a
# config (which validates names against this table) stays light.


def _pca(components: int, tasks: int) -> Any:
    from sklearn.decomposition import PCA

    # "full" always (not "auto", which picks a solver by data size): one exact SVD.
    return PCA(n_components=components, svd_solver="full")


def _kernel_pca(components: int, tasks: int) -> Any:
    from sklearn.decomposition import KernelPCA

    return KernelPCA(n_components=components, kernel="rbf", eigen_solver="dense")


def _isomap(components: int, tasks: int) -> Any:
    from sklearn.manifold import Isomap

    # A neighbour graph over the tasks needs fewer neighbours than tasks.
    return Isomap(
        n_components=components, n_neighbors=max(1, min(5, tasks - 1)), eigen_solver="dense"
    )


#: Projections by config name: ``factory(components, tasks)`` gives an unfitted
#: scikit-learn transformer to ``components`` outputs for ``tasks`` task embeddings.
PROJECTIONS: dict[str, Callable[[int, int], Any]] = {
    "pca": _pca,
    "kernel_pca": _kernel_pca,
    "isomap": _isomap,
}


class SkillDescriptors:
    """A scikit-learn projection of skill embeddings into ``[-1, 1]^dims``.

    Args:
        dims: Descriptor dimensions (2 for a grid heatmap; more for a CVT map).
        projection: A name in :data:`PROJECTIONS` (default ``"pca"``) or a
            scikit-learn transformer (``fit`` and ``transform``) with at most
            ``dims`` outputs, cloned and fitted on the task embeddings.

    Attributes (after :meth:`fit`):
        scale_: Per-component scale, shape ``(dims,)``.
        task_embeddings_: The fitted embeddings, shape ``(T, D)``.
        estimator_: The fitted scikit-learn transformer (``None`` for a PCA
            restored from a checkpoint, which keeps only its linear map).
        mean_: PCA only: mean task embedding, shape ``(D,)``.
        components_: PCA only: projection, shape ``(dims, D)`` (zero rows when
            there are fewer tasks than ``dims``).

    Raises:
        QdLlmError: ``dims`` < 1, an unknown projection name, or an object
            without ``fit`` and ``transform``.
    """

    def __init__(self, *, dims: int = 2, projection: str | Any = "pca"):
        if dims < 1:
            raise QdLlmError(f"descriptor dims must be at least 1; got {dims}")
        if isinstance(projection, str):
            if projection not in PROJECTIONS:
                raise QdLlmError(
                    f"unknown descriptor projection '{projection}'; "
                    f"expected one of {sorted(PROJECTIONS)}"
                )
        elif not (hasattr(projection, "fit") and hasattr(projection, "transform")):
            raise QdLlmError(
                f"a descriptor projection must be a name or a scikit-learn transformer; "
                f"got {type(projection).__name__}"
            )
        self.dims = dims
        self.projection = projection
        self.task_embeddings_: np.ndarray | None = None
        self.estimator_: Any = None

    @property
    def bounds(self) -> list[tuple[float, float]]:
        """Descriptor-space bounds, one ``(low, high)`` per dimension."""
        return [(-1.0, 1.0)] * self.dims

    @property
    def is_linear(self) -> bool:
        """Whether the projection is the named PCA, kept as its linear map."""
        return self.projection == "pca"

    def fit(self, task_embeddings: np.ndarray) -> "SkillDescriptors":
        """Fits the projection on the active tasks' embeddings; returns self.

        Args:
            task_embeddings: One embedding per task, shape ``(T, D)``.

        Raises:
            QdLlmError: ``task_embeddings`` is not a non-empty 2-D matrix, or the
                projection cannot be fitted on them (e.g. too few tasks).
        """
        embeddings = np.asarray(task_embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise QdLlmError(
                f"task embeddings must be a non-empty (T, D) matrix; got {embeddings.shape}"
            )
        self.estimator_ = self._fitted_estimator(embeddings)
        if self.is_linear:
            components = np.zeros((self.dims, embeddings.shape[1]))
            kept = self.estimator_.components_
            components[: len(kept)] = kept
            self.mean_, self.components_ = self.estimator_.mean_, components
        self.task_embeddings_ = embeddings
        extent = np.abs(self._unscaled(embeddings)).max(axis=0)
        # Components with no spread (too few tasks) stay at 0 instead of dividing by 0.
        self.scale_ = np.where(extent > 1e-12, extent, 1.0)
        return self

    def skill_embeddings(self, skills: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Difficulty-weighted mean embedding of the solved tasks, shape ``(N, D)``.

        Args:
            skills: Boolean skill matrix ``(N, T)`` over the fitted tasks.
            weights: Task weights ``(T,)``; default :func:`difficulty_weights` of ``skills``.
        """
        embeddings = self._fitted()
        skills = np.asarray(skills, dtype=bool)
        if skills.ndim != 2 or skills.shape[1] != embeddings.shape[0]:
            raise QdLlmError(
                f"skills have shape {skills.shape}; expected (genomes, {embeddings.shape[0]} tasks)"
            )
        weights = difficulty_weights(skills) if weights is None else np.asarray(weights, float)
        mass = skills * weights
        plain = skills.astype(np.float64)
        # Genomes that solve only weight-0 tasks fall back to the unweighted mean.
        mass = np.where(mass.sum(axis=1, keepdims=True) > 0, mass, plain)
        total = mass.sum(axis=1, keepdims=True)
        return (mass @ embeddings) / np.where(total > 0, total, 1.0)

    def transform(self, skills: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Descriptors of genomes, shape ``(N, dims)``, within :attr:`bounds`.

        Args:
            skills: Boolean skill matrix ``(N, T)`` over the fitted tasks.
            weights: Task weights ``(T,)``; default :func:`difficulty_weights` of ``skills``.
        """
        return self.project(self.skill_embeddings(skills, weights))

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        """Maps embeddings ``(N, D)`` to descriptor space ``(N, dims)``, clipped to bounds."""
        self._fitted()
        return np.clip(self._unscaled(embeddings) / self.scale_, -1.0, 1.0)

    def state_dict(self) -> dict:
        """The fitted projection as plain data (arrays stay numpy; unfitted: no arrays).

        ``projection`` is the name, or ``None`` for an estimator passed in Python.
        """
        name = self.projection if isinstance(self.projection, str) else None
        if self.task_embeddings_ is None:
            return {"dims": self.dims, "projection": name}
        state = {
            "dims": self.dims,
            "projection": name,
            "scale": self.scale_,
            "task_embeddings": self.task_embeddings_,
        }
        if self.is_linear:
            state.update(mean=self.mean_, components=self.components_)
        return state

    @classmethod
    def from_state_dict(cls, state: dict, *, projection: Any = None) -> "SkillDescriptors":
        """The projection saved by :meth:`state_dict`, exactly as it was.

        Args:
            state: What :meth:`state_dict` returned (a state without ``projection``,
                from before projections were configurable, is PCA).
            projection: The estimator, when the saved one was passed in Python
                (``projection`` saved as ``None``); it is refitted on the saved tasks.

        Raises:
            QdLlmError: The arrays do not fit ``dims`` or each other, the saved
                projection was an estimator and none is given, or refitting does
                not give the saved scale back.
        """
        name = state.get("projection", "pca")
        if name is None and projection is None:
            raise QdLlmError(
                "the saved skill descriptors used a scikit-learn estimator passed in Python, "
                "which checkpoints do not store; pass it again as projection="
            )
        descriptors = cls(dims=int(state["dims"]), projection=name or projection)
        if "task_embeddings" not in state:
            return descriptors
        embeddings = np.asarray(state["task_embeddings"], dtype=np.float64)
        scale = np.asarray(state["scale"], dtype=np.float64)
        if embeddings.ndim != 2 or scale.shape != (descriptors.dims,):
            raise QdLlmError(
                f"saved skill descriptors do not fit together: embeddings {embeddings.shape}, "
                f"scale {scale.shape} for {descriptors.dims} dims"
            )
        if not descriptors.is_linear:
            descriptors.fit(embeddings)
            if not np.array_equal(descriptors.scale_, scale):
                raise QdLlmError(
                    f"refitting the saved '{name or type(projection).__name__}' descriptor "
                    "projection did not reproduce it; the run cannot resume exactly"
                )
            return descriptors
        mean = np.asarray(state["mean"], dtype=np.float64)
        components = np.asarray(state["components"], dtype=np.float64)
        width = embeddings.shape[-1]
        if mean.shape != (width,) or components.shape != (descriptors.dims, width):
            raise QdLlmError(
                f"saved skill descriptors do not fit together: embeddings {embeddings.shape}, "
                f"mean {mean.shape}, components {components.shape}, scale {scale.shape}"
            )
        descriptors.mean_, descriptors.components_, descriptors.scale_ = mean, components, scale
        descriptors.task_embeddings_ = embeddings
        return descriptors

    def _fitted_estimator(self, embeddings: np.ndarray) -> Any:
        tasks, width = embeddings.shape
        if isinstance(self.projection, str):
            # PCA cannot have more components than tasks or embedding dimensions.
            estimator = PROJECTIONS[self.projection](min(self.dims, tasks, width), tasks)
        else:
            # Already imported: the caller built the estimator with scikit-learn.
            from sklearn.base import clone

            estimator = clone(self.projection)
        try:
            # One task leaves PCA's explained variance 0/0; its components are still defined.
            with np.errstate(divide="ignore", invalid="ignore"):
                return estimator.fit(embeddings)
        except ValueError as e:
            first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise QdLlmError(
                f"descriptor projection {estimator!r} cannot be fitted on {tasks} task "
                f"embeddings: {first_line}"
            ) from e

    def _unscaled(self, embeddings: np.ndarray) -> np.ndarray:
        """Projected embeddings before scaling, padded with zeros to ``(N, dims)``."""
        embeddings = np.asarray(embeddings, float)
        if self.is_linear:
            # The linear map PCA applies, written out so a restored PCA needs no estimator.
            return (embeddings - self.mean_) @ self.components_.T
        projected = np.asarray(self.estimator_.transform(embeddings), dtype=np.float64)
        if projected.ndim != 2 or projected.shape[1] > self.dims:
            raise QdLlmError(
                f"descriptor projection {self.estimator_!r} gives shape {projected.shape}; "
                f"expected at most {self.dims} columns"
            )
        # Fewer outputs than dims (fewer tasks than components) leave the spare dims at 0.
        return np.pad(projected, ((0, 0), (0, self.dims - projected.shape[1])))

    def _fitted(self) -> np.ndarray:
        if self.task_embeddings_ is None:
            raise RuntimeError("SkillDescriptors.fit must be called before transform")
        return self.task_embeddings_
