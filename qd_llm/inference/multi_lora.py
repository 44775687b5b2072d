"""Mixed-adapter LoRA on one base model without PEFT: per-row updates by segment matmuls.

Each targeted linear layer gets a forward hook. While :meth:`MultiLora.rows`
is active, the batch rows are cut into runs that share an adapter; for each
run ``[start, end)`` the hook adds ``(x[start:end] Aᵀ) Bᵀ`` to the layer's
output rows (Punica/S-LoRA's segmented gather-matmul, in torch: two matmuls
per adapter run, base rows untouched). PEFT's mixed-batch forward does the
same arithmetic per adapter, but rebuilds the row index list in Python and
gathers and scatters rows in every layer at every decoding step; here the runs
are computed once per batch and rows are sliced, not copied. The operations on
each run are PEFT's (``F.linear`` twice on the run's rows, added to the base
output), so the results are the same.

Adapters are :func:`~qd_llm.models.genome.load_adapter_weights` dicts: factors
with the LoRA scale folded into ``B``, computed in their own dtype (float32,
as PEFT upcasts adapters) and added in the output's.
"""

import contextlib
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from qd_llm.errors import QdLlmError
from qd_llm.models.lora import LoraFactors

Adapter = Mapping[str, LoraFactors]
_Run = tuple[int, int, torch.Tensor, torch.Tensor]  # start, end, A, B


def adapter_runs(row_adapters: Sequence[Adapter | None]) -> list[tuple[int, int, Adapter]]:
    """``(start, end, adapter)`` for each maximal run of rows with the same adapter.

    Rows without an adapter (``None``) belong to no run; adapters are compared
    by identity.
    """
    runs: list[tuple[int, int, Adapter]] = []
    for row, adapter in enumerate(row_adapters):
        if adapter is None:
            continue
        if runs and runs[-1][2] is adapter and runs[-1][1] == row:
            runs[-1] = (runs[-1][0], row + 1, adapter)
        else:
            runs.append((row, row + 1, adapter))
    return runs


class MultiLora:
    """Per-row LoRA updates on a model's linear layers, through forward hooks.

    Args:
        model: The base model (its module tree is left as it is).
        module_names: Linear layers that adapters may target, as in
            ``model.named_modules()``.
    """

    def __init__(self, model: nn.Module, module_names: Iterable[str]):
        self.module_names = frozenset(module_names)
        self._runs: dict[str, tuple[_Run, ...]] = {}
        self._handles = [
            model.get_submodule(name).register_forward_hook(functools.partial(self._add, name))
            for name in sorted(self.module_names)
        ]

    def check(self, adapter: Adapter, source: object) -> None:
        """Raises unless every module ``adapter`` targets is hooked."""
        odd = sorted(set(adapter) - self.module_names)
        if odd:
            raise QdLlmError(f"{source} targets {odd[0]}, which is not a hooked linear layer")

    def _add(self, name: str, module: nn.Module, inputs: tuple, output: torch.Tensor):
        (x,) = inputs
        for start, end, A, B in self._runs.get(name, ()):
            update = F.linear(F.linear(x[start:end].to(A.dtype), A), B)
            output[start:end] += update.to(output.dtype)
        return output

    @contextlib.contextmanager
    def rows(self, row_adapters: Sequence[Adapter | None]) -> Iterator[None]:
        """Within the block, batch row ``i`` gets ``row_adapters[i]`` (``None``: none)."""
        runs = adapter_runs(row_adapters)
        self._runs = {
            name: tuple(
                (start, end, adapter[name].A, adapter[name].B)
                for start, end, adapter in runs
                if name in adapter
            )
            for name in self.module_names
        }
        try:
            yield
        finally:
            self._runs = {}

    def close(self) -> None:
        """Removes the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
