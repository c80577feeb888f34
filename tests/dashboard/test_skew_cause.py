"""The straggler view with system metrics: per-rank medians of the ``system/`` series beside the step timing and
the likely cause for the slowest rank, through ``/api/skew`` of a real collector and ``likely_cause`` itself."""

from __future__ import annotations

import subprocess
import sys
import time

from test_browser import browser_page  # noqa: F401 (the fixture)
from test_panels_api import get

import stepwire
from conftest import CollectorProcess
from stepwire.dashboard.panels import likely_cause


def _idle_gpu_run(address: str) -> None:
    runs = [stepwire.init(project="dash", address=address, run_id="cause", rank=r, world_size=3,
                          quiet=True, system_metrics=False) for r in range(3)]
    for step in range(8):
        for r, run in enumerate(runs):
            if r == 2:
                time.sleep(0.05)  # rank 2 logs each step 50 ms after the others
            run.log({"loss": 1.0}, step=step)
            # what the sampler would log, rank 2's GPU idling; far more points than the loss
            for k in range(5):
                run.log({"system/gpu/utilization": 40.0 if r == 2 else 95.0, "system/gpu/sm_clock_mhz": 1410.0,
                         "system/cpu_percent": 100.0, "system/rss_mib": 2048.0 + r}, step=step * 5 + k)
    for run in runs:
        run.finish()


def test_skew_names_the_slowest_ranks_idle_gpu(dashboard: CollectorProcess) -> None:
    _idle_gpu_run(dashboard.address)
    skew = get(dashboard.http + "api/skew?run=cause")
    assert skew["series"] == "loss"  # never a system/ series, though they hold more points
    assert skew["slowest"] == 2
    assert skew["system"]["2"] == {"gpu_utilization": 40.0, "gpu_sm_clock_mhz": 1410.0, "cpu_percent": 100.0,
                                   "rss_mib": 2050.0}
    assert skew["system"]["0"]["gpu_utilization"] == 95.0
    assert skew["cause"].startswith("its GPU is the least busy: 40% against 95%")


def test_the_rank_table_shows_the_cause(dashboard: CollectorProcess, browser_page) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    _idle_gpu_run(dashboard.address)
    page = browser_page
    page.goto(dashboard.http + "#run=cause")
    page.locator("#ranks-panel p.cause").wait_for(timeout=30_000)
    assert page.locator("#ranks-panel p.cause").inner_text().startswith(
        "likely cause for rank 2: its GPU is the least busy")
    assert "GPU busy" in page.locator("#ranks-panel table.skew").inner_text()
    # the system section comes after the training's own charts, GPU utilisation first in it
    page.locator('.chart[data-metric="system/rss_mib"]').wait_for(timeout=30_000)
    order = page.evaluate("""() => [...document.querySelectorAll('#charts details')].map(
        (d) => [d.querySelector('summary').textContent,
                [...d.querySelectorAll('.chart')].map((c) => c.dataset.metric)])""")
    assert order == [["(no section)", ["loss"]],
                     ["system", ["system/gpu/utilization", "system/cpu_percent", "system/gpu/sm_clock_mhz",
                                 "system/rss_mib"]]]


def test_skew_without_system_series_has_no_cause(dashboard: CollectorProcess) -> None:
    runs = [stepwire.init(project="dash", address=dashboard.address, run_id="plain", rank=r, world_size=2,
                          quiet=True) for r in range(2)]
    for step in range(4):
        for run in runs:
            run.log({"loss": 1.0}, step=step)
    for run in runs:
        run.finish()
    skew = get(dashboard.http + "api/skew?run=plain")
    assert (skew["system"], skew["cause"]) == ({}, "")


def test_likely_cause_rules() -> None:
    usual = {"gpu_utilization": 95.0, "gpu_sm_clock_mhz": 1980.0, "gpu_throttled": 0.0, "cpu_percent": 100.0}
    assert likely_cause(1, {0: usual, 1: dict(usual), 2: usual}) == "no system metric stands out"
    throttled = {**usual, "gpu_throttled": 0.9, "gpu_sm_clock_mhz": 1200.0}
    cause = likely_cause(1, {0: usual, 1: throttled, 2: usual})
    assert "held back (throttle reasons) in 90% of samples" in cause and "SM clock is lowest: 1200 MHz" in cause
    assert likely_cause(1, {0: usual, 1: {**usual, "cpu_percent": 190.0}}) == (
        "its process uses the most CPU: 190% against 100%")
    assert likely_cause(1, {0: usual}) == "" and likely_cause(1, {1: usual}) == ""
    assert likely_cause(1, {0: {"rss_mib": 1.0}, 1: {"gpu_utilization": 10.0}}) == "no system metric stands out"


def test_stepwire_show_prints_the_cause(dashboard: CollectorProcess) -> None:
    _idle_gpu_run(dashboard.address)
    out = subprocess.run([sys.executable, "-m", "stepwire", "show", "cause", "--address", dashboard.address],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # rich wraps long lines
    assert "likely cause for rank 2: its GPU is the least busy: 40% against 95%" in text
