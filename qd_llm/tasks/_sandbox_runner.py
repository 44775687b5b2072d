"""The program that runs inside the sandbox: a small fork-server for task code.

Standard library only, and nothing from ``qd_llm``: it runs under ``python -I -S``
in a bubblewrap sandbox (see :mod:`qd_llm.tasks.sandbox`, which starts it and
documents the isolation).

Protocol. The host writes jobs to stdin, one JSON object per line::

    {"nonce": "<hex>", "judge_nonce": "<hex>", "kind": "score" | "load",
     "task_file": "/abs/task.py", "data": ..., "submission": "..."}

and reads results from the result descriptor given by ``--result-fd``, as frames
``MAGIC + nonce (32 ASCII bytes) + 8-byte big-endian length + JSON payload``. A
``"ready"`` frame (nonce ``"0" * 32``) is sent once at start.

Task code may ``import sandbox_eval_helper`` (the AC/DC reference's helper
module, see :func:`_install_eval_helper`). Its ``eval_with_llm_judge`` asks the
host: the child sends the request to this server on a private pipe, the server
relays it as a frame tagged with the job's ``judge_nonce`` (so nothing the task
writes can pose as one) and waits, still watching the job's limits, for the
host's answer on stdin, one JSON line ``{"judge_reply": {...}}``, which it passes
back to the child. The wall-clock limit does not run while the host is answering.

A job may carry ``"cgroup": {"procs": N, "watches": [[label, key], ...]}``: then
the host has sent, on the unix socket given by ``--control-fd`` just before the
job line, N writable ``cgroup.procs`` descriptors of the job's cgroups followed by
one readable counter file per watch.

Per job this server (which never runs task code itself) reads ``task.py`` and
forks a child that moves into its own process group, joins the job's cgroups,
closes every other descriptor, changes into a fresh private temp dir, applies the
resource limits, drops to an unprivileged uid when the server runs as root,
executes the task source, runs ``get_tasks``/``get_instructions`` or ``score``,
and writes its answer to a private pipe. While the job runs the server checks,
every few milliseconds, whether the job reached a limit of the whole job (a
cgroup counter, a full private tmpfs, or, without cgroups, a census of the PID
namespace over the process or memory limit) and ends it then. The task's stdout and stderr go to two
other pipes that the server reads, caps and never parses, so printing anything,
including a copy of a result frame, changes nothing. When the child is done, or
past the wall-clock limit, the server kills its process group and, when it owns
the PID namespace (``--sweep``), every other process in it, then removes the
temp dir.
"""

# Imports are few and light on purpose: every fresh sandbox pays for them.
import contextlib
import json
import math
import os
import resource
import select
import signal
import struct
import sys
import time

MAGIC = b"QDSBX1"
READY_NONCE = "0" * 32
_LENGTH = struct.Struct(">Q")
_PR_SET_DUMPABLE = 4
_ERROR_CHARS = 600
_TICK_SECONDS = 0.02
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_RSS_FIELD = 21  # field 24 of /proc/PID/stat, counted after the ")" that ends the name
HELPER_MODULE = "sandbox_eval_helper"
_MAX_JUDGE_REQUEST_BYTES = 1 << 20
_CODE_BLOCK = "```python\n(.*?)\n```"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError("the channel closed")
        data += chunk
    return bytes(data)


def write_frame(fd: int, nonce: str, payload: dict) -> None:
    body = json.dumps(payload).encode("utf-8")
    _write_all(fd, MAGIC + nonce.encode("ascii") + _LENGTH.pack(len(body)) + body)


def _make_non_dumpable() -> None:
    # A non-dumpable server cannot have its descriptors reopened through
    # /proc/<pid>/fd or its memory read by the (capability-less) task children.
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        pass


def _remove_tree(path: str) -> None:
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(root, name))
        for name in dirs:
            full = os.path.join(root, name)
            with contextlib.suppress(OSError):
                os.unlink(full) if os.path.islink(full) else os.rmdir(full)
    with contextlib.suppress(OSError):
        os.rmdir(path)


# --- the child: runs the untrusted task code -----------------------------------------


def _apply_limits(limits: dict) -> None:
    cpu = max(1, math.ceil(limits["cpu_seconds"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["max_file_bytes"], limits["max_file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    procs = limits["process_rlimit"]  # None where the job's pids cgroup bounds it
    if procs is not None:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NPROC, (procs, procs))


def _is_plain_method(cls: type, name: str) -> bool:
    for klass in cls.__mro__:
        if name in vars(klass):
            return not isinstance(vars(klass)[name], staticmethod | classmethod)
    return False


def _load_task_family(task_file: str, source: bytes):
    """The task's ``TaskFamily``: the class, or an instance of it when a method is
    a plain one (the reference instantiates the class; static methods work either way)."""
    module = type(sys)("task")
    module.__file__ = task_file
    sys.modules["task"] = module
    exec(compile(source, task_file, "exec"), module.__dict__)
    family = getattr(module, "TaskFamily", None)
    if family is None:
        raise AttributeError("task.py defines no class TaskFamily")
    if isinstance(family, type) and any(
        _is_plain_method(family, name) for name in ("get_tasks", "get_instructions", "score")
    ):
        return family()
    return family


# --- sandbox_eval_helper: what the AC/DC reference offers task code ------------------


def get_function_name_to_callable(text: str) -> dict:
    """The callables defined by the ```` ```python ```` blocks of ``text``, by name.

    The reference's contract: every block runs, in order, in one namespace;
    every callable whose name does not start with ``__`` is returned (imported
    ones included); an error in the code propagates to the caller.
    """
    import re  # already loaded by json: no cost

    namespace: dict = {}
    for block in re.findall(_CODE_BLOCK, text, re.DOTALL):
        exec(block, namespace)
    return {
        name: obj for name, obj in namespace.items() if callable(obj) and not name.startswith("__")
    }


class _JudgeChannel:
    """The child's end of the judge channel: length-prefixed JSON requests and replies."""

    def __init__(self, request_fd: int, reply_fd: int):
        self.request_fd = request_fd
        self.reply_fd = reply_fd

    def ask(self, request: dict) -> dict:
        body = json.dumps(request).encode("utf-8")
        if len(body) > _MAX_JUDGE_REQUEST_BYTES:
            raise ValueError(f"LLM judge request over {_MAX_JUDGE_REQUEST_BYTES} bytes")
        _write_all(self.request_fd, _LENGTH.pack(len(body)) + body)
        (length,) = _LENGTH.unpack(_read_exactly(self.reply_fd, _LENGTH.size))
        return json.loads(_read_exactly(self.reply_fd, length))


def _install_eval_helper(channel: _JudgeChannel) -> None:
    """Makes ``import sandbox_eval_helper`` give task code the reference's helpers."""

    def eval_with_llm_judge(instructions, submission, criteria=None) -> bool:
        """Whether the run's LLM judge says ``submission`` succeeds at the task.

        Raises:
            RuntimeError: No judge is configured or it could not answer (the
                scoring then fails with that reason, rather than scoring 0 silently).
        """
        reply = channel.ask(
            {
                "instructions": str(instructions),
                "submission": str(submission),
                "criteria": [str(c) for c in criteria or ()],
            }
        )
        if "error" in reply:
            raise RuntimeError(f"LLM judge: {reply['error']}")
        return reply.get("decision") is True

    module = type(sys)(HELPER_MODULE)
    module.get_function_name_to_callable = get_function_name_to_callable
    module.eval_with_llm_judge = eval_with_llm_judge
    sys.modules[HELPER_MODULE] = module


def _number_or_type(value) -> dict:
    # Real numbers of any kind (int, float, bool, numpy scalars, Fraction, Decimal).
    if hasattr(value, "__float__") and not isinstance(value, (str, bytes, complex)):
        try:
            return {"value": float(value)}
        except (TypeError, ValueError, OverflowError):
            pass
    return {"value": None, "type": type(value).__name__}


def _run_task(job: dict, source: bytes) -> dict:
    family = _load_task_family(job["task_file"], source)
    if job["kind"] == "score":
        return {"ok": True, **_number_or_type(family.score(job["data"], job["submission"]))}
    tasks = family.get_tasks()
    if not isinstance(tasks, dict):
        raise TypeError(f"get_tasks() returned {type(tasks).__name__}, not dict")
    instances = {}
    for instance_id, data in tasks.items():
        try:
            data = json.loads(json.dumps(data))
        except (TypeError, ValueError) as e:
            raise TypeError(f"instance {instance_id!r} data is not JSON-serialisable: {e}") from e
        instructions = family.get_instructions(data)
        if not isinstance(instructions, str):
            raise TypeError(f"get_instructions() returned {type(instructions).__name__}, not str")
        instances[str(instance_id)] = {"data": data, "instructions": instructions}
    return {"ok": True, "instances": instances}


def _drop_privileges(uid: int) -> None:
    # Root is exempt from RLIMIT_NPROC and may signal anything: task code runs
    # as an unprivileged uid (which also clears every capability).
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _child(
    job: dict,
    source: bytes,
    tmp: str,
    cfg: dict,
    pipes: tuple[int, int, int, int, int],
    cgroup_procs: list[int],
) -> None:
    """Runs one job and writes a length-prefixed JSON report to ``report_w``; never returns.

    Args:
        job: The job message.
        source: The task's source code.
        tmp: The job's private temp dir.
        cfg: The server's configuration.
        pipes: Write ends for the report, stdout, stderr and judge requests, and
            the read end for judge replies.
        cgroup_procs: ``cgroup.procs`` descriptors of the cgroups to join.
    """
    report_w, out_w, err_w, judge_w, reply_r = pipes
    try:
        os.setpgid(0, 0)
        for fd in cgroup_procs:
            os.write(fd, b"0")  # joins; the descriptor is closed below, before task code runs
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        low = 3
        for fd in sorted((report_w, judge_w, reply_r)):
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 4096)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the child exits without closing
        sys.stdout = open(1, "w", closefd=False, buffering=1)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
        os.chdir(tmp)
        os.environ.update(HOME=tmp, TMPDIR=tmp)
        sys.path.insert(0, tmp)
        _apply_limits(cfg["limits"])
        if cfg["task_uid"] is not None:
            _drop_privileges(cfg["task_uid"])
        _install_eval_helper(_JudgeChannel(judge_w, reply_r))
        report = _run_task(job, source)
    except MemoryError:
        report = {"ok": False, "error": "MemoryError: memory limit reached"}
    except BaseException as e:
        report = {"ok": False, "error": f"{type(e).__name__}: {e}"[:_ERROR_CHARS]}
    try:
        body = json.dumps(report).encode("utf-8")
    except (TypeError, ValueError, MemoryError) as e:
        body = json.dumps({"ok": False, "error": f"unreportable result: {e}"[:_ERROR_CHARS]})
        body = body.encode("utf-8")
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(report_w, _LENGTH.pack(len(body)))
        view = memoryview(body)
        while view:
            view = view[os.write(report_w, view) :]
    finally:
        os._exit(0)


# --- the server: forks children, relays framed results -------------------------------


class _Capped:
    """Keeps the first ``limit`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int):
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        self.data += chunk[: max(room, 0)]
        self.dropped += max(len(chunk) - max(room, 0), 0)

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _others(own_pid: int):
    """Yields ``(pid, stat fields after the name)`` of the live processes of this PID
    namespace other than init and this server."""
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (1, own_pid):
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields and fields[0] not in (b"Z", b"X"):
            yield int(name), fields


def _sweep(own_pid: int) -> None:
    """Kills every process in this PID namespace except init and this server."""
    for _ in range(100):
        alive = False
        for pid, _ in _others(own_pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                alive = True
        _reap()
        if not alive:
            return
        time.sleep(0.001)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig == signal.SIGXCPU:
            return "CPU time limit reached (SIGXCPU)"
        if sig == signal.SIGXFSZ:
            return "file size limit reached (SIGXFSZ)"
        return f"task process killed by {name}"
    return f"task process exited with status {os.WEXITSTATUS(status)} before reporting"


class _Limits:
    """Tells whether a running job reached a limit of the whole job.

    Args:
        cfg: The server's configuration.
        watches: ``(descriptor, label, key)``: cgroup counter files of the job.
    """

    def __init__(self, cfg: dict, watches: list[tuple[int, str, str]]):
        self._cfg = cfg
        self._watches = watches
        # Without cgroups, the job is every process of this PID namespace but ours.
        self._census = cfg["sweep"] and not watches
        self.active = bool(watches) or self._census or cfg["tmp_bytes"] is not None

    def _reason(self, label: str) -> str:
        limits = self._cfg["limits"]
        if label == "memory":
            mib = limits["memory_bytes"] / (1 << 20)
            return f"memory limit reached: the job's processes together hit {mib:g} MiB"
        if label == "processes":
            return f"process limit reached: the job hit {limits['max_processes']} processes"
        mib = self._cfg["tmp_bytes"] / (1 << 20)
        return f"temporary space limit reached: the job's /tmp ({mib:g} MiB) is full"

    def reached(self) -> str | None:
        """The reason the job must end now, or None."""
        for fd, label, key in self._watches:
            for line in os.pread(fd, 4096, 0).decode().splitlines():
                name, _, count = line.partition(" ")
                if name == key and int(count) > 0:
                    return self._reason(label)
        if self._cfg["tmp_bytes"] is not None and os.statvfs(self._cfg["tmp_root"]).f_bavail == 0:
            return self._reason("tmp")
        if self._census:
            processes = resident = 0
            for _, fields in _others(os.getpid()):
                processes += 1
                resident += int(fields[_RSS_FIELD]) * _PAGE_BYTES
            if processes > self._cfg["limits"]["max_processes"]:
                return self._reason("processes")
            if resident > self._cfg["limits"]["memory_bytes"]:
                return self._reason("memory")
        return None


def _receive_cgroup(job: dict, control) -> tuple[list[int], list[tuple[int, str, str]]]:
    """The job's ``cgroup.procs`` descriptors and watched counters, sent by the host."""
    spec = job.get("cgroup")
    if not spec:
        return [], []
    import socket  # only where cgroups are used: every fresh sandbox pays for imports

    count = spec["procs"] + len(spec["watches"])
    _, fds, _, _ = socket.recv_fds(control, 1, count)
    if len(fds) != count:
        raise OSError(f"expected {count} cgroup descriptors, got {len(fds)}")
    procs, counters = fds[: spec["procs"]], fds[spec["procs"] :]
    return procs, [(fd, *watch) for fd, watch in zip(counters, spec["watches"], strict=True)]


class _Host:
    """The server's channel to the host: lines in on stdin, frames out on the result fd."""

    def __init__(self, result_fd: int):
        self.result_fd = result_fd
        self.fd = 0
        self._buffer = bytearray()

    def fill(self) -> None:
        """Reads what the host sent so far.

        Raises:
            EOFError: The host closed stdin (it is gone: the server ends).
        """
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            raise EOFError("the host closed stdin")
        self._buffer += chunk

    def pop_line(self) -> bytes | None:
        end = self._buffer.find(b"\n")
        if end < 0:
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line

    def read_line(self) -> bytes | None:
        """The next line, waiting for it; None once the host closed stdin."""
        while (line := self.pop_line()) is None:
            try:
                self.fill()
            except EOFError:
                return None
        return line


class _JudgeRelay:
    """Relays one job's judge requests from its child to the host and the answers back.

    Args:
        host: The channel to the host.
        nonce: The job's ``judge_nonce``, tagging request frames.
        request_fd: Read end of the child's request pipe.
        reply_fd: Write end of the child's reply pipe.
    """

    def __init__(self, host: _Host, nonce: str, request_fd: int, reply_fd: int):
        self.host = host
        self.nonce = nonce
        self.request_fd = request_fd
        self.reply_fd = reply_fd
        self._buffer = bytearray()
        self.waiting_since: float | None = None  # the host is answering

    def read_request(self) -> bool:
        """Reads from the child and relays a complete request; False once the pipe closed.

        Raises:
            ValueError: The child sent a request over the size limit.
        """
        chunk = os.read(self.request_fd, 1 << 16)
        if not chunk:
            return False
        self._buffer += chunk
        if self.waiting_since is None and len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > _MAX_JUDGE_REQUEST_BYTES:
                raise ValueError(f"LLM judge request over {_MAX_JUDGE_REQUEST_BYTES} bytes")
            if len(self._buffer) >= _LENGTH.size + length:
                body = bytes(self._buffer[_LENGTH.size : _LENGTH.size + length])
                del self._buffer[: _LENGTH.size + length]
                self._relay(body)
        return True

    def _relay(self, body: bytes) -> None:
        try:
            request = json.loads(body)
        except ValueError:
            self._answer({"error": "malformed judge request"})
            return
        write_frame(self.host.result_fd, self.nonce, {"judge_request": request})
        self.waiting_since = time.monotonic()

    def read_reply(self) -> float:
        """Reads the host's answer if it is complete, passes it on, and returns the
        seconds the host took (0 while it is still answering)."""
        self.host.fill()
        line = self.host.pop_line()
        if line is None:
            return 0.0
        try:
            reply = json.loads(line)["judge_reply"]
        except (ValueError, KeyError, TypeError):
            reply = {"error": "malformed answer from the host"}
        self._answer(reply)
        waited = time.monotonic() - self.waiting_since
        self.waiting_since = None
        return waited

    def _answer(self, reply: dict) -> None:
        body = json.dumps(reply).encode("utf-8")
        # The child may be gone: that must not kill the server with SIGPIPE.
        previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        try:
            _write_all(self.reply_fd, _LENGTH.pack(len(body)) + body)
        except OSError:
            pass
        finally:
            signal.signal(signal.SIGPIPE, previous)


def run_job(job: dict, cfg: dict, host: _Host, control=None) -> dict:
    """Runs one job in a forked child and returns the payload to relay.

    Args:
        job: The job message.
        cfg: The server's configuration.
        host: The channel to the host (for judge requests).
        control: The socket the host sends the job's cgroup descriptors on.
    """
    cgroup_procs, watches = _receive_cgroup(job, control)
    try:
        return _run_job(job, cfg, host, cgroup_procs, _Limits(cfg, watches))
    finally:
        for fd in (*cgroup_procs, *(w[0] for w in watches)):
            with contextlib.suppress(OSError):
                os.close(fd)


def _run_job(job: dict, cfg: dict, host: _Host, cgroup_procs: list[int], limits: _Limits) -> dict:
    try:
        with open(job["task_file"], "rb") as f:  # read here: the task's uid may not reach it
            source = f.read()
    except OSError as e:
        return {"ok": False, "error": f"cannot read {job['task_file']}: {e.strerror}"}
    tmp = os.path.join(cfg["tmp_root"], f"job-{os.urandom(8).hex()}")
    os.mkdir(tmp, 0o700)
    if cfg["task_uid"] is not None:
        os.chown(tmp, cfg["task_uid"], cfg["task_uid"])
    report_r, report_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    judge_r, judge_w = os.pipe()
    reply_r, reply_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(job, source, tmp, cfg, (report_w, out_w, err_w, judge_w, reply_r), cgroup_procs)
    for fd in (report_w, out_w, err_w, judge_w, reply_r):
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    report = bytearray()
    streams = {out_r: _Capped(cfg["max_output_bytes"]), err_r: _Capped(cfg["max_output_bytes"])}
    judge = _JudgeRelay(host, job.get("judge_nonce", READY_NONCE), judge_r, reply_w)
    open_fds = {report_r, out_r, err_r, pidfd, judge_r}
    status = None
    limit_reached = None
    deadline = start + cfg["wall_seconds"]
    next_check = start + _TICK_SECONDS  # most jobs are done sooner: no look for them
    try:
        while status is None:
            now = time.monotonic()
            if limits.active and now >= next_check:
                limit_reached = limits.reached()
                if limit_reached:
                    break
                next_check = now + _TICK_SECONDS
            waiting = judge.waiting_since is not None
            remaining = deadline - now
            if remaining <= 0 and not waiting:
                break
            wait = None if waiting else remaining
            if limits.active:
                wait = _TICK_SECONDS if wait is None else min(wait, _TICK_SECONDS)
            watched = [*open_fds, host.fd] if waiting else list(open_fds)
            ready, _, _ = select.select(watched, [], [], wait)
            for fd in ready:
                if fd == host.fd:
                    deadline += judge.read_reply()  # the host's time is not the job's
                    continue
                if fd == judge_r:
                    try:
                        if not judge.read_request():
                            open_fds.discard(judge_r)
                    except ValueError as e:
                        limit_reached = str(e)
                    continue
                if fd == pidfd:
                    status = os.waitpid(pid, 0)[1]
                    open_fds.discard(pidfd)
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    open_fds.discard(fd)
                elif fd == report_r:
                    if len(report) < cfg["max_result_bytes"] + _LENGTH.size:
                        report += chunk
                else:
                    streams[fd].add(chunk)
            if limit_reached:
                break
        # The report is written before the child exits: drain what is buffered.
        os.set_blocking(report_r, False)
        while report_r in open_fds:
            try:
                chunk = os.read(report_r, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            report += chunk
        if limits.active and not limit_reached:
            # The job may have hit a limit just before it ended (e.g. its process
            # was the one killed by the kernel's out-of-memory killer).
            limit_reached = limits.reached()
    finally:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        if cfg["sweep"]:
            _sweep(os.getpid())
        timed_out = status is None and not limit_reached
        if status is None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)  # killed above; reap it
        for fd in (report_r, out_r, err_r, pidfd, judge_r, reply_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        _remove_tree(tmp)
    elapsed = time.monotonic() - start
    result = {
        "seconds": elapsed,
        "stdout": streams[out_r].text(),
        "stderr": streams[err_r].text(),
        "output_dropped_bytes": streams[out_r].dropped + streams[err_r].dropped,
    }
    if limit_reached:
        return {**result, "ok": False, "error": limit_reached}
    if timed_out and not _complete(report):
        return {**result, "ok": False, "error": f"timeout: over {cfg['wall_seconds']:g} s wall"}
    if not _complete(report):
        if len(report) >= cfg["max_result_bytes"]:
            return {**result, "ok": False, "error": "result larger than the result size limit"}
        return {**result, "ok": False, "error": _describe_exit(status)}
    try:
        return {**result, **json.loads(bytes(report[_LENGTH.size :]))}
    except ValueError as e:
        return {**result, "ok": False, "error": f"malformed report: {e}"}


def _complete(report: bytearray) -> bool:
    if len(report) < _LENGTH.size:
        return False
    return len(report) - _LENGTH.size == _LENGTH.unpack_from(report)[0]


def main() -> None:
    """Usage: ``_sandbox_runner.py --result-fd=N --config=JSON`` (limits and caps)."""
    args = dict(arg.removeprefix("--").split("=", 1) for arg in sys.argv[1:])
    cfg = json.loads(args["config"])
    result_fd = int(args["result-fd"])
    os.set_inheritable(result_fd, False)
    control = None
    if "control-fd" in args:
        import socket

        control = socket.socket(fileno=int(args["control-fd"]))
        control.set_inheritable(False)
    if cfg["sweep"] and os.readlink("/proc/self/ns/pid") == cfg["host_pid_namespace"]:
        # Sweeping after a job kills every process in the namespace: on the host's
        # own namespace that would be every process the user can signal.
        sys.stderr.write("sandbox isolation gave no PID namespace of its own; not starting\n")
        sys.exit(3)
    _make_non_dumpable()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    write_frame(result_fd, READY_NONCE, {"ready": True, "pid": os.getpid()})
    host = _Host(result_fd)
    while (line := host.read_line()) is not None:
        job = json.loads(line)
        if "judge_reply" in job:
            continue  # answers a request of a job that ended before the answer came
        payload = run_job(job, cfg, host, control)
        write_frame(result_fd, job["nonce"], payload)


if __name__ == "__main__":
    main()
