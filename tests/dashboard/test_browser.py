"""The dashboard in headless Chromium (Debian's ``chromium``, driven by Playwright): the runs table lists a run
made by the test, a scalar chart and a histogram heat map render, and a point logged after the page loaded
appears without a reload. A screenshot goes to ``test-artifacts/dashboard.png``. No test may see a JavaScript error
or a Content-Security-Policy violation; a token-protected dashboard opens from its ``/?token=`` address.

Without Chromium the test is skipped, unless ``STEPWIRE_REQUIRE_BROWSER=1`` (as in ``.ci/run``) makes that a
failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import stepwire
from conftest import CollectorProcess, start_collector

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "",
                             shutil.which("chromium-browser") or "") if p and os.path.exists(p)), None)


@pytest.fixture
def browser_page():  # type: ignore[no-untyped-def]
    if CHROMIUM is None:
        if os.environ.get("STEPWIRE_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
        yield page
        browser.close()
        assert errors == [], f"JavaScript errors or Content-Security-Policy violations on the page: {errors}"


def test_dashboard_shows_a_live_run(dashboard: CollectorProcess, browser_page, pytestconfig) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    run = stepwire.init(project="browser", name="live-run", address=dashboard.address, quiet=True,
                        config={"lr": 0.05}, tags=["ui"])
    rng = np.random.default_rng(0)
    for step in range(20):
        run.log({"train/loss": 1.0 / (step + 1), "train/acc": step / 20}, step=step)
        if step % 5 == 0:
            run.log_histogram("weights/fc1", rng.standard_normal(5000) * (1 + step / 10), step=step)
    run.flush()

    page.goto(dashboard.http + f"#run={run.id}")
    row = page.locator(f'#runs-table tbody tr[data-run="{run.id}"]')
    row.wait_for(timeout=30_000)
    assert "live-run" in row.inner_text() and "running" in row.inner_text()
    chart = page.locator('.chart[data-metric="train/loss"]')
    page.wait_for_function(
        """() => { const d = document.querySelector('.chart[data-metric="train/loss"]');
                   return d && d.dataset.total === '20' && d.querySelector('.main-svg .scatterlayer .trace'); }""",
        timeout=30_000)
    assert page.evaluate("""() => document.querySelector('.chart[data-metric="train/loss"]').data[0].y.length""") == 20
    page.wait_for_function(
        """() => { const d = document.querySelector('.heatmap[data-metric="weights/fc1"]');
                   return d && d.data && d.data[0].type === 'heatmap' && d.dataset.steps === '4'; }""",
        timeout=30_000)
    heat = page.evaluate("""() => { const d = document.querySelector('.heatmap[data-metric="weights/fc1"]');
                                    return d.data[0].customdata.map((row) => row.reduce((a, b) => a + b, 0)); }""")
    assert np.array(heat).sum() == 4 * 5000
    page.locator('.bars[data-metric="weights/fc1"] .main-svg').first.wait_for(timeout=30_000)

    page.evaluate("window.__notReloaded = true")
    run.log({"train/loss": 0.001}, step=20)
    run.flush()
    page.wait_for_function(
        """() => document.querySelector('.chart[data-metric="train/loss"]').dataset.total === '21'""", timeout=30_000)
    assert page.evaluate("window.__notReloaded") is True
    assert page.evaluate("""() => document.querySelector('.chart[data-metric="train/loss"]').data[0].y.length""") == 21
    assert chart.count() == 1

    out = Path(pytestconfig.rootpath) / "test-artifacts"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "dashboard.png"), full_page=True)
    run.finish()


def test_dashboard_shows_rank_spread_and_skew(dashboard: CollectorProcess, browser_page, pytestconfig) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    runs = [stepwire.init(project="browser", name="four-ranks", address=dashboard.address, run_id="four-ranks",
                          rank=r, world_size=4, quiet=True) for r in range(4)]
    for step in range(30):
        for r, run in enumerate(runs):
            run.log({"loss": 1.0 / (step + 1) + 0.1 * r}, step=step)
    for run in runs:
        run.finish()
    page.goto(dashboard.http + "#run=four-ranks")
    page.wait_for_function(
        """() => { const d = document.querySelector('.chart[data-metric="loss"]'); return d && d.data; }""",
        timeout=30_000)
    traces = page.evaluate("""() => document.querySelector('.chart[data-metric="loss"]').data.map(
                                  (t) => [t.name || '', t.fill || '', t.y.length])""")
    assert [t[1] for t in traces] == ["", "tonexty", ""], traces  # band low edge, band, mean
    assert traces[2][0].endswith("mean of 4 ranks") and traces[2][2] == 30
    assert "slowest rank" in page.locator("#ranks-panel").inner_text()
    assert page.locator("#ranks-panel table.skew tr").count() == 5  # header + 4 ranks
    assert "logging cost" in page.locator("#ranks-panel").inner_text()

    page.locator("#show-ranks").check()
    page.wait_for_function(
        """() => document.querySelector('.chart[data-metric="loss"]').data.length === 4""", timeout=30_000)
    names = page.evaluate("""() => document.querySelector('.chart[data-metric="loss"]').data.map((t) => t.name)""")
    assert names == [f"rank {r}" for r in range(4)]
    out = Path(pytestconfig.rootpath) / "test-artifacts"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "dashboard-ranks.png"), full_page=True)


def test_dashboard_with_a_token_opens_from_its_address(tmp_path: Path, browser_page) -> None:  # type: ignore[no-untyped-def]
    """``/?token=`` sets the cookie and redirects: the token leaves the address bar, the cookie is HttpOnly and
    strict, the charts render under the Content-Security-Policy, and a NaN in a run's config does not stop it."""
    page = browser_page
    token = "browser-token-1234"
    c = start_collector(tmp_path / "c", "--http", "127.0.0.1:0", "--token", token)
    try:
        run = stepwire.init(project="browser", name="guarded", address=c.address, token=token, quiet=True,
                            config={"x": float("nan")})
        for step in range(10):
            run.log({"loss": 1.0 / (step + 1)}, step=step)
        run.log_histogram("big", np.array([1e308, 1e308]), step=0)
        run.finish()
        page.goto(c.http + f"?token={token}#run={run.id}")
        assert page.url == c.http + f"#run={run.id}"
        (cookie,) = page.context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and token not in cookie["value"]
        row = page.locator(f'#runs-table tbody tr[data-run="{run.id}"]')
        row.wait_for(timeout=30_000)
        assert '"x":"NaN"' in row.inner_text()
        page.wait_for_function(
            """() => { const d = document.querySelector('.chart[data-metric="loss"]');
                       return d && d.dataset.total === '10' && d.querySelector('.main-svg .scatterlayer .trace'); }""",
            timeout=30_000)
        page.wait_for_function(
            """() => { const d = document.querySelector('.heatmap[data-metric="big"]');
                       return d && d.data && d.querySelector('.main-svg'); }""", timeout=30_000)
        page.locator('.bars[data-metric="big"] .main-svg').first.wait_for(timeout=30_000)
        assert page.locator("#status").inner_text().startswith("updated")
        page.context.clear_cookies()
        assert page.goto(c.http).status == 401  # type: ignore[union-attr]
    finally:
        c.stop()
