"""The dashboard's media API against a real collector process: ``/api/media`` groups a run's records by name and
step, ``/api/media/blob`` serves a record's content typed by the stored record (never by the request), with
``nosniff``, and sandboxed (HTML cannot run script or reach the dashboard's origin), only for a sha256 the run
holds; ``/api/media/table`` sends a table's first rows as JSON columns; all behind the dashboard's token."""

from __future__ import annotations

import io
import json
import signal
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_panels_api import error, get
from test_ui_command import ui, url_of

import stepwire
from conftest import CollectorProcess, start_collector
from stepwire.dashboard import panels
from stepwire.dashboard.panels import Panels
from stepwire.store.base import MediaEntry, RunRecord
from test_media import wav_bytes


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body, for any status."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _media_run(address: str, token: str | None = None, name: str = "media") -> stepwire.Run:
    run = stepwire.init(project="dash", name=name, address=address, token=token, quiet=True)
    for step in (0, 5, 10):
        run.log_image("samples/input", np.full((8, 12, 3), step * 20, dtype=np.uint8), step=step,
                      caption=f"at {step}")
    run.log_media("audio/sine", wav_bytes(), step=0, caption="sine")
    run.log_media("report", "<h1>report</h1><script>document.title='ran'</script>", step=1, kind="html")
    run.log_plot("curves/pr", {"data": [{"type": "scatter", "x": [0, 1, 2], "y": [1, 0.5, 0.2]}],
                               "layout": {"title": {"text": "pr"}}}, step=2)
    run.log_table("eval/predictions", {"id": list(range(1500)), "label": [f"c{i % 3}" for i in range(1500)],
                                       "score": [i / 1500 for i in range(1500)]}, step=3)
    assert run.flush(30)
    return run


def test_media_listing_groups_by_name_and_step(dashboard: CollectorProcess) -> None:
    run = _media_run(dashboard.address)
    body = get(dashboard.http + f"api/media?run={run.id}")
    assert (body["total"], body["names_total"]) == (7, 5)
    names = {n["name"]: n for n in body["names"]}
    assert sorted(names) == ["audio/sine", "curves/pr", "eval/predictions", "report", "samples/input"]
    samples = names["samples/input"]
    assert (samples["kind"], samples["steps_total"]) == ("image", 3)
    assert [s["step"] for s in samples["steps"]] == [0, 5, 10]
    item = samples["steps"][-1]["items"][0]
    assert (item["rank"], item["mime"], item["caption"], item["width"], item["height"]) == (
        0, "image/png", "at 10", 12, 8)
    assert len(item["sha256"]) == 64 and item["size"] > 0
    assert [n["kind"] for n in get(dashboard.http + f"api/media?run={run.id}&kind=plotly")["names"]] == ["plotly"]
    only = get(dashboard.http + f"api/media?run={run.id}&name=report")["names"]
    assert [(n["name"], n["kind"]) for n in only] == [("report", "html")]
    assert error(dashboard.http + f"api/media?run={run.id}&kind=exe")[0] == 400
    assert error(dashboard.http + "api/media?run=nope")[0] == 404
    run.finish()


def test_blobs_are_typed_by_the_stored_record_and_sandboxed(dashboard: CollectorProcess) -> None:
    run = _media_run(dashboard.address)
    names = {n["name"]: n for n in get(dashboard.http + f"api/media?run={run.id}")["names"]}

    def blob(name: str, extra: str = "") -> tuple[int, dict[str, str], bytes]:
        sha = names[name]["steps"][-1]["items"][0]["sha256"]
        return fetch(dashboard.http + f"api/media/blob?run={run.id}&sha={sha}{extra}")

    status, headers, body = blob("samples/input")
    assert (status, headers["content-type"], headers["x-content-type-options"]) == (200, "image/png", "nosniff")
    assert np.asarray(Image.open(io.BytesIO(body))).max() == 200  # step 10's pixels
    assert int(headers["content-length"]) == len(body)
    # the type comes from the record: a content type or format asked for in the query changes nothing
    status, headers, _ = blob("samples/input", "&type=text/html&mime=text/html&content_type=text/html")
    assert (status, headers["content-type"]) == (200, "image/png")
    assert blob("audio/sine")[1]["content-type"] == "audio/wav" and blob("audio/sine")[2] == wav_bytes()
    status, headers, body = blob("report")
    assert (status, headers["content-type"], body) == (
        200, "text/html", b"<h1>report</h1><script>document.title='ran'</script>")
    csp = [d.strip() for d in headers["content-security-policy"].split(";")]
    assert csp[0] == "sandbox" and "script-src" not in headers["content-security-policy"]
    assert "default-src 'none'" in csp and headers["x-content-type-options"] == "nosniff"
    status, headers, body = blob("curves/pr")
    assert headers["content-type"] == "application/vnd.plotly.v1+json"
    assert json.loads(body)["data"][0]["y"] == [1, 0.5, 0.2]
    # every blob is sandboxed, not only HTML
    assert blob("samples/input")[1]["content-security-policy"].startswith("sandbox")
    run.finish()


def test_a_sha_the_run_does_not_own_is_404(dashboard: CollectorProcess) -> None:
    mine = _media_run(dashboard.address, name="mine")
    other = stepwire.init(project="dash", name="other", address=dashboard.address, quiet=True)
    other.log_image("secret", np.full((4, 4), 7, dtype=np.uint8), step=0)
    assert other.flush(30)
    (secret,) = get(dashboard.http + f"api/media?run={other.id}")["names"]
    sha = secret["steps"][0]["items"][0]["sha256"]
    assert fetch(dashboard.http + f"api/media/blob?run={other.id}&sha={sha}")[0] == 200
    status, headers, body = fetch(dashboard.http + f"api/media/blob?run={mine.id}&sha={sha}")
    assert (status, headers["content-type"]) == (404, "application/json") and b"no media record" in body
    assert fetch(dashboard.http + f"api/media/table?run={mine.id}&sha={sha}")[0] == 404
    assert fetch(dashboard.http + f"api/media/blob?run={mine.id}&sha={'0' * 64}")[0] == 404
    assert fetch(dashboard.http + f"api/media/blob?run=nope&sha={sha}")[0] == 404
    # the record of another name of the same run does not hold it either
    input_sha = get(dashboard.http + f"api/media?run={mine.id}&name=samples/input")["names"][0]["steps"][0][
        "items"][0]["sha256"]
    assert fetch(dashboard.http + f"api/media/blob?run={mine.id}&sha={input_sha}&name=report")[0] == 404
    for bad in ("../../etc/passwd", "ABC", sha.upper(), sha + "0"):
        assert fetch(dashboard.http + f"api/media/blob?run={mine.id}&sha={bad}")[0] == 400
    assert fetch(dashboard.http + f"api/media/blob?run={mine.id}")[0] == 400
    mine.finish()
    other.finish()


def test_tables_as_json_columns_bounded(dashboard: CollectorProcess) -> None:
    run = _media_run(dashboard.address)
    (table,) = get(dashboard.http + f"api/media?run={run.id}&kind=table")["names"]
    url = dashboard.http + f"api/media/table?run={run.id}&sha={table['steps'][0]['items'][0]['sha256']}"
    body = get(url)
    assert body["columns"] == ["id", "label", "score"]
    assert (body["rows"], body["rows_total"], body["truncated"]) == (1000, 1500, True)
    assert body["data"][0][:3] == [0, 1, 2] and body["data"][1][:3] == ["c0", "c1", "c2"]
    assert body["data"][2][3] == pytest.approx(3 / 1500)
    few = get(url + "&rows=5")
    assert (few["rows"], few["truncated"], few["data"][0]) == (5, True, [0, 1, 2, 3, 4])
    assert error(url + "&rows=0")[0] == 400 and error(url + "&rows=10001")[0] == 400
    (plot,) = get(dashboard.http + f"api/media?run={run.id}&kind=plotly")["names"]
    plot_sha = plot["steps"][0]["items"][0]["sha256"]
    status, message = error(dashboard.http + f"api/media/table?run={run.id}&sha={plot_sha}")
    assert status == 400 and "not a table" in message
    run.finish()


def test_media_routes_need_the_token(tmp_path: Path) -> None:
    token = "media-token-5678"
    c = start_collector(tmp_path / "c", "--http", "127.0.0.1:0", "--token", token)
    try:
        run = _media_run(c.address, token=token)
        bearer = {"Authorization": f"Bearer {token}"}
        names = get(c.http + f"api/media?run={run.id}", bearer)["names"]
        sha = names[0]["steps"][0]["items"][0]["sha256"]
        table = next(n for n in names if n["kind"] == "table")["steps"][0]["items"][0]["sha256"]
        for path in (f"api/media?run={run.id}", f"api/media/blob?run={run.id}&sha={sha}",
                     f"api/media/table?run={run.id}&sha={table}"):
            assert fetch(c.http + path)[0] == 401
            assert fetch(c.http + path + f"&token={token}")[0] == 401  # a token in the query is not accepted
            assert fetch(c.http + path, {"Authorization": "Bearer wrong"})[0] == 401
            assert fetch(c.http + path, bearer)[0] == 200
        run.finish()
    finally:
        c.stop()


class _ManyMedia:
    """A reader holding one run with ``names`` image names of ``steps`` steps, ``ranks`` records a step."""

    def __init__(self, names: int, steps: int, ranks: int = 1) -> None:
        self.entries = [MediaEntry(f"n{n:04d}", s, r, 0.0, "image", "image/png", "", 1, 1, 10, f"{n:032x}{s:032x}")
                        for n in range(names) for s in range(steps) for r in range(ranks)]

    def runs(self, project: str | None = None) -> list[RunRecord]:
        return [RunRecord("r", "p", "n")]

    def media(self, run_id: str, name: str | None = None, step: int | None = None,
              kind: str | None = None) -> list[MediaEntry]:
        return [e for e in self.entries if name is None or e.name == name]


def test_media_listing_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names past ``MAX_MEDIA_NAMES`` are left out, steps past ``MAX_MEDIA_STEPS`` evenly thinned (the last kept),
    and past ``MAX_MEDIA_ITEMS`` records every name lists fewer steps; the totals say what there is."""
    monkeypatch.setattr(panels, "MAX_MEDIA_NAMES", 3)
    monkeypatch.setattr(panels, "MAX_MEDIA_STEPS", 10)
    monkeypatch.setattr(panels, "MAX_MEDIA_ITEMS", 1000)
    body = Panels(_ManyMedia(5, 40)).media("r")  # type: ignore[arg-type]
    assert (body["total"], body["names_total"]) == (200, 5)
    assert [n["name"] for n in body["names"]] == ["n0000", "n0001", "n0002"]
    steps = [s["step"] for s in body["names"][0]["steps"]]
    assert (len(steps), steps[0], steps[-1], body["names"][0]["steps_total"]) == (10, 0, 39, 40)
    monkeypatch.setattr(panels, "MAX_MEDIA_ITEMS", 24)  # 3 names x 4 ranks: 2 steps each
    body = Panels(_ManyMedia(5, 40, ranks=4)).media("r")  # type: ignore[arg-type]
    assert sum(len(s["items"]) for n in body["names"] for s in n["steps"]) <= 24
    assert all(n["steps"][-1]["step"] == 39 and len(n["steps"][-1]["items"]) == 4 for n in body["names"])
    monkeypatch.setattr(panels, "MAX_MEDIA_ITEMS", 1)  # never less than each name's last step
    body = Panels(_ManyMedia(2, 40)).media("r")  # type: ignore[arg-type]
    assert [[s["step"] for s in n["steps"]] for n in body["names"]] == [[39], [39]]


def test_ranks_at_one_step_and_table_cells(dashboard: CollectorProcess) -> None:
    """Each rank's record at a step is one item of that step; long text in a table cell is cut, a missing
    value is null."""
    runs = [stepwire.init(project="dash", name="ranked-media", address=dashboard.address, run_id="ranked-media",
                          rank=r, world_size=2, quiet=True) for r in range(2)]
    try:
        for r, run in enumerate(runs):
            run.log_image("samples", np.full((4, 6), 100 * r, dtype=np.uint8), step=3, caption=f"rank {r}")
        runs[0].log_table("t", {"text": ["x" * 5000, "short"], "v": [float("nan"), 1.5]}, step=3)
        for run in runs:
            assert run.flush(30)
        names = {n["name"]: n for n in get(dashboard.http + "api/media?run=ranked-media")["names"]}
        (at,) = names["samples"]["steps"]
        assert [(i["rank"], i["caption"]) for i in at["items"]] == [(0, "rank 0"), (1, "rank 1")]
        assert at["items"][0]["sha256"] != at["items"][1]["sha256"]
        sha = names["t"]["steps"][0]["items"][0]["sha256"]
        body = get(dashboard.http + f"api/media/table?run=ranked-media&sha={sha}")
        (long, short), (missing, v) = body["data"]
        assert (len(long), long[-1], short) == (panels.MAX_CELL_CHARS, "…", "short")
        assert (missing, v, body["truncated"]) == (None, 1.5, False)
    finally:
        for run in runs:
            run.finish()


def test_media_over_the_query_service(tmp_path: Path) -> None:
    """``stepwire ui`` over the Query service of a collector without a dashboard serves the same media answers."""
    c = start_collector(tmp_path / "plain")  # no --http
    proc = None
    try:
        with stepwire.init(project="ui", name="remote-media", address=c.address, quiet=True) as run:
            run.log_image("samples", np.full((5, 7, 3), 9, dtype=np.uint8), step=2, caption="remote")
            run.log_table("t", {"a": [1, 2, 3]}, step=2)
        proc = ui(c.dir)
        assert proc.stdout is not None
        url = url_of(proc.stdout.readline())
        names = {n["name"]: n for n in get(url + f"api/media?run={run.id}")["names"]}
        item = names["samples"]["steps"][0]["items"][0]
        assert (item["caption"], item["width"], item["height"]) == ("remote", 7, 5)
        status, headers, body = fetch(url + f"api/media/blob?run={run.id}&sha={item['sha256']}")
        assert (status, headers["content-type"], headers["x-content-type-options"]) == (200, "image/png", "nosniff")
        assert np.asarray(Image.open(io.BytesIO(body))).shape == (5, 7, 3)
        assert fetch(url + f"api/media/blob?run={run.id}&sha={'b' * 64}")[0] == 404
        table = names["t"]["steps"][0]["items"][0]["sha256"]
        assert get(url + f"api/media/table?run={run.id}&sha={table}")["data"] == [[1, 2, 3]]
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        c.stop()
