"""The public API: what ``import qd_llm`` offers, that it resolves, and that it stays light."""

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys

import pytest

import qd_llm

HEAVY = ("torch", "transformers", "peft", "vllm", "sentence_transformers")

# What a researcher composes (issue 10): written from the issue, not from __init__.py.
EXPECTED = {
    "load_config",
    "Registry",
    "register_operator",
    "register_scientist",
    "OperatorSignature",
    "make_picker",
    "RunConfig",
    "RunDir",
    "Coevolution",
    "GenomeStore",
    "Evaluator",
    "HFBackend",
    "VLLMBackend",
    "OpenAIBackend",
    "make_backend",
    "SandboxPool",
    "Scientist",
    "ProceduralScientist",
    "LLMScientist",
    "TaskArchive",
    "get_operator",
    "Operator",
    "OperatorBandit",
    "OperatorEmitter",
    "NicheMap",
    "dns_select",
    "SkillDescriptors",
    "RunSnapshot",
    "QdLlmError",
}


def _fresh_python(code: str) -> dict:
    """Runs ``code`` in a new interpreter and returns the JSON it prints last."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_qd_llm_lists_the_api_and_imports_no_torch():
    seen = _fresh_python(
        "import json, sys, qd_llm; "
        f"print(json.dumps({{'all': qd_llm.__all__, "
        f"'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    assert set(seen["all"]) >= EXPECTED
    assert len(seen["all"]) == len(set(seen["all"]))
    assert seen["heavy"] == []


def test_the_http_backend_and_run_files_import_no_torch():
    seen = _fresh_python(
        "import json, sys; "
        "from qd_llm import OpenAIBackend, RunDir, make_backend; "
        "from qd_llm.models import is_full_checkpoint; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    assert seen == []


def test_an_unknown_name_is_an_attribute_error():
    models = importlib.import_module("qd_llm.models")
    assert not hasattr(qd_llm, "no_such_name")
    with pytest.raises(AttributeError, match="no_such_name"):
        models.no_such_name  # noqa: B018


def _packages() -> list[str]:
    found = pkgutil.walk_packages(qd_llm.__path__, "qd_llm.")
    return ["qd_llm", *sorted(m.name for m in found if m.ispkg)]


@pytest.mark.parametrize("package", _packages())
def test_every_exported_name_resolves_and_is_documented(package):
    module = importlib.import_module(package)
    assert hasattr(module, "__all__"), f"{package} has no __all__"
    assert (module.__doc__ or "").strip(), f"{package} has no docstring"
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.startswith("qd_llm."), name
            assert (inspect.getdoc(value) or "").strip(), f"{package}.{name} has no docstring"
    assert set(module.__all__) <= set(dir(module))
