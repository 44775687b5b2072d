"""The ``ray`` executor: generation and scoring on Ray actors, behind the local interfaces.

:class:`RayBackend` is a :class:`~qd_llm.inference.base.Backend` whose
``generate`` fans requests out to a pool of actors, each holding its own
backend (``hf`` by default; any name :func:`~qd_llm.inference.registry.make_backend`
knows, e.g. one vLLM engine per GPU actor). :class:`RaySandboxPool` has the
API of :class:`~qd_llm.tasks.sandbox.SandboxPool` and fans scorings out to
actors that each own a local ``SandboxPool`` (bubblewrap isolates task code
on every node, as it does locally). The loop and the evaluator are unchanged:
they see a backend and a sandbox pool.

* **Sharding.** Requests are grouped by genome and the groups cut into
  contiguous shards of similar size, one per actor, so each adapter is loaded
  by one actor only; scorings are cut into contiguous shards. Results come
  back in request order. Greedy outputs do not depend on the sharding;
  sampled ones do (each actor seeds its own batches).
* **Paths, not bytes.** Adapters and task directories cross the cluster as
  paths: the run directory must be on a file system every node sees (or, on
  a one-machine cluster, simply local). See ``docs/ray.md``.
* **Failures.** An error raised in an actor is re-raised here with its type
  (a :class:`~qd_llm.tasks.sandbox.SandboxError` stays one); an actor that
  dies makes every later call fail with a one-line
  :class:`~qd_llm.errors.QdLlmError`. Actors are not restarted.

Example::

    backend = RayBackend(
        backend="hf", backend_kwargs={"base_model": "smollm2-135m-instruct"}, actors=2
    )
    texts = backend.generate(requests, GenerationConfig(max_new_tokens=16))
    backend.close()
"""

import contextlib
import logging
import socket
from collections.abc import Sequence

from qd_llm.errors import QdLlmError
from qd_llm.inference.base import Backend, GenerationConfig, GenerationRequest
from qd_llm.tasks.sandbox import Instance, SandboxConfig, ScoreJob, ScoreResult

logger = logging.getLogger(__name__)

LOCAL = "local"  # the address that starts a private cluster on this machine
_INSTALL_HINT = 'pip install -e ".[ray]"'


def _ray():
    try:
        import ray
    except ImportError:
        raise QdLlmError(f"the ray executor needs Ray: install it with {_INSTALL_HINT}") from None
    return ray


def _last_line(error: Exception) -> str:
    """The telling line of a Ray error (they end with the cause after a long preamble)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def init_ray(*, address: str | None = LOCAL, num_cpus: int | None = None) -> bool:
    """Connects this process to Ray, unless it already is.

    Args:
        address: ``"local"`` or None: start a private cluster on this machine;
            ``"auto"``: the cluster this machine joined with ``ray start``;
            ``"ray://HOST:10001"``: a remote cluster through Ray Client;
            ``"HOST:6379"``: a cluster by its head's GCS address.
        num_cpus: CPUs of a private local cluster (None: all); ignored when
            connecting to an existing cluster.

    Returns:
        True when this call connected (so the caller should shut Ray down),
        False when Ray was already initialised.

    Raises:
        QdLlmError: Ray is not installed or the cluster cannot be reached.
    """
    ray = _ray()
    if ray.is_initialized():
        return False
    try:
        if address in (None, LOCAL):
            # The dashboard costs seconds and a process; a private cluster has no user for it.
            ray.init(address=LOCAL, num_cpus=num_cpus, include_dashboard=False)
        else:
            ray.init(address=address)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise QdLlmError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None
    return True


def contiguous_shards(sizes: Sequence[int], shards: int) -> list[range]:
    """Cuts consecutive groups into at most ``shards`` contiguous runs of similar size.

    A group goes, whole, to the shard its midpoint falls into, so runs stay in
    order and their total sizes differ by at most about one group.

    Args:
        sizes: Size of each group, in order, length G.
        shards: Most runs to make (>= 1).

    Returns:
        Non-empty ranges of group indices that cover ``range(G)`` in order.

    Example:
        >>> contiguous_shards([3, 1, 1, 3], 2)
        [range(0, 2), range(2, 4)]
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    total = sum(sizes)
    owners, done = [], 0
    for size in sizes:
        owners.append(min(shards - 1, int((done + size / 2) * shards / total)) if total else 0)
        done += size
    runs, start = [], 0
    for i in range(1, len(owners) + 1):
        if i == len(owners) or owners[i] != owners[start]:
            runs.append(range(start, i))
            start = i
    return runs


# --- actors (plain classes; ``ray.remote`` wraps them when a pool starts) ---------------


class _Actor:
    def node(self) -> str:
        """The host the actor runs on (also proves it has started)."""
        return socket.gethostname()


class _BackendActor(_Actor):
    """One backend in a Ray worker process."""

    def __init__(self, name: str, kwargs: dict):
        from qd_llm.inference.registry import make_backend

        self.backend = make_backend(name, **kwargs)

    def generate(self, requests: list[GenerationRequest], config: GenerationConfig) -> list[str]:
        return self.backend.generate(requests, config)

    def close(self) -> None:
        self.backend.close()


class _SandboxActor(_Actor):
    """One local :class:`~qd_llm.tasks.sandbox.SandboxPool` in a Ray worker process."""

    def __init__(self, config: SandboxConfig, workers: int):
        from qd_llm.tasks.sandbox import SandboxPool

        self.pool = SandboxPool(config=config, workers=workers)

    def load_instances(self, task_dir) -> dict[str, Instance]:
        return self.pool.load_instances(task_dir)

    def score_many(self, jobs: list[ScoreJob]) -> list[ScoreResult]:
        return self.pool.score_many(jobs)

    def close(self) -> None:
        self.pool.close()


class _ActorPool:
    """Starts, calls and stops ``actors`` copies of one actor class.

    Args:
        actor_class: The plain class to run as an actor.
        args: Its constructor arguments.
        role: What the actors do, for messages (``inference``, ``scoring``).
        actors: How many.
        cpus_per_actor: CPUs each reserves.
        gpus_per_actor: GPUs each reserves (fractions share a GPU).
        address: See :func:`init_ray`.
        num_cpus: See :func:`init_ray`.
        startup_seconds: How long the actors may take to be placed and built.
    """

    def __init__(
        self,
        actor_class: type,
        args: tuple,
        *,
        role: str,
        actors: int,
        cpus_per_actor: float,
        gpus_per_actor: float,
        address: str | None,
        num_cpus: int | None,
        startup_seconds: float,
    ):
        if actors < 1:
            raise QdLlmError(f"the Ray {role} pool needs >= 1 actor, got {actors}")
        if cpus_per_actor < 0 or gpus_per_actor < 0:
            raise QdLlmError(f"Ray {role} actors cannot reserve negative CPUs or GPUs")
        self.role = role
        self._owns_ray = init_ray(address=address, num_cpus=num_cpus)
        ray = _ray()
        remote = ray.remote(actor_class).options(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)
        self.actors = [remote.remote(*args) for _ in range(actors)]
        try:
            self.nodes = ray.get([a.node.remote() for a in self.actors], timeout=startup_seconds)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise QdLlmError(
                f"{actors} Ray {role} actors ({cpus_per_actor} CPUs, {gpus_per_actor} GPUs each) "
                f"were not up within {startup_seconds:g} s; the cluster has "
                f"{ray.cluster_resources()}"
            ) from None
        except ray.exceptions.RayActorError as e:
            self.close()
            raise QdLlmError(f"a Ray {role} actor failed to start: {_last_line(e)}") from None
        logger.info("%d Ray %s actors on %s", actors, role, ", ".join(sorted(set(self.nodes))))

    def call(self, method: str, shards: Sequence[tuple]) -> list:
        """Calls ``method`` on actor i with ``shards[i]`` as arguments; results in order."""
        self.check_open()
        actors = self.actors[: len(shards)]
        calls = zip(actors, shards, strict=True)
        return self._get([getattr(actor, method).remote(*args) for actor, args in calls])

    def call_on(self, index: int, method: str, *args):
        """Calls ``method(*args)`` on actor ``index % len(actors)``."""
        self.check_open()
        actor = self.actors[index % len(self.actors)]
        return self._get([getattr(actor, method).remote(*args)])[0]

    def check_open(self) -> None:
        """Raises a one-line error once the pool is closed."""
        if not self.actors:
            raise QdLlmError(f"the Ray {self.role} pool is closed")

    def _get(self, refs: list) -> list:
        ray = _ray()
        try:
            return ray.get(refs)
        except ray.exceptions.RayActorError as e:
            raise QdLlmError(f"a Ray {self.role} actor died: {_last_line(e)}") from None
        except ray.exceptions.RayTaskError as e:
            if e.cause is None:
                raise
            # Keep the remote error's type (callers catch e.g. SandboxError).
            raise e.cause from e

    def close(self) -> None:
        """Stops the actors, then Ray if this pool started it. Safe to call twice."""
        ray = _ray()
        if ray.is_initialized() and self.actors:
            # Let backends release engines and sandboxes cleanly, briefly; a dead or
            # stuck actor is killed below all the same.
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get([a.close.remote() for a in self.actors], timeout=30)
            for actor in self.actors:
                ray.kill(actor)
        self.actors = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False


# --- the public pools --------------------------------------------------------------------


class RayBackend(Backend):
    """A pool of Ray actors, each with its own backend, behind one ``generate``.

    Args:
        backend: The actors' backend name (``hf``, ``vllm``, ``openai``).
        backend_kwargs: Its constructor arguments (``base_model``, ``device``, ...).
        actors: Number of actors, i.e. of backend copies (each loads the base model).
        cpus_per_actor: CPUs each actor reserves.
        gpus_per_actor: GPUs each actor reserves; 0.5 puts two actors on a GPU.
            Set ``backend_kwargs["device"]="cuda"`` for ``hf`` on GPUs.
        address: The cluster (see :func:`init_ray`).
        num_cpus: CPUs of a private local cluster (None: all).
        startup_seconds: How long the actors may take to start and load the model.

    Raises:
        QdLlmError: Ray is missing, the cluster is unreachable, or an actor
            could not be placed or built.
    """

    def __init__(
        self,
        *,
        backend: str = "hf",
        backend_kwargs: dict | None = None,
        actors: int = 1,
        cpus_per_actor: float = 1.0,
        gpus_per_actor: float = 0.0,
        address: str | None = LOCAL,
        num_cpus: int | None = None,
        startup_seconds: float = 600.0,
    ):
        from qd_llm.models.resolve import DEFAULT_BASE_MODEL

        self.backend_kwargs = dict(backend_kwargs or {})
        self.base_model_name = self.backend_kwargs.get("base_model", DEFAULT_BASE_MODEL)
        self._pool = _ActorPool(
            _BackendActor,
            (backend, self.backend_kwargs),
            role="inference",
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            gpus_per_actor=gpus_per_actor,
            address=address,
            num_cpus=num_cpus,
            startup_seconds=startup_seconds,
        )

    @property
    def nodes(self) -> list[str]:
        """The host of each actor."""
        return list(self._pool.nodes)

    def generate(
        self, requests: Sequence[GenerationRequest], config: GenerationConfig
    ) -> list[str]:
        """Generates one completion per request, each genome's rows on one actor.

        Raises:
            QdLlmError: An actor died; the pool cannot be used any more.
        """
        self._pool.check_open()
        if not requests:
            return []
        by_genome: dict[str | None, list[int]] = {}
        for i, request in enumerate(requests):
            by_genome.setdefault(request.genome_id, []).append(i)
        groups = list(by_genome.values())
        rows = [
            [i for g in run for i in groups[g]]
            for run in contiguous_shards([len(g) for g in groups], len(self._pool.actors))
        ]
        texts = self._pool.call("generate", [([requests[i] for i in r], config) for r in rows])
        outputs: list[str] = [""] * len(requests)
        for shard_rows, shard_texts in zip(rows, texts, strict=True):
            for i, text in zip(shard_rows, shard_texts, strict=True):
                outputs[i] = text
        return outputs

    def close(self) -> None:
        """Stops the actors (and Ray, if this backend started it)."""
        self._pool.close()


class RaySandboxPool:
    """:class:`~qd_llm.tasks.sandbox.SandboxPool`'s API over Ray actors.

    Each actor owns a local ``SandboxPool`` of ``workers`` sandboxes, so up to
    ``actors * workers`` scorings run at once, on whichever nodes hold the actors.

    Example::

        with RaySandboxPool(config=SandboxConfig(), workers=2, actors=4) as pool:
            results = pool.score_many(jobs)

    Args:
        config: Isolation and limits (applied on every node).
        workers: Sandboxes per actor.
        actors: Number of actors.
        cpus_per_actor: CPUs each actor reserves.
        address: The cluster (see :func:`init_ray`).
        num_cpus: CPUs of a private local cluster (None: all).
        startup_seconds: How long the actors may take to start.
    """

    def __init__(
        self,
        *,
        config: SandboxConfig,
        workers: int,
        actors: int = 1,
        cpus_per_actor: float = 1.0,
        address: str | None = LOCAL,
        num_cpus: int | None = None,
        startup_seconds: float = 120.0,
    ):
        if workers < 1:
            raise QdLlmError(f"sandbox workers must be >= 1, got {workers}")
        self.config = config
        self.workers = workers
        self._pool = _ActorPool(
            _SandboxActor,
            (config, workers),
            role="scoring",
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            gpus_per_actor=0.0,
            address=address,
            num_cpus=num_cpus,
            startup_seconds=startup_seconds,
        )
        self._next_actor = 0

    def __enter__(self) -> "RaySandboxPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stops the actors and their sandboxes. Safe to call twice."""
        self._pool.close()

    def load_instances(self, task_dir) -> dict[str, Instance]:
        """Returns the task's instances (see :func:`qd_llm.tasks.sandbox.load_instances`).

        Raises:
            SandboxError: The task code failed; the message says why.
        """
        # Round robin: successive tasks load on different actors.
        self._next_actor += 1
        return self._pool.call_on(self._next_actor - 1, "load_instances", task_dir)

    def score(self, job: ScoreJob) -> ScoreResult:
        """Scores one job; failures are 0.0 with a reason."""
        return self.score_many([job])[0]

    def score_many(self, jobs: Sequence[ScoreJob], *, progress: bool = False) -> list[ScoreResult]:
        """Scores jobs on the actors' sandboxes, in contiguous shards.

        Args:
            jobs: The scorings, length N.
            progress: Accepted for API parity; actors score without a bar.

        Returns:
            N results, in the order of ``jobs``.
        """
        del progress  # progress bars of remote actors would interleave in the driver's log
        if not jobs:
            return []
        runs = contiguous_shards([1] * len(jobs), len(self._pool.actors))
        results = self._pool.call("score_many", [([jobs[i] for i in run],) for run in runs])
        return [result for shard in results for result in shard]
