"""Embedding-derived skill descriptors: where a genome sits in skill space.

Each active task ``t`` has a unit sentence embedding ``e(t)`` (row ``t`` of
``E``, shape ``(T, D)``). A genome's *skill embedding* is the
difficulty-weighted mean of the embeddings of the tasks it solves,

    z(m) = Σ_t w(t) s(m, t) e(t) / Σ_t w(t) s(m, t),

with ``w`` the DNS difficulty weights over the population (or given). If the
genome solves only tasks of weight 0 (tasks everyone solves), the plain mean of
their embeddings is used; if it solves nothing, ``z = 0``.

A projection fitted once on the task embeddings — PCA to ``dims`` components —
maps ``z`` to descriptor space, scaled per component so that every projected
task lies in ``[-1, 1]`` and clipped to those bounds. A skill embedding is a
convex combination of task embeddings and the projection is affine, so only
the "solves nothing" point can ever need clipping.
"""

import numpy as np

from qd_llm.errors import QdLlmError
from qd_llm.qd.dns import difficulty_weights


class SkillDescriptors:
    """PCA projection of skill embeddings into ``[-1, 1]^dims``.

    Args:
        dims: Descriptor dimensions (2 for a grid heatmap; more for a CVT map).

    Attributes (after :meth:`fit`):
        mean_: Mean task embedding, shape ``(D,)``.
        components_: Projection, shape ``(dims, D)`` (zero rows when there are
            fewer independent tasks than ``dims``).
        scale_: Per-component scale, shape ``(dims,)``.
        task_embeddings_: The fitted embeddings, shape ``(T, D)``.
    """

    def __init__(self, *, dims: int = 2):
        if dims < 1:
            raise QdLlmError(f"descriptor dims must be at least 1; got {dims}")
        self.dims = dims
        self.task_embeddings_: np.ndarray | None = None

    @property
    def bounds(self) -> list[tuple[float, float]]:
        """Descriptor-space bounds, one ``(low, high)`` per dimension."""
        return [(-1.0, 1.0)] * self.dims

    def fit(self, task_embeddings: np.ndarray) -> "SkillDescriptors":
        """Fits the projection on the active tasks' embeddings; returns self.

        Args:
            task_embeddings: One embedding per task, shape ``(T, D)``.

        Raises:
            QdLlmError: ``task_embeddings`` is not a non-empty 2-D matrix.
        """
        embeddings = np.asarray(task_embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise QdLlmError(
                f"task embeddings must be a non-empty (T, D) matrix; got {embeddings.shape}"
            )
        self.mean_ = embeddings.mean(axis=0)
        _, _, vh = np.linalg.svd(embeddings - self.mean_, full_matrices=False)
        components = np.zeros((self.dims, embeddings.shape[1]))
        kept = min(self.dims, vh.shape[0])
        components[:kept] = vh[:kept]
        self.components_ = components
        projected = (embeddings - self.mean_) @ components.T
        extent = np.abs(projected).max(axis=0)
        # Components with no spread (too few tasks) stay at 0 instead of dividing by 0.
        self.scale_ = np.where(extent > 1e-12, extent, 1.0)
        self.task_embeddings_ = embeddings
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
        projected = (np.asarray(embeddings, float) - self.mean_) @ self.components_.T
        return np.clip(projected / self.scale_, -1.0, 1.0)

    def state_dict(self) -> dict:
        """The fitted projection as plain data (arrays stay numpy; unfitted: ``dims`` only)."""
        if self.task_embeddings_ is None:
            return {"dims": self.dims}
        return {
            "dims": self.dims,
            "mean": self.mean_,
            "components": self.components_,
            "scale": self.scale_,
            "task_embeddings": self.task_embeddings_,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "SkillDescriptors":
        """The projection saved by :meth:`state_dict`, exactly as it was.

        Raises:
            QdLlmError: The arrays do not fit ``dims`` or each other.
        """
        descriptors = cls(dims=int(state["dims"]))
        if "task_embeddings" not in state:
            return descriptors
        embeddings = np.asarray(state["task_embeddings"], dtype=np.float64)
        mean = np.asarray(state["mean"], dtype=np.float64)
        components = np.asarray(state["components"], dtype=np.float64)
        scale = np.asarray(state["scale"], dtype=np.float64)
        width = embeddings.shape[-1]
        if (
            embeddings.ndim != 2
            or mean.shape != (width,)
            or components.shape != (descriptors.dims, width)
            or scale.shape != (descriptors.dims,)
        ):
            raise QdLlmError(
                f"saved skill descriptors do not fit together: embeddings {embeddings.shape}, "
                f"mean {mean.shape}, components {components.shape}, scale {scale.shape}"
            )
        descriptors.mean_, descriptors.components_, descriptors.scale_ = mean, components, scale
        descriptors.task_embeddings_ = embeddings
        return descriptors

    def _fitted(self) -> np.ndarray:
        if self.task_embeddings_ is None:
            raise RuntimeError("SkillDescriptors.fit must be called before transform")
        return self.task_embeddings_
