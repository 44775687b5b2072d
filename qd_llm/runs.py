"""The run directory: the contract other tools read, and exact resume.

Layout::

    RUN/
      config.json        the resolved config (qd_llm.config.RunConfig.to_dict)
      metrics.jsonl      one JSON object per generation (see below)
      evals.jsonl        one record per (genome, task, instance) answer and score
      instances/         each task's instances as computed in the sandbox (JSON)
      genomes/           the GenomeStore: one PEFT adapter folder per genome
      tasks/             every task directory ever written (AC/DC layout)
      checkpoint.pkl     loop state after the last finished generation
      figures/           niche_map.png at the end of the run

Metrics rows hold deterministic fields (``generation``, ``population_size``,
``num_tasks``, ``best_fitness``, ``mean_fitness``, ``coverage``,
``niche_coverage``, ``qd_score``, operator and task-pool statistics) and the
wall-time fields listed in :data:`TIMING_KEYS` (``seconds`` and the per-phase
``timings``); :func:`without_timings` drops the latter, and what is left is
identical between an interrupted-and-resumed run and an uninterrupted one with
the same seed.

Consistency under ``kill -9``: a generation appends its metrics row and its
evaluation records first and then atomically replaces ``checkpoint.pkl``,
which records the byte sizes of ``metrics.jsonl`` and ``evals.jsonl`` it
covers. Resuming truncates both files to those sizes, so a generation that
was cut short leaves no trace and is recomputed identically.
"""

import dataclasses
import json
import os
import pickle
from pathlib import Path

from qd_llm import atomic
from qd_llm.errors import QdLlmError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
EVALS_FILE = "evals.jsonl"
CHECKPOINT_FILE = "checkpoint.pkl"
GENOMES_DIR = "genomes"
TASKS_DIR = "tasks"
FIGURES_DIR = "figures"
CHECKPOINT_VERSION = 1

#: Metrics keys that hold wall time and so differ between identical runs.
TIMING_KEYS = ("seconds", "timings")


def without_timings(row: dict) -> dict:
    """A metrics row without its wall-time fields."""
    return {k: v for k, v in row.items() if k not in TIMING_KEYS}


@dataclasses.dataclass
class Checkpoint:
    """The loop state after a finished generation.

    Attributes:
        generation: The last finished generation.
        state: The loop's state (population, archives, bandit, RNG states...).
        metrics_bytes: Size of ``metrics.jsonl`` this checkpoint covers.
        evals_bytes: Size of ``evals.jsonl`` this checkpoint covers.
        version: Checkpoint format version.
    """

    generation: int
    state: dict
    metrics_bytes: int
    evals_bytes: int
    version: int = CHECKPOINT_VERSION


class RunDir:
    """A run directory (see the module docstring).

    Args:
        path: The directory.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, config: dict) -> "RunDir":
        """Makes a new run directory holding ``config.json``.

        Raises:
            QdLlmError: ``path`` exists and is not empty.
        """
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise QdLlmError(f"run directory {path} is not empty; use `qd-llm resume {path}`")
        path.mkdir(parents=True, exist_ok=True)
        # Task code runs as an unprivileged uid in the sandbox and must read the tasks.
        path.chmod(0o755)
        run = cls(path)
        atomic.write_json(run.config_path, config)
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """Opens an existing run directory.

        Raises:
            QdLlmError: ``path`` has no ``config.json``.
        """
        run = cls(path)
        if not run.config_path.exists():
            raise QdLlmError(f"{path} is not a run directory: no {CONFIG_FILE}")
        return run

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def evals_path(self) -> Path:
        return self.path / EVALS_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def genomes_dir(self) -> Path:
        return self.path / GENOMES_DIR

    @property
    def tasks_dir(self) -> Path:
        return self.path / TASKS_DIR

    @property
    def figures_dir(self) -> Path:
        return self.path / FIGURES_DIR

    def config(self) -> dict:
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    # --- metrics -------------------------------------------------------------------

    def append_metrics(self, row: dict) -> None:
        """Appends one generation's row to ``metrics.jsonl`` (fsynced)."""
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def metrics(self) -> list[dict]:
        """Every complete metrics row (a torn last line is skipped)."""
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return rows

    # --- checkpoints ---------------------------------------------------------------

    def _size(self, path: Path) -> int:
        return path.stat().st_size if path.exists() else 0

    def save_checkpoint(self, generation: int, state: dict) -> None:
        """Atomically replaces ``checkpoint.pkl`` with the state after ``generation``."""
        checkpoint = Checkpoint(
            generation=generation,
            state=state,
            metrics_bytes=self._size(self.metrics_path),
            evals_bytes=self._size(self.evals_path),
        )
        atomic.write_bytes(self.checkpoint_path, pickle.dumps(checkpoint, protocol=5))

    def check_logs(self, *, metrics_bytes: int, evals_bytes: int) -> None:
        """Checks that the logs still hold every byte a checkpoint covers.

        A log shorter than that lost finished generations (a copy cut short, a
        torn last line); appending to it would glue new rows onto a torn one.

        Raises:
            QdLlmError: ``metrics.jsonl`` or ``evals.jsonl`` is shorter than covered.
        """
        for path, size in ((self.metrics_path, metrics_bytes), (self.evals_path, evals_bytes)):
            if self._size(path) < size:
                raise QdLlmError(
                    f"{path} holds {self._size(path)} bytes but the checkpoint covers {size}: "
                    "it was cut short after the run wrote it; restore it from a copy of the run"
                )

    def load_checkpoint(self) -> Checkpoint | None:
        """The last checkpoint, with the metrics and evals files cut back to it.

        Returns None (and empties both files) when no generation finished yet.
        """
        if not self.checkpoint_path.exists():
            checkpoint = None
            metrics_bytes = evals_bytes = 0
        else:
            checkpoint = pickle.loads(self.checkpoint_path.read_bytes())
            if getattr(checkpoint, "version", None) != CHECKPOINT_VERSION:
                raise QdLlmError(f"{self.checkpoint_path} has an unsupported format version")
            metrics_bytes, evals_bytes = checkpoint.metrics_bytes, checkpoint.evals_bytes
            self.check_logs(metrics_bytes=metrics_bytes, evals_bytes=evals_bytes)
        for path, size in ((self.metrics_path, metrics_bytes), (self.evals_path, evals_bytes)):
            if path.exists() and path.stat().st_size > size:
                with open(path, "r+b") as f:
                    f.truncate(size)
                    os.fsync(f.fileno())
        return checkpoint


def format_status(run: RunDir) -> str:
    """One screen about a run: progress, population, coverage, fitness, pool, ETA."""
    config = run.config()
    total = config["population"]["generations"]
    rows = run.metrics()
    lines = [f"run        {run.path}", f"preset     {config.get('preset')}  seed {config['seed']}"]
    if not rows:
        lines.append("generation not started (no finished generation yet)")
        return "\n".join(lines)
    last = rows[-1]
    done = last["generation"]
    seconds = [r.get("seconds", 0.0) for r in rows]
    per_generation = sum(seconds[1:]) / max(len(seconds) - 1, 1) if len(rows) > 1 else seconds[0]
    remaining = max(total - done, 0)
    state = "finished" if remaining == 0 else f"ETA {remaining * per_generation / 60:.1f} min"
    lines += [
        f"generation {done}/{total}  ({state})",
        f"population {last['population_size']}",
        f"tasks      {last['num_tasks']} active",
        f"coverage   {last['coverage']:.3f} of active tasks solved by the population",
        f"fitness    best {last['best_fitness']:.3f}  mean {last['mean_fitness']:.3f}",
        f"niche map  coverage {last['niche_coverage']:.3f}  QD score {last['qd_score']:.3f}",
        f"elapsed    {sum(seconds) / 60:.1f} min",
    ]
    heatmap = run.figures_dir / "niche_map.png"
    if heatmap.exists():
        lines.append(f"heatmap    {heatmap}")
    return "\n".join(lines)
