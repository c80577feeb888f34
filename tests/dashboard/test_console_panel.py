"""The dashboard's console panel: ``/api/console`` (rank filter, search, the last N lines) served by a real collector
process, and the panel in headless Chromium showing lines printed by a live run, filtered as typed."""

from __future__ import annotations

import sys

from test_browser import browser_page  # noqa: F401 (the fixture)
from test_panels_api import error, get

import stepwire
from conftest import CollectorProcess


def _printing_run(address: str) -> stepwire.Run:
    run = stepwire.init(project="dash", name="chatty", address=address, quiet=True, console=True)
    print("epoch 0 starting")
    run.log({"loss": 1.0})
    print("loss went up", file=sys.stderr)
    print("epoch 0 done")
    return run


def test_console_api_filters_by_rank_and_text(dashboard: CollectorProcess) -> None:
    run = _printing_run(dashboard.address)
    run.finish()
    url = dashboard.http + f"api/console?run={run.id}"
    body = get(url)
    assert (body["ranks"], body["total"], body["matched"]) == ([0], 3, 3)
    assert [(line["stream"], line["step"], line["text"]) for line in body["lines"]] == [
        ("stdout", 0, "epoch 0 starting"), ("stderr", 1, "loss went up"), ("stdout", 1, "epoch 0 done")]
    assert all(line["rank"] == 0 and line["wall_time"] > 0 for line in body["lines"])
    assert [line["text"] for line in get(url + "&q=EPOCH")["lines"]] == ["epoch 0 starting", "epoch 0 done"]
    last = get(url + "&lines=1")
    assert (last["matched"], [line["text"] for line in last["lines"]]) == (3, ["epoch 0 done"])
    other = get(url + "&rank=5")
    assert (other["ranks"], other["matched"], other["lines"]) == ([0], 0, [])
    assert error(url + "&lines=0")[0] == 400
    assert error(url + "&rank=x")[0] == 400
    assert error(dashboard.http + "api/console?run=nope")[0] == 404


def test_console_panel_in_the_browser(dashboard: CollectorProcess, browser_page) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    page = browser_page
    run = _printing_run(dashboard.address)
    assert run.flush(30)
    try:
        page.goto(dashboard.http + f"#run={run.id}")
        page.locator(f'#runs-table tbody tr[data-run="{run.id}"]').wait_for(timeout=30_000)
        page.wait_for_function("""() => { const p = document.querySelector('#console-panel');
                                          return p && !p.hidden && p.querySelectorAll('pre.console span').length; }""",
                               timeout=30_000)
        lines = page.locator("#console-lines pre.console span")
        assert lines.count() >= 3  # the lines above, and whatever this test printed meanwhile
        assert page.locator("#console-lines pre.console span.stderr").first.inner_text().endswith("| loss went up\n")
        page.fill("#console-search", "epoch 0 done")
        page.wait_for_function("""() => document.querySelectorAll('#console-lines pre.console span').length === 1""",
                               timeout=30_000)
        assert lines.first.inner_text().endswith("| epoch 0 done\n")
    finally:
        run.finish()

