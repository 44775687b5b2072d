"""The ``qd-llm`` command line: thin wrappers over the package.

Each command group is a module of :mod:`qd_llm.cli` exposing
``register(subparsers)``; this module only collects them, sets up logging and
turns :class:`~qd_llm.errors.QdLlmError` (and a full or read-only disk) into one
readable line and exit code 2.
"""

import argparse
import importlib
import logging
import sys

from qd_llm import __version__
from qd_llm.errors import STORAGE_ERRNOS, QdLlmError, storage_problem

# Modules that add commands; each defines register(subparsers).
COMMAND_MODULES = (
    "qd_llm.cli.models",
    "qd_llm.cli.seeding",
    "qd_llm.cli.tasks",
    "qd_llm.cli.bench",
    "qd_llm.cli.serve",
    "qd_llm.cli.run",
    "qd_llm.cli.analysis",
    "qd_llm.cli.experiment",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``qd-llm`` argument parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="qd-llm",
        description=(
            "Quality-diversity discovery of complementary LLM experts: coevolve LoRA "
            "genomes (bred by merging) and synthetic tasks (bred by a scientist), keep "
            "a niche map of experts, export the elite of each niche."
        ),
        epilog="Start with `qd-llm run --preset demo`; every command has --help.",
    )
    parser.add_argument("--version", action="version", version=f"qd-llm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs ``qd-llm argv``; returns the exit code (2 for a user error, 130 on Ctrl-C)."""
    from qd_llm.models.resolve import offline_environment

    offline_environment()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "sentence_transformers", "transformers", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except QdLlmError as e:
        # One line even when the message quotes multi-line output (a task's stderr).
        message = " | ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"qd-llm {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in STORAGE_ERRNOS:
            raise
        print(f"qd-llm {args.command}: error: {storage_problem(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qd-llm {args.command}: interrupted", file=sys.stderr)
        return 130
