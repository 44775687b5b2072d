"""``qd-llm bench dns``: vectorised Dominated Novelty Search vs a Python-loop reference."""

import math
import time

import numpy as np

from qd_llm.qd.dns import difficulty_weights, dns_select

NAME = "dns"
HELP = (
    "time dns_select on random skill matrices (1000×1000 and 2000×2000 by default) and "
    "compare with a plain Python-loop DNS on a smaller matrix"
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1000, 2000], help="N = T sizes to time"
    )
    parser.add_argument("--naive-size", type=int, default=300, help="size for the loop reference")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--capacity", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)


def _naive_select(skills: np.ndarray, k: int, capacity: int) -> list[int]:
    """DNS from its definition with Python loops (the reference's style)."""
    n, t = skills.shape
    rows = skills.tolist()
    fitness = [sum(r) / t for r in rows]
    weights = difficulty_weights(skills).tolist()
    total = sum(weights)
    scores = []
    for m in range(n):
        distances = []
        for j in range(n):
            if j != m and (fitness[j] > fitness[m] or (fitness[j] == fitness[m] and j < m)):
                mass = sum(
                    w for w, a, b in zip(weights, rows[m], rows[j], strict=True) if a and not b
                )
                distances.append(100 * mass / total if total else 0.0)
        nearest = sorted(distances)[:k]
        scores.append(sum(nearest) / len(nearest) if nearest else math.inf)
    return sorted(range(n), key=lambda i: (-scores[i], -fitness[i], i))[:capacity]


def _time_select(skills: np.ndarray, k: int, capacity: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    kept = dns_select(skills, k=k, capacity=capacity)
    return time.perf_counter() - start, kept


def run(args) -> dict:
    rng = np.random.default_rng(args.seed)
    timings = {}
    for size in args.sizes:
        skills = rng.random((size, size)) < rng.uniform(0.05, 0.6, size=(size, 1))
        timings[f"seconds_{size}x{size}"] = _time_select(skills, args.k, args.capacity)[0]
    small = rng.random((args.naive_size, args.naive_size)) < 0.4
    _time_select(small, args.k, args.capacity)  # warm-up: first-call overheads are not DNS
    vectorised, kept = _time_select(small, args.k, args.capacity)
    start = time.perf_counter()
    naive_kept = _naive_select(small, args.k, args.capacity)
    naive = time.perf_counter() - start
    return {
        **timings,
        "naive_size": args.naive_size,
        "naive_seconds": naive,
        "vectorised_seconds": vectorised,
        "ratio": naive / vectorised,
        "same_selection": kept.tolist() == naive_kept,
    }
