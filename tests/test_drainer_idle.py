"""The drainer's idle backoff (cpp/drainer.cpp): an idle run's drainer thread wakes tens of times a second, not
1,000, and what is logged after a long idle (a burst, single points, a flush) still arrives whole and exact.

The drainer thread is found by its name (``stepwire-drain`` in ``/proc/self/task/*/comm``) and its wakeups are
counted by its voluntary context switches: a count, not a time."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

import stepwire
from conftest import CollectorProcess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")

DRAINER = "stepwire-drain"
IDLE_S = 2.0
# 1,000 wakeups a second was the 1 ms poll; the backoff's cap (20 ms) allows 50, and flush_interval_s (0.1 s)
# with the sender's own notifications a few more. A tenth of the poll's count leaves room for a loaded machine.
MAX_WAKEUPS = int(IDLE_S * 1000 / 10)


def drainer_switches() -> dict[int, int]:
    """Voluntary context switches of each drainer thread of this process, by thread id."""
    out: dict[int, int] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().strip() != DRAINER:
                continue
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                out[int(task.name)] = int(line.split()[1])
    return out


def test_an_idle_runs_drainer_wakes_far_less_than_every_millisecond(collector: CollectorProcess) -> None:
    before_init = set(drainer_switches())
    with stepwire.init(project="idle", name="quiet", address=collector.address) as run:
        run.log({"loss": 1.0}, step=0)
        assert run.flush(timeout=30)
        mine = set(drainer_switches()) - before_init
        assert mine, "the run's drainer thread is named stepwire-drain"
        time.sleep(0.3)  # the backoff reaches its cap
        start = drainer_switches()
        time.sleep(IDLE_S)
        end = drainer_switches()
        wakeups = {tid: end[tid] - start[tid] for tid in mine}
        assert all(0 < n <= MAX_WAKEUPS for n in wakeups.values()), wakeups
        run.log({"loss": 2.0}, step=1)  # the idle drainer still takes what comes next
    view = stepwire.Api(address=collector.address).run(run.id)
    np.testing.assert_array_equal(view.scalars("loss")["value"], [1.0, 2.0])
    np.testing.assert_array_equal(view.scalars("loss")["step"], [0, 1])


def test_bursts_and_single_points_after_long_idles_arrive_exactly(collector: CollectorProcess) -> None:
    rng = np.random.default_rng(16)
    bursts = [rng.standard_normal(n) for n in (1, 5_000, 200_000, 3)]
    # a small ring: a burst of 200,000 points fills it 200 times over while the drainer would still be in its
    # longest sleep, unless the producers wake it (and block, never drop, under the default policy)
    with stepwire.init(project="idle", name="bursts", address=collector.address, ring_capacity=1024) as run:
        step = 0
        for i, values in enumerate(bursts):
            time.sleep(0.3)  # long enough for the drainer's sleep to reach its cap
            for v in values.tolist():
                run.log_scalar("x", v, step=step)
                step += 1
            run.log({"burst": float(i), "size": float(len(values))}, step=i)
            if i % 2:
                assert run.flush(timeout=30)
        stats = run.stats()
    total = sum(len(b) for b in bursts)
    assert (stats["logged"], stats["dropped"]) == (total + 2 * len(bursts), 0)
    assert run.stats()["acknowledged"] == total + 2 * len(bursts)
    view = stepwire.Api(address=collector.address).run(run.id)
    x = view.scalars("x")
    np.testing.assert_array_equal(x["step"], np.arange(total))
    np.testing.assert_array_equal(x["value"], np.concatenate(bursts))
    np.testing.assert_array_equal(view.scalars("burst")["value"], np.arange(len(bursts), dtype=float))
    np.testing.assert_array_equal(view.scalars("size")["value"], [float(len(b)) for b in bursts])


def test_a_flush_after_a_long_idle_seals_what_was_logged(collector: CollectorProcess) -> None:
    with stepwire.init(project="idle", name="flushes", address=collector.address) as run:
        for i in range(5):
            time.sleep(0.2)
            run.log({"y": float(i) / 8}, step=i)
            assert run.flush(timeout=30)
            assert run.stats()["acknowledged"] == i + 1
    view = stepwire.Api(address=collector.address).run(run.id)
    np.testing.assert_array_equal(view.scalars("y")["value"], np.arange(5) / 8)
