"""The dashboard's JSON API, served by a real collector process (``--http``), for every panel's data."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest

import stepwire
from conftest import CollectorProcess, start_collector
from stepwire.api import Api
from stepwire.histogram import Histogram


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def get(url: str, headers: dict[str, str] | None = None) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
        return json.loads(r.read())


def error(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    with pytest.raises(urllib.error.HTTPError) as info:
        get(url, headers)
    return info.value.code, json.loads(info.value.read())["error"]


def _ranked_run(address: str, ranks: int = 3, steps: int = 40) -> str:
    runs = [stepwire.init(project="dash", name="ranked", address=address, run_id="ranked-run", rank=r,
                          world_size=ranks, quiet=True, config={"lr": 0.1}, tags=["multi"]) for r in range(ranks)]
    rng = np.random.default_rng(0)
    for step in range(steps):
        for r, run in enumerate(runs):
            run.log({"train/loss": 1.0 / (step + 1) + r, "train/acc": step * 0.01 * (r + 1)}, step=step)
            if step % 4 == 0:
                run.log_histogram("weights/w", rng.standard_normal(1000) * (r + 1), step=step)
    for run in runs:
        run.finish()
    return "ranked-run"


def test_runs_series_and_overhead(dashboard: CollectorProcess) -> None:
    run = stepwire.init(project="dash", name="single", address=dashboard.address, quiet=True,
                        config={"lr": 0.01, "opt": "adam"}, tags=["a", "b"])
    for i in range(10):
        run.log({"loss": 1.0 / (i + 1), "eval/acc": i / 10})
    run.finish()
    rows = get(dashboard.http + "api/runs")
    assert [r["id"] for r in rows] == [run.id]
    row = rows[0]
    assert (row["project"], row["name"], row["status"], row["tags"], row["config"], row["ranks"]) == (
        "dash", "single", "finished", ["a", "b"], {"lr": 0.01, "opt": "adam"}, [0])
    assert row["created"] <= row["finished"] and row["duration"] == pytest.approx(row["finished"] - row["created"])
    overhead = row["overhead"]["0"]
    assert overhead["logged"] == 20 and overhead["dropped"] == 0
    assert 0 < overhead["logging_s"] and 0 < overhead["logging_fraction"] < 1
    series = get(dashboard.http + f"api/series?run={run.id}")
    assert [(s["section"], s["name"], s["kind"], s["items"]) for s in series] == [
        ("", "loss", "scalar", 10), ("eval", "eval/acc", "scalar", 10)]
    assert get(dashboard.http + "api/runs?project=other") == []


def test_scalars_per_rank_and_across_ranks(dashboard: CollectorProcess) -> None:
    run_id = _ranked_run(dashboard.address)
    data = get(dashboard.http + f"api/scalars?run={run_id}&name=train/loss")
    assert data["total"] == 120 and data["nonfinite"] == 0
    view = Api(address=dashboard.address).run(run_id)
    for r in data["ranks"]:
        mine = view.scalars("train/loss", ranks=[r["rank"]])
        assert r["x"] == mine["step"].tolist() and r["y"] == mine["value"].tolist()
    agg = data["agg"]
    for key in ("mean", "min", "max"):
        expected = view.scalars("train/loss", agg=key)
        assert agg["x"] == expected["step"].tolist()
        assert np.allclose(agg[key], expected["value"])
    assert agg["count"] == [3] * 40
    wall = get(dashboard.http + f"api/scalars?run={run_id}&name=train/loss&x=wall_time")
    assert all(np.all(np.diff(r["x"]) >= 0) and r["x"][0] > 1e9 for r in wall["ranks"])


def _assert_extremes_kept(stored_x: np.ndarray, stored_y: np.ndarray, curve: dict[str, Any], points: int) -> None:
    """At most ``points`` points; the min and max of every bucket the server declares are among them."""
    x = np.array(curve["x"], dtype=np.float64)
    y = np.array([np.nan if v is None else v for v in curve["y"]])
    assert len(x) <= points and np.all(np.diff(x) >= 0)
    starts = np.array(curve["buckets"], dtype=np.float64)
    assert len(starts) <= points // 2 and starts[0] == stored_x[0]
    which = np.searchsorted(starts, stored_x, side="right") - 1
    shown_which = np.searchsorted(starts, x, side="right") - 1
    for b in range(len(starts)):
        stored = stored_y[which == b]
        shown = y[shown_which == b]
        assert len(shown) and np.nanmin(shown) == np.nanmin(stored) and np.nanmax(shown) == np.nanmax(stored), b


@pytest.mark.parametrize("ascending", [True, False])
def test_long_series_downsampled_on_the_server(dashboard: CollectorProcess, ascending: bool) -> None:
    """Both ways of downsampling: from the store's block extremes (wide buckets of a series logged in step
    order) and from the points (narrow buckets, or steps out of order)."""
    run = stepwire.init(project="dash", name="long", address=dashboard.address, quiet=True)
    n = 200_000
    values = np.sin(np.arange(n) / 500.0) + np.random.default_rng(1).standard_normal(n) * 0.01
    values[77_777] = 9.0  # spikes that a chart must not lose
    values[155_555] = -9.0
    values[1000] = np.nan
    steps = np.arange(n) if ascending else np.r_[np.arange(1, n), 0]
    for step, v in zip(steps.tolist(), values.tolist(), strict=True):
        run.log_scalar("signal", v, step=step)
    run.finish()
    order = np.argsort(steps, kind="stable")
    stored_x, stored_y = steps[order].astype(np.float64), values[order]
    for points in (2, 100, 1000):
        data = get(dashboard.http + f"api/scalars?run={run.id}&name=signal&points={points}")
        assert data["total"] == n and data["nonfinite"] == 1
        _assert_extremes_kept(stored_x, stored_y, data["ranks"][0], points)
    wall = get(dashboard.http + f"api/scalars?run={run.id}&name=signal&points=100&x=wall_time")
    stored_wall = Api(address=dashboard.address).run(run.id).scalars("signal")
    wall_order = np.argsort(stored_wall["wall_time"], kind="stable")
    _assert_extremes_kept(stored_wall["wall_time"][wall_order], stored_wall["value"][wall_order], wall["ranks"][0],
                          100)


def test_heatmap_and_histogram_at_step(dashboard: CollectorProcess) -> None:
    run_id = _ranked_run(dashboard.address)
    view = Api(address=dashboard.address).run(run_id)
    merged = view.histograms("weights/w")
    heat = get(dashboard.http + f"api/heatmap?run={run_id}&name=weights/w")
    assert heat["total"] == len(merged) == 10 and heat["steps"] == [h.step for h in merged]
    z = np.array(heat["z"])
    assert z.shape == (len(heat["lower"]), 10) and len(heat["lower"]) <= 120
    assert np.all(np.diff(heat["lower"]) > 0), "rows ascend in value"
    for col, h in enumerate(merged):
        coarse = h.downscale(heat["k"])
        lower, _ = coarse.edges()
        assert z[:, col].sum() == h.counts.sum() == 3000
        assert z[np.searchsorted(heat["lower"], lower), col].tolist() == coarse.counts.tolist()
    few = get(dashboard.http + f"api/heatmap?run={run_id}&name=weights/w&steps=4&rows=20&rank=2")
    assert (len(few["steps"]) <= 4 and len(few["lower"]) <= 20) or few["k"] == 0
    assert np.array(few["z"]).sum(axis=0).tolist() == [1000] * len(few["steps"])

    at = get(dashboard.http + f"api/histogram?run={run_id}&name=weights/w&step=10")
    assert at["step"] == 8 and at["steps"] == [h.step for h in merged]
    h8: Histogram = merged[2]
    assert at["counts"] == h8.counts.tolist() and at["count"] == h8.count and at["k"] == h8.k
    assert at["lower"] == h8.edges()[0].tolist() and at["min"] == h8.min and at["max"] == h8.max
    last = get(dashboard.http + f"api/histogram?run={run_id}&name=weights/w")
    assert last["step"] == 36


def test_step_skew_panel(dashboard: CollectorProcess) -> None:
    runs = [stepwire.init(project="dash", address=dashboard.address, run_id="skewed", rank=r, world_size=2,
                          quiet=True) for r in range(2)]
    for step in range(6):
        runs[0].log({"loss": 1.0}, step=step)
        time.sleep(0.05)
        runs[1].log({"loss": 1.0}, step=step)  # rank 1 logs each step 50 ms after rank 0
    for run in runs:
        run.finish()
    skew = get(dashboard.http + "api/skew?run=skewed")
    assert skew["slowest"] == 1 and skew["series"] == "loss"
    assert [r["steps"] for r in skew["ranks"]] == [6, 6]
    assert skew["lag"] > 0.01


def test_errors_are_json(dashboard: CollectorProcess) -> None:
    base = dashboard.http
    assert error(base + "api/scalars?run=nope&name=x") == (404, "no run 'nope'")
    run = stepwire.init(project="dash", address=dashboard.address, quiet=True)
    run.log({"loss": 1.0})
    run.finish()
    assert error(base + f"api/scalars?run={run.id}")[0] == 400
    assert error(base + f"api/scalars?run={run.id}&name=loss&points=1")[0] == 400
    assert error(base + f"api/scalars?run={run.id}&name=loss&points=x")[0] == 400
    assert error(base + f"api/scalars?run={run.id}&name=loss&x=epoch")[0] == 400
    assert error(base + f"api/histogram?run={run.id}&name=loss")[0] == 404
    assert error(base + "api/nothing")[0] == 404
    assert error(base + "static/../collector.json")[0] == 404
    assert get(base + f"api/scalars?run={run.id}&name=missing")["total"] == 0


def test_page_and_plotly_are_served(dashboard: CollectorProcess) -> None:
    with urllib.request.urlopen(dashboard.http, timeout=30) as r:
        page = r.read().decode()
    assert "/static/app.js" in page and "/static/plotly.min.js" in page
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css"), ("plotly.min.js", "text/javascript")):
        with urllib.request.urlopen(dashboard.http + "static/" + name, timeout=30) as r:
            assert r.headers["Content-Type"] == kind and len(r.read()) > 500


def test_token_protects_the_dashboard(tmp_path: Any) -> None:
    c = start_collector(tmp_path / "c", "--http", "127.0.0.1:0", "--token", "s3cret")
    try:
        assert error(c.http + "api/runs")[0] == 401
        assert error(c.http + "api/runs", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(c.http + "api/runs", {"Authorization": "Bearer s3cret"}) == []
        with pytest.raises(urllib.error.HTTPError) as redirect:  # the token in the address: cookie and redirect
            urllib.request.build_opener(NoRedirect).open(c.http + "?token=s3cret", timeout=30)
        assert redirect.value.code == 303 and redirect.value.headers["Location"] == "/"
        cookie = redirect.value.headers["Set-Cookie"].split(";")[0]
        redirect.value.close()
        assert "s3cret" not in cookie
        assert get(c.http + "api/runs", {"Cookie": cookie}) == []
    finally:
        c.stop()


def test_histogram_display_bins(dashboard: CollectorProcess) -> None:
    run = stepwire.init(project="dash", address=dashboard.address, quiet=True)
    values = np.random.default_rng(5).standard_normal(10_000)
    run.log_histogram("h", values, step=3)
    run.finish()
    data = get(dashboard.http + f"api/histogram?run={run.id}&name=h&bins=10")
    edges, counts = Histogram.from_values(values).to_bins(10)
    assert data["bin_edges"] == edges.tolist() and data["bin_counts"] == counts.tolist()
    assert sum(data["bin_counts"]) == 10_000
    assert error(dashboard.http + f"api/histogram?run={run.id}&name=h&bins=0")[0] == 400
