"""The operator registry: merge and mutation operators looked up by name.

An operator is a class registered with :func:`register_operator` (in the
torch-free :data:`~qd_llm.operators.params.OPERATORS` registry). It defines
the math twice, once per genome form, and the base class :class:`Operator`
does the bookkeeping both forms share:

* ``apply_layer(layers, *, rank, generator, **params) -> LoraFactors`` — one
  LoRA layer of every parent (``ΔW_i = B_i @ A_i``) to one layer of the child,
  of rank exactly ``rank``. Called by :meth:`Operator.__call__` for every
  module of the parents.
* ``apply_tensor(tensors, *, generator, **params) -> Tensor`` — one dense
  task-vector tensor ``θ_i − θ_base`` of every parent to the child's tensor.
  Called by :func:`qd_llm.operators.task_vectors.apply_to_task_vectors`.

Hyper-parameters (``weights``, ``density``, ``t``, ...) are the keyword
arguments of these two methods, declared with their types and ranges in the
class's ``signature`` (:class:`~qd_llm.operators.params.OperatorSignature`),
so a config naming a bad one fails when it loads. Random operators draw only
from the ``torch.Generator`` they are given, layer by layer in sorted module
order, so a seed fixes the child.

Example:
    >>> from qd_llm.operators import get_operator
    >>> child = get_operator("linear")([p1, p2], rank=8, weights=[0.5, 0.5])
"""

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch

from qd_llm.errors import QdLlmError
from qd_llm.models.lora import LoraFactors, LoraWeights
from qd_llm.operators.lowrank import COMPUTE_DTYPE, truncate_dense
from qd_llm.operators.params import OPERATORS, OperatorSignature


def as_generator(seed: torch.Generator | int | None) -> torch.Generator:
    """Returns ``seed`` if it is a generator, else a CPU generator seeded with it.

    ``None`` seeds from the global torch RNG, so results are then not reproducible.
    """
    if isinstance(seed, torch.Generator):
        return seed
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator


class Operator:
    """Base class of merge and mutation operators (see the module docstring).

    Class attributes:
        name: Registry name, set by :func:`register_operator`.
        signature: How many parents it takes and its typed hyper-parameters.
    """

    name: ClassVar[str] = ""
    signature: ClassVar[OperatorSignature] = OperatorSignature()

    def apply_layer(
        self, layers: list[LoraFactors], *, rank: int, generator: torch.Generator, **params
    ) -> LoraFactors:
        """One LoRA layer of the child from the same layer of every parent.

        Args:
            layers: One layer per parent: ``B_i`` ``(out, r_i)``, ``A_i`` ``(r_i, in)``
                (a parent lacking the module gives a zero update of rank 1).
            rank: The child's rank ``r``.
            generator: The only source of randomness.
            **params: The operator's hyper-parameters.

        Returns:
            The child's layer: ``B`` ``(out, rank)``, ``A`` ``(rank, in)``.
        """
        raise NotImplementedError

    def apply_tensor(
        self, tensors: list[torch.Tensor], *, generator: torch.Generator, **params
    ) -> torch.Tensor:
        """One dense tensor of the child from the same tensor of every parent.

        Args:
            tensors: One task-vector tensor ``θ_i − θ_base`` (or dense ``ΔW_i``)
                per parent, all of one shape, float32.
            generator: The only source of randomness.
            **params: The operator's hyper-parameters.

        Returns:
            The child's tensor, of the parents' shape.
        """
        raise NotImplementedError

    def check(self, num_parents: int, params: dict) -> None:
        """Raises :class:`QdLlmError` for a wrong parent count or unknown parameter."""
        signature = self.signature
        if num_parents < signature.min_parents or (
            signature.max_parents is not None and num_parents > signature.max_parents
        ):
            most = (
                "any number of"
                if signature.max_parents is None
                else f"at most {signature.max_parents}"
            )
            raise QdLlmError(
                f"operator '{self.name}' takes at least {signature.min_parents} and {most} "
                f"parents; got {num_parents}"
            )
        unknown = set(params) - set(signature.param_names())
        if unknown:
            raise QdLlmError(
                f"operator '{self.name}' has no parameter(s) {sorted(unknown)}; "
                f"valid: {sorted(signature.param_names())}"
            )

    def __call__(
        self,
        parents: Sequence[LoraWeights],
        *,
        rank: int,
        generator: torch.Generator | int | None = None,
        **params,
    ) -> dict[str, LoraFactors]:
        """Applies the operator to LoRA parents, module by module.

        A module missing from some parents counts as a zero update there.

        Args:
            parents: LoRA weights of each parent (module name → factors).
            rank: Rank of every layer of the child (zero-padded if lower).
            generator: Generator or seed for random operators.
            **params: The operator's hyper-parameters.

        Returns:
            The child: module name → float32 factors of rank exactly ``rank``.
        """
        self.check(len(parents), params)
        if rank < 1:
            raise QdLlmError(f"target rank must be at least 1; got {rank}")
        generator = as_generator(generator)
        modules = sorted(set().union(*(p.keys() for p in parents)))
        child = {}
        for module in modules:
            layers = _aligned_layers(module, parents)
            layer = self.apply_layer(layers, rank=rank, generator=generator, **params)
            child[module] = layer.to(torch.float32)
        return child


class ElementwiseOperator(Operator):
    """An operator that is elementwise on ``ΔW`` and so dense per layer.

    Subclasses define only :meth:`apply_tensor`. On LoRA parents, each layer's
    ``ΔW_i = B_i A_i`` is formed densely (one layer at a time, so only that
    layer's ``out × in`` matrices are ever in memory), :meth:`apply_tensor`
    combines them, and the result is truncated back to the target rank by
    :func:`~qd_llm.operators.lowrank.truncate_dense`: the child is the best
    rank-``r`` approximation of the dense result.
    """

    def apply_layer(
        self, layers: list[LoraFactors], *, rank: int, generator: torch.Generator, **params
    ) -> LoraFactors:
        """:meth:`apply_tensor` on each parent's dense ``ΔW_i``, truncated to ``rank``."""
        deltas = [f.B.to(COMPUTE_DTYPE) @ f.A.to(COMPUTE_DTYPE) for f in layers]
        return truncate_dense(self.apply_tensor(deltas, generator=generator, **params), rank)


def _aligned_layers(module: str, parents: Sequence[LoraWeights]) -> list[LoraFactors]:
    present = [p[module] for p in parents if module in p]
    shapes = {f.shape for f in present}
    if len(shapes) != 1:
        raise QdLlmError(f"parents disagree on the shape of {module}: {sorted(shapes)}")
    (out_features, in_features) = shapes.pop()
    zero = LoraFactors(torch.zeros(1, in_features), torch.zeros(out_features, 1))
    return [p.get(module, zero) for p in parents]


def register_operator(name: str) -> Callable[[type[Operator]], type[Operator]]:
    """Class decorator that registers an :class:`Operator` subclass under ``name``.

    Raises:
        ValueError: ``name`` is taken by another operator.
    """

    return OPERATORS.register_class(name)


def operator_names() -> tuple[str, ...]:
    """Names of every registered operator, sorted."""
    return OPERATORS.names()


def get_operator(name: str) -> Operator:
    """Returns a fresh instance of the operator registered as ``name``.

    Raises:
        QdLlmError: No operator has that name (the message lists the valid ones).
    """
    return OPERATORS.get(name)()


def parent_weights(weights: Sequence[float] | None, num_parents: int) -> list[float]:
    """Validates per-parent weights; ``None`` means the plain mean (``1/k`` each)."""
    if weights is None:
        return [1.0 / num_parents] * num_parents
    if len(weights) != num_parents:
        raise QdLlmError(f"got {len(weights)} weights for {num_parents} parents")
    return [float(w) for w in weights]
