"""``qd-llm bench ...``: benchmarks that print one JSON object.

Each benchmark module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> dict``; both sides of a comparison are measured in the same run
so the reported ``ratio`` is meaningful on any machine.
"""

import importlib
import json
import os
import platform

# Benchmark modules; each is listed once it exists.
BENCH_MODULES: tuple[str, ...] = (
    "qd_llm.bench.eval",
    "qd_llm.bench.sandbox",
    "qd_llm.bench.merge",
    "qd_llm.bench.extract",
    "qd_llm.bench.dns",
)


def _machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark and print one JSON object",
        description="Benchmarks measure both sides of a comparison in one run and "
        "print a single JSON object (with a `ratio`) on stdout.",
    )
    bench_sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name in BENCH_MODULES:
        module = importlib.import_module(name)
        p = bench_sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(func=lambda args, m=module: _run(m, args))


def _run(module, args) -> int:
    result = {"benchmark": module.NAME, **module.run(args), "machine": _machine()}
    print(json.dumps(result, indent=2))
    return 0
