"""The dashboard's run comparison (``/api/compare``), its group fields in ``/api/runs``, the Plotly.js bundle's
caching (ETag, 304, a year's max-age at a versioned address) and the straggler named by step time, all from a real
collector process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

import stepwire
from conftest import CollectorProcess
from stepwire.api import Api
from stepwire.dashboard.bundle import plotly_js


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def get(url: str) -> Any:
    status, _, body = fetch(url)
    assert status == 200, body
    return json.loads(body)


def _runs(address: str) -> list[str]:
    ids = []
    for i, (lr, opt, group) in enumerate([(0.1, "adam", "a"), (0.01, "sgd", "a"), (0.001, "adam", "b")]):
        run = stepwire.init(project="cmp", name=f"r{i}", address=address, quiet=True, tags=[f"group:{group}"],
                            config={"lr": lr, "opt": {"name": opt, "betas": [0.9, 0.99]}, "bad": float("nan")})
        for step in range(5):
            run.log({"loss": lr * (5 - step), "acc": step / 4}, step=step)
        run.log({"loss": float("nan")}, step=5)  # the last value is NaN: null, min/max over the finite ones
        run.finish()
        ids.append(run.id)
    return ids


def test_compare_holds_config_metrics_and_groups(dashboard: CollectorProcess) -> None:
    ids = _runs(dashboard.address)
    answer = get(dashboard.http + f"api/compare?runs={ids[2]},{ids[0]}")
    assert [r["id"] for r in answer["runs"]] == [ids[2], ids[0]]  # in the order asked
    first = answer["runs"][1]
    assert first["config"] == {"lr": 0.1, "opt.name": "adam", "opt.betas": "[0.9, 0.99]", "bad": "NaN"}
    assert (first["name"], first["group"], first["job_type"], first["status"]) == ("r0", "a", None, "finished")
    summary = Api(address=dashboard.address).run(ids[0]).summary()
    assert first["metrics"]["acc"] == {"last": 1.0, "min": 0.0, "max": 1.0, "last_step": 4}
    assert first["metrics"]["loss"]["min"] == pytest.approx(summary["loss"]["min"]) == pytest.approx(0.1)
    assert first["metrics"]["loss"]["max"] == pytest.approx(0.5)
    assert first["metrics"]["loss"]["last"] is None and first["metrics"]["loss"]["last_step"] == 5
    assert answer["metrics"] == ["acc", "loss"]
    assert answer["config_keys"] == ["bad", "lr", "opt.betas", "opt.name"]
    every = get(dashboard.http + "api/compare?project=cmp")
    assert [r["name"] for r in every["runs"]] == ["r2", "r1", "r0"]  # newest first
    assert get(dashboard.http + "api/compare?project=nothing-here") == {"runs": [], "metrics": [],
                                                                         "config_keys": []}
    rows = get(dashboard.http + "api/runs")
    assert {r["name"]: (r["group"], r["job_type"]) for r in rows} == {"r0": ("a", None), "r1": ("a", None),
                                                                      "r2": ("b", None)}


@pytest.mark.parametrize("query,status,message", [
    ("runs=nope", 404, "no run 'nope'"),
    ("runs=nope,other", 404, "no run 'nope' (and 1 more)"),
    ("runs=" + ",".join(f"r{i}" for i in range(501)), 400, "at most 500 runs can be compared at once, got 501"),
    ("runs=" + "x" * 64_001, 400, "runs must be at most 64000 characters of comma-separated run ids"),
])
def test_compare_refuses_hostile_input(dashboard: CollectorProcess, query: str, status: int, message: str) -> None:
    code, headers, body = fetch(dashboard.http + f"api/compare?{query}")
    assert (code, json.loads(body)) == (status, {"error": message})
    assert headers["content-type"] == "application/json"


def test_unknown_routes_and_parameters_are_4xx(dashboard: CollectorProcess) -> None:
    for path, status in [("api/compare/more", 404), ("api/heatmap?run=nope&name=x&rows=abc", 400),
                         ("api/compare?runs=%ff%fe", 404), ("api/compare?runs=,,,", 200)]:
        code, _, body = fetch(dashboard.http + path)
        assert code == status, (path, body)
        if status != 200:
            assert "\n" not in json.loads(body)["error"]


def test_plotly_bundle_is_cached_with_an_etag(dashboard: CollectorProcess) -> None:
    data = plotly_js().read_bytes()
    tag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
    status, page_headers, page = fetch(dashboard.http)
    assert status == 200 and page_headers["cache-control"] == "no-store"
    assert f'src="/static/plotly.min.js?v={tag.strip(chr(34))}"'.encode() in page
    status, headers, body = fetch(dashboard.http + f"static/plotly.min.js?v={tag.strip(chr(34))}")
    assert (status, body, headers["etag"]) == (200, data, tag)
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert headers["content-type"] == "text/javascript" and headers["x-content-type-options"] == "nosniff"
    status, headers, body = fetch(dashboard.http + "static/plotly.min.js", {"If-None-Match": tag})
    assert (status, body, headers["etag"]) == (304, b"", tag)
    status, _, body = fetch(dashboard.http + "static/plotly.min.js", {"If-None-Match": f'W/{tag}, "other"'})
    assert (status, body) == (304, b"")
    status, _, body = fetch(dashboard.http + "static/plotly.min.js", {"If-None-Match": '"stale"'})
    assert (status, len(body)) == (200, len(data))


def test_slowest_rank_is_named_by_step_time(dashboard: CollectorProcess) -> None:
    """Rank 0 starts 0.4 s late but steps as fast as rank 2; rank 1 takes 1.5 times as long per step. The rank
    furthest behind the median is rank 0; the slowest, named, is rank 1."""
    runs = [stepwire.init(project="skew", address=dashboard.address, run_id="by-step-time", rank=r, world_size=3,
                          quiet=True) for r in range(3)]
    period = {0: 0.04, 1: 0.06, 2: 0.04}
    start = {0: 0.4, 1: 0.0, 2: 0.0}
    events = sorted((start[r] + period[r] * s, r, s) for r in range(3) for s in range(10))
    t0 = time.monotonic()
    for at, r, s in events:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        runs[r].log({"loss": 1.0}, step=s)
    for run in runs:
        run.finish()
    skew = get(dashboard.http + "api/skew?run=by-step-time")
    times = {r["rank"]: r["step_time"] for r in skew["ranks"]}
    assert times[1] > 1.3 * max(times[0], times[2])
    assert skew["slowest"] == 1 and skew["step_time_ratio"] > 1.3
    assert skew["most_behind"] == 0 and skew["most_behind_lag"] > 0.2
    assert skew["lag"] == next(r["lag"] for r in skew["ranks"] if r["rank"] == 1)
    view = Api(address=dashboard.address).run("by-step-time").step_skew()
    assert (view["slowest"], view["most_behind"]) == (1, 0)
    out = subprocess.run([sys.executable, "-m", "stepwire", "show", "by-step", "--address", dashboard.address],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=60)
    said = " ".join(out.stdout.split())
    assert out.returncode == 0 and "slowest rank 1 (step time x" in said and "furthest behind: rank 0," in said
