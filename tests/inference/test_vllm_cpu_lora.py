"""The vLLM CPU LoRA-op plugin: grouped products equal the per-token gather, -1 rows are zero.

The module's math is plain torch and is checked here in any environment; the
test that the plugin is installed and active runs in the vLLM environment.
"""

import importlib.util

import pytest
import torch

from qd_llm.inference import vllm_cpu_lora


def _per_token_reference(x, weights, indices):
    """vLLM's reference math, with slot -1 meaning no LoRA (zero)."""
    rows = [
        x[t] @ weights[i].T if i >= 0 else torch.zeros(weights.shape[-2])
        for t, i in enumerate(indices.tolist())
    ]
    return torch.stack(rows)


@pytest.mark.parametrize("stacked_dims", [3, 4])
def test_grouped_products_equal_per_token_products(stacked_dims):
    gen = torch.Generator().manual_seed(0)
    slots, out_dim, in_dim, tokens = 3, 5, 7, 11
    weights = torch.randn(slots, out_dim, in_dim, generator=gen)
    x = torch.randn(tokens, in_dim, generator=gen)
    indices = torch.tensor([2, 0, -1, 1, 2, 2, -1, 0, 1, 1, 2])
    stacked = weights.unsqueeze(1) if stacked_dims == 4 else weights
    got = vllm_cpu_lora.grouped_lora_products(x, stacked, indices, torch.float32)
    torch.testing.assert_close(got, _per_token_reference(x, weights, indices))
    assert not got[indices == -1].any()


def test_ops_write_their_outputs_like_vllms():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, generator=gen)
    a = torch.randn(2, 1, 3, 6, generator=gen)  # shrink: (slots, 1, rank, in)
    indices = torch.tensor([1, -1, 0, 1])
    shrunk = torch.full((4, 3), 9.0)
    vllm_cpu_lora.bgmv_shrink(x, a, shrunk, indices, 0.5)
    torch.testing.assert_close(shrunk, 0.5 * _per_token_reference(x, a.squeeze(1), indices))

    b = torch.randn(2, 1, 4, 3, generator=gen)  # expand: (slots, 1, out, rank)
    out = torch.ones(4, 10)
    vllm_cpu_lora.bgmv_expand_slice(shrunk, b, out, indices, 2, 4, add_inputs=True)
    expected = torch.ones(4, 10)
    expected[:, 2:6] += _per_token_reference(shrunk, b.squeeze(1), indices)
    torch.testing.assert_close(out, expected)

    out = torch.ones(4, 4)
    vllm_cpu_lora.bgmv_expand(shrunk, b, out, indices, add_inputs=False)
    torch.testing.assert_close(out, _per_token_reference(shrunk, b.squeeze(1), indices))


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM")
def test_plugin_is_installed_and_patches_the_cpu_ops():
    from importlib.metadata import entry_points

    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    (plugin,) = [e for e in entry_points(group="vllm.general_plugins") if e.name.startswith("qd")]
    plugin.load()()
    plugin.load()()  # idempotent
    for name in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice"):
        assert getattr(lora_ops, name) is getattr(vllm_cpu_lora, name)
        assert getattr(punica_cpu, name) is getattr(vllm_cpu_lora, name)
