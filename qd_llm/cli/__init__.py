"""The ``qd-llm`` command line (the top layer): one module per command group.

:func:`main` is the console script; :func:`build_parser` the whole argparse tree.
Nothing else in the package imports from here.
"""

from qd_llm.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
