"""Where qd_llm keeps derived files (model caches, trained seed experts)."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """Returns the cache root, ``$QD_LLM_CACHE`` or ``~/.cache/qd_llm``."""
    root = os.environ.get("QD_LLM_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "qd_llm"
