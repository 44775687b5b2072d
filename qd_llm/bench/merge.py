"""``qd-llm bench merge``: exact factored linear merge vs the dense route, one layer."""

import time

NAME = "merge"
HELP = (
    "time the exact factored linear merge of LoRA updates (QR + small SVD) against "
    "forming the dense updates, summing and SVD-truncating, on one square layer"
)


_WARMUP = 2


def add_arguments(parser) -> None:
    parser.add_argument("--size", type=int, default=4096, help="layer is SIZE × SIZE (4096)")
    parser.add_argument("--rank", type=int, default=16, help="rank of parents and child (16)")
    parser.add_argument("--parents", type=int, default=3, help="number of parents (3)")
    parser.add_argument("--repeats", type=int, default=5, help="factored-route repeats (5)")
    parser.add_argument("--seed", type=int, default=0)


def _dense_route(terms: list, rank: int):
    """The rank-``rank`` SVD truncation of the dense weighted sum of ``terms``."""
    import torch

    delta = sum(w * (f.B @ f.A) for w, f in terms)
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    return (U[:, :rank] * S[:rank]) @ Vh[:rank]


def run(args) -> dict:
    # Imported here: `qd-llm` starts every command without loading torch.
    import torch

    from qd_llm.models.lora import LoraFactors
    from qd_llm.operators.lowrank import combine

    g = torch.Generator().manual_seed(args.seed)
    terms = [
        (
            1.0 / args.parents,
            LoraFactors(
                A=torch.randn(args.rank, args.size, generator=g),
                B=torch.randn(args.size, args.rank, generator=g),
            ),
        )
        for _ in range(args.parents)
    ]
    # Warm-up: the first LAPACK calls of a process load libraries and spin up threads.
    for _ in range(_WARMUP):
        combine(terms, args.rank)
    factored_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        merged = combine(terms, args.rank)
        factored_times.append(time.perf_counter() - start)
    # Best of the repeats (as timeit does): on a shared machine, slower runs measure
    # other processes, not the merge.
    factored = min(factored_times)
    # The dense route is slow (a full SVD of size × size): measured once.
    start = time.perf_counter()
    reference = _dense_route(terms, args.rank)
    dense = time.perf_counter() - start
    error = (merged.delta().double() - reference.double()).norm() / reference.double().norm()
    return {
        "size": args.size,
        "rank": args.rank,
        "parents": args.parents,
        "factored_seconds": factored,
        "factored_median_seconds": sorted(factored_times)[len(factored_times) // 2],
        "dense_seconds": dense,
        "ratio": dense / factored,
        "relative_difference": float(error),
        "threads": torch.get_num_threads(),
    }
