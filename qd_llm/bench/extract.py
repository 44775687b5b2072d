"""``qd-llm bench extract``: randomized vs exact LoRA extraction from a full checkpoint.

A synthetic fine-tune of the base model is written to a temporary folder: every
targeted projection gets ``ΔW = B₀ diag(σ) A₀ + noise`` (a decaying rank-``signal
rank`` spectrum, as fine-tuning updates have, on a full-rank Gaussian floor).
Only the targeted projections (of the first ``--layers``) are written — all that
:func:`~qd_llm.operators.task_vectors.extract_lora_from_checkpoint` reads of a
fine-tune. Both extractions run on the same folder; ``ratio`` is exact / fast
wall time. Per projection, ``error_ratio`` is ``‖ΔW − B A‖_F / ‖ΔW − ΔW_r‖_F``
(1 is the Eckart–Young optimum, given by the exact side) and
``relative_difference`` is ``‖B A − ΔW_r‖_F / ‖ΔW_r‖_F``; the worst and the
mean over projections are reported.
"""

import argparse
import tempfile
import time

import torch

from qd_llm.models.lora import DEFAULT_TARGET_MODULES

NAME = "extract"
HELP = (
    "time LoRA extraction from a full checkpoint (every projection's task vector "
    "truncated to rank r) by randomized SVD against the exact SVD"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rank", type=int, default=8, help="extracted LoRA rank (8)")
    parser.add_argument(
        "--signal-rank", type=int, default=32, help="rank of the update's decaying part (32)"
    )
    parser.add_argument(
        "--noise", type=float, default=1e-5, help="std of the update's full-rank part (1e-5)"
    )
    parser.add_argument(
        "--target-modules",
        nargs="+",
        default=list(DEFAULT_TARGET_MODULES),
        help="projections to extract (all attention and MLP projections)",
    )
    parser.add_argument(
        "--layers", type=int, default=None, help="only the first LAYERS decoder layers (all)"
    )
    parser.add_argument("--base-model", default="smollm2-135m-instruct")
    parser.add_argument("--seed", type=int, default=0)


def synthetic_updates(
    shapes: dict[str, tuple[int, int]], *, signal_rank: int, noise: float, seed: int
) -> dict[str, torch.Tensor]:
    """``{module: ΔW}``: a rank-``signal_rank`` part with singular values ~ 1/i plus noise."""
    generator = torch.Generator().manual_seed(seed)
    updates = {}
    for module, (rows, cols) in sorted(shapes.items()):
        rank = min(signal_rank, rows, cols)
        strengths = 0.01 / torch.arange(1, rank + 1, dtype=torch.float32)
        left = torch.randn(rows, rank, generator=generator) / rows**0.5
        right = torch.randn(rank, cols, generator=generator) / cols**0.5
        floor = noise * torch.randn(rows, cols, generator=generator)
        updates[module] = (left * strengths) @ right + floor
    return updates


def _layer_index(module: str) -> int:
    """``model.layers.7.mlp.up_proj`` → 7."""
    return int(module.split(".layers.", 1)[1].split(".", 1)[0])


def run(args) -> dict:
    from qd_llm.models.full_weights import Checkpoint, checkpoint_linear_shapes, write_checkpoint
    from qd_llm.models.resolve import resolve_base_model
    from qd_llm.operators.task_vectors import extract_lora_from_checkpoint

    base_folder = resolve_base_model(args.base_model)
    shapes = checkpoint_linear_shapes(base_folder, args.target_modules)
    if args.layers is not None:
        shapes = {m: s for m, s in shapes.items() if _layer_index(m) < args.layers}
    updates = synthetic_updates(
        shapes, signal_rank=args.signal_rank, noise=args.noise, seed=args.seed
    )
    base = Checkpoint(base_folder)
    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoint(
            {f"{m}.weight": base[f"{m}.weight"] + delta for m, delta in updates.items()},
            tmp,
            config_from=base_folder,
        )
        timings, extracted = {}, {}
        for side, exact in (("fast", False), ("exact", True)):
            start = time.perf_counter()
            extracted[side] = extract_lora_from_checkpoint(
                tmp,
                base_folder=base_folder,
                rank=args.rank,
                target_modules=args.target_modules,
                exact=exact,
            )
            timings[side] = time.perf_counter() - start
        # Errors against the stored fine-tune, which is what both sides saw.
        stored = Checkpoint(tmp)
        error_ratios, differences = [], []
        for module in sorted(updates):
            name = f"{module}.weight"
            delta = (stored[name] - base[name]).double()
            optimum = extracted["exact"][module].delta().double()
            fast = extracted["fast"][module].delta().double()
            error_ratios.append(float((delta - fast).norm() / (delta - optimum).norm()))
            differences.append(float((fast - optimum).norm() / optimum.norm()))
    return {
        "projections": len(updates),
        "rank": args.rank,
        "signal_rank": args.signal_rank,
        "noise": args.noise,
        "fast_seconds": round(timings["fast"], 3),
        "exact_seconds": round(timings["exact"], 3),
        "ratio": round(timings["exact"] / timings["fast"], 2),
        "max_error_ratio": round(max(error_ratios), 6),
        "mean_error_ratio": round(sum(error_ratios) / len(error_ratios), 6),
        "max_relative_difference": round(max(differences), 6),
        "mean_relative_difference": round(sum(differences) / len(differences), 6),
        "threads": torch.get_num_threads(),
    }
