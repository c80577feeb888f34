"""The side-by-side benchmark: every adapter really logs, its storage is read back, missing peers are said so."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stepwire.compare.peers import Peer, Stepwire, Unsupported, all_peers
from stepwire.compare.suite import _training, measure, run_one


@pytest.mark.parametrize("peer", all_peers(), ids=lambda p: p.name)
def test_each_available_peer_logs_and_stores_what_it_was_given(peer: Peer) -> None:
    if not peer.available():
        pytest.skip(f"{peer.module} is not installed")
    if peer.name not in ("baseline", "stepwire", "tensorboard") and not os.environ.get("STEPWIRE_TEST_PEERS"):
        pytest.skip("set STEPWIRE_TEST_PEERS=1 to exercise the slow peers (they start services of their own)")
    result = measure(peer, "B", 1, budget_s=1.0)  # in a fresh process, as the suite runs it
    assert result["status"] == "ok", result
    assert result["median_us"] > 0 and result["expected"] > 0
    assert result["stored"] is None if peer.name == "baseline" else result["stored"] == result["expected"]


def test_stepwire_workloads_in_process(tmp_path: Path) -> None:
    a = run_one(Stepwire(), "A", 1, tmp_path / "a")
    assert a["stored"] == a["expected"] == 20_000 and 0 < a["median_ns"] <= a["p99_ns"]
    result = _training(Stepwire(), 4, tmp_path / "d")
    assert result["stored"] == result["expected"] == 7 * (1 + 6 * 6)


def test_a_missing_peer_is_reported_missing_not_faked() -> None:
    class Nowhere(Peer):
        name = "nowhere"
        module = "no_such_logger_package_xyz"

    assert measure(Nowhere(), "A", 1, budget_s=1.0) == {
        "status": "missing", "detail": "no_such_logger_package_xyz is not installed (pip install 'stepwire[bench]')"}


def test_unsupported_workloads_raise_rather_than_pretend(tmp_path: Path) -> None:
    with pytest.raises(Unsupported):
        Peer().histogram("x", None, 0)  # type: ignore[arg-type]


def test_report_writes_json_and_a_table_for_every_status(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from stepwire.compare.suite import WORKLOADS, report

    ok = {"A": {"median_ns": 100.0, "p99_ns": 300.0}, "B": {"median_us": 2.0}, "C": {"median_ms": 0.5},
          "D": {"median_ms": 10.0, "base_ms": 9.0, "overhead_ms": 1.0}, "E": {"points_per_s": 1e6}}
    results = {w: {"baseline": {"status": "ok", **ok[w], "expected": 1, "stored": None},
                   "stepwire": {"status": "ok", **ok[w], "expected": 5, "stored": 5},
                   "other": {"status": "missing", "detail": "x"}} for w in WORKLOADS}
    path = report(results, False, tmp_path)
    assert path.exists() and json.loads(path.read_text())["results"]["A"]["stepwire"]["stored"] == 5
    printed = capsys.readouterr().out
    assert "missing" in printed and "F 5/5" in printed
