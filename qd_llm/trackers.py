"""Metrics rows streamed to experiment trackers: TensorBoard and Weights & Biases.

The run directory's ``metrics.jsonl`` stays the record; trackers are a live
view of it. The loop hands every row it appends to :meth:`Trackers.log`; each
tracker gets the row's numeric fields as scalars (:func:`scalars`) at step
``generation``. Which trackers run is the ``tracking`` config section:

* ``tracking.tensorboard = true``: event files in ``RUN/tensorboard/``
  (``tensorboard --logdir RUN/tensorboard``).
* ``tracking.wandb = "offline"``: a Weights & Biases run in ``RUN/wandb/``
  with no network (``wandb sync RUN/wandb/offline-run-*`` uploads it later);
  ``"online"`` logs to the W&B server the environment names.

Both need the ``tracking`` extra (``pip install -e ".[tracking]"``). A run that
is resumed after a kill logs its redone generations again at the same steps.
"""

import hashlib
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

from qd_llm.errors import QdLlmError

TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
_INSTALL_HINT = 'install it with pip install -e ".[tracking]"'


def _leaves(value, key: str) -> Iterator[tuple[str, float]]:
    if isinstance(value, bool):
        yield key, float(value)
    elif isinstance(value, int | float):
        if math.isfinite(value):
            yield key, float(value)
    elif isinstance(value, Mapping):
        for name, item in value.items():
            yield from _leaves(item, f"{key}/{name}" if key else str(name))
    elif (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(item, int | float) and not isinstance(item, bool) for item in value)
    ):
        # The rows' only numeric lists are coverage@N curves (held-out coverage@1..N).
        for n, item in enumerate(value, start=1):
            yield from _leaves(item, f"{key}@{n}")


def scalars(row: Mapping) -> dict[str, float]:
    """The numeric fields of a metrics row as ``{"a/b/c": value}``.

    Nested tables become ``/``-joined names, booleans 0/1, lists of numbers
    (coverage@N curves) one scalar per entry named ``NAME@1``, ``NAME@2``...;
    strings, lists of ids, ``None`` and non-finite numbers are skipped, and so
    is ``generation`` (it is the step).

    Example:
        >>> scalars({"generation": 2, "coverage": 0.5, "population": ["a1"],
        ...          "heldout": {"test": {"evolved": [0.25, 0.5]}}})
        {'coverage': 0.5, 'heldout/test/evolved@1': 0.25, 'heldout/test/evolved@2': 0.5}
    """
    return dict(_leaves({k: v for k, v in row.items() if k != "generation"}, ""))


class Tracker(Protocol):
    """Something that receives metrics rows."""

    def log(self, values: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    """Scalars written as TensorBoard event files.

    Args:
        log_dir: The folder of the event files.
    """

    def __init__(self, *, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise QdLlmError(f"tracking.tensorboard needs tensorboard: {_INSTALL_HINT}") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        # A row per generation: flush so a live TensorBoard (or a kill) sees it.
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """Scalars logged to a Weights & Biases run.

    The W&B run id is derived from the run directory's absolute path, so a
    resumed run continues the same W&B run.

    Args:
        run_dir: The run directory (W&B files go to ``run_dir/wandb``).
        mode: ``offline`` (no network; ``wandb sync`` later) or ``online``.
        project: The W&B project.
        config: The run's resolved config, stored with the W&B run.
    """

    def __init__(self, *, run_dir: Path, mode: str, project: str, config: dict):
        try:
            import wandb
        except ImportError:
            raise QdLlmError(f"tracking.wandb needs wandb: {_INSTALL_HINT}") from None
        run_dir = Path(run_dir).resolve()
        (run_dir / WANDB_DIR).mkdir(exist_ok=True)
        try:
            self.run = wandb.init(
                project=project,
                name=run_dir.name,
                id=hashlib.sha256(str(run_dir).encode()).hexdigest()[:16],
                resume="allow",
                dir=str(run_dir),
                mode=mode,
                config=config,
                settings=wandb.Settings(silent=True, disable_git=True),
            )
        except (wandb.Error, OSError) as e:
            raise QdLlmError(f"cannot start the W&B run ({mode}): {e}") from None

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        import wandb

        self.run.finish()
        # finish() can return before W&B's service has written the run's file;
        # teardown waits for it (the next run of this process starts a new service).
        wandb.teardown()


class Trackers:
    """The trackers a run's ``tracking`` config asks for (possibly none).

    Args:
        trackers: The trackers every row goes to.
    """

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    @classmethod
    def for_run(cls, tracking, run_dir: Path, config: dict) -> "Trackers":
        """The trackers of a :class:`~qd_llm.config.TrackingConfig` for a run directory."""
        trackers: list[Tracker] = []
        if tracking.tensorboard:
            trackers.append(TensorBoardTracker(log_dir=Path(run_dir) / TENSORBOARD_DIR))
        if tracking.wandb != "off":
            trackers.append(
                WandbTracker(
                    run_dir=run_dir,
                    mode=tracking.wandb,
                    project=tracking.wandb_project,
                    config=config,
                )
            )
        return cls(trackers)

    def log(self, row: Mapping) -> None:
        """Sends a metrics row's scalars to every tracker at step ``row["generation"]``."""
        if not self.trackers:
            return
        values = scalars(row)
        for tracker in self.trackers:
            tracker.log(values, int(row["generation"]))

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
