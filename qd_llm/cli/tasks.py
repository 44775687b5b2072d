"""``qd-llm tasks ...``: make, adapt, import, list and score task directories.

Each subcommand is a ``qd_llm.cli.tasks_*`` module exposing
``register(tasks_subparsers)``; this module only builds the group.
"""

import importlib

# Modules adding a `tasks` subcommand; each defines register(subparsers).
TASK_COMMAND_MODULES: tuple[str, ...] = (
    "qd_llm.cli.tasks_import",
    "qd_llm.cli.tasks_score",
    "qd_llm.cli.tasks_procedural",
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tasks",
        help="make, adapt, import, list and score task directories",
        description="Work with task directories in the AC/DC layout "
        "(task.py, task.json, metadata.json). Task code only ever runs in the sandbox.",
    )
    tasks_sub = parser.add_subparsers(dest="tasks_command", metavar="SUBCOMMAND", required=True)
    for module in TASK_COMMAND_MODULES:
        importlib.import_module(module).register(tasks_sub)
