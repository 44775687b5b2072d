"""Random generator states as plain JSON data, for checkpoints.

A numpy :class:`~numpy.random.Generator`'s state is its bit generator's
``state`` dict (PCG64: two 128-bit integers, which JSON holds exactly as
Python ints). Restoring it continues the stream exactly where it was.
"""

import numpy as np


def generator_state(rng: np.random.Generator) -> dict:
    """The state of ``rng`` (a dict of str, int and nested dicts)."""
    return dict(rng.bit_generator.state)


def generator_from_state(state: dict) -> np.random.Generator:
    """A PCG64 generator continuing from ``state`` (see :func:`generator_state`).

    Raises:
        ValueError: ``state`` is not a PCG64 state.
    """
    rng = np.random.Generator(np.random.PCG64())
    # PCG64 checks the bit generator's name and the fields' types itself.
    rng.bit_generator.state = state
    return rng
