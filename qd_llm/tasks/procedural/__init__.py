"""The procedural scientist: task families written from code, no model needed.

:mod:`~qd_llm.tasks.procedural.kernels` holds the stdlib-only generators and
scorers that every generated ``task.py`` embeds;
:mod:`~qd_llm.tasks.procedural.families` describes the families and their
difficulty levels; :mod:`~qd_llm.tasks.procedural.scientist` turns requests
into task directories.
"""

from qd_llm.tasks.procedural.families import FAMILIES, WRAPS, Family, get_family
from qd_llm.tasks.procedural.scientist import ProceduralScientist

__all__ = ["FAMILIES", "WRAPS", "Family", "ProceduralScientist", "get_family"]
