"""The kernel's OOM killer and a real segmentation fault take a training process that logs ``loss`` and ``lr``
scalars and 1,000-key dicts every step; nothing it logged is lost (issue 19).

* OOM: the child puts itself into a memory cgroup of its own (cgroup v1 or v2, when root) as its first act, so
  that its segment in /dev/shm and everything it allocates is charged there, then logs and leaks memory until the
  kernel kills it (SIGKILL from the kernel: the cgroup counts an ``oom_kill``). The node's collector is started
  by the test, outside the cgroup, so that the killer can only choose the child.
* SIGSEGV: the child dereferences a null pointer (``ctypes.string_at(0)``) at a random moment while another
  thread logs, so the fault can land inside a ``log()`` call.

Both with the collector up and with it down (an offline run: its spool and segment, then ``stepwire sync``).
Every call that returned before the death is stored exactly once, the call in flight whole or not at all, the run
ends as crashed, and nothing of it is left in /dev/shm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from crash_child import (
    KEY_NAMES,
    KEYS,
    check,
    check_dict,
    check_series,
    my_segments,
    returned,
    settle,
    start,
    stored_all,
    wait_until,
)

import stepwire
from stepwire import segment
from stepwire.collector.embedded import local_collector
from stepwire.sync import sync

pytestmark = pytest.mark.skipif(not os.access(segment.SHM_DIR, os.W_OK), reason="no writable /dev/shm")

LIMIT = 600 << 20
"""The cgroup's memory limit: well above the child's segment (89 MiB, charged to the cgroup that touches it
first) and what Python, numpy and the client take, so that the kill comes from the leak."""
CALLS = 3
"""Calls a step: ``log_scalar("loss")``, ``log_scalar("lr")``, ``log(1,000-key dict)``; a child writes
``CALLS * step + call`` once each returned."""


@pytest.fixture(autouse=True)
def shared_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments are on by default: no $STEPWIRE_SHM from the caller's environment turns them off here."""
    monkeypatch.delenv(segment.SHM_ENV, raising=False)


CHILD = textwrap.dedent("""
    import os, sys
    directory, run_id, out, death, seed, procs = sys.argv[1:7]
    if procs:  # first act: into the memory cgroup, before the segment or anything else is charged
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
        with open("/proc/self/oom_score_adj", "w") as f:  # killable even if the test runner is not
            f.write("1000")
    import ctypes, random, struct, threading, time
    import stepwire
    rng = random.Random(int(seed))
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    run = stepwire.init(project="survive", dir=directory, run_id=run_id, quiet=True, flush_interval=0.05,
                        system_metrics=False, console=False)
    stats = run.stats()
    assert stats["survives_crash"], stats["survives_crash_reason"]
    with open(out + ".segment", "w") as f:
        f.write(stats["segment_path"])
    keys = [f"k{i:04d}" for i in range(KEYS)]
    warmup = rng.choice([0, 1, 5, 50, 200])  # steps before the death starts coming
    leak, steps = [], [0]

    def allocate():  # touched (written), so that it is charged
        leak.append(b"\\x01" * (rng.randint(1, 32) << 20))

    def train(leaking):
        step = 0
        while True:
            run.log_scalar("loss", float(step), step=step)
            os.write(fd, struct.pack("<q", CALLS * step))
            run.log_scalar("lr", 0.5 * step, step=step)
            os.write(fd, struct.pack("<q", CALLS * step + 1))
            run.log({k: float(step) for k in keys}, step=step)
            os.write(fd, struct.pack("<q", CALLS * step + 2))
            step += 1
            steps[0] = step
            if leaking and step > warmup:
                allocate()

    if death == "oom-inline":  # the training loop itself leaks, a chunk a step
        train(leaking=True)
    threading.Thread(target=train, args=(False,), daemon=True).start()
    while steps[0] <= warmup:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.2))
    if death == "segv":
        ctypes.string_at(0)  # a null pointer read: SIGSEGV
    while True:  # "oom-thread": another thread leaks while the training thread logs
        allocate()
        time.sleep(rng.uniform(0.0, 0.01))
""").replace("KEYS", str(KEYS)).replace("CALLS", str(CALLS))
"""A child that logs ``CALLS`` calls a step and dies: ``oom-inline`` (its training loop leaks), ``oom-thread``
(another thread leaks) or ``segv`` (another thread reads address 0)."""


@dataclass
class MemoryCgroup:
    """A memory cgroup of this test's own, limited to ``LIMIT`` bytes."""

    path: Path
    version: int

    @property
    def procs(self) -> Path:
        """The file a process writes its pid to, to join the cgroup."""
        return self.path / "cgroup.procs"

    def oom_kills(self) -> int:
        """How many processes the OOM killer killed in this cgroup."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        raise AssertionError(f"{self.path / name} has no oom_kill counter")

    def remove(self) -> None:
        """Kill what is left in it (only processes this test started can be there), then remove it."""
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # busy: a process is still exiting, or (v1) its charges are being moved
                for pid in self.procs.read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
        raise AssertionError(f"cannot remove the cgroup {self.path}")


def _own_cgroup(controller: str) -> str:
    """This process's cgroup path in the v1 hierarchy of ``controller`` ("" for the v2 one)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    return "/"


def make_memory_cgroup() -> MemoryCgroup:
    """A new memory cgroup limited to ``LIMIT``: v1 below this process's own one, v2 below the root (the only
    cgroup that may hold processes and give its children a controller); ``pytest.skip`` with the reason where
    none can be made."""
    if os.geteuid() != 0:
        pytest.skip("making a memory cgroup needs root")
    name = f"stepwire-oom-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    v1, v2 = Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")
    if (v1 / "memory.limit_in_bytes").exists():
        parent = v1 / _own_cgroup("memory").lstrip("/")
        group = MemoryCgroup((parent if parent.is_dir() else v1) / name, 1)
        limit, swap = ("memory.limit_in_bytes", str(LIMIT)), ("memory.memsw.limit_in_bytes", str(LIMIT))
    elif (v2 / "cgroup.controllers").exists() and "memory" in (v2 / "cgroup.controllers").read_text().split():
        group = MemoryCgroup(v2 / name, 2)
        limit, swap = ("memory.max", str(LIMIT)), ("memory.swap.max", "0")
    else:
        pytest.skip("no memory cgroup controller (neither /sys/fs/cgroup/memory nor cgroup v2 with memory)")
    try:
        if group.version == 2 and "memory" not in (v2 / "cgroup.subtree_control").read_text().split():
            (v2 / "cgroup.subtree_control").write_text("+memory")
        group.path.mkdir()
        (group.path / limit[0]).write_text(limit[1])
        if (group.path / swap[0]).exists():  # where there is swap: no swapping instead of the kill
            (group.path / swap[0]).write_text(swap[1])
    except OSError as exc:
        if group.path.is_dir():
            group.path.rmdir()
        pytest.skip(f"cannot make a memory cgroup under {group.path.parent}: {exc}")
    return group


@pytest.fixture
def memory_cgroups() -> Iterator[Callable[[], MemoryCgroup]]:
    """Makes memory cgroups limited to ``LIMIT``; all removed afterwards."""
    made: list[MemoryCgroup] = []

    def make() -> MemoryCgroup:
        made.append(make_memory_cgroup())
        return made[-1]

    try:
        yield make
    finally:
        for group in made:
            group.remove()


@dataclass
class Death:
    """A child run that died: its run id, pid, exit status and what it wrote once each call returned."""

    run_id: str
    pid: int
    status: int
    markers: list[int]
    segment_path: str


@dataclass
class Child:
    """A ``CHILD`` on its way to its death."""

    run_id: str
    out: Path
    proc: subprocess.Popen[bytes]


def spawn(tmp: Path, directory: Path, death: str, seed: int, offline: bool, procs: Path | None = None) -> Child:
    """Start a ``CHILD`` that dies by ``death`` (in the cgroup of ``procs``, if given)."""
    run_id = f"{death}-{'off' if offline else 'on'}-{seed}"
    out = tmp / f"{run_id}.steps"
    env = {**os.environ, **({"STEPWIRE_MODE": "offline"} if offline else {})}
    return Child(run_id, out, subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), run_id, str(out), death, str(seed), str(procs or "")],
        env=env, stderr=subprocess.PIPE))


def reap(child: Child) -> Death:
    """Wait for ``child``'s death."""
    try:
        _, err = child.proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        child.proc.kill()
        child.proc.wait()
        raise AssertionError(f"{child.run_id}: the child did not die within 120 s") from None
    seg = Path(f"{child.out}.segment")
    assert seg.exists(), f"{child.run_id} died before its run began: {err.decode(errors='replace')[-2000:]}"
    return Death(child.run_id, child.proc.pid, child.proc.returncode, returned(child.out), seg.read_text())


def last_calls(death: Death) -> tuple[list[int], int]:
    """The last step of each call that returned (-1: none did), and which call was in flight at the death."""
    markers = [m for m in death.markers if m >= 0]
    assert markers == list(range(len(markers))), "the child reported its calls out of order"
    return [(len(markers) - 1 - call) // CALLS for call in range(CALLS)], len(markers) % CALLS


def check_death(api: stepwire.Api, death: Death) -> None:
    """Each call that returned stored exactly once, the one in flight whole or not at all, nothing after it."""
    last, in_flight = last_calls(death)
    view = api.run(death.run_id)
    check_series(view, "loss", last[0], in_flight=in_flight == 0)
    check_series(view, "lr", last[1], in_flight=in_flight == 1, scale=0.5)
    check_dict(view, last[2], in_flight=in_flight == 2)


def counted(api: stepwire.Api, death: Death) -> bool:
    """Whether every series holds as many points as ``check_death`` wants (one cheap query, to wait on)."""
    last, in_flight = last_calls(death)
    try:
        items = {s.name: s.items for s in api.run(death.run_id).series()}
    except KeyError:
        return False
    want = {"loss": 0, "lr": 1, **{k: 2 for k in KEY_NAMES}}
    return all(items.get(name, 0) in (last[call] + 1, last[call] + 2 if call == in_flight else -1)
               for name, call in want.items())


def ended_crashed(api: stepwire.Api, run_id: str, offline: bool) -> None:
    """The dead run kept its project (its OpenRun reached the collector, from the spool for an offline run: init
    writes it there before returning) and ends crashed."""
    view = api.run(run_id)
    assert view.project == "survive", (run_id, view.project)
    wait_until(f"{run_id} is crashed", lambda: api.run(run_id).status == "crashed", timeout=20)


def survived(directory: Path, death: Death, offline: bool) -> None:
    """What the dead child logged is stored, its run is crashed, and nothing of it is left in /dev/shm."""
    wait_until("the collector stored what the dead process left", lambda: not my_segments({death.pid}))
    assert death.segment_path and not Path(death.segment_path).exists()
    api = stepwire.Api(dir=directory)
    settle(lambda: counted(api, death))
    check_death(api, death)
    ended_crashed(api, death.run_id, offline)


def test_the_oom_killer_takes_the_process_nothing_it_logged_is_lost(
        tmp_path: Path, memory_cgroups: Callable[[], MemoryCgroup]) -> None:
    directory = tmp_path / "data"
    local_collector(directory, idle_exit=30.0)  # outside the cgroups: the OOM killer can only choose a child
    groups = [memory_cgroups(), memory_cgroups()]
    children = [spawn(tmp_path, directory, death, seed, False, group.procs)
                for death, seed, group in zip(["oom-inline", "oom-thread"], [1, 2], groups, strict=True)]
    deaths = [reap(child) for child in children]
    for dead, group in zip(deaths, groups, strict=True):
        assert dead.status == -signal.SIGKILL, dead
        assert group.oom_kills() == 1, dead
    for dead in deaths:
        survived(directory, dead, offline=False)


def test_the_oom_killer_with_the_collector_down_then_sync(
        tmp_path: Path, memory_cgroups: Callable[[], MemoryCgroup]) -> None:
    directory = tmp_path / "data"
    group = memory_cgroups()
    dead = reap(spawn(tmp_path, directory, "oom-thread", 3, True, group.procs))
    assert dead.status == -signal.SIGKILL, dead
    assert group.oom_kills() == 1
    assert my_segments({dead.pid}), "no collector runs for the directory: nothing drained the segment yet"
    sync(directory, show_progress=False)
    survived(directory, dead, offline=True)


@pytest.mark.parametrize(("offline", "seed"), [(False, 11), (True, 13)])
def test_a_segfault_while_logging_loses_nothing(tmp_path: Path, offline: bool, seed: int) -> None:
    directory = tmp_path / "data"
    dead = reap(spawn(tmp_path, directory, "segv", seed, offline))
    assert dead.status == -signal.SIGSEGV, dead
    if offline:
        assert my_segments({dead.pid}), "no collector runs for the directory: nothing drained the segment yet"
        sync(directory, show_progress=False)
    survived(directory, dead, offline)


def test_an_offline_run_dying_at_its_first_call_keeps_its_name_and_ends_crashed(tmp_path: Path) -> None:
    """A death right after the first call returned (SIGSEGV): the earliest moment. The sender thread used to spool
    the OpenRun behind the first batch, and a loaded child died before it did: the run came back as project
    'default', never crashed."""
    directory = tmp_path / "data"
    out = tmp_path / "steps"
    proc = start(directory, "first-call", "scalar", out, segv_at=0, env={"STEPWIRE_MODE": "offline"})
    assert proc.wait(60) == -signal.SIGSEGV
    assert returned(out) == [-1, 0]
    sync(directory, show_progress=False)
    wait_until("sync stored what the process left", lambda: not my_segments({proc.pid}))
    api = stepwire.Api(dir=directory)
    settle(lambda: stored_all(api, {"first-call": ("scalar", 0)}))
    check(api, "first-call", "scalar", 0)
    ended_crashed(api, "first-call", offline=True)
