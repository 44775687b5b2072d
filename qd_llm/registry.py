"""Named registries of components, and ``qd_llm.plugins`` entry points that add to them.

A :class:`Registry` maps names to components of one kind (a backend class, a
scientist class, an operator class, a selection function, ...). Registering is a
decorator, or a ``"module:attr"`` string that is imported only when the name is
first looked up, so a torch-heavy built-in can be named (and a config naming it
validated) without importing torch.

Installed packages extend any registry through the ``qd_llm.plugins`` entry
point group: each entry point names a module whose import registers things.
Plugins are loaded once, on the first lookup of any registry.

Example:
    >>> from qd_llm.registry import Registry
    >>> pickers = Registry("picker")
    >>> @pickers.register("first")
    ... class FirstPicker: ...
    >>> pickers.get("first") is FirstPicker
    True

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."qd_llm.plugins"]
    my_plugin = "my_package.qd_llm_plugin"   # a module that calls register(...)
"""

import importlib
import importlib.metadata
from collections.abc import Callable

from qd_llm.errors import QdLlmError

PLUGIN_GROUP = "qd_llm.plugins"

# Plugins load once per process; a failure is kept and raised on every lookup.
_plugins_loaded = False
_plugin_error: QdLlmError | None = None


def load_plugins() -> None:
    """Imports every ``qd_llm.plugins`` entry point's module, once per process.

    Raises:
        QdLlmError: A plugin failed to import (one line naming it and why).
    """
    global _plugins_loaded, _plugin_error
    if not _plugins_loaded:
        _plugins_loaded = True
        for entry_point in importlib.metadata.entry_points(group=PLUGIN_GROUP):
            try:
                entry_point.load()
            except Exception as e:  # any failure of third-party code: report it in one line
                _plugin_error = QdLlmError(
                    f"qd_llm plugin '{entry_point.name}' ({entry_point.value}) failed to "
                    f"load: {type(e).__name__}: {e}"
                )
                break
    if _plugin_error is not None:
        raise _plugin_error


def _target_path(obj: object) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


class Registry:
    """Components of one kind, by name.

    Args:
        kind: What the components are, for messages (``"operator"``).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._targets: dict[str, object] = {}

    def register(self, name: str) -> Callable:
        """Decorator that registers what it decorates under ``name``, unchanged.

        An object that is the very ``"module:attr"`` the name was declared with
        (:meth:`register_lazy`) replaces the declaration: its module is being imported.

        Raises:
            ValueError: ``name`` is already registered to something else.
        """

        def decorate(obj):
            self._add(name, obj)
            return obj

        return decorate

    def register_class(self, name: str) -> Callable[[type], type]:
        """Like :meth:`register`, for a class, whose ``name`` attribute is set to ``name``.

        Raises:
            ValueError: ``name`` is already registered to something else.
        """

        def decorate(cls: type) -> type:
            self.register(name)(cls)
            cls.name = name
            return cls

        return decorate

    def register_lazy(self, name: str, target: str) -> None:
        """Declares ``name`` as ``target`` (``"module:attr"``), imported on first :meth:`get`.

        Raises:
            ValueError: ``name`` is already registered, or ``target`` has no ``:``.
        """
        if ":" not in target:
            raise ValueError(f"{self.kind} target must be 'module:attr', got {target!r}")
        self._add(name, target)

    def _add(self, name: str, obj: object) -> None:
        known = self._targets.get(name)
        if known is not None and known is not obj:
            fulfils_lazy_name = isinstance(known, str) and known == _target_path(obj)
            if not fulfils_lazy_name:
                raise ValueError(f"{self.kind} '{name}' is already registered")
        self._targets[name] = obj

    def unregister(self, name: str) -> None:
        """Removes ``name``; a test or a notebook that registered something undoes it.

        Raises:
            QdLlmError: No such name.
        """
        if name not in self._targets:
            raise QdLlmError(f"unknown {self.kind} '{name}'; nothing to unregister")
        del self._targets[name]

    def names(self) -> tuple[str, ...]:
        """Every registered name (plugins included), sorted."""
        load_plugins()
        return tuple(sorted(self._targets))

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def get(self, name: str) -> object:
        """The component registered as ``name``, imported now if it was lazy.

        Raises:
            QdLlmError: No such name (the message lists the known ones), or a
                plugin failed to load.
        """
        if name not in self:
            raise QdLlmError(
                f"unknown {self.kind} '{name}'; valid {self.kind}s: {', '.join(self.names())}"
            )
        target = self._targets[name]
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module_name), attr)
            self._targets[name] = target
        return target
