"""Hostile task code: every attack scores 0 (or is refused), in bounded time, harmlessly.

Each behaviour in ``tests/tasks/hostile/*.py`` runs in ``get_tasks`` or in
``score`` of a generated task in a real bubblewrap sandbox; afterwards the same
pool must still score a benign task correctly.
"""

import dataclasses
import json
import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from qd_llm.errors import QdLlmError
from qd_llm.tasks.sandbox import (
    SandboxConfig,
    SandboxError,
    SandboxPool,
    ScoreJob,
    load_instances,
    resolve_isolation,
)
from qd_llm.tasks.taskdir import Lineage, TaskInfo, write_task

HOSTILE = Path(__file__).parent / "hostile"
SECRET_ENV = "QD_LLM_FAKE_SECRET"
CONFIG = SandboxConfig(
    isolation="bwrap",
    cpu_seconds=1,
    wall_seconds=3,
    memory_bytes=128 << 20,
    max_processes=32,
    tmp_bytes=32 << 20,
)
BOUND_SECONDS = 10.0  # worst case: wall limit + killing + a sandbox restart

# Probes return 1.0 when they succeed, so a clean 0.0 (reason None) means the
# sandbox held; the others must fail with a reason.
PROBES = ("net_connect", "dns_lookup", "write_outside", "read_secrets")
# Forged frames on stdout/stderr and on every open descriptor; writing into its
# own report pipe may also garble its report, so a failure reason is allowed.
FORGERY = "forge_result"
# Limits of the whole job end it the moment they are reached, whatever the mechanism.
WHOLE_JOB_LIMITS = {
    "fork_bomb": ("process limit reached",),
    "memory_bomb_processes": ("memory limit reached",),
    "tmpfs_fill": ("temporary space limit reached",),
}
FAILURES = {
    **WHOLE_JOB_LIMITS,
    "memory_bomb": ("MemoryError",),
    "infinite_loop": ("CPU time", "timeout"),
    "sleep_forever": ("timeout",),
    "flood_output": ("CPU time", "timeout"),
    "abort": ("SIGABRT",),
    "segfault": ("SIGSEGV",),
    "kill_parent": ("sandbox died", "PermissionError"),
    "raise_error": ("RuntimeError: hostile task refuses",),
}

TEMPLATE = """
import json

PARAMS = json.loads({params!r})

{attack}

class TaskFamily:
    @staticmethod
    def get_tasks():
        if PARAMS["where"] == "get_tasks":
            return {{"1": {{"attack": attack(PARAMS)}}}}
        return {{"1": {{"attack": None}}}}

    @staticmethod
    def get_instructions(t):
        return "Say hi."

    @staticmethod
    def score(t, submission):
        if PARAMS["where"] == "score":
            return attack(PARAMS)
        return 0.0
"""

BENIGN = """
class TaskFamily:
    @staticmethod
    def get_tasks():
        return {"a": {"x": 2}, "b": {"x": 9}}

    @staticmethod
    def get_instructions(t):
        return f"Double {t['x']}."

    @staticmethod
    def score(t, submission):
        return 1.0 if submission.strip() == str(2 * t["x"]) else 0.0
"""


def _available() -> bool:
    try:
        return resolve_isolation(CONFIG) == "bwrap"
    except QdLlmError:
        return False


def _write(root: Path, name: str, code: str) -> Path:
    info = TaskInfo(name=name, description=name, capability="hostility")
    return write_task(root, task_id=name, code=code, info=info, lineage=Lineage()).path


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """Host-side targets: a listener, a secret env var, secret home files."""
    if not _available():
        pytest.skip("bubblewrap cannot create sandboxes here")
    root = tmp_path_factory.mktemp("hostile")
    secret = f"s3cret-{uuid.uuid4().hex}"
    old_env = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = secret
    fake_home = root / "home"
    fake_home.mkdir()
    home_files = [fake_home / ".netrc", Path.home() / f".qd_llm_test_secret_{uuid.uuid4().hex}"]
    for path in home_files:
        path.write_text(f"password {secret}\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    facts = {
        "root": root,
        "secret": secret,
        "home_files": home_files,
        "listener": listener,
        "host_paths": [
            str(root / "outside" / "pwned"),
            str(Path.home() / f"qd_llm_pwned_{uuid.uuid4().hex}"),
            f"/tmp/qd_llm_pwned_{uuid.uuid4().hex}",
        ],
    }
    yield facts
    listener.close()
    for path in home_files:
        path.unlink(missing_ok=True)
    if old_env is None:
        os.environ.pop(SECRET_ENV, None)
    else:
        os.environ[SECRET_ENV] = old_env


@pytest.fixture(scope="module")
def pool(host):
    with SandboxPool(config=CONFIG, workers=2) as pool:
        yield pool


@pytest.fixture(scope="module")
def benign(host):
    task_dir = _write(host["root"] / "pool", "benign", BENIGN)
    return task_dir


def _hostile_task(host, behaviour: str, where: str) -> Path:
    name = f"{behaviour}_{where}"
    task_dir = host["root"] / "pool" / name
    params = {
        "where": where,
        "port": host["listener"].getsockname()[1],
        "secret_value": host["secret"],
        "home_files": [str(p) for p in host["home_files"]],
        "host_paths": host["host_paths"],
        "task_dir": str(task_dir),
    }
    attack = (HOSTILE / f"{behaviour}.py").read_text()
    return _write(task_dir.parent, name, TEMPLATE.format(params=json.dumps(params), attack=attack))


def _assert_host_unharmed(host, task_dir: Path) -> None:
    with pytest.raises(BlockingIOError):
        host["listener"].accept()
    assert not (task_dir / "pwned").exists()
    for path in host["host_paths"]:
        assert not Path(path).exists(), f"task wrote {path} on the host"


def _assert_pool_healthy(pool, benign: Path) -> None:
    jobs = [
        ScoreJob(task_dir=benign, instance_id=i, data={"x": x}, submission=s)
        for i, x, s in [("a", 2, "4"), ("b", 9, "18"), ("b", 9, "17"), ("a", 2, "4")]
    ]
    assert [r.score for r in pool.score_many(jobs)] == [1.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("behaviour", [*PROBES, FORGERY, *FAILURES])
def test_hostile_score(pool, host, benign, behaviour):
    task_dir = _hostile_task(host, behaviour, "score")
    job = ScoreJob(task_dir=task_dir, instance_id="1", data={"attack": None}, submission="hi")
    start = time.monotonic()
    result = pool.score(job)
    elapsed = time.monotonic() - start

    assert result.score == 0.0
    assert elapsed < BOUND_SECONDS
    if behaviour in PROBES:
        assert result.reason is None, result.reason  # the probe ran and found the door shut
    elif behaviour in FAILURES:
        assert any(word in result.reason for word in FAILURES[behaviour]), result.reason
    _assert_host_unharmed(host, task_dir)
    _assert_pool_healthy(pool, benign)


@pytest.mark.parametrize("behaviour", [*PROBES, FORGERY, *FAILURES])
def test_hostile_get_tasks(pool, host, benign, behaviour):
    task_dir = _hostile_task(host, behaviour, "get_tasks")
    start = time.monotonic()
    if behaviour in PROBES:
        instances = load_instances(task_dir, sandbox=pool)
        assert list(instances) == ["1"]
        assert instances["1"].data == {"attack": 0.0}
    elif behaviour == FORGERY:
        try:
            instances = load_instances(task_dir, sandbox=pool)
        except SandboxError:
            pass
        else:
            assert list(instances) == ["1"]  # a forged frame would have added "forged"
    else:
        with pytest.raises(SandboxError) as error:
            load_instances(task_dir, sandbox=pool)
        assert any(word in str(error.value) for word in FAILURES[behaviour]), error.value
    assert time.monotonic() - start < BOUND_SECONDS
    _assert_host_unharmed(host, task_dir)
    _assert_pool_healthy(pool, benign)


def test_output_is_captured_and_capped(pool, host):
    """A flood's output never reaches the host's stdout; its size is capped in the reason."""
    task_dir = _hostile_task(host, "flood_output", "score")
    job = ScoreJob(task_dir=task_dir, instance_id="1", data={}, submission="")
    result = pool.score(job)
    assert result.score == 0.0
    assert len(result.reason) < 2000


def test_escaped_processes_are_killed(host):
    """A daemonised grandchild does not outlive its job."""
    task_dir = _hostile_task(host, "orphan", "score")
    census = _write(
        host["root"] / "pool",
        "census",
        """
import os

class TaskFamily:
    @staticmethod
    def get_tasks():
        return {"1": {}}

    @staticmethod
    def get_instructions(t):
        return "count"

    @staticmethod
    def score(t, submission):
        others = []
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                        others.append(pid)
        return len(others) / 100  # bwrap's init and the fork-server: 0.02
""",
    )
    with SandboxPool(config=CONFIG, workers=1) as pool:
        census_job = ScoreJob(task_dir=census, instance_id="1", data={}, submission="")
        baseline = pool.score(census_job).score
        job = ScoreJob(task_dir=task_dir, instance_id="1", data={}, submission="")
        assert pool.score(job).score == 0.0
        assert baseline == 0.02
        assert pool.score(census_job).score == baseline


def test_whole_job_limits_use_cgroups_where_root_can_make_them(pool):
    """On the project's machine kind (root, cgroup v1 memory and pids mounted read-write),
    the checked mechanism is a per-job cgroup."""
    procs = [Path(f"/sys/fs/cgroup/{name}/cgroup.procs") for name in ("memory", "pids")]
    if os.geteuid() != 0 or not all(os.access(p, os.W_OK) for p in procs):
        pytest.skip("needs root and writable cgroup v1 memory and pids hierarchies")
    assert pool.limits_mechanism == "cgroup-v1"


def test_cgroups_measure_the_peaks_of_a_job(pool, host):
    if not pool.limits_mechanism.startswith("cgroup"):
        pytest.skip(f"no per-job cgroups here ({pool.limits_mechanism})")
    results = {}
    for behaviour in ("fork_bomb", "memory_bomb_processes"):
        task_dir = _hostile_task(host, behaviour, "score")
        job = ScoreJob(task_dir=task_dir, instance_id="1", data={}, submission="")
        results[behaviour] = pool.score(job)

    assert results["fork_bomb"].peak_processes == CONFIG.max_processes
    assert CONFIG.memory_bytes // 2 < results["memory_bomb_processes"].peak_memory_bytes
    assert results["memory_bomb_processes"].peak_memory_bytes <= CONFIG.memory_bytes


def test_without_cgroups_a_census_ends_the_job(host, benign):
    """The fallback: the fork-server counts its PID namespace and checks the tmpfs."""
    # A long wall clock: the job must end because the census saw it over a limit.
    config = dataclasses.replace(CONFIG, use_cgroups=False, wall_seconds=30, cpu_seconds=30)
    with SandboxPool(config=config, workers=2) as census_pool:
        assert census_pool.limits_mechanism == "census"
        for behaviour, reasons in WHOLE_JOB_LIMITS.items():
            task_dir = _hostile_task(host, behaviour, "score")
            job = ScoreJob(task_dir=task_dir, instance_id="1", data={}, submission="")
            result = census_pool.score(job)
            assert result.score == 0.0
            assert any(reason in result.reason for reason in reasons), result.reason
            assert result.peak_memory_bytes is None
        _assert_pool_healthy(census_pool, benign)
