"""Lazy re-exports for package ``__init__`` files.

A package lists its public names and the submodule each lives in; a name's
submodule is imported the first time the name is read. ``import qd_llm`` (and
building the command line, which imports every subpackage a command
group names) therefore stays cheap and never imports torch, while
``from qd_llm import GenomeStore`` works as a plain import would.
"""

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of a package with lazy public names.

    Args:
        package: The package's ``__name__``.
        exports: Public name → absolute name of the module that defines it.

    Returns:
        ``(__getattr__, __dir__)`` to assign in the package's ``__init__``.

    Example:
        >>> __all__ = ["GenomeStore"]
        >>> __getattr__, __dir__ = lazy_exports(__name__, {"GenomeStore": "qd_llm.models.genome"})
    """

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
