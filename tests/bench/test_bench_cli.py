"""Every benchmark runs end to end at a tiny size and prints one JSON object."""

import json

import pytest

from qd_llm.cli import main

TINY = {
    "eval": ["--genomes", "2", "--prompts", "3", "--max-new-tokens", "3", "--batch-size", "4"],
    "sandbox": ["--scorings", "6"],
    "merge": ["--size", "64", "--rank", "4", "--parents", "2", "--repeats", "1"],
    "dns": ["--sizes", "50", "--naive-size", "20"],
    "extract": ["--layers", "2", "--target-modules", "k_proj", "--rank", "4"],
}


# Per benchmark: the two reported measures whose quotient is the ratio, and half the
# unit they are rounded to (eval, extract: seconds to 1 ms, sandbox: rates to 0.1/s, both with
# the ratio to 0.01; merge and dns: not rounded).
RATIO_OF = {
    "eval": ("naive_seconds", "batched_seconds", 0.0005),
    "sandbox": ("pooled_per_s", "fresh_per_s", 0.05),
    "merge": ("dense_seconds", "factored_seconds", 0.0),
    "dns": ("naive_seconds", "vectorised_seconds", 0.0),
    "extract": ("exact_seconds", "fast_seconds", 0.0005),
}
# What must hold whatever the timing: both sides computed the same thing.
SAME_RESULT = {
    "eval": {"same_outputs": True, "requests": 6, "genomes": 2, "prompts": 3},
    "sandbox": {"pooled_correct": True, "fresh_correct": True, "scorings": 6},
    "merge": {"size": 64, "rank": 4, "parents": 2},
    "dns": {"same_selection": True, "naive_size": 20},
    "extract": {"projections": 2, "rank": 4},  # k_proj of 2 layers
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_benchmark_prints_one_json_object_with_a_ratio(name, capsys):
    # Speed itself is not asserted (a busy machine makes any threshold flaky): the
    # ratio must be the quotient of the reported measures, and both sides must agree.
    assert main(["bench", name, *TINY[name]]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == name
    numerator_key, denominator_key, half_unit = RATIO_OF[name]
    numerator, denominator = result[numerator_key], result[denominator_key]
    assert numerator > 0 and denominator > half_unit
    if half_unit:  # the ratio lies within what rounding the measures and itself allows
        low = (numerator - half_unit) / (denominator + half_unit) - 0.005
        high = (numerator + half_unit) / (denominator - half_unit) + 0.005
        assert low <= result["ratio"] <= high, (numerator, denominator, result["ratio"])
    else:
        assert result["ratio"] == pytest.approx(numerator / denominator)
    assert {key: result[key] for key in SAME_RESULT[name]} == SAME_RESULT[name]
    if name == "merge":  # both routes: the best rank-r approximation of the same sum
        assert result["relative_difference"] < 1e-4
    if name == "extract":  # randomized: near the optimal rank-r error, never below it
        assert 1.0 - 1e-6 <= result["max_error_ratio"] <= 1.01
    assert result["machine"]["cpus"] >= 1


@pytest.mark.vllm
def test_eval_benchmark_on_vllm_compares_multi_lora_with_hf_and_full_swapping(capsys):
    """Runs in the vLLM environment (make test-vllm)."""
    pytest.importorskip("vllm")
    assert main(["bench", "eval", "--backend", "vllm", *TINY["eval"]]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "vllm" and result["vllm_device"] in ("cpu", "cuda")
    for key in ("vllm_seconds", "full_swap_seconds", "full_swap_merge_seconds"):
        assert result[key] > 0
    assert result["ratio"] > 0 and result["vllm_vs_full_swap"] > 0
    # Merged weights equal base + LoRA up to rounding: the same greedy answers, mostly.
    assert result["full_swap_identical"] >= 0.5
    assert result["vllm_identical"] >= 0.5


def test_eval_benchmark_on_openai_servers_compares_batching_with_one_at_a_time(capsys):
    # A wide window, so that concurrent requests meet in it even on a busy machine.
    serving = ["--backend", "openai", "--concurrency", "4", "--batch-window-ms", "500"]
    assert main(["bench", "eval", *TINY["eval"], *serving]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "openai" and result["requests"] == 6
    assert result["serial_server_seconds"] > 0 and result["batching_server_seconds"] > 0
    assert result["ratio"] > 0
    assert 1 <= result["batching_server_backend_calls"] < result["requests"]
    assert result["same_outputs"] and result["served_identical_to_hf"] == 1.0


@pytest.mark.vllm
def test_eval_benchmark_on_openai_servers_includes_a_real_vllm_server(capsys):
    """Runs in the vLLM environment (make test-vllm): vLLM's own OpenAI server, started
    and stopped by the benchmark, loads every genome at runtime by path."""
    pytest.importorskip("vllm")
    serving = ["--backend", "openai", "--concurrency", "4", "--vllm-serve"]
    assert main(["bench", "eval", *TINY["eval"], *serving]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["vllm_serve_device"] in ("cpu", "cuda")
    assert result["vllm_serve_seconds"] > 0 and result["vllm_serve_start_seconds"] > 0
    expected = round(result["batching_server_seconds"] / result["vllm_serve_seconds"], 2)
    assert abs(result["vllm_serve_vs_batching"] - expected) <= 0.01
    # Greedy on the same adapters; vLLM's CPU kernels may flip a near tie.
    assert result["vllm_serve_identical"] >= 0.5
