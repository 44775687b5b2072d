"""A run's components, built from its config in one place.

:class:`~qd_llm.loop.Coevolution` builds what it is not given from these
functions, and the analysis commands (``coverage``, ``bestofn``) build only
what they need from them. To use your own component, build it yourself and
pass it to ``Coevolution`` (``backend=``, ``sandbox=``, ``embedder=``,
``scientist=``, ``is_gibberish=``); anything with the same methods works.

Example:
    >>> from qd_llm import components
    >>> from qd_llm.config import load_config
    >>> config = load_config(preset="demo")
    >>> decoding = components.make_decoding(config)
    >>> decoding.max_new_tokens
    20
"""

from collections.abc import Callable, Sequence

from qd_llm.config import RunConfig
from qd_llm.errors import QdLlmError
from qd_llm.inference.base import GenerationConfig

# LoRA ranks vLLM accepts as max_lora_rank.
_VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)


def backend_kwargs(config: RunConfig) -> dict:
    """Constructor arguments of the backend ``config.inference.backend`` names.

    Raises:
        QdLlmError: ``genomes.rank`` is larger than any LoRA rank vLLM accepts.
    """
    inference = config.inference
    if inference.backend == "hf":
        return dict(
            base_model=config.base_model,
            dtype=inference.dtype,
            device=inference.device,
            batch_size=inference.batch_size,
            adapter_memory_mb=inference.adapter_memory_mb,
        )
    if inference.backend == "vllm":
        max_rank = next((r for r in _VLLM_LORA_RANKS if r >= config.genomes.rank), None)
        if max_rank is None:
            raise QdLlmError(f"genomes.rank {config.genomes.rank} is above vLLM's largest, 512")
        return dict(
            base_model=config.base_model,
            dtype=inference.dtype,
            max_loras=inference.max_loras,
            max_lora_rank=max_rank,
            max_model_len=inference.max_model_len,
            gpu_memory_utilization=inference.gpu_memory_utilization or None,
            seed=config.seed,
        )
    # openai: children are bred during the run, so the server is told to load
    # each new genome's adapter folder by path (a shared file system).
    return dict(
        base_model=config.base_model,
        base_url=inference.base_url or None,
        max_workers=inference.max_workers,
        load_adapters=True,
    )


def make_backend(config: RunConfig):
    """The inference backend (:class:`~qd_llm.inference.base.Backend`) the config
    names, local or spread over Ray actors (``inference.executor``).

    A backend registered in :data:`~qd_llm.inference.registry.BACKENDS` by a
    plugin is built by its ``from_config(config)`` classmethod, in process.
    """
    inference = config.inference
    from qd_llm.inference.registry import BACKEND_NAMES, BACKENDS
    from qd_llm.inference.registry import make_backend as backend_named

    if inference.backend not in BACKEND_NAMES:
        # A registered third-party backend reads its own settings from the config.
        return BACKENDS.get(inference.backend).from_config(config)
    kwargs = backend_kwargs(config)
    if inference.executor == "ray":
        from qd_llm.executors.ray_executor import RayBackend

        r = config.ray
        return RayBackend(
            backend=inference.backend,
            backend_kwargs=kwargs,  # no progress bars in remote actors
            actors=r.actors,
            cpus_per_actor=r.cpus_per_actor,
            gpus_per_actor=r.gpus_per_actor,
            address=r.address,
            num_cpus=r.num_cpus or None,
        )
    if inference.backend in ("hf", "vllm"):
        kwargs["progress"] = config.progress
    return backend_named(inference.backend, **kwargs)


def make_sandbox(config: RunConfig):
    """The sandbox pool for task code (:class:`~qd_llm.tasks.sandbox.SandboxPool`,
    or its Ray counterpart)."""
    from qd_llm.tasks.sandbox import SandboxConfig, SandboxPool

    s = config.sandbox
    sandbox_config = SandboxConfig(
        isolation=s.isolation, cpu_seconds=s.cpu_seconds, wall_seconds=s.wall_seconds
    )
    if config.inference.executor == "ray":
        from qd_llm.executors.ray_executor import RaySandboxPool

        r = config.ray
        return RaySandboxPool(
            config=sandbox_config,
            workers=s.workers,
            actors=r.sandbox_actors,
            cpus_per_actor=r.cpus_per_actor,
            address=r.address,
            num_cpus=r.num_cpus or None,
        )
    from qd_llm.inference.openai_client import OpenAIChatClient
    from qd_llm.tasks.llm_judge import TaskJudge

    # Reference tasks' eval_with_llm_judge: the environment's endpoint, reached on first use.
    judge = TaskJudge(client_factory=OpenAIChatClient)
    return SandboxPool(config=sandbox_config, workers=s.workers, judge=judge)


def make_embedder(config: RunConfig):
    """The sentence embedder that places tasks in skill space (on CPU)."""
    from sentence_transformers import SentenceTransformer

    from qd_llm.models.resolve import resolve_embedder

    return SentenceTransformer(resolve_embedder(config.embedder), device="cpu")


def make_scientist(config: RunConfig, *, sandbox=None):
    """The task scientist ``tasks.scientist`` names in
    :data:`~qd_llm.tasks.scientist.SCIENTISTS`, built by its ``from_config``.

    Args:
        config: The run's config.
        sandbox: The run's sandbox pool; the LLM scientist tries its drafts there
            (with the run's limits and judge) instead of in a pool of its own.
    """
    from qd_llm.inference.openai_client import OpenAIChatClient
    from qd_llm.tasks.scientist import SCIENTISTS

    scientist_class = SCIENTISTS.get(config.tasks.scientist)
    return scientist_class.from_config(config, sandbox=sandbox, client_factory=OpenAIChatClient)


def make_interesting_check(config: RunConfig):
    """The reference's "is this task interestingly new" check, asked of the
    environment's judge endpoint, for runs with the LLM scientist (else None).

    Returns:
        A callable ``(candidate_info, nearest_infos) -> bool``
        (:class:`~qd_llm.tasks.archive.TaskArchive`'s ``is_interesting`` hook), or None.
    """
    if config.tasks.scientist != "llm":
        return None
    from qd_llm.inference.openai_client import OpenAIChatClient
    from qd_llm.tasks.llm_judge import InterestingCheck

    return InterestingCheck(client=OpenAIChatClient())


def make_gibberish_check(config: RunConfig) -> Callable[[Sequence[str]], bool]:
    """The check ``gibberish_filter`` names: True when a child's completions are
    gibberish (the heuristic one also stands in when the filter is off)."""
    from qd_llm.evaluation.evaluate import looks_like_gibberish

    if config.gibberish_filter != "judge":
        return looks_like_gibberish
    from qd_llm.evaluation.judge import GibberishJudge
    from qd_llm.inference.openai_client import OpenAIChatClient

    return GibberishJudge(client=OpenAIChatClient())


def make_decoding(config: RunConfig) -> GenerationConfig:
    """The run's decoding settings (greedy by default), seeded by the run's seed."""
    d = config.decoding
    return GenerationConfig(
        max_new_tokens=d.max_new_tokens,
        temperature=d.temperature,
        seed=config.seed,
        system_prompt=d.system_prompt or None,
    )
