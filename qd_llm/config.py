"""Run configuration: presets, files, ``--set`` overrides and validation of every key.

A :class:`RunConfig` is a frozen tree of small dataclasses, one per concern
(``population``, ``genomes``, ``operators``, ``tasks``, ``decoding``,
``evaluation``, ``inference``, ``sandbox``, ``ray``, ``niche_map``, ``tracking``). Keys
are addressed with dots (``population.size``, ``tasks.adapt_every``); the top level
holds ``seed``, ``base_model``, ``preset`` and ``out_dir``.

A config is resolved in layers, each overriding the one before:

1. the preset (:data:`PRESETS`: ``demo`` or ``paper``);
2. a config file (JSON, or TOML via :mod:`tomllib`), nested or with dotted keys;
3. ``--set key=value`` overrides, where the value is parsed as JSON when it
   can be (``3``, ``0.5``, ``true``, ``[1, 2]``, ``{"t": 0.3}``) and taken as
   a plain string otherwise (``scientist=llm``).

An unknown key, a value of the wrong type or out of range raises
:class:`~qd_llm.errors.QdLlmError` with a one-line message naming the key.

Example:
    >>> config = load_config(preset="demo", overrides=["population.size=8"])
    >>> config.population.size
    8
"""

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

from qd_llm.errors import QdLlmError
from qd_llm.inference.registry import BACKENDS
from qd_llm.operators.params import check_operator_table
from qd_llm.qd.descriptors import PROJECTIONS
from qd_llm.qd.selection import PARENT_SELECTIONS, SURVIVOR_SELECTIONS
from qd_llm.registry import Registry
from qd_llm.tasks.scientist import SCIENTISTS

EXECUTORS = ("local", "ray")
GIBBERISH_FILTERS = ("off", "heuristic", "judge")
MAP_KINDS = ("grid", "cvt")
WANDB_MODES = ("off", "offline", "online")


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise QdLlmError(f"config key '{key}': {message}")


def _require_registered(registry: Registry, name: str, key: str) -> None:
    """Names come from registries, so a plugin's scientist or backend is valid too."""
    _require(name in registry, key, f"must be one of {', '.join(registry.names())}, got {name!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PopulationConfig:
    """The genome population and its selection.

    Attributes:
        size: Population capacity kept by Dominated Novelty Search.
        offspring: Children bred per generation.
        generations: Generations after generation 0 (the seeds and their first
            children); 0 runs generation 0 only (merging without evolution).
        dns_k: Nearest fitter genomes averaged in the DNS score.
        parent_selection: How parents are drawn from the population: ``uniform`` or
            ``tournament`` (fitness-biased; formulas in :mod:`qd_llm.qd.emitters`).
        selection: Survivor selection: ``dns`` (Dominated Novelty Search) or
            ``random`` (a uniform draw of ``size`` candidates; an ablation).
    """

    size: int = 16
    offspring: int = 8
    generations: int = 50
    dns_k: int = 3
    parent_selection: str = "uniform"
    selection: str = "dns"

    def __post_init__(self):
        for key in ("size", "offspring", "dns_k"):
            _require(getattr(self, key) >= 1, f"population.{key}", "must be >= 1")
        _require(self.generations >= 0, "population.generations", "must be >= 0")
        _require_registered(SURVIVOR_SELECTIONS, self.selection, "population.selection")
        _require(
            self.dns_k <= self.size,
            "population.dns_k",
            f"must be <= population.size ({self.size}), got {self.dns_k}",
        )
        _require_registered(PARENT_SELECTIONS, self.parent_selection, "population.parent_selection")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenomeConfig:
    """Where genomes start and how they are stored.

    Attributes:
        form: ``lora`` (genomes are LoRA adapters, merged as low-rank updates)
            or ``full`` (whole fine-tuned checkpoints merged as task vectors,
            the paper's form; costs a full weight load per genome evaluated).
        seeds: ``"builtin"`` (the project's default seed experts for the base
            model), ``"builtin:NAME,NAME,..."`` (those built-in experts, by skill
            name: see ``qd-llm seeds eval``), ``"random:N"`` (N random
            rank-``rank`` adapters; for tests and smoke runs), or a list of
            folders: PEFT adapters or full Hugging Face checkpoints of the base
            architecture. With ``form=lora`` a full checkpoint joins as its
            rank-``rank`` LoRA (truncated SVD of its task vector); with
            ``form=full`` an adapter joins merged.
        rank: LoRA rank of every bred child (and of extracted full seeds).
        dtype: Storage dtype of adapters (``float32``, ``bfloat16``, ``float16``).
        random_std: Standard deviation of ``ΔW`` entries of random seeds.
        keep_weights: ``all`` genomes' weights, or only ``live`` ones: the
            population, the niche-map elites and the seeds (others keep their
            ``genome.json``, so lineage and plots are whole, and are stored
            again if bred again). ``auto``: ``live`` for full-weight genomes
            (hundreds of MB each), ``all`` for LoRA genomes.
    """

    form: str = "lora"
    seeds: str | tuple[str, ...] = "builtin"
    rank: int = 8
    dtype: str = "float32"
    random_std: float = 0.004
    keep_weights: str = "auto"

    def __post_init__(self):
        _require(self.form in ("lora", "full"), "genomes.form", "must be lora or full")
        _require(
            self.keep_weights in ("auto", "all", "live"),
            "genomes.keep_weights",
            "must be auto, all or live",
        )
        _require(self.rank >= 1, "genomes.rank", "must be >= 1")
        _require(
            self.dtype in ("float32", "bfloat16", "float16"),
            "genomes.dtype",
            "must be float32, bfloat16 or float16",
        )
        if isinstance(self.seeds, str):
            _require(
                self.seeds == "builtin"
                or all(self.builtin_seed_names() or [""])
                or self.random_seed_count() > 0,
                "genomes.seeds",
                "must be 'builtin', 'builtin:NAME,...', 'random:N' or a list of adapter "
                f"folders, got {self.seeds!r}",
            )
        else:
            _require(len(self.seeds) >= 1, "genomes.seeds", "the list of folders is empty")

    def keeps_only_live_weights(self) -> bool:
        """Whether weights of genomes that left the population and map are dropped."""
        if self.keep_weights == "auto":
            return self.form == "full"
        return self.keep_weights == "live"

    def builtin_seed_names(self) -> tuple[str, ...]:
        """The skill names of ``"builtin:NAME,..."`` (empty for other seed sources)."""
        if not isinstance(self.seeds, str) or not self.seeds.startswith("builtin:"):
            return ()
        return tuple(name.strip() for name in self.seeds.removeprefix("builtin:").split(","))

    def random_seed_count(self) -> int:
        """N of ``"random:N"`` (0 for other seed sources)."""
        if not isinstance(self.seeds, str) or not self.seeds.startswith("random:"):
            return 0
        count = self.seeds.removeprefix("random:")
        return int(count) if count.isdigit() else 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskConfig:
    """The task pool and its adaptation.

    Attributes:
        scientist: ``procedural`` (built in, offline) or ``llm`` (an
            OpenAI-compatible endpoint configured by environment variables).
        families: Procedural families to draw from (empty: all).
        initial_tasks: ``initial`` task attempts before generation 0.
        instances_per_task: Instances per procedural task.
        adapt_every: Adapt the pool after every this many generations.
        new_task_attempts: Scientist requests per adaptation.
        pool_capacity: Most active tasks; the oldest go first.
        easy_threshold: Pass rate above which a task is made harder.
        novelty_k: Nearest active tasks averaged in the novelty.
        novelty_threshold: Minimum mean cosine distance to accept a task
            (``k=1, 0.3`` is the paper's "similarity cap 0.7").
        pass_threshold: A genome passes a task when its mean instance score is >= this.
        drop_unsolvable: Drop a task nobody solves when no easier task can be made.
    """

    scientist: str = "procedural"
    families: tuple[str, ...] = ()
    initial_tasks: int = 8
    instances_per_task: int = 3
    adapt_every: int = 5
    new_task_attempts: int = 150
    pool_capacity: int = 250
    easy_threshold: float = 0.5
    novelty_k: int = 1
    novelty_threshold: float = 0.3
    pass_threshold: float = 0.5
    drop_unsolvable: bool = True

    def __post_init__(self):
        _require_registered(SCIENTISTS, self.scientist, "tasks.scientist")
        for key in (
            "initial_tasks",
            "instances_per_task",
            "adapt_every",
            "pool_capacity",
            "novelty_k",
        ):
            _require(getattr(self, key) >= 1, f"tasks.{key}", "must be >= 1")
        _require(self.new_task_attempts >= 0, "tasks.new_task_attempts", "must be >= 0")
        for key in ("easy_threshold", "pass_threshold"):
            _require(0.0 <= getattr(self, key) <= 1.0, f"tasks.{key}", "must be in [0, 1]")
        _require(
            0.0 <= self.novelty_threshold <= 2.0,
            "tasks.novelty_threshold",
            "is a cosine distance in [0, 2]",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluationConfig:
    """Held-out tracking during a run (see :mod:`qd_llm.evaluation.heldout`).

    Attributes:
        heldout: Held-out task set: a folder of task directories (nested folders
            included), anything ``qd-llm tasks import`` reads, or
            ``"seeds:NAME,...[:K]"``: K (default 24) one-question procedural tasks
            per built-in seed skill, over its levels, from the items no seed
            expert trained on (written into the run); empty: off.
        heldout_every: Evaluate it after every this many generations (and after
            generation 0 and the last generation).
        heldout_limit: Use at most this many of its tasks (0: all).
        heldout_val_fraction: Share of held-out tasks (by question hash) used to
            choose taskforces; the rest score them.
        heldout_max_n: Largest taskforce size reported.
        control_samples: Base-model samples in the control baseline (0: none).
        control_temperature: Their sampling temperature.
    """

    heldout: str = ""
    heldout_every: int = 5
    heldout_limit: int = 0
    heldout_val_fraction: float = 0.5
    heldout_max_n: int = 3
    control_samples: int = 4
    control_temperature: float = 0.7

    def __post_init__(self):
        for key in ("heldout_every", "heldout_max_n"):
            _require(getattr(self, key) >= 1, f"evaluation.{key}", "must be >= 1")
        for key in ("heldout_limit", "control_samples"):
            _require(getattr(self, key) >= 0, f"evaluation.{key}", "must be >= 0")
        _require(
            0.0 < self.heldout_val_fraction < 1.0,
            "evaluation.heldout_val_fraction",
            "must be in (0, 1)",
        )
        _require(
            self.control_temperature > 0.0,
            "evaluation.control_temperature",
            "must be > 0 (control samples differ only by sampling)",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecodingConfig:
    """How genomes answer task instances.

    Attributes:
        max_new_tokens: Tokens generated per answer.
        temperature: 0 is greedy (the only setting that makes runs reproducible).
        system_prompt: Optional system message before every instruction.
    """

    max_new_tokens: int = 512
    temperature: float = 0.0
    system_prompt: str = ""

    def __post_init__(self):
        _require(self.max_new_tokens >= 1, "decoding.max_new_tokens", "must be >= 1")
        _require(self.temperature >= 0.0, "decoding.temperature", "must be >= 0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class InferenceConfig:
    """Where generation runs.

    Attributes:
        backend: ``hf`` (transformers + PEFT in process), ``vllm`` (one vLLM
            engine, every genome a LoRA request of one batch; needs the vLLM
            environment, see README) or ``openai`` (an external
            OpenAI-compatible server that serves each genome under its id).
        executor: ``local`` (in this process) or ``ray`` (generation and
            scoring on Ray actors; see :class:`RayConfig` and ``docs/ray.md``).
        batch_size: Rows per generate call (hf).
        dtype: Compute dtype of the base model (hf, vllm; ``bfloat16`` on GPUs).
        device: Torch device (hf; vLLM picks its own).
        adapter_memory_mb: Memory budget for loaded adapters (hf).
        max_loras: Distinct adapters in one forward step (vllm).
        max_model_len: Longest prompt plus completion in tokens (vllm).
        gpu_memory_utilization: Share of GPU memory (CPU: of RAM) the engine
            may take; 0 for the backend's default (vllm).
        base_url: Server URL, empty for ``OPENAI_BASE_URL`` (openai).
        max_workers: Concurrent requests (openai).
    """

    backend: str = "hf"
    executor: str = "local"
    batch_size: int = 32
    dtype: str = "float32"
    device: str = "cpu"
    adapter_memory_mb: float = 2048.0
    max_loras: int = 16
    max_model_len: int = 2048
    gpu_memory_utilization: float = 0.0
    base_url: str = ""
    max_workers: int = 8

    def __post_init__(self):
        _require_registered(BACKENDS, self.backend, "inference.backend")
        _require(self.executor in EXECUTORS, "inference.executor", f"must be one of {EXECUTORS}")
        _require(self.batch_size >= 1, "inference.batch_size", "must be >= 1")
        _require(self.adapter_memory_mb > 0, "inference.adapter_memory_mb", "must be > 0")
        for key in ("max_loras", "max_model_len", "max_workers"):
            _require(getattr(self, key) >= 1, f"inference.{key}", "must be >= 1")
        _require(
            0 <= self.gpu_memory_utilization < 1,
            "inference.gpu_memory_utilization",
            "must be in [0, 1) (0: the backend's default)",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SandboxSettings:
    """Scoring sandboxes (see :class:`qd_llm.tasks.sandbox.SandboxConfig`).

    Attributes:
        workers: Concurrent sandboxes.
        isolation: ``auto``, ``bwrap``, ``unshare`` or ``none`` (unsafe).
        cpu_seconds: CPU limit per scoring.
        wall_seconds: Wall-clock limit per scoring.
    """

    workers: int = 2
    isolation: str = "auto"
    cpu_seconds: float = 10.0
    wall_seconds: float = 20.0

    def __post_init__(self):
        _require(self.workers >= 1, "sandbox.workers", "must be >= 1")
        _require(
            self.isolation in ("auto", "bwrap", "unshare", "none"),
            "sandbox.isolation",
            "must be auto, bwrap, unshare or none",
        )
        for key in ("cpu_seconds", "wall_seconds"):
            _require(getattr(self, key) > 0, f"sandbox.{key}", "must be > 0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RayConfig:
    """The Ray cluster used when ``inference.executor`` is ``ray`` (see ``docs/ray.md``).

    Attributes:
        address: ``local`` (start a private cluster on this machine), ``auto``
            (the cluster this machine joined with ``ray start``),
            ``ray://HOST:10001`` (Ray Client) or ``HOST:6379`` (the head's GCS).
        num_cpus: CPUs of a ``local`` cluster (0: all of this machine's).
        actors: Inference actors; each holds its own backend (a base model copy).
        gpus_per_actor: GPUs each inference actor reserves (0.5: two per GPU).
        cpus_per_actor: CPUs each actor, inference or scoring, reserves.
        sandbox_actors: Scoring actors; each runs ``sandbox.workers`` sandboxes.
    """

    address: str = "local"
    num_cpus: int = 0
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    sandbox_actors: int = 1

    def __post_init__(self):
        _require(
            self.address in ("local", "auto")
            or self.address.startswith("ray://")
            or ":" in self.address,
            "ray.address",
            f"must be local, auto, ray://HOST:PORT or HOST:PORT, got {self.address!r}",
        )
        _require(self.num_cpus >= 0, "ray.num_cpus", "must be >= 0 (0: all)")
        for key in ("actors", "sandbox_actors"):
            _require(getattr(self, key) >= 1, f"ray.{key}", "must be >= 1")
        for key in ("gpus_per_actor", "cpus_per_actor"):
            _require(getattr(self, key) >= 0, f"ray.{key}", "must be >= 0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NicheMapConfig:
    """The niche map over skill descriptors.

    Attributes:
        kind: ``grid`` or ``cvt``.
        dims: Descriptor dimensions.
        resolution: Cells per dimension (grid).
        cells: Centroids (cvt).
        projection: The scikit-learn projection of skill embeddings to descriptors, a
            name in :data:`qd_llm.qd.descriptors.PROJECTIONS` (``pca``, ``kernel_pca``,
            ``isomap``).
    """

    kind: str = "grid"
    dims: int = 2
    resolution: int = 10
    cells: int = 100
    projection: str = "pca"

    def __post_init__(self):
        _require(self.kind in MAP_KINDS, "niche_map.kind", f"must be one of {MAP_KINDS}")
        _require(
            self.projection in PROJECTIONS,
            "niche_map.projection",
            f"must be one of {tuple(PROJECTIONS)}, got {self.projection!r}",
        )
        for key in ("dims", "resolution", "cells"):
            _require(getattr(self, key) >= 1, f"niche_map.{key}", "must be >= 1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    """Where metrics rows are streamed besides ``metrics.jsonl`` (see :mod:`qd_llm.trackers`).

    Attributes:
        tensorboard: Write TensorBoard event files to ``RUN/tensorboard/``.
        wandb: Weights & Biases: ``off``, ``offline`` (files in ``RUN/wandb/``,
            no network) or ``online``.
        wandb_project: The W&B project runs are logged to.
    """

    tensorboard: bool = False
    wandb: str = "off"
    wandb_project: str = "qd-llm"

    def __post_init__(self):
        _require(self.wandb in WANDB_MODES, "tracking.wandb", f"must be one of {WANDB_MODES}")
        _require(bool(self.wandb_project), "tracking.wandb_project", "must not be empty")


def _default_operators() -> dict[str, dict]:
    return {
        "linear": {"parents": 2},
        "slerp": {"parents": 2, "t": 0.5},
        "svd_mutation": {"parents": 1, "scale": 0.1},
        "gaussian": {"parents": 1, "scale": 0.001},
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything a run needs; see the module docstring for keys and layering.

    Attributes:
        preset: The preset this config started from.
        seed: Master seed; every random choice of the run derives from it.
        base_model: Base model name or folder.
        embedder: Sentence embedder (the bundled ``all-minilm-l6-v2``, or a folder).
        out_dir: Where ``qd-llm run`` creates run directories.
        progress: Show progress bars.
        heatmap: Draw the niche-map heatmap when `qd-llm run` or `resume` ends.
        gibberish_filter: Exclude offspring whose completions are gibberish
            before selection: ``off`` (default, as in the reference),
            ``heuristic`` (no completion holds a word) or ``judge`` (a judge
            model behind the OpenAI-compatible endpoint of the environment
            decides; see :mod:`qd_llm.evaluation.judge`).
        operators: Operator name → parameters, plus ``parents`` (parents per child).
    """

    preset: str = "custom"
    seed: int = 0
    base_model: str = "smollm2-135m-instruct"
    embedder: str = "all-minilm-l6-v2"
    out_dir: str = "archives"
    progress: bool = True
    heatmap: bool = True
    gibberish_filter: str = "off"
    population: PopulationConfig = dataclasses.field(default_factory=PopulationConfig)
    genomes: GenomeConfig = dataclasses.field(default_factory=GenomeConfig)
    operators: dict = dataclasses.field(default_factory=_default_operators)
    tasks: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    decoding: DecodingConfig = dataclasses.field(default_factory=DecodingConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    sandbox: SandboxSettings = dataclasses.field(default_factory=SandboxSettings)
    ray: RayConfig = dataclasses.field(default_factory=RayConfig)
    niche_map: NicheMapConfig = dataclasses.field(default_factory=NicheMapConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)

    def __post_init__(self):
        _check_operators(self.operators)
        _require(
            self.gibberish_filter in GIBBERISH_FILTERS,
            "gibberish_filter",
            f"must be one of {GIBBERISH_FILTERS}",
        )
        _require(
            self.genomes.form == "lora" or self.inference.backend != "openai",
            "genomes.form",
            "full needs the hf or vllm backend (an OpenAI server cannot swap whole weights)",
        )

    def to_dict(self) -> dict:
        """The resolved config as plain JSON types (what ``config.json`` holds)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _check_operators(operators: Mapping) -> None:
    """Each operator table against its typed parameters, before anything runs."""
    _require(isinstance(operators, Mapping) and operators, "operators", "needs >= 1 operator")
    for name, table in operators.items():
        check_operator_table(name, table)


# The paper's loop scaled to a laptop CPU (≈8 minutes on 2 cores). Procedural
# tasks of one family differ only by level in their descriptions (cosine
# similarity ≈ 0.8), so the novelty filter admits up to similarity 0.9 and
# still rejects exact repeats (1.0). Adaptation evaluates every new task on the
# population and the elites, so each scientist attempt costs about as much as
# an offspring: 4 attempts per adaptation leave room for 12 generations.
DEMO = {
    "preset": "demo",
    "population": {"size": 8, "offspring": 6, "generations": 12},
    "genomes": {"rank": 8},
    "tasks": {
        "scientist": "procedural",
        "initial_tasks": 10,
        "instances_per_task": 3,
        "adapt_every": 2,
        "new_task_attempts": 4,
        "pool_capacity": 20,
        "novelty_threshold": 0.1,
    },
    "decoding": {"max_new_tokens": 20},
    "inference": {"batch_size": 32},
}

# The paper's form, stated rather than implied: genomes are whole fine-tuned
# checkpoints merged as task vectors (genomes.form=full). The reference evolves
# Qwen2.5-7B with three full-weight seed experts, Qwen2.5-7B-Instruct,
# Qwen2.5-Coder-7B-Instruct and Qwen2.5-Math-7B-Instruct (its configs/ac_dc.yaml),
# and a Qwen2.5-72B-Instruct scientist and judge. Those need a model hub and a
# GPU; this preset keeps that form on the base model that runs here, with its
# built-in seed experts: give the paper's models with --set base_model=...,
# genomes.seeds=[...] (local folders) and the endpoint variables.
PAPER = {
    "preset": "paper",
    "base_model": "smollm2-135m-instruct",
    "genomes": {"form": "full", "seeds": "builtin"},
    "population": {"size": 16, "offspring": 8, "generations": 50, "dns_k": 3},
    "tasks": {
        "scientist": "llm",
        "adapt_every": 5,
        "new_task_attempts": 150,
        "pool_capacity": 250,
        "easy_threshold": 0.5,
        "novelty_k": 1,
        "novelty_threshold": 0.3,
    },
    "decoding": {"max_new_tokens": 512, "temperature": 0.0},
}

# Issue 11's small setting where discovery can show on 2 CPU cores (one run
# ≈ 10 minutes): four single-skill seed experts whose skills do not interfere
# when merged, a pool of their four families, and held-out questions of those
# skills that no seed trained on. N merged children can then hold more skills
# than the best N seeds; whether evolution finds them is what an experiment
# over seeds measures (analysis/experiments/discovery.toml).
DISCOVERY_SKILLS = "counting,lists,strings,word_problem"
DISCOVERY = {
    "preset": "discovery",
    "population": {"size": 8, "offspring": 6, "generations": 8},
    "genomes": {"rank": 16, "seeds": f"builtin:{DISCOVERY_SKILLS}"},
    "operators": {"linear": {"parents": 2}},
    "tasks": {
        "scientist": "procedural",
        "families": ["counting", "lists", "string_transform", "word_problem"],
        "initial_tasks": 8,
        "instances_per_task": 4,
        "adapt_every": 2,
        "new_task_attempts": 6,
        "pool_capacity": 16,
        "novelty_threshold": 0.1,
    },
    "decoding": {"max_new_tokens": 20},
    "inference": {"batch_size": 32},
    "evaluation": {
        "heldout": f"seeds:{DISCOVERY_SKILLS}:40",
        "heldout_every": 4,
        "heldout_max_n": 3,
        "control_samples": 1,
    },
}

PRESETS: dict[str, dict] = {"demo": DEMO, "paper": PAPER, "discovery": DISCOVERY}


# --- building from nested dicts -------------------------------------------------------


def _coerce(value, annotation, key: str):
    """Checks ``value`` against a field annotation, converting lists to tuples."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _coerce(value, option, key)
            except QdLlmError:
                continue
        raise QdLlmError(f"config key '{key}': {value!r} is not a valid {annotation}")
    if origin is tuple:
        _require(isinstance(value, list | tuple), key, f"must be a list, got {value!r}")
        (item,) = {a for a in typing.get_args(annotation) if a is not Ellipsis}
        return tuple(_coerce(v, item, key) for v in value)
    if annotation is dict:
        _require(isinstance(value, Mapping), key, f"must be a table, got {value!r}")
        return dict(value)
    if annotation is bool:
        _require(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        _require(
            isinstance(value, int) and not isinstance(value, bool),
            key,
            f"must be an integer, got {value!r}",
        )
        return value
    if annotation is float:
        _require(
            isinstance(value, int | float) and not isinstance(value, bool),
            key,
            f"must be a number, got {value!r}",
        )
        return float(value)
    if annotation is str:
        _require(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {annotation}")


def _build(cls, data: Mapping, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise QdLlmError(f"unknown config key '{key}'; valid: {', '.join(fields)}")
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            _require(isinstance(value, Mapping), key, "must be a table")
            kwargs[name] = _build(annotation, value, f"{key}.")
        else:
            kwargs[name] = _coerce(value, annotation, key)
    return cls(**kwargs)


def _merge(base: dict, update: Mapping) -> dict:
    """Recursively merges ``update`` into a copy of ``base`` (tables merge, values replace)."""
    merged = dict(base)
    for key, value in update.items():
        # ``operators`` is replaced whole: naming a set of operators means exactly those.
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict) and key != "operators":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _nest(key: str, value) -> dict:
    """``"a.b.c", v`` → ``{"a": {"b": {"c": v}}}``."""
    head, _, rest = key.partition(".")
    return {head: _nest(rest, value) if rest else value}


def _nest_dotted(data: Mapping) -> dict:
    nested: dict = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and key != "operators":
            value = _nest_dotted(value)
        nested = _merge(nested, _nest(key, value))
    return nested


# ``--set`` shorthands for the keys that switch where a run executes.
OVERRIDE_SHORTHANDS = {"backend": "inference.backend", "executor": "inference.executor"}


def parse_override(item: str) -> dict:
    """Parses one ``key=value`` override into a nested dict.

    Keys in :data:`OVERRIDE_SHORTHANDS` (``backend=vllm``) stand for their
    full dotted key.

    Raises:
        QdLlmError: ``item`` has no ``=`` or an empty key.
    """
    key, sep, text = item.partition("=")
    key = OVERRIDE_SHORTHANDS.get(key.strip(), key.strip())
    if not sep or not key:
        raise QdLlmError(f"override {item!r} is not of the form key=value")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    if key.startswith("operators.") and key.count(".") == 2:
        _, name, param = key.split(".")
        return {"operators": {name: {param: value}}}
    return _nest(key, value)


def read_config_file(path: str | Path) -> dict:
    """Reads a JSON or TOML config file into a nested dict."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise QdLlmError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise QdLlmError(
            f"config file {path} is not valid {path.suffix[1:] or 'JSON'}: {e}"
        ) from None
    if not isinstance(data, dict):
        raise QdLlmError(f"config file {path} must hold a table at the top level")
    return _nest_dotted(data)


def load_config(
    *,
    preset: str | None = "demo",
    file: str | Path | None = None,
    overrides: Sequence[str] = (),
    data: Mapping | None = None,
) -> RunConfig:
    """Resolves a config from a preset, a file, a dict and ``key=value`` overrides.

    Args:
        preset: A name in :data:`PRESETS`, or None for the bare defaults.
        file: A JSON or TOML config file.
        overrides: ``key=value`` strings (dotted keys; values parsed as JSON when possible).
        data: A nested dict applied after the file (for programmatic use and resume).

    Returns:
        The validated, frozen config.

    Raises:
        QdLlmError: Unknown preset or key, or an invalid value; the message names it.
    """
    layers: list[Mapping] = []
    if preset is not None:
        if preset not in PRESETS:
            raise QdLlmError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
        layers.append(PRESETS[preset])
    if file is not None:
        layers.append(read_config_file(file))
    if data is not None:
        layers.append(_nest_dotted(data))
    operator_params = []
    for item in overrides:
        layer = parse_override(item)
        key = item.partition("=")[0].strip()
        # operators.<name>.<param>=v edits one operator; a whole ``operators`` table replaces.
        if key.startswith("operators.") and key.count(".") == 2:
            operator_params.append(layer["operators"])
        else:
            layers.append(layer)
    merged: dict = {"operators": _default_operators()}
    for layer in layers:
        merged = _merge(merged, layer)
    for edit in operator_params:
        ((name, params),) = edit.items()
        merged["operators"] = {
            **merged["operators"],
            name: {**merged["operators"].get(name, {}), **params},
        }
    return _build(RunConfig, merged)


def config_from_dict(data: Mapping) -> RunConfig:
    """Rebuilds a config saved by :meth:`RunConfig.to_dict` (no preset applied)."""
    return _build(RunConfig, data)
