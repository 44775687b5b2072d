"""The scripts under ``analysis/``, loaded as modules (that folder is not a package)."""

import importlib.util
from pathlib import Path
from types import ModuleType

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"


def load_analysis_script(name: str) -> ModuleType:
    """``analysis/<name>.py``, executed once per call as a fresh module."""
    spec = importlib.util.spec_from_file_location(name, ANALYSIS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
