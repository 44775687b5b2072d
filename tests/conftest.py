"""Shared test setup: offline Hugging Face, deterministic threads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def hf_backend():
    """One real SmolLM2 backend shared by the whole session (loading takes seconds)."""
    from qd_llm.inference.hf import HFBackend

    backend = HFBackend(batch_size=16)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def base_shapes(hf_backend):
    """``{module: (out, in)}`` of SmolLM2's attention and MLP projections."""
    from qd_llm.models.lora import linear_shapes

    return linear_shapes(hf_backend.base)


@pytest.fixture(scope="module")
def world_readable(tmp_path_factory):
    """A temporary folder for run directories that sandboxed task code can read.

    Task code runs as another uid (nobody), so the tasks in it must be readable.
    """
    root = tmp_path_factory.mktemp("runs")
    root.chmod(0o755)
    return root


@pytest.fixture(autouse=True)
def _global_registries_unchanged():
    """Undoes whatever a test registered in qd_llm's global registries.

    Registries are process-wide, so a component a test registers would otherwise
    be seen by every later test (e.g. one listing the built-in operators).
    """
    from qd_llm.evaluation.bestofn import PICKERS
    from qd_llm.inference.registry import BACKENDS
    from qd_llm.operators.params import OPERATORS
    from qd_llm.qd.selection import PARENT_SELECTIONS, SURVIVOR_SELECTIONS
    from qd_llm.tasks.scientist import SCIENTISTS

    registries = (PICKERS, BACKENDS, OPERATORS, PARENT_SELECTIONS, SURVIVOR_SELECTIONS, SCIENTISTS)
    before = [set(registry.names()) for registry in registries]
    yield
    for registry, names in zip(registries, before, strict=True):
        for name in set(registry.names()) - names:
            registry.unregister(name)
