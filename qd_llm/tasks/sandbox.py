"""Runs untrusted task code: instances, instructions and scores, never in this process.

Task directories (:mod:`qd_llm.tasks.taskdir`) hold LLM-written ``task.py``
files. Everything they compute is computed by :mod:`qd_llm.tasks._sandbox_runner`
(a stdlib-only program, run with ``python -I -S``) inside a sandbox:

* **bwrap** (default): ``bwrap --ro-bind / / --dev /dev --proc /proc --size N --tmpfs /tmp
  --unshare-all --cap-drop ALL --die-with-parent --new-session``, with tmpfs over
  the home directories (:attr:`SandboxConfig.hidden_paths`), the task
  directories and the interpreter bound read-only on top, and a scrubbed
  environment. No network (an empty network namespace), no host processes, no
  writable host path, no capabilities. Run as root, the sandbox gets no user
  namespace (its uid 0 would still be host root, which the kernel exempts from
  RLIMIT_NPROC); instead task code runs as :attr:`SandboxConfig.task_uid`
  (nobody) and only the fork-server keeps the few capabilities it needs.
* **unshare** (fallback when bwrap is missing, logged as a warning): new
  network, IPC, PID and mount namespaces; the host file system stays readable
  *and writable* to the task.
* **none** (only when asked for; UNSAFE): a plain subprocess with resource
  limits. Use it only for task code you trust.

In every mode each job runs in a fresh forked process with rlimits on CPU
seconds, address space, file size, open files and (without cgroups) processes,
in a fresh private temp dir that is also ``$HOME``, under a wall-clock limit
after which its whole process group (in the sandboxes: its whole PID namespace)
is killed. The task's stdout and stderr are captured separately and capped;
results come back on a dedicated pipe in nonce-tagged, length-prefixed frames,
so text printed by a task cannot pose as a result.

Limits of a whole job (all its processes together), reported by
:attr:`SandboxPool.limits_mechanism`:

* ``"cgroup-v2"`` / ``"cgroup-v1"``: where this process may make cgroups (root on
  the project's machines, see :mod:`qd_llm.tasks._cgroups`), each job gets its own,
  bounding its memory (``memory_bytes``, page cache and tmpfs pages included) and
  process count (``max_processes``). The fork-server ends the job as soon as a
  counter shows it reached either limit (an out-of-memory kill, a refused fork).
* ``"census"`` (no usable cgroups; bwrap and unshare): every few milliseconds the
  fork-server counts the processes of its PID namespace and sums their resident
  memory, and ends the job once it is over ``max_processes`` or ``memory_bytes``.
  Between two looks a job can overshoot; the rlimits bound that: address space
  per process, and ``max_processes × (workers + 1)`` processes of the task uid,
  a count shared by every job running as that uid.
* ``"rlimits"`` (no usable cgroups, isolation ``none``): per-process rlimits only;
  the process limit (``max_processes``) counts every process of the task uid, so
  concurrent jobs share it.

In bwrap mode the private ``/tmp`` is a tmpfs of ``tmp_bytes`` (bubblewrap >= 0.8;
older ones leave it unsized); one job runs at a time in a sandbox, so that bounds a
job's temporary files, and a job that fills it is ended. In the other modes the
job's temp dir lives on the host's disk, bounded per file only (``max_file_bytes``).

Failures are results: a scoring that crashes, times out, reaches a limit or
returns a non-number scores 0.0 with a ``reason``. Not defended against: a
submission that ``score()`` executes in-process tampering with that process (it
*is* the scorer).

Task code may ``import sandbox_eval_helper``, the AC/DC reference's helper module:
``get_function_name_to_callable(text)`` runs the ```` ```python ```` blocks of a
reply (in the task's process, as the reference does) and returns their
callables by name; ``eval_with_llm_judge(instructions, submission, criteria)``
asks the pool's ``judge``. The sandbox has no network, so the judge is never
called from inside it: the request travels to the fork-server, which relays it
to this process (a frame with a per-job tag task code cannot forge), where the
pool's judge answers (typically a :class:`qd_llm.tasks.llm_judge.TaskJudge` on
the run's OpenAI-compatible endpoint) and the answer travels back. The request
is data only (strings), checked here; a job may ask at most
:attr:`SandboxConfig.max_judge_calls` times, and the time the judge takes does
not count against the job's wall-clock limit. Without a judge, or when it
fails, ``eval_with_llm_judge`` raises and the scoring fails with that reason.
"""

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import queue
import secrets
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qd_llm import faults
from qd_llm.errors import QdLlmError
from qd_llm.tasks import _cgroups
from qd_llm.tasks import _sandbox_runner as runner
from qd_llm.tasks.taskdir import TASK_CODE

logger = logging.getLogger(__name__)

ISOLATIONS = ("auto", "bwrap", "unshare", "none")
_SERVER_CAPS = (
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_KILL",
)
_FRAME_HEADER = len(runner.MAGIC) + 32 + 8
#: Longest instructions an instance may have: far beyond any model's context, so
#: a task over it is broken (and would stall or crash generation).
MAX_INSTRUCTION_CHARS = 100_000
_INSTALL_BWRAP = (
    "install it with `apt-get install bubblewrap` (Debian/Ubuntu) or `dnf install bubblewrap`"
)
_READ_CHUNK = 1 << 16
_JUDGE_ERROR_CHARS = 300


class SandboxError(QdLlmError):
    """Task code could not be run or failed where a failure cannot be a score."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """Isolation and limits for running task code.

    Attributes:
        isolation: ``"auto"`` (bwrap, else unshare with a warning, else an
            error), ``"bwrap"``, ``"unshare"`` or ``"none"`` (UNSAFE: resource
            limits only; the task can read and write as this user).
        cpu_seconds: CPU-time limit of one job's process (rounded up to whole s).
        memory_bytes: Memory limit of a job, all its processes together (see
            :attr:`SandboxPool.limits_mechanism`), and address-space limit of
            each of its processes.
        max_processes: Process limit of a job.
        max_file_bytes: Largest file a job may write.
        tmp_bytes: Size of a job's private temp dir (a tmpfs; bwrap mode).
        use_cgroups: Bound each job with cgroups where this process can make them.
        wall_seconds: Wall-clock limit of one job, after which it is killed.
        max_output_bytes: How much of each of stdout and stderr is kept.
        max_result_bytes: Largest result a job may send back (instances, score).
        site_packages: Let task code import installed packages (numpy, ...) by
            running the environment's Python without ``-S``; slower to start.
        hidden_paths: Host directories replaced by empty tmpfs (bwrap mode).
        startup_seconds: How long a sandbox may take to start.
        task_uid: When this process is root, the uid (and gid) task code runs
            as: root is exempt from the process limit and may signal the
            fork-server. None keeps root (weaker).
        max_judge_calls: Most ``eval_with_llm_judge`` calls one job may make.
    """

    isolation: str = "auto"
    cpu_seconds: float = 10.0
    memory_bytes: int = 1 << 30
    max_processes: int = 64
    max_file_bytes: int = 16 << 20
    tmp_bytes: int = 128 << 20
    use_cgroups: bool = True
    wall_seconds: float = 20.0
    max_output_bytes: int = 64 << 10
    max_result_bytes: int = 16 << 20
    site_packages: bool = False
    hidden_paths: tuple[str, ...] = ("/root", "/home", "/run/user", "/var/tmp")
    startup_seconds: float = 10.0
    task_uid: int | None = 65534
    max_judge_calls: int = 8

    def __post_init__(self):
        if self.isolation not in ISOLATIONS:
            raise QdLlmError(
                f"sandbox isolation must be one of {', '.join(ISOLATIONS)}, got {self.isolation!r}"
            )
        for name in ("cpu_seconds", "wall_seconds", "startup_seconds"):
            if not getattr(self, name) > 0:
                raise QdLlmError(f"sandbox {name} must be > 0, got {getattr(self, name)}")
        for name in (
            "memory_bytes",
            "max_processes",
            "max_file_bytes",
            "max_output_bytes",
            "tmp_bytes",
        ):
            if getattr(self, name) < 1:
                raise QdLlmError(f"sandbox {name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Instance:
    """One task instance, as computed in the sandbox.

    Attributes:
        instance_id: The ``get_tasks()`` key, as a string.
        instructions: ``get_instructions(data)``.
        data: The instance data after a JSON round trip (tuples become lists,
            dict keys become strings); this is what ``score`` receives.
    """

    instance_id: str
    instructions: str
    data: object


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoreJob:
    """One scoring to run: ``TaskFamily.score(data, submission)`` of a task dir."""

    task_dir: Path
    instance_id: str
    data: object
    submission: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoreResult:
    """The outcome of one scoring.

    Attributes:
        score: In [0, 1]; 0.0 whenever the scoring failed.
        reason: Why the score is 0 or was clamped (None for a clean score).
        seconds: Wall time of the job inside the sandbox.
        peak_memory_bytes: Most memory the job's processes used at once (None
            without cgroups).
        peak_processes: Most processes the job had at once (None where the
            kernel does not keep that peak).
        failed: ``score()`` itself failed (raised, timed out, returned no
            number); False for a clean or clamped score.
    """

    score: float
    reason: str | None
    seconds: float
    peak_memory_bytes: int | None = None
    peak_processes: int | None = None
    failed: bool = False


# --- isolation -----------------------------------------------------------------------


@functools.cache
def _probe(isolation: str) -> bool:
    """Whether this isolation mode actually starts a process here."""
    try:
        cmd = [*_isolation_prefix(isolation, SandboxConfig(), binds=()), "/bin/true"]
        return subprocess.run(cmd, capture_output=True, timeout=10, env={}).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.cache
def _bwrap_sizes_tmpfs() -> bool:
    """Whether this bubblewrap has ``--size`` (0.8 and later) to cap the private tmpfs."""
    try:
        result = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--size" in result.stdout


def resolve_isolation(config: SandboxConfig) -> str:
    """Returns the isolation mode to use, checking that it works here.

    Raises:
        QdLlmError: The requested isolation (or, for ``auto``, any) is unavailable.
    """
    if config.isolation == "none":
        return "none"
    if config.isolation in ("auto", "bwrap") and shutil.which("bwrap") and _probe("bwrap"):
        return "bwrap"
    if config.isolation == "bwrap":
        where = "cannot create a sandbox here" if shutil.which("bwrap") else "is not on PATH"
        raise QdLlmError(
            f"sandbox isolation 'bwrap' needs bubblewrap, which {where}; {_INSTALL_BWRAP}"
        )
    if shutil.which("unshare") and _probe("unshare"):
        if config.isolation == "auto":
            logger.warning(
                "bubblewrap unavailable: task code runs with weaker isolation "
                "(unshare: no network, own PID namespace, but the host file system "
                "is readable and writable); install bubblewrap"
            )
        return "unshare"
    raise QdLlmError(
        f"no sandbox is available to run task code; {_INSTALL_BWRAP}; "
        'to run trusted task code without isolation pass isolation="none" (unsafe)'
    )


def _isolation_prefix(isolation: str, config: SandboxConfig, binds: Iterable[str]) -> list[str]:
    if isolation == "none":
        return []
    if isolation == "unshare":
        cmd = ["unshare", "--net", "--ipc", "--pid", "--fork", "--mount-proc", "--kill-child"]
        return cmd if os.geteuid() == 0 else [*cmd[:1], "--user", "--map-root-user", *cmd[1:]]
    cmd = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    if _bwrap_sizes_tmpfs():
        cmd += ["--size", str(config.tmp_bytes)]
    cmd += ["--tmpfs", "/tmp"]
    for hidden in config.hidden_paths:
        if os.path.isdir(hidden):
            cmd += ["--tmpfs", hidden]
    made: set[str] = set()
    for path in binds:
        # bwrap would create missing parents on a tmpfs as 0700, which the
        # task's uid could not traverse.
        for parent in reversed(Path(path).parents):
            if str(parent) not in made and _is_under(str(parent), _hidden_roots(config)):
                made.add(str(parent))
                cmd += ["--perms", "0755", "--dir", str(parent)]
        cmd += ["--ro-bind", path, path]
    if os.geteuid() == 0:
        # No user namespace: inside one, uid 0 still maps to host root, which the
        # kernel exempts from RLIMIT_NPROC. The fork-server keeps only what it
        # needs to run each job as ``task_uid`` and clean up after it.
        cmd += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        cmd += ["--unshare-cgroup-try", "--cap-drop", "ALL"]
        for cap in _SERVER_CAPS:
            cmd += ["--cap-add", cap]
    else:
        cmd += ["--unshare-all", "--cap-drop", "ALL"]
    return [*cmd, "--die-with-parent", "--new-session", "--chdir", "/tmp", "--"]


def _interpreter(config: SandboxConfig) -> list[str]:
    if config.site_packages:
        return [sys.executable, "-I", "-B"]
    return [os.path.realpath(sys.executable), "-I", "-S", "-B"]


def _hidden_roots(config: SandboxConfig) -> tuple[str, ...]:
    return ("/tmp", *config.hidden_paths)


def _is_under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _binds_for(paths: Iterable[str], config: SandboxConfig) -> set[str]:
    """Host paths to bind read-only so that ``paths`` are visible in a bwrap sandbox.

    Paths under a hidden root (``/tmp``, home directories) are bound through
    their parent folder (the task pool), or themselves when the parent is a
    hidden root itself, so a pool's tasks share one bind.
    """
    hidden = _hidden_roots(config)
    binds = set()
    for path in paths:
        if not _is_under(path, hidden):
            continue
        parent = os.path.dirname(path)
        binds.add(path if parent in hidden or parent == "/" else parent)
    return binds


def _runner_binds(config: SandboxConfig) -> set[str]:
    """The runner and interpreter, when they live under a hidden path."""
    needed = {os.path.realpath(runner.__file__), sys.base_prefix}
    if config.site_packages:
        needed.add(sys.prefix)
    hidden = _hidden_roots(config)
    return {p for p in needed if _is_under(p, hidden)}


# --- one sandboxed fork-server -------------------------------------------------------


#: The host side of ``sandbox_eval_helper.eval_with_llm_judge``:
#: ``judge(instructions, submission, criteria)`` is True when the submission succeeds.
Judge = Callable[[str, str, Sequence[str]], bool]


def answer_judge_request(judge: Judge | None, request) -> dict:
    """The reply to one judge request from task code: ``{"decision": bool}`` or ``{"error"}``.

    The request is untrusted data: anything but strings where strings belong is refused.
    """
    if judge is None:
        return {"error": "no LLM judge is configured for this sandbox"}
    fields = request if isinstance(request, dict) else {}
    instructions, submission = fields.get("instructions"), fields.get("submission")
    criteria = fields.get("criteria")
    if not (
        isinstance(instructions, str)
        and isinstance(submission, str)
        and isinstance(criteria, list)
        and all(isinstance(c, str) for c in criteria)
    ):
        return {"error": "malformed judge request"}
    try:
        return {"decision": bool(judge(instructions, submission, criteria))}
    except Exception as e:  # the judge's failure is this scoring's, never the pool's
        return {"error": f"{type(e).__name__}: {e}"[:_JUDGE_ERROR_CHARS]}


class _WorkerDied(Exception):
    """The sandbox process went away or stopped answering."""


class _Worker:
    """A long-lived sandbox running the fork-server; one job at a time.

    Args:
        config: Isolation and limits.
        isolation: The resolved isolation mode.
        binds: Host paths to bind read-only.
        cgroups: Makes each job's cgroups; None without.
        process_rlimit: RLIMIT_NPROC of the task's processes; None leaves it.
        judge: Answers the jobs' judge requests; None refuses them.
    """

    def __init__(
        self,
        *,
        config: SandboxConfig,
        isolation: str,
        binds: frozenset[str],
        cgroups: _cgroups.JobCgroups | None,
        process_rlimit: int | None,
        judge: Judge | None = None,
    ):
        self._config = config
        self._judge = judge
        self.binds = binds
        self._cgroups = cgroups
        self._tmp_root = None if isolation == "bwrap" else tempfile.mkdtemp(prefix="qd-sandbox-")
        if self._tmp_root:
            os.chmod(self._tmp_root, 0o711)  # traversable by the task's uid, not listable
        sized_tmp = isolation == "bwrap" and _bwrap_sizes_tmpfs()
        runner_cfg = {
            "limits": {
                "cpu_seconds": config.cpu_seconds,
                "memory_bytes": config.memory_bytes,
                "max_processes": config.max_processes,
                "process_rlimit": process_rlimit,
                "max_file_bytes": config.max_file_bytes,
            },
            "tmp_bytes": config.tmp_bytes if sized_tmp else None,
            "wall_seconds": config.wall_seconds,
            "max_output_bytes": config.max_output_bytes,
            "max_result_bytes": config.max_result_bytes,
            "tmp_root": self._tmp_root or "/tmp",
            "sweep": isolation != "none",
            # The runner refuses to sweep a PID namespace that is not its own.
            "host_pid_namespace": os.readlink("/proc/self/ns/pid"),
            "task_uid": config.task_uid if os.geteuid() == 0 else None,
        }
        read_fd, write_fd = os.pipe()
        self._control, control_remote = socket.socketpair() if cgroups else (None, None)
        passed = (write_fd, control_remote.fileno()) if cgroups else (write_fd,)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        binds_all = sorted(binds | _runner_binds(config))
        cmd = [
            *_isolation_prefix(isolation, config, binds_all),
            *_interpreter(config),
            os.path.realpath(runner.__file__),
            f"--result-fd={write_fd}",
            f"--config={json.dumps(runner_cfg)}",
        ]
        if cgroups:
            cmd.append(f"--control-fd={control_remote.fileno()}")
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                pass_fds=passed,
                env=env,
                cwd=self._tmp_root or "/",
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
            if control_remote is not None:
                control_remote.close()
        self._results = read_fd
        self._buffer = bytearray()
        try:
            self._read_frame((runner.READY_NONCE,), config.startup_seconds)
        except _WorkerDied as e:
            detail = self._stderr_tail()
            self.close()
            raise SandboxError(f"the {isolation} sandbox failed to start: {e}; {detail}") from None

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace").strip()
        return text[-300:] or "no error output"

    def run(self, message: dict) -> dict:
        """Sends one job and returns its payload, with the job's peaks where known.

        A job whose cgroups the kernel refuses (e.g. too many cgroups) fails
        without running.

        Raises:
            _WorkerDied: The sandbox died or missed its deadline; it is closed.
        """
        if self._cgroups is None:
            return self._send(message)
        try:
            job_cgroup = self._cgroups.create()
        except OSError as e:
            return {"ok": False, "error": f"cannot make the job's cgroups: {e}", "seconds": 0}
        try:
            cgroup = {"procs": len(job_cgroup.procs_fds), "watches": job_cgroup.watches}
            try:
                socket.send_fds(
                    self._control, [b"c"], [*job_cgroup.procs_fds, *job_cgroup.watch_fds]
                )
            except OSError:
                self.close()
                raise _WorkerDied("sandbox process exited") from None
            payload = self._send({**message, "cgroup": cgroup})
        finally:
            peaks = job_cgroup.close()
        return {**payload, **peaks}

    def _send(self, message: dict) -> dict:
        nonce, judge_nonce = secrets.token_hex(16), secrets.token_hex(16)
        try:
            self._write_line({**message, "nonce": nonce, "judge_nonce": judge_nonce})
            judge_calls = 0
            while True:
                tag, payload = self._read_frame(
                    (nonce, judge_nonce), self._config.wall_seconds + 5.0
                )
                if tag == nonce:
                    return payload
                judge_calls += 1
                if judge_calls > self._config.max_judge_calls:
                    reply = {"error": f"over {self._config.max_judge_calls} judge calls in a job"}
                else:
                    reply = answer_judge_request(self._judge, payload.get("judge_request"))
                self._write_line({"judge_reply": reply})
        except _WorkerDied:
            self.close()
            raise

    def _write_line(self, message: dict) -> None:
        try:
            self._proc.stdin.write(json.dumps(message).encode() + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _WorkerDied("sandbox process exited") from None

    def _read_frame(self, nonces: Sequence[str], timeout: float) -> tuple[str, dict]:
        """The next frame, which must carry one of ``nonces``: ``(its nonce, payload)``."""
        deadline = time.monotonic() + timeout
        headers = {runner.MAGIC + nonce.encode("ascii"): nonce for nonce in nonces}
        while True:
            if len(self._buffer) >= _FRAME_HEADER:
                header = bytes(self._buffer[: _FRAME_HEADER - 8])
                if header not in headers:
                    raise _WorkerDied("result channel out of sync")
                (length,) = struct.unpack_from(">Q", self._buffer, len(header))
                end = _FRAME_HEADER + length
                if len(self._buffer) >= end:
                    body = bytes(self._buffer[_FRAME_HEADER:end])
                    del self._buffer[:end]
                    return headers[header], json.loads(body)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WorkerDied(f"no answer within {timeout:g} s")
            ready, _, _ = select.select([self._results], [], [], remaining)
            if ready:
                chunk = os.read(self._results, _READ_CHUNK)
                if not chunk:
                    raise _WorkerDied("sandbox process exited")
                self._buffer += chunk

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self._proc.pid, 9)
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        self._proc.wait()
        with contextlib.suppress(OSError):
            os.close(self._results)
        self._results = -1
        if self._control is not None:
            self._control.close()
        self._stderr.close()
        if self._tmp_root:
            shutil.rmtree(self._tmp_root, ignore_errors=True)


# --- jobs and results ----------------------------------------------------------------


def _task_file(task_dir: str | os.PathLike) -> str:
    path = Path(task_dir).resolve()
    if not (path / TASK_CODE).is_file():
        raise QdLlmError(f"{task_dir} is not a task directory: no {TASK_CODE}")
    return str(path / TASK_CODE)


def _failure_reason(payload: dict) -> str:
    reason = payload.get("error", "unknown failure")
    stderr = payload.get("stderr", "").strip()
    return f"{reason} | stderr: {stderr[-300:]}" if stderr else reason


def _score_result(payload: dict) -> ScoreResult:
    measured = {
        "seconds": float(payload.get("seconds", 0.0)),
        "peak_memory_bytes": payload.get("peak_memory_bytes"),
        "peak_processes": payload.get("peak_processes"),
    }
    if not payload.get("ok"):
        return ScoreResult(score=0.0, reason=_failure_reason(payload), failed=True, **measured)
    value = payload.get("value")
    if value is None:
        kind = payload.get("type", "NoneType")
        reason = f"score() returned {kind}, not a number in [0, 1]"
        return ScoreResult(score=0.0, reason=reason, failed=True, **measured)
    if math.isnan(value):
        reason = "score() returned NaN, not a number in [0, 1]"
        return ScoreResult(score=0.0, reason=reason, failed=True, **measured)
    if not 0.0 <= value <= 1.0:
        clamped = min(max(value, 0.0), 1.0)
        return ScoreResult(score=clamped, reason=f"score {value!r} clamped to [0, 1]", **measured)
    return ScoreResult(score=float(value), reason=None, **measured)


def _score_message(job: ScoreJob, task_file: str) -> dict:
    return {
        "kind": "score",
        "task_file": task_file,
        "data": job.data,
        "submission": str(job.submission),
    }


def _instances(payload: dict, task_dir) -> dict[str, Instance]:
    if not payload.get("ok"):
        raise SandboxError(f"cannot load instances of {task_dir}: {_failure_reason(payload)}")
    instances = {
        key: Instance(instance_id=key, instructions=value["instructions"], data=value["data"])
        for key, value in payload["instances"].items()
    }
    if not instances:
        raise SandboxError(f"cannot load instances of {task_dir}: get_tasks() returned no instance")
    for instance in instances.values():
        if len(instance.instructions) > MAX_INSTRUCTION_CHARS:
            raise SandboxError(
                f"cannot load instances of {task_dir}: get_instructions() of instance "
                f"{instance.instance_id!r} returned {len(instance.instructions)} characters, "
                f"more than {MAX_INSTRUCTION_CHARS}"
            )
    return instances


# --- the pool ------------------------------------------------------------------------


class SandboxPool:
    """Concurrent, cheap scoring in long-lived sandboxes.

    Each of ``workers`` sandboxes runs a fork-server; each job forks a fresh
    process in it, so no state leaks between jobs and no sandbox is started per
    job. A sandbox that dies (a task killed it) is restarted and only its job
    fails. Task directories are bound read-only as jobs name them (adding a new
    pool folder restarts the sandboxes once).

    Example::

        with SandboxPool(config=SandboxConfig(), workers=2) as pool:
            results = pool.score_many(jobs)

    Args:
        config: Isolation and limits.
        workers: Number of sandboxes, i.e. concurrent jobs.
        judge: Answers task code's ``sandbox_eval_helper.eval_with_llm_judge``
            calls (see the module documentation); None: such calls fail.

    Attributes:
        limits_mechanism: What bounds the memory and process count of a whole
            job: ``"cgroup-v2"``, ``"cgroup-v1"``, ``"census"`` or ``"rlimits"``
            (see the module documentation); checked by making a cgroup, not assumed.
    """

    def __init__(self, *, config: SandboxConfig, workers: int, judge: Judge | None = None):
        if workers < 1:
            raise QdLlmError(f"sandbox workers must be >= 1, got {workers}")
        self.config = config
        self.workers = workers
        self.judge = judge
        self.isolation = resolve_isolation(config)
        self._cgroups, self.limits_mechanism = self._job_limits()
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        self._binds: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._closed = False
        # bwrap --die-with-parent ties a sandbox to the *thread* that started it, so
        # sandboxes are started by one thread that lives as long as the pool.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="qd-sandbox-start")
        for _ in range(workers):
            self._idle.put(None)  # started on first use

    def _job_limits(self) -> tuple[_cgroups.JobCgroups | None, str]:
        why = "not asked for (use_cgroups=False)"
        if self.config.use_cgroups:
            cgroups, why = _cgroups.detect(
                memory_bytes=self.config.memory_bytes, max_processes=self.config.max_processes
            )
            if cgroups is not None:
                logger.info("sandbox job limits: %s", cgroups.mechanism)
                return cgroups, cgroups.mechanism
        mechanism = "rlimits" if self.isolation == "none" else "census"
        logger.info("sandbox job limits: %s; no per-job cgroups: %s", mechanism, why)
        return None, mechanism

    def _process_rlimit(self) -> int | None:
        """RLIMIT_NPROC of task processes (None: left as inherited).

        It counts every process of the task uid, in every job and every pool. A
        job's pids cgroup bounds exactly its own processes, so with cgroups it is
        not set (it would only let other pools' jobs starve this one). The census
        needs room to see a job over ``max_processes``; alone it is the limit.
        """
        if self._cgroups is not None:
            return None
        if self.limits_mechanism == "rlimits":
            return self.config.max_processes
        return self.config.max_processes * (self.workers + 1)

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stops every sandbox. Safe to call twice."""
        self._closed = True
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            if worker is not None:
                worker.close()
        self._spawner.shutdown()

    def _need(self, task_files: Iterable[str]) -> None:
        if self.isolation != "bwrap":
            return
        new = _binds_for({os.path.dirname(f) for f in task_files}, self.config)
        with self._lock:
            if not new <= self._binds:
                self._binds = self._binds | new  # idle workers restart on next checkout

    def _run(self, message: dict) -> dict | None:
        """Runs a job on some worker; None when the worker died (it is replaced)."""
        if self._closed:
            raise QdLlmError("the sandbox pool is closed")
        worker = self._idle.get()
        try:
            if worker is not None and worker.binds != self._binds:
                worker.close()
                worker = None
            if worker is None:
                worker = self._spawner.submit(
                    _Worker,
                    config=self.config,
                    isolation=self.isolation,
                    binds=self._binds,
                    cgroups=self._cgroups,
                    process_rlimit=self._process_rlimit(),
                    judge=self.judge,
                ).result()
            try:
                return worker.run(message)
            except _WorkerDied as e:
                worker = None
                return {"ok": False, "error": f"sandbox died during the job ({e})", "seconds": 0}
        finally:
            self._idle.put(worker)

    def load_instances(self, task_dir: str | os.PathLike) -> dict[str, Instance]:
        """Returns the task's instances (see :func:`load_instances`)."""
        task_file = _task_file(task_dir)
        self._need([task_file])
        return _instances(self._run({"kind": "load", "task_file": task_file}), task_dir)

    def score(self, job: ScoreJob) -> ScoreResult:
        """Scores one job; failures are 0.0 with a reason."""
        return self.score_many([job])[0]

    def score_many(self, jobs: Sequence[ScoreJob], *, progress: bool = False) -> list[ScoreResult]:
        """Scores jobs concurrently on the pool's sandboxes.

        Args:
            jobs: The scorings, length N.
            progress: Show a progress bar.

        Returns:
            N results, in the order of ``jobs``.

        Raises:
            QdLlmError: A job's task directory does not exist.
        """
        task_files = [_task_file(job.task_dir) for job in jobs]
        self._need(task_files)
        results: list[ScoreResult | None] = [None] * len(jobs)
        todo: queue.Queue[int] = queue.Queue()
        for i in range(len(jobs)):
            todo.put(i)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="scoring", unit="job")

        def drain() -> None:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                results[i] = _score_result(self._run(_score_message(jobs[i], task_files[i])))
                faults.maybe_kill("sandbox.scored")
                if bar is not None:
                    bar.update(1)

        threads = [threading.Thread(target=drain) for _ in range(min(self.workers, len(jobs)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if bar is not None:
            bar.close()
        return results


def fresh_sandbox_score(job: ScoreJob, *, config: SandboxConfig) -> ScoreResult:
    """Scores one job in a sandbox started for it alone (slower; for comparison)."""
    with SandboxPool(config=config, workers=1) as pool:
        return pool.score(job)


def load_instances(
    task_dir: str | os.PathLike, *, sandbox: SandboxPool | SandboxConfig
) -> dict[str, Instance]:
    """Computes a task's instances and their instructions in the sandbox.

    Instance data is round-tripped through JSON (tuples become lists, dict keys
    strings), so what is returned is exactly what ``score`` will be given.

    Args:
        task_dir: The task directory.
        sandbox: A running pool, or a config for a one-off sandbox.

    Returns:
        ``{instance_id: Instance}`` in ``get_tasks()`` order.

    Raises:
        SandboxError: ``get_tasks``/``get_instructions`` failed, returned bad
            types or nothing, or timed out; the message says why.
    """
    if isinstance(sandbox, SandboxPool):
        return sandbox.load_instances(task_dir)
    with SandboxPool(config=sandbox, workers=1) as pool:
        return pool.load_instances(task_dir)
