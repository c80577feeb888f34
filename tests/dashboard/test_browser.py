"""The dashboard in headless Chromium (Debian's ``chromium``, driven by Playwright): the runs table lists a run
made by the test, a scalar chart and a histogram heat map render, and a point logged after the page loaded
appears without a reload. A screenshot goes to ``test-artifacts/dashboard.png``. No test may see a JavaScript error
or a Content-Security-Policy violation; a token-protected dashboard opens from its ``/?token=`` address. A run's
media section shows debug samples with a step slider, a Plotly figure, a sortable table, audio and sandboxed HTML
(screenshot: ``test-artifacts/dashboard-media.png``, the source of ``docs/dashboard-media.png``).

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
    page.wait_for_function("""() => document.querySelector('#ranks-panel').textContent.includes('slowest rank')""",
                           timeout=30_000)  # drawn after the charts, in the same refresh
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
        assert "x=NaN" in row.inner_text()
        page.wait_for_function(
            """() => { const d = document.querySelector('.chart[data-metric="loss"]');
                       return d && d.dataset.total === '10' && d.querySelector('.main-svg .scatterlayer .trace'); }""",
            timeout=30_000)
        page.wait_for_function(
            """() => { const d = document.querySelector('.heatmap[data-metric="big"]');
                       return d && d.data && d.querySelector('.main-svg'); }""", timeout=30_000)
        page.locator('.bars[data-metric="big"] .main-svg').first.wait_for(timeout=30_000)
        page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('updated')",
                               timeout=30_000)  # the refresh that drew them has finished (console panel included)
        page.context.clear_cookies()
        assert page.goto(c.http).status == 401  # type: ignore[union-attr]
    finally:
        c.stop()


def _sample(step: int, size: int = 64) -> np.ndarray:
    """A debug sample: a disc whose radius and colour change with the step, over a gradient."""
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.stack([xx / size, yy / size, np.full((size, size), 0.3)], axis=-1)
    disc = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 8 + step) ** 2
    image[disc] = [1.0 - step / 20, step / 20, 0.8]
    return image


def test_dashboard_shows_media(dashboard: CollectorProcess, browser_page, pytestconfig, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A run's media section: a debug-sample grid per image name with a step slider (the latest step first, a
    caption under each, a click opens it full size), a Plotly figure drawn by the page's Plotly.js, a sortable
    table, audio and sandboxed HTML; a record logged after the page loaded appears without a reload."""
    from test_media import wav_bytes

    page = browser_page
    run = stepwire.init(project="browser", name="media-run", address=dashboard.address, quiet=True)
    for step in (0, 5, 10):
        run.log({"loss": 1.0 / (step + 1)}, step=step)
        run.log_image("samples/input", _sample(step), step=step, caption=f"input at step {step}")
        run.log_image("samples/mask", _sample(step)[..., 0] > 0.5, step=step, caption="mask")
    run.log_plot("curves/pr", {"data": [{"type": "scatter", "mode": "lines", "x": [0, 0.5, 1], "y": [1, 0.8, 0.3],
                                         "name": "pr"}], "layout": {"title": {"text": "precision-recall"}}}, step=10)
    run.log_table("eval/predictions", {"id": [3, 1, 2], "label": ["cat", "dog", "bird"], "score": [0.5, 0.9, 0.1]},
                  step=10)
    run.log_media("audio/sine", wav_bytes(), step=10, caption="sine")
    run.log_media("report", "<h1>report</h1><p>all good</p><script>document.body.append('script ran')</script>",
                  step=10, kind="html")
    assert run.flush(30)

    page.goto(dashboard.http + f"#run={run.id}")
    card = '.media-card[data-media="samples/input"]'
    page.wait_for_function(
        f"""() => {{ const c = document.querySelector('{card}'); const img = c && c.querySelector('img');
                    return img && img.complete && img.naturalWidth > 0 && c.dataset.step === '10'; }}""",
        timeout=30_000)
    assert page.evaluate(f"document.querySelector('{card} img').naturalWidth") == 64
    assert page.locator(f"{card} figcaption").inner_text().startswith("input at step 10")
    assert page.locator(f"{card} input[type=range]").get_attribute("max") == "2"

    page.locator(f"{card} input[type=range]").fill("0")  # the slider picks step 0
    page.wait_for_function(
        f"""() => {{ const c = document.querySelector('{card}'); const img = c.querySelector('img');
                    return c.dataset.step === '0' && img.complete && img.naturalWidth > 0; }}""", timeout=30_000)
    assert page.locator(f"{card} figcaption").inner_text().startswith("input at step 0")
    assert page.locator(f"{card} output").inner_text() == "step 0"

    page.locator(f"{card} img").click()  # full size
    page.wait_for_function("""() => { const d = document.querySelector('#media-viewer');
                                      const img = d.querySelector('img');
                                      return d.open && img.complete && img.naturalWidth === 64; }""", timeout=30_000)
    assert page.locator("#media-viewer figcaption").inner_text().startswith("input at step 0")
    page.locator("#media-viewer").click()
    assert not page.evaluate("document.querySelector('#media-viewer').open")

    plot = '.media-card[data-media="curves/pr"]'
    page.locator(f"{plot} .plot-container .main-svg").first.wait_for(timeout=30_000)
    assert page.evaluate(f"document.querySelector('{plot} .media-plot').data[0].y") == [1, 0.8, 0.3]

    table = '.media-card[data-media="eval/predictions"] table.media-table'
    page.locator(f"{table} tbody tr").first.wait_for(timeout=30_000)
    cells = lambda: page.evaluate(  # noqa: E731
        f"[...document.querySelectorAll('{table} tbody tr')].map((tr) => [...tr.cells].map((td) => td.textContent))")
    assert cells() == [["3", "cat", "0.5"], ["1", "dog", "0.9"], ["2", "bird", "0.1"]]
    page.locator(f'{table} th[data-column="score"]').click()
    assert [row[1] for row in cells()] == ["bird", "cat", "dog"]
    page.locator(f'{table} th[data-column="score"]').click()
    assert [row[1] for row in cells()] == ["dog", "cat", "bird"]
    assert page.locator(f'{table} th[data-column="score"]').get_attribute("aria-sort") == "descending"

    page.wait_for_function("""() => { const a = document.querySelector('.media-card[data-media="audio/sine"] audio');
                                      return a && a.readyState >= 1 && a.duration > 0; }""", timeout=30_000)
    frame = page.locator('.media-card[data-media="report"] iframe')
    assert frame.get_attribute("sandbox") == ""
    inner = page.frame_locator('.media-card[data-media="report"] iframe')
    inner.locator("h1").wait_for(timeout=30_000)
    assert "script ran" not in inner.locator("body").inner_text()  # sandboxed: no script runs
    # no allow-same-origin: the page cannot reach into the frame, nor the frame into the page
    assert page.evaluate("""() => document.querySelector('.media-card[data-media="report"] iframe')
                                    .contentDocument""") is None

    page.evaluate("window.__notReloaded = true")
    run.log_image("samples/input", _sample(15), step=15, caption="input at step 15")
    run.log_image("samples/later", _sample(2), step=15, caption="logged later")
    assert run.flush(30)
    page.wait_for_function(
        """() => { const c = document.querySelector('.media-card[data-media="samples/later"]');
                   const img = c && c.querySelector('img'); return img && img.complete && img.naturalWidth > 0; }""",
        timeout=30_000)
    # the picked step stays picked while more steps arrive
    assert page.locator(f"{card} input[type=range]").get_attribute("max") == "3"
    assert page.evaluate(f"document.querySelector('{card}').dataset.step") == "0"
    page.locator(f"{card} input[type=range]").fill("3")
    page.wait_for_function(f"() => document.querySelector('{card}').dataset.step === '15'", timeout=30_000)
    assert page.evaluate("window.__notReloaded") is True

    # the whole page in the viewport: a full-page capture leaves frames below the viewport blank
    page.set_viewport_size({"width": 1600, "height": page.evaluate("document.documentElement.scrollHeight")})
    inner.locator("h1").wait_for(timeout=30_000)
    page.screenshot(path=str(tmp_path / "dashboard-media.png"), full_page=True)
    out = Path(pytestconfig.rootpath) / "test-artifacts"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "dashboard-media.png"), full_page=True)
    run.finish()


def _chart(page, metric: str) -> str:  # type: ignore[no-untyped-def]
    return f'document.querySelector(\'.chart[data-metric="{metric}"]\')'


def test_dashboard_compares_groups_and_labels(dashboard: CollectorProcess, browser_page, pytestconfig) -> None:  # type: ignore[no-untyped-def]
    """Three runs (two of two ranks in group "a", one in group "b" whose histogram holds zeros): every chart has
    axis titles, each run one colour for its line and its band, the heat map a row labelled "0" on a symmetric-log
    axis; the comparison draws parallel coordinates of the config against the loss and sorts its table; grouping
    by "group" draws each group's mean over its runs with their min-max band; a run filtered out is unselected."""
    page = browser_page
    made = {}
    for name, group, lr, ranks in (("a1", "a", 0.1, 2), ("a2", "a", 0.2, 2), ("b1", "b", 0.4, 1)):
        runs = [stepwire.init(project="cmp", name=name, address=dashboard.address, run_id=f"run-{name}", rank=r,
                              world_size=ranks, quiet=True, tags=[f"group:{group}"], config={"lr": lr, "opt": "adam"})
                for r in range(ranks)]
        for step in range(10):
            for r, run in enumerate(runs):
                run.log({"loss": lr * (10 - step) + r, "eval/score": step * lr}, step=step)
        if name == "b1":
            values = np.r_[np.zeros(300), np.linspace(-100, 100, 201)[np.linspace(-100, 100, 201) != 0]]
            runs[0].log_histogram("weights/w", values, step=0)
        for run in runs:
            run.finish()
        made[name] = f"run-{name}"
    page.set_viewport_size({"width": 1600, "height": 1000})
    page.goto(dashboard.http + "#run=run-b1")
    page.locator('#runs-table tbody tr[data-run="run-a1"]').wait_for(timeout=30_000)
    for name in ("a1", "a2"):
        page.locator(f'#runs-table tbody tr[data-run="run-{name}"] input').check()
    page.wait_for_function(f"() => {_chart(page, 'loss')}?.data?.length === 7", timeout=30_000)

    # axis titles (as objects: the served Plotly.js ignores plain strings), drawn
    titles = page.evaluate(f"""() => [{_chart(page, 'loss')}.querySelector('.xtitle').textContent,
                                      {_chart(page, 'loss')}.querySelector('.ytitle').textContent]""")
    assert titles == ["step", "loss"]
    # one colour per run: the band (translucent) and the mean line of a run share it; runs differ
    traces = page.evaluate(f"""() => {_chart(page, 'loss')}.data.map((t) => [t.name || '', t.fill || '',
                                         t.line.color, t.fillcolor || ''])""")
    lines = {t[0]: t[2] for t in traces if not t[1] and t[0] and "min\u2013max" not in t[0]}
    assert set(lines) == {"b1 ", "a1 mean of 2 ranks", "a2 mean of 2 ranks"}, traces
    assert len(set(lines.values())) == 3
    for band in (t for t in traces if t[1] == "tonexty"):
        colour = lines[band[0].replace("min\u2013max over ranks", "mean of 2 ranks")]
        n = int(colour[1:], 16)
        assert band[3] == f"rgba({n >> 16},{(n >> 8) & 255},{n & 255},0.18)" and band[2] == colour
    legend = page.evaluate(f"() => {_chart(page, 'loss')}.querySelector('.legend').getBBox().height")
    assert legend < 40  # a compact legend: one line above a 300 px chart
    # a section with one chart uses the whole width
    widths = page.evaluate("""() => { const c = document.querySelector('.chart[data-metric="eval/score"]');
                                      return [c.getBoundingClientRect().width,
                                              c.parentElement.getBoundingClientRect().width]; }""")
    assert widths[0] > 0.95 * widths[1]

    # the heat map: a row labelled "0" at zero, powers of ten on both sides, axis titles
    heat = '.heatmap[data-metric="weights/w"]'
    page.wait_for_function(f"() => {{ const d = document.querySelector('{heat}'); return d && d.data; }}",
                           timeout=30_000)
    axis = page.evaluate(f"""() => {{ const d = document.querySelector('{heat}');
        return [d.layout.yaxis.tickvals, d.layout.yaxis.ticktext,
                [...d.querySelectorAll('.ytick text')].map((t) => t.textContent),
                d.querySelector('.xtitle').textContent, d.querySelector('.ytitle').textContent]; }}""")
    assert axis[0][0] == 0 and axis[1][0] == "0" and "0" in axis[2]
    assert {"1", "10", "10\u00b2", "\u22121", "\u221210", "\u221210\u00b2"} <= set(axis[1]), axis
    assert axis[3] == "step" and axis[4].startswith("value")
    zero_row = page.evaluate(f"""() => {{ const d = document.querySelector('{heat}').data[0];
        const i = d.text.findIndex((row) => row[0] === '0'); return [d.customdata[i][0], d.y[i], d.y[i + 1]]; }}""")
    assert zero_row == [300, -0.5, 0.5]

    # comparison: parallel coordinates of the config that differs against the loss, a sortable table
    page.wait_for_function("() => document.querySelector('#compare-chart')?.dataset?.dimensions", timeout=30_000)
    chart = page.evaluate("""() => { const d = document.querySelector('#compare-chart');
        return [JSON.parse(d.dataset.dimensions), d.layout.xaxis.ticktext,
                d.data.map((t) => [t.name, [...t.customdata], [...t.y], t.line.color]),
                [...d.querySelectorAll('.xtick text')].map((t) => t.textContent)]; }""")
    assert chart[0] == chart[1] == chart[3] == ["lr", "loss (last)"]  # "opt" is the same in every run: no axis
    lines = {name: (values, ys, colour) for name, values, ys, colour in chart[2]}
    assert {n: v[0] for n, v in lines.items()} == {"a1": [0.1, 0.1], "a2": [0.2, 0.2], "b1": [0.4, 0.4]}
    assert lines["a1"][1] == [0, 0] and lines["b1"][1] == [1, 1]  # each axis spans its values
    assert len({v[2] for v in lines.values()}) == 3  # coloured by the loss
    order = lambda: page.evaluate(  # noqa: E731
        "[...document.querySelectorAll('#compare-table tbody tr')].map((tr) => tr.cells[0].textContent)")
    page.locator('#compare-table th[data-column="metric:loss"]').click()
    assert order() == ["a1", "a2", "b1"]
    page.locator('#compare-table th[data-column="metric:loss"]').click()
    assert order() == ["b1", "a2", "a1"]
    page.screenshot(path=str(_artifacts(pytestconfig) / "dashboard-compare.png"))

    # group by "group": a group's mean over its runs, with their min-max band, one colour per group
    page.select_option("#group-by", "group")
    page.wait_for_function(f"() => {_chart(page, 'loss')}.dataset.groups === '2'", timeout=30_000)
    groups = page.evaluate(f"""() => {_chart(page, 'loss')}.data.map((t) => [t.name || '', t.fill || '',
                                         [...t.y], t.line.color])""")
    assert [g[0] for g in groups if not g[1] and g[0]] == ["a: mean of 2 runs", "b: mean of 1 run"]
    mean_a = next(g for g in groups if g[0] == "a: mean of 2 runs")
    band_a = next(g for g in groups if g[0] == "a: min\u2013max over runs")
    assert mean_a[2] == pytest.approx([((0.1 + 0.2) * (10 - s) + 1) / 2 for s in range(10)])  # rank mean: +0.5
    assert band_a[2] == pytest.approx([0.2 * (10 - s) + 0.5 for s in range(10)]) and band_a[3] == mean_a[3]
    page.screenshot(path=str(_artifacts(pytestconfig) / "dashboard-groups.png"))

    # a run filtered out is unselected and no longer charted
    page.select_option("#group-by", "")
    page.fill("#filter", "a2")
    page.wait_for_function(f"() => {_chart(page, 'loss')}?.data?.length === 3", timeout=30_000)
    assert page.evaluate(f"() => {_chart(page, 'loss')}.data.map((t) => t.name)")[2] == "mean of 2 ranks"
    page.fill("#filter", "")
    page.wait_for_function("() => document.querySelectorAll('#runs-table tbody tr').length === 3", timeout=30_000)
    assert page.locator("#runs-table tbody input:checked").count() == 1
    # at 1000 px the runs table stays in its column (or above the charts), never under them
    page.set_viewport_size({"width": 1000, "height": 1000})
    box = page.evaluate("""() => { const t = document.querySelector('#runs').getBoundingClientRect();
        const d = document.querySelector('#details').getBoundingClientRect();
        return [t.right, t.bottom, d.left, d.top, document.documentElement.scrollWidth]; }""")
    assert (box[0] <= box[2] or box[1] <= box[3]) and box[4] <= 1000


def _artifacts(pytestconfig) -> Path:  # type: ignore[no-untyped-def]
    out = Path(pytestconfig.rootpath) / "test-artifacts"
    out.mkdir(exist_ok=True)
    return out
