"""Per-job cgroups: bounds on the memory and the process count of a whole sandbox job.

The pool side (the host process, root) makes fresh cgroups for every job below
its own cgroup, writes the limits, and hands the sandbox's fork-server open
descriptors: ``cgroup.procs`` files that the job's process writes ``0`` to
(joining the cgroups) before it drops privileges and closes every descriptor,
and the files that count limit hits, which the fork-server watches to end a job
the moment it reaches a limit. After the job, the pool reads the peaks, kills
whatever is still in the cgroups and removes them.

Both layouts are handled:

* **v2** (one unified hierarchy): a job cgroup below this process's own cgroup,
  with ``memory.max``, ``memory.swap.max=0``, ``memory.oom.group=1`` and
  ``pids.max``. This needs the memory and pids controllers enabled for the
  children of this process's cgroup, which the kernel only allows in the root
  cgroup or a cgroup without processes of its own; elsewhere v2 is reported
  unusable (nothing is moved to make it usable).
* **v1** (one hierarchy per controller): a job cgroup in each of the memory and
  pids hierarchies, with ``memory.limit_in_bytes`` (and the memory+swap limit)
  and ``pids.max``.

:func:`detect` probes by making and removing a cgroup, so a layout is only used
where it works; otherwise the sandbox falls back to per-process rlimits and a
process census (see :mod:`qd_llm.tasks.sandbox`). Job cgroups are named
``qd-sandbox-<pid>-<random>``; :func:`detect` also removes the empty ones whose
owner pid no longer runs (a pool killed mid-job).
"""

import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import time
from pathlib import Path

logger = logging.getLogger(__name__)

_MOUNTINFO = "/proc/self/mountinfo"
_OWN_CGROUPS = "/proc/self/cgroup"
_REMOVE_SECONDS = 2.0
_PREFIX = "qd-sandbox-"


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Hierarchy:
    """Where job cgroups go in one hierarchy, and which files they use there.

    Attributes:
        parent: This process's own cgroup directory; job cgroups are made in it.
        limits: ``(file, value)`` written in order into a new cgroup.
        optional: Files of ``limits`` and ``peaks`` that some kernels lack
            (dropped by :meth:`present`).
        watches: ``(label, file, key)``: the ``key`` line of ``file`` counts how
            often the job hit its ``label`` limit (``"memory"`` or ``"processes"``).
        peaks: ``(label, file)``: files holding the job's peak usage.
    """

    parent: Path
    limits: tuple[tuple[str, str], ...]
    optional: frozenset[str]
    watches: tuple[tuple[str, str, str], ...]
    peaks: tuple[tuple[str, str], ...]

    def present(self) -> "_Hierarchy":
        """This layout less the optional files a test cgroup here does not have."""
        _remove_stale(self.parent)
        probe = self.parent / _fresh_name()
        probe.mkdir()
        try:
            missing = {f for f in self.optional if not (probe / f).exists()}
        finally:
            probe.rmdir()
        return dataclasses.replace(
            self,
            limits=tuple(item for item in self.limits if item[0] not in missing),
            peaks=tuple(item for item in self.peaks if item[1] not in missing),
        )


def _fresh_name() -> str:
    return f"{_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"


def _remove_stale(parent: Path) -> None:
    """Removes the empty job cgroups that processes which died mid-job left behind."""
    for path in parent.glob(f"{_PREFIX}*"):
        owner = path.name.removeprefix(_PREFIX).split("-")[0]
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                path.rmdir()  # refused while processes are left in it
        except (ValueError, PermissionError):
            continue


class JobCgroup:
    """The cgroups of one job, with the descriptors the sandbox needs.

    Attributes:
        procs_fds: Writable ``cgroup.procs`` descriptors, one per hierarchy.
        watch_fds: Readable counter files, in the order of :attr:`watches`.
        watches: ``[label, key]`` per watched file, for the fork-server.
    """

    def __init__(self, hierarchies: tuple[_Hierarchy, ...]):
        name = _fresh_name()
        self._made: list[tuple[Path, _Hierarchy]] = []
        self.procs_fds: list[int] = []
        self.watch_fds: list[int] = []
        self.watches: list[list[str]] = []
        try:
            for hierarchy in hierarchies:
                path = hierarchy.parent / name
                path.mkdir()
                self._made.append((path, hierarchy))
                for file, value in hierarchy.limits:
                    (path / file).write_text(value)
                self.procs_fds.append(os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
                for label, file, key in hierarchy.watches:
                    self.watch_fds.append(os.open(path / file, os.O_RDONLY | os.O_CLOEXEC))
                    self.watches.append([label, key])
        except BaseException:
            self.close()
            raise

    def close(self) -> dict[str, int]:
        """Kills what is left in the cgroups, removes them; returns the peaks.

        Returns:
            ``{"peak_memory_bytes": ..., "peak_processes": ...}``, each only where
            the kernel keeps that peak.
        """
        for fd in (*self.procs_fds, *self.watch_fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.procs_fds, self.watch_fds = [], []
        peaks = {}
        for path, hierarchy in self._made:
            for label, file in hierarchy.peaks:
                with contextlib.suppress(OSError, ValueError):
                    peaks[f"peak_{label}"] = int((path / file).read_text())
        for path, _ in self._made:
            _empty_and_remove(path)
        self._made = []
        return peaks


def _empty_and_remove(path: Path) -> None:
    """Kills every process in the cgroup ``path`` and removes it (logs if it cannot)."""
    deadline = time.monotonic() + _REMOVE_SECONDS
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as e:  # EBUSY: processes left (isolation "none") or not yet gone
            if time.monotonic() > deadline:
                logger.warning("cannot remove the job cgroup %s: %s", path, e)
                return
        with contextlib.suppress(OSError, ValueError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.002)


class JobCgroups:
    """Makes :class:`JobCgroup` s with fixed limits in one working layout.

    Attributes:
        mechanism: ``"cgroup-v2"`` or ``"cgroup-v1"``.
    """

    def __init__(self, *, mechanism: str, hierarchies: tuple[_Hierarchy, ...]):
        self.mechanism = mechanism
        self._hierarchies = hierarchies

    def create(self) -> JobCgroup:
        """Makes the cgroups of one job.

        Raises:
            OSError: The kernel refused (e.g. too many cgroups).
        """
        return JobCgroup(self._hierarchies)


def _v2_hierarchy(own: Path, memory_bytes: int, max_processes: int) -> _Hierarchy:
    controllers = (own / "cgroup.controllers").read_text().split()
    missing = {"memory", "pids"} - set(controllers)
    if missing:
        raise OSError(f"controllers {', '.join(sorted(missing))} not available in {own}")
    enabled = set((own / "cgroup.subtree_control").read_text().split())
    if not {"memory", "pids"} <= enabled:
        # Refused (EBUSY) where this cgroup holds processes and is not the root.
        (own / "cgroup.subtree_control").write_text("+memory +pids")
    return _Hierarchy(
        parent=own,
        limits=(
            ("memory.max", str(memory_bytes)),
            ("memory.swap.max", "0"),
            ("memory.oom.group", "1"),
            ("pids.max", str(max_processes)),
        ),
        optional=frozenset({"memory.swap.max", "memory.oom.group", "pids.peak"}),
        watches=(("memory", "memory.events", "oom_kill"), ("processes", "pids.events", "max")),
        peaks=(("memory_bytes", "memory.peak"), ("processes", "pids.peak")),
    )


def _v1_hierarchies(own: dict[str, Path], memory_bytes: int, max_processes: int) -> tuple:
    memory = _Hierarchy(
        parent=own["memory"],
        limits=(
            ("memory.limit_in_bytes", str(memory_bytes)),
            ("memory.memsw.limit_in_bytes", str(memory_bytes)),
        ),
        optional=frozenset({"memory.memsw.limit_in_bytes"}),
        watches=(("memory", "memory.oom_control", "oom_kill"),),
        peaks=(("memory_bytes", "memory.max_usage_in_bytes"),),
    )
    pids = _Hierarchy(
        parent=own["pids"],
        limits=(("pids.max", str(max_processes)),),
        optional=frozenset({"pids.peak"}),
        watches=(("processes", "pids.events", "max"),),
        peaks=(("processes", "pids.peak"),),
    )
    return memory, pids


def _own_cgroup_dirs() -> dict[str, Path]:
    """This process's cgroup directories: ``{"unified": ..., "memory": ..., "pids": ...}``."""
    mounts: dict[str, tuple[str, str]] = {}  # hierarchy -> (mount root, mount point)
    with open(_MOUNTINFO) as f:
        for line in f:
            fields = line.split()
            fstype, options = fields[fields.index("-") + 1], fields[-1].split(",")
            root, point = fields[3], fields[4]
            if fstype == "cgroup2":
                mounts.setdefault("unified", (root, point))
            elif fstype == "cgroup":
                for controller in ("memory", "pids"):
                    if controller in options:
                        mounts.setdefault(controller, (root, point))
    dirs = {}
    with open(_OWN_CGROUPS) as f:
        for line in f:
            number, controllers, path = line.rstrip("\n").split(":", 2)
            names = ["unified"] if number == "0" and not controllers else controllers.split(",")
            for name in names:
                if name not in mounts:
                    continue
                root, point = mounts[name]
                relative = os.path.relpath(path, root) if path.startswith(root) else None
                if relative is not None:
                    dirs[name] = Path(point) / ("" if relative == "." else relative)
    return dirs


def detect(*, memory_bytes: int, max_processes: int) -> tuple[JobCgroups | None, str]:
    """Finds a cgroup layout where this process can make per-job cgroups, and tries it.

    Args:
        memory_bytes: Memory limit of a job (all its processes together).
        max_processes: Process limit of a job.

    Returns:
        ``(factory, None)``, or ``(None, why)`` with the reason no layout works here.
    """
    try:
        own = _own_cgroup_dirs()
    except (OSError, ValueError, IndexError) as e:
        return None, f"cannot read this process's cgroups: {e}"
    limits = (memory_bytes, max_processes)
    attempts = []
    if "unified" in own:
        attempts.append(("cgroup-v2", lambda: (_v2_hierarchy(own["unified"], *limits),)))
    if "memory" in own and "pids" in own:
        attempts.append(("cgroup-v1", lambda: _v1_hierarchies(own, *limits)))
    problems = []
    for mechanism, hierarchies in attempts:
        try:
            present = tuple(hierarchy.present() for hierarchy in hierarchies())
            factory = JobCgroups(mechanism=mechanism, hierarchies=present)
            factory.create().close()
            return factory, None
        except OSError as e:
            problems.append(f"{mechanism}: {e}")
    return None, "; ".join(problems) or "no memory and pids cgroup hierarchy is mounted"
