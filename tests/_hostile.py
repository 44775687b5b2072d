"""A pickle that runs code when loaded, to show that no run file is ever unpickled."""

import pickle
from pathlib import Path


class TouchOnUnpickle:
    """Unpickling this creates ``marker`` (pickle calls ``Path.touch(marker)``)."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def code_executing_pickle(marker: Path) -> bytes:
    """Pickle bytes whose loading creates ``marker``."""
    return pickle.dumps(TouchOnUnpickle(marker))
