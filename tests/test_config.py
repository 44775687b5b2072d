"""Config presets, layering and one-line validation errors."""

import json

import pytest

from qd_llm.config import PRESETS, config_from_dict, load_config, parse_override
from qd_llm.errors import QdLlmError


def test_paper_preset_matches_the_design():
    c = load_config(preset="paper")
    assert (c.population.size, c.population.offspring, c.population.generations) == (16, 8, 50)
    assert (c.tasks.adapt_every, c.tasks.new_task_attempts, c.tasks.pool_capacity) == (5, 150, 250)
    assert (c.tasks.novelty_k, c.tasks.novelty_threshold, c.tasks.easy_threshold) == (1, 0.3, 0.5)
    assert c.population.dns_k == 3 and c.decoding.max_new_tokens == 512
    assert c.decoding.temperature == 0.0 and c.tasks.scientist == "llm"
    assert c.genomes.form == "full"  # whole checkpoints merged as task vectors, as in the paper


def test_demo_preset_is_small_and_adapts_at_least_twice():
    c = load_config(preset="demo")
    assert c.tasks.scientist == "procedural" and c.decoding.max_new_tokens <= 32
    assert c.population.generations >= 5
    assert (c.population.generations - 1) // c.tasks.adapt_every >= 2


def test_overrides_file_and_roundtrip(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(
        "seed = 7\n[population]\nsize = 5\n[operators.ties]\nparents = 2\ndensity = 0.3\n"
    )
    c = load_config(
        preset="demo",
        file=toml,
        overrides=[
            "population.offspring=3",
            'tasks.families=["letters"]',
            "operators.ties.density=0.4",
        ],
    )
    assert (c.seed, c.population.size, c.population.offspring) == (7, 5, 3)
    assert c.tasks.families == ("letters",)
    assert c.operators == {"ties": {"parents": 2, "density": 0.4}}  # a file table replaces
    assert config_from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert parse_override("embedder=/x/y") == {"embedder": "/x/y"}


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("population.sise=3", "population.sise"),
        ("population.size=many", "population.size"),
        ("population.size=0", "population.size"),
        ("tasks.easy_threshold=1.5", "tasks.easy_threshold"),
        ("inference.backend=tpu", "inference.backend"),
        ("backend=tpu", "inference.backend"),
        ("executor=slurm", "inference.executor"),
        ("inference.max_loras=0", "inference.max_loras"),
        ("inference.gpu_memory_utilization=1.5", "inference.gpu_memory_utilization"),
        ("genomes.form=dense", "genomes.form"),
        ("operators.nope.x=1", "operators.nope"),
        ("operators.slerp.q=1", "operators.slerp"),
        ("genomes.seeds=random:zero", "genomes.seeds"),
        ("progress=3", "progress"),
        ("population.generations=-1", "population.generations"),
        ("population.selection=tournament", "population.selection"),
        ("evaluation.heldout_val_fraction=1", "evaluation.heldout_val_fraction"),
        ("evaluation.heldout_every=0", "evaluation.heldout_every"),
        ("evaluation.control_temperature=0", "evaluation.control_temperature"),
        ("niche_map.projection=tsne", "niche_map.projection"),
    ],
)
def test_bad_keys_and_values_are_one_line_errors_naming_the_key(override, names):
    with pytest.raises(QdLlmError) as info:
        load_config(preset="demo", overrides=[override])
    message = str(info.value)
    assert names in message and "\n" not in message


def test_descriptor_projection_is_chosen_by_name():
    assert load_config().niche_map.projection == "pca"
    assert load_config(overrides=["niche_map.projection=isomap"]).niche_map.projection == "isomap"
    with pytest.raises(QdLlmError, match=r"'pca', 'kernel_pca', 'isomap'.*'tsne'"):
        load_config(overrides=["niche_map.projection=tsne"])


def test_unknown_preset_and_malformed_override():
    with pytest.raises(QdLlmError, match="unknown preset"):
        load_config(preset="huge")
    with pytest.raises(QdLlmError, match="key=value"):
        load_config(overrides=["population.size"])
    assert set(PRESETS) == {"demo", "paper", "discovery"}


def test_backend_and_executor_shorthands_and_backend_arguments():
    from qd_llm.components import backend_kwargs

    c = load_config(overrides=["backend=vllm", "executor=ray", "genomes.rank=24"])
    assert (c.inference.backend, c.inference.executor) == ("vllm", "ray")
    kwargs = backend_kwargs(c)
    assert kwargs["max_lora_rank"] == 32  # the next rank vLLM accepts
    assert kwargs["gpu_memory_utilization"] is None  # 0: the engine's default
    assert "batch_size" not in kwargs
    assert backend_kwargs(load_config())["batch_size"] == 32
    served = backend_kwargs(load_config(overrides=["backend=openai", "inference.base_url=x"]))
    assert served["base_url"] == "x" and served["load_adapters"]
    with pytest.raises(QdLlmError, match="512"):
        backend_kwargs(load_config(overrides=["backend=vllm", "genomes.rank=600"]))


def test_ablation_settings_are_accepted():
    c = load_config(
        preset="demo", overrides=["population.generations=0", "population.selection=random"]
    )
    assert (c.population.generations, c.population.selection) == (0, "random")
    assert load_config(preset="demo").population.selection == "dns"
    assert load_config(preset="demo").evaluation.heldout == ""
