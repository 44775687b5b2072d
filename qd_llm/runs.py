"""The run directory: the contract other tools read, and exact resume.

Layout::

    RUN/
      config.json        the resolved config (qd_llm.config.RunConfig.to_dict)
      metrics.jsonl      one JSON object per generation (see below)
      evals.jsonl        one record per (genome, task, instance) answer and score
                         (:class:`EvalLog`)
      instances/         each task's instances as computed in the sandbox (JSON)
      genomes/           the GenomeStore: one PEFT adapter folder per genome
      tasks/             every task directory ever written (AC/DC layout)
      checkpoint.npz     loop state after the last finished generation (data only)
      figures/           niche_map.png at the end of the run
      heldout/<set>/     a held-out task set's split and evaluation cache, its
                         ``*.jsonl`` logs cut back on resume (:func:`cut_back_logs`)

Metrics rows hold deterministic fields (``generation``, ``population_size``,
``num_tasks``, ``best_fitness``, ``mean_fitness``, ``coverage``,
``niche_coverage``, ``qd_score``, operator and task-pool statistics) and the
wall-time fields listed in :data:`TIMING_KEYS` (``seconds`` and the per-phase
``timings``); :func:`without_timings` drops the latter, and what is left is
identical between an interrupted-and-resumed run and an uninterrupted one with
the same seed.

Consistency under ``kill -9``: a generation appends its metrics row and its
evaluation records first and then atomically replaces ``checkpoint.npz``,
which records the byte sizes of ``metrics.jsonl`` and ``evals.jsonl`` it
covers. Resuming truncates both files to those sizes, so a generation that
was cut short leaves no trace and is recomputed identically.

The checkpoint is pure data, so opening a run directory someone else wrote
never runs code: a NumPy ``.npz`` archive (one file, written atomically) whose
member ``document`` is a UTF-8 JSON document (as a ``uint8`` array) and whose
other members are the numeric arrays the document refers to as
``{"__array__": NAME}``. It is read with ``allow_pickle=False``. The document
holds ``format`` (:data:`CHECKPOINT_FORMAT`) and ``version``
(:data:`CHECKPOINT_VERSION`), checked before anything else is used, then
``generation``, ``metrics_bytes``, ``evals_bytes`` and the loop's ``state``.
A damaged, foreign or other-version checkpoint is refused with one
:class:`~qd_llm.errors.QdLlmError` line and nothing on disk changes. Runs from
older versions hold ``checkpoint.pkl`` (a pickle); it is refused, never loaded.
"""

import contextlib
import dataclasses
import io
import json
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from qd_llm import atomic
from qd_llm.errors import QdLlmError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
EVALS_FILE = "evals.jsonl"
INSTANCES_DIR = "instances"
CHECKPOINT_FILE = "checkpoint.npz"
#: The pickled checkpoint of earlier versions: refused, never unpickled.
LEGACY_CHECKPOINT_FILE = "checkpoint.pkl"
GENOMES_DIR = "genomes"
TASKS_DIR = "tasks"
FIGURES_DIR = "figures"
#: Held-out task sets and their evaluation caches (``heldout/<key>/evals.jsonl``...).
HELDOUT_DIR = "heldout"
CHECKPOINT_FORMAT = "qd_llm-checkpoint"
CHECKPOINT_VERSION = 2
# The npz member holding the JSON document, and the key marking an array reference in it.
_DOCUMENT = "document"
_ARRAY = "__array__"
_ZIP_MAGIC = b"PK\x03\x04"

#: Metrics keys that hold wall time and so differ between identical runs.
TIMING_KEYS = ("seconds", "timings")


def without_timings(row: dict) -> dict:
    """A metrics row without its wall-time fields."""
    return {k: v for k, v in row.items() if k not in TIMING_KEYS}


def _append_lines(path: Path, rows: Sequence[dict]) -> None:
    """Appends rows as JSON lines in one write and one fsync, so a kill tears at most
    the last batch (a checkpoint records the size it covers; resume cuts the rest)."""
    text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class EvalLog:
    """An ``evals.jsonl``: one JSON record per (genome, task, instance) answer and score.

    A run's log is :attr:`RunDir.evals`; held-out and coverage caches keep one
    each in their own folder.

    Args:
        path: The ``evals.jsonl`` file (need not exist yet).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, records: Sequence[dict]) -> None:
        """Appends a batch of records (one write, fsynced)."""
        _append_lines(self.path, records)

    def records(self, *, covered_bytes: int | None = None) -> list[dict]:
        """Every record, or those in the first ``covered_bytes`` bytes (a checkpoint's).

        Raises:
            json.JSONDecodeError: A line is not JSON (the log was torn and not cut back).
        """
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            text = f.read(-1 if covered_bytes is None else covered_bytes).decode("utf-8")
        return [json.loads(line) for line in text.splitlines()]


@dataclasses.dataclass
class Checkpoint:
    """The loop state after a finished generation.

    Attributes:
        generation: The last finished generation.
        state: The loop's state (population, archives, bandit, RNG states...) as
            JSON types and numpy arrays of numbers.
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
    def evals(self) -> EvalLog:
        """The run's evaluation log."""
        return EvalLog(self.evals_path)

    @property
    def instances_dir(self) -> Path:
        return self.path / INSTANCES_DIR

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
        _append_lines(self.metrics_path, [row])

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
        """Atomically replaces ``checkpoint.npz`` with the state after ``generation``.

        Args:
            generation: The last finished generation.
            state: JSON types (str keys) and numpy arrays of numbers; tuples come back as lists.
        """
        checkpoint = Checkpoint(
            generation=generation,
            state=state,
            metrics_bytes=self._size(self.metrics_path),
            evals_bytes=self._size(self.evals_path),
        )
        atomic.write_bytes(self.checkpoint_path, encode_checkpoint(checkpoint))

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

    def read_checkpoint(self) -> Checkpoint | None:
        """The last checkpoint, read and validated without changing anything on disk.

        Returns None when no generation finished yet.

        Raises:
            QdLlmError: The checkpoint is damaged, foreign, of another version, or
                the run was written by an older qd_llm (``checkpoint.pkl``).
        """
        if not self.checkpoint_path.exists():
            if (self.path / LEGACY_CHECKPOINT_FILE).exists():
                raise QdLlmError(
                    f"run {self.path} was written by an older qd_llm ({LEGACY_CHECKPOINT_FILE}, "
                    "a pickle, which this version never loads); open or resume it with the "
                    "qd_llm version that wrote it"
                )
            return None
        try:
            data = self.checkpoint_path.read_bytes()
        except OSError as error:
            raise QdLlmError(f"cannot read {self.checkpoint_path}: {error.strerror}") from error
        return decode_checkpoint(data, source=self.checkpoint_path)

    def cut_back(self, checkpoint: Checkpoint | None) -> None:
        """Truncates ``metrics.jsonl`` and ``evals.jsonl`` to what ``checkpoint`` covers.

        ``None`` (no finished generation) empties both.
        """
        metrics_bytes = evals_bytes = 0
        if checkpoint is not None:
            metrics_bytes, evals_bytes = checkpoint.metrics_bytes, checkpoint.evals_bytes
            self.check_logs(metrics_bytes=metrics_bytes, evals_bytes=evals_bytes)
        for path, size in ((self.metrics_path, metrics_bytes), (self.evals_path, evals_bytes)):
            if path.exists() and path.stat().st_size > size:
                with open(path, "r+b") as f:
                    f.truncate(size)
                    os.fsync(f.fileno())

    def load_checkpoint(self) -> Checkpoint | None:
        """The last checkpoint, with the metrics and evals files cut back to it.

        Returns None (and empties both files) when no generation finished yet.

        Raises:
            QdLlmError: See :meth:`read_checkpoint`; then nothing was truncated.
        """
        checkpoint = self.read_checkpoint()
        self.cut_back(checkpoint)
        return checkpoint

    @contextlib.contextmanager
    def restoring_state(self) -> Iterator[None]:
        """Turns errors from rebuilding objects out of the checkpoint's state into one line.

        A checkpoint of the right format and version can still hold a state that
        does not fit (edited by hand, or written by a development version).
        """
        try:
            yield
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
            raise QdLlmError(
                f"{self.checkpoint_path} holds a loop state this qd_llm cannot restore "
                f"({type(error).__name__}: {error})"
            ) from error


def log_sizes(root: str | Path) -> dict[str, int]:
    """``{path relative to root: size}`` of every ``*.jsonl`` log under ``root``.

    The loop records these in its checkpoint, so a resume can drop what an
    interrupted generation appended (:func:`cut_back_logs`).
    """
    root = Path(root)
    if not root.is_dir():
        return {}
    return {
        str(path.relative_to(root)): path.stat().st_size
        for path in sorted(root.rglob("*.jsonl"))
        if path.is_file() and not path.is_symlink()
    }


def cut_back_logs(root: str | Path, sizes: Mapping[str, int]) -> None:
    """Truncates every ``*.jsonl`` log under ``root`` to its size in ``sizes`` (0
    when absent), so an evaluator started afterwards reads only whole batches.

    Only files found under ``root`` are touched (never a path named in
    ``sizes``), and links are skipped: a checkpoint cannot point this elsewhere.
    """
    if not isinstance(sizes, Mapping):
        raise QdLlmError(f"held-out log sizes must be a table, got {type(sizes).__name__}")
    for name, size in log_sizes(root).items():
        keep = sizes.get(name, 0)
        if isinstance(keep, int) and 0 <= keep < size:
            os.truncate(Path(root) / name, keep)


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    """The ``.npz`` bytes of ``checkpoint`` (see the module docstring)."""
    arrays: dict[str, np.ndarray] = {}

    def plain(value, where: str):
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError(f"checkpoint state {where}: object arrays are not data")
            name = f"a{len(arrays)}"
            arrays[name] = value
            return {_ARRAY: name}
        if isinstance(value, dict):
            if _ARRAY in value or not all(isinstance(k, str) for k in value):
                raise TypeError(f"checkpoint state {where}: keys must be str other than {_ARRAY}")
            return {k: plain(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"checkpoint state {where}: {type(value).__name__} is not plain data")

    document = {
        "format": CHECKPOINT_FORMAT,
        "version": checkpoint.version,
        "generation": checkpoint.generation,
        "metrics_bytes": checkpoint.metrics_bytes,
        "evals_bytes": checkpoint.evals_bytes,
        "state": plain(checkpoint.state, "state"),
    }
    text = json.dumps(document, sort_keys=True).encode("utf-8")
    buffer = io.BytesIO()
    np.savez(buffer, **{_DOCUMENT: np.frombuffer(text, dtype=np.uint8)}, **arrays)
    return buffer.getvalue()


def decode_checkpoint(data: bytes, *, source: Path) -> Checkpoint:
    """The checkpoint in ``data`` (the bytes of ``source``), validated before use.

    Raises:
        QdLlmError: ``data`` is not a checkpoint of :data:`CHECKPOINT_FORMAT` version
            :data:`CHECKPOINT_VERSION`, or is damaged.
    """
    expected = f"expected a {CHECKPOINT_FORMAT} version {CHECKPOINT_VERSION} .npz written by qd_llm"
    try:
        # np.load would take anything else for a pickle (refused, but with advice to trust it).
        if not data.startswith(_ZIP_MAGIC):
            raise ValueError("not an .npz (zip) archive")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            raw = npz[_DOCUMENT]
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise ValueError(f"member '{_DOCUMENT}' is not a byte string")
            document = json.loads(raw.tobytes().decode("utf-8"))
            if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"no '{CHECKPOINT_FORMAT}' document")
            if document.get("version") != CHECKPOINT_VERSION:
                raise QdLlmError(
                    f"{source} has checkpoint format version {document.get('version')!r}; "
                    f"this qd_llm reads version {CHECKPOINT_VERSION}"
                )

            def resolve(value):
                if isinstance(value, dict):
                    if set(value) == {_ARRAY}:
                        return npz[value[_ARRAY]]
                    return {k: resolve(v) for k, v in value.items()}
                if isinstance(value, list):
                    return [resolve(v) for v in value]
                return value

            checkpoint = Checkpoint(
                generation=document["generation"],
                state=resolve(document["state"]),
                metrics_bytes=document["metrics_bytes"],
                evals_bytes=document["evals_bytes"],
            )
        counts = (checkpoint.generation, checkpoint.metrics_bytes, checkpoint.evals_bytes)
        if not all(type(n) is int and n >= -1 for n in counts) or not isinstance(
            checkpoint.state, dict
        ):
            raise ValueError("generation, byte counts or state of the wrong type")
    except QdLlmError:
        raise
    # np.load and zipfile raise any of these on foreign, truncated or corrupted bytes.
    except (OSError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as error:
        reason = " ".join(str(error).split())  # one line, whatever the library said
        message = f"{source} is damaged or not a checkpoint ({reason}); {expected}"
        raise QdLlmError(message) from error
    return checkpoint


def format_status(run: RunDir) -> str:
    """One screen about a run: progress, population, coverage, fitness, pool, ETA,
    and the last held-out test coverage@N (evolved / seeds / control) if tracked."""
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
    heldout = [r["heldout"] for r in rows if r.get("heldout")]
    if heldout:
        test = heldout[-1]["test"]
        pools = [p for p in ("evolved", "seeds", "control") if p in test]
        curves = "  ".join(
            f"@{n + 1} " + "/".join(f"{test[p][n]:.3f}" for p in pools)
            for n in range(len(test["evolved"]))
        )
        lines.append(f"held-out   test coverage ({'/'.join(pools)}) {curves}")
    heatmap = run.figures_dir / "niche_map.png"
    if heatmap.exists():
        lines.append(f"heatmap    {heatmap}")
    return "\n".join(lines)
