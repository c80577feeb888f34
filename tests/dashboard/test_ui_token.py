"""``stepwire ui`` and tokens, with real processes: the dashboard it serves over a token-protected collector's
Query service wants that token too, and every URL it prints opens the dashboard (``/?token=...``)."""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import stepwire
from conftest import CollectorProcess, start_collector, stop_embedded

TOKEN = "ui-" + uuid.uuid4().hex


def env(token: str | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "STEPWIRE_TOKEN"}
    if token is not None:
        out["STEPWIRE_TOKEN"] = token
    return out


@contextmanager
def ui(directory: Path, *extra: str, token: str | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``stepwire ui`` serving in the background; yields the process and the URL it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "stepwire", "ui", "--dir", str(directory), "--http",
                             "127.0.0.1:0", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(token))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=30)[1]
        yield proc, next(word for word in line.split() if word.startswith("http://"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0


def status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def browse(printed: str) -> tuple[str, Any]:
    """Open the printed URL as a browser would (following the redirect, keeping the cookie); the address it ends
    at and the runs the dashboard then lists."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(printed, timeout=30) as page:
        landed = page.geturl()
        assert b"/static/app.js" in page.read()
    with opener.open(landed + "api/runs", timeout=30) as r:
        return landed, json.loads(r.read())


def logged_run(c: CollectorProcess) -> str:
    with stepwire.init(project="ui", name="guarded", address=c.address, token=TOKEN, quiet=True) as run:
        run.log({"loss": 0.5})
    return run.id


def test_ui_over_the_query_service_of_a_token_collector(tmp_path: Path) -> None:
    c = start_collector(tmp_path / "c", "--token", TOKEN)  # no dashboard of its own
    try:
        run_id = logged_run(c)
        for extra, token in (((), TOKEN), (("--token", TOKEN), None)):  # $STEPWIRE_TOKEN or --token
            with ui(c.dir, *extra, token=token) as (_, printed):
                base, _, query = printed.partition("?")
                assert query == f"token={TOKEN}"
                assert status(base + "api/runs") == 401  # nobody without the token
                assert status(base) == 401
                assert status(base + "api/runs", {"Authorization": "Bearer wrong"}) == 401
                assert status(base + "api/runs", {"Authorization": f"Bearer {TOKEN}"}) == 200
                landed, runs = browse(printed)
                assert landed == base  # the token left the address
                assert [r["id"] for r in runs] == [run_id]
    finally:
        c.stop()


def test_ui_without_the_token_says_so(tmp_path: Path) -> None:
    c = start_collector(tmp_path / "c", "--token", TOKEN)
    try:
        for given in ((), ("--token", "wrong")):
            done = subprocess.run([sys.executable, "-m", "stepwire", "ui", "--dir", str(c.dir), "--http",
                                   "127.0.0.1:0", *given], capture_output=True, text=True, timeout=60, env=env(None))
            assert done.returncode == 2 and "token" in done.stderr and done.stdout == ""
    finally:
        c.stop()


def test_ui_prints_the_url_with_the_token_of_a_collectors_dashboard(tmp_path: Path) -> None:
    c = start_collector(tmp_path / "c", "--http", "127.0.0.1:0", "--token", TOKEN)
    try:
        run_id = logged_run(c)
        with ui(c.dir, token=TOKEN) as (proc, printed):  # holds a lease on that collector: the token is needed
            assert printed == c.http + f"?token={TOKEN}"
            landed, runs = browse(printed)
            assert landed == c.http and [r["id"] for r in runs] == [run_id]
            assert proc.poll() is None  # still up: its heartbeats carry the token
    finally:
        c.stop()


@pytest.mark.parametrize("how", ["env", "flag"])
def test_ui_starts_a_collector_with_the_token(tmp_path: Path, how: str) -> None:
    directory = tmp_path / "data"
    try:
        extra = ("--token", TOKEN) if how == "flag" else ()
        with ui(directory, *extra, token=TOKEN if how == "env" else None) as (_, printed):
            base = printed.partition("?")[0]
            assert printed == base + f"?token={TOKEN}"
            assert status(base + "api/runs") == 401
            assert browse(printed) == (base, [])
    finally:
        stop_embedded(directory)
