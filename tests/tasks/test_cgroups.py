"""Finding this process's cgroup directories in v1, v2 and namespaced layouts.

The layouts other than this machine's cannot exist here, so they are given as
``/proc/self/mountinfo`` and ``/proc/self/cgroup`` texts.
"""

import os
import signal
import subprocess

import pytest

from qd_llm.tasks import _cgroups

V1_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_OWN = "8:pids:/\n4:memory:/ci/job-7\n0::/\n"

V2_MOUNTS = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_OWN = "0::/system.slice/runner.service\n"

# Inside a container whose cgroup mount shows only its own subtree.
NAMESPACED_MOUNTS = (
    "700 690 0:26 /docker/abc /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
)
NAMESPACED_OWN = "0::/docker/abc/inner\n"


@pytest.mark.parametrize(
    ("mounts", "own", "expected"),
    [
        (
            V1_MOUNTS,
            V1_OWN,
            {
                "memory": "/sys/fs/cgroup/memory/ci/job-7",
                "pids": "/sys/fs/cgroup/pids",
                "unified": "/sys/fs/cgroup/unified",
            },
        ),
        (V2_MOUNTS, V2_OWN, {"unified": "/sys/fs/cgroup/system.slice/runner.service"}),
        (NAMESPACED_MOUNTS, NAMESPACED_OWN, {"unified": "/sys/fs/cgroup/inner"}),
    ],
    ids=["v1", "v2", "namespaced"],
)
def test_own_cgroup_directories(tmp_path, monkeypatch, mounts, own, expected):
    (tmp_path / "mountinfo").write_text(mounts)
    (tmp_path / "cgroup").write_text(own)
    monkeypatch.setattr(_cgroups, "_MOUNTINFO", str(tmp_path / "mountinfo"))
    monkeypatch.setattr(_cgroups, "_OWN_CGROUPS", str(tmp_path / "cgroup"))

    found = _cgroups._own_cgroup_dirs()

    assert {name: str(path) for name, path in found.items()} == expected


def test_detect_explains_why_no_layout_works(tmp_path, monkeypatch):
    (tmp_path / "mountinfo").write_text(V1_MOUNTS.replace("rw,pids", "rw,cpu"))
    (tmp_path / "cgroup").write_text("4:memory:/\n")
    monkeypatch.setattr(_cgroups, "_MOUNTINFO", str(tmp_path / "mountinfo"))
    monkeypatch.setattr(_cgroups, "_OWN_CGROUPS", str(tmp_path / "cgroup"))

    factory, why = _cgroups.detect(memory_bytes=1 << 30, max_processes=8)

    assert factory is None
    assert why == "no memory and pids cgroup hierarchy is mounted"


def test_a_job_cgroup_is_removed_with_the_processes_left_in_it():
    """What a job leaves behind (isolation "none" has no PID namespace to sweep) is killed."""
    factory, why = _cgroups.detect(memory_bytes=64 << 20, max_processes=8)
    if factory is None:
        pytest.skip(f"no per-job cgroups here: {why}")
    job = factory.create()
    procs = job.procs_fds
    leftover = subprocess.Popen(
        ["sleep", "60"], pass_fds=procs, preexec_fn=lambda: [os.write(fd, b"0") for fd in procs]
    )
    peaks = job.close()

    assert leftover.wait(timeout=10) == -signal.SIGKILL
    assert 0 < peaks["peak_memory_bytes"] <= 64 << 20


def test_cgroups_left_by_a_dead_pool_are_removed():
    factory, why = _cgroups.detect(memory_bytes=64 << 20, max_processes=8)
    if factory is None:
        pytest.skip(f"no per-job cgroups here: {why}")
    dead = subprocess.Popen(["true"])
    dead.wait()
    parents = [h.parent for h in factory._hierarchies]
    stale = [parent / f"qd-sandbox-{dead.pid}-0123456789ab" for parent in parents]
    ours = [parent / f"qd-sandbox-{os.getpid()}-0123456789ab" for parent in parents]
    for path in (*stale, *ours):
        path.mkdir()
    try:
        _cgroups.detect(memory_bytes=64 << 20, max_processes=8)

        assert not any(path.exists() for path in stale)
        assert all(path.exists() for path in ours)
    finally:
        for path in (*stale, *ours):
            if path.exists():
                path.rmdir()
