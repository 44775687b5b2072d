"""LoRA shape queries: from a loaded model and from a checkpoint's headers."""

import pytest

from qd_llm.errors import QdLlmError
from qd_llm.models.lora import checkpoint_linear_shapes
from qd_llm.models.resolve import resolve_base_model


def test_checkpoint_shapes_equal_the_loaded_models(base_shapes):
    shapes = checkpoint_linear_shapes(resolve_base_model("smollm2-135m-instruct"))
    assert shapes == base_shapes
    assert len(shapes) == 30 * 7  # 30 layers × (q, k, v, o, gate, up, down)


def test_checkpoint_shapes_need_targeted_weights(tmp_path):
    with pytest.raises(QdLlmError, match="no safetensors weights"):
        checkpoint_linear_shapes(tmp_path)
    with pytest.raises(QdLlmError, match="no safetensors weights"):
        checkpoint_linear_shapes(
            resolve_base_model("smollm2-135m-instruct"), target_modules=("nope",)
        )
