"""``stepwire export``: TensorBoard event files read back with TensorBoard's own EventAccumulator, CSV and
Parquet read back with DuckDB; every value and count matches what ``Api`` returns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import stepwire
from conftest import CollectorProcess
from stepwire.api import Api, RunView


def _two_rank_run(address: str) -> RunView:
    runs = [stepwire.init(project="exp", name="two", address=address, run_id="export-run", rank=r, world_size=2,
                          quiet=True) for r in range(2)]
    rng = np.random.default_rng(3)
    for step in range(30):
        for r, run in enumerate(runs):
            run.log({"loss": 1.0 / (step + 1) + 0.5 * r, "lr": 0.1}, step=step)
            if step % 5 == 0:
                values = rng.standard_normal(2000) * (r + 1)
                values[:3] = [np.nan, np.inf, 0.0]
                run.log_histogram("grad/w", values, step=step)
    for run in runs:
        run.finish()
    return Api(address=address).run("export-run")


def _accumulator(path: Path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def _export(address: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "stepwire", "export", "export-run", "--address", address, *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_tensorboard_aggregated(collector: CollectorProcess, tmp_path: Path) -> None:
    view = _two_rank_run(collector.address)
    out = _export(collector.address, "--tensorboard", str(tmp_path / "tb"))
    acc = _accumulator(tmp_path / "tb" / "two-export-run")
    assert str(tmp_path / "tb" / "two-export-run") in out
    assert sorted(acc.Tags()["scalars"]) == ["loss", "lr"] and acc.Tags()["histograms"] == ["grad/w"]
    for name in ("loss", "lr"):
        mean = view.scalars(name, agg="mean")
        events = acc.Scalars(name)
        assert [e.step for e in events] == mean["step"].tolist()
        assert np.allclose([e.value for e in events], mean["value"].astype(np.float32))
        assert [e.wall_time for e in events] == mean["wall_time"].tolist()
    merged = view.histograms("grad/w")
    events = acc.Histograms("grad/w")
    assert [e.step for e in events] == [h.step for h in merged]
    for e, h in zip(events, merged, strict=True):
        tb = e.histogram_value
        counts = np.array(tb.bucket)
        assert tb.num == h.counts.sum() == h.count - h.nan - h.pos_inf - h.neg_inf == 3996
        assert counts[counts > 0].tolist() == h.counts[h.counts > 0].astype(float).tolist()
        assert np.array(tb.bucket_limit)[counts > 0].tolist() == h.edges()[1].tolist()
        assert (tb.min, tb.max, tb.sum) == (h.min, h.max, h.sum)
        assert np.all(np.diff(tb.bucket_limit) > 0)


def test_tensorboard_per_rank(collector: CollectorProcess, tmp_path: Path) -> None:
    view = _two_rank_run(collector.address)
    _export(collector.address, "--tensorboard", str(tmp_path / "tb"), "--per-rank")
    for rank in (0, 1):
        acc = _accumulator(tmp_path / "tb" / "two-export-run" / f"rank{rank}")
        mine = view.scalars("loss", ranks=[rank])
        assert [(e.step, e.value) for e in acc.Scalars("loss")] == list(
            zip(mine["step"].tolist(), mine["value"].astype(np.float32).tolist(), strict=True))
        hists = [h for h in view.histograms("grad/w", merge_ranks=False) if h.rank == rank]
        assert [sum(e.histogram_value.bucket) for e in acc.Histograms("grad/w")] == [h.counts.sum() for h in hists]


def test_csv_and_parquet(collector: CollectorProcess, tmp_path: Path) -> None:
    view = _two_rank_run(collector.address)
    _export(collector.address, "--csv", str(tmp_path / "csv"), "--parquet", str(tmp_path / "pq"))
    for source in (f"read_csv('{tmp_path / 'csv' / 'scalars.csv'}')", f"'{tmp_path / 'pq' / 'scalars.parquet'}'"):
        rows = duckdb.sql(f"SELECT step, rank, value, wall_time FROM {source} WHERE name = 'loss' "
                          "ORDER BY step, rank").fetchall()
        pts = view.scalars("loss")
        assert rows == list(zip(pts["step"].tolist(), pts["rank"].tolist(), pts["value"].tolist(),
                                pts["wall_time"].tolist(), strict=True))
    hists = view.histograms("grad/w", merge_ranks=False)
    for source in (f"read_csv('{tmp_path / 'csv' / 'histograms.csv'}')", f"'{tmp_path / 'pq' / 'histograms.parquet'}'"):
        rows = duckdb.sql(f"SELECT step, rank, sum(count), min(lower), max(upper) FROM {source} "
                          "GROUP BY step, rank ORDER BY step, rank").fetchall()
        assert rows == [(h.step, h.rank, int(h.counts.sum()), float(h.edges()[0][0]), float(h.edges()[1][-1]))
                        for h in hists]


def test_export_needs_a_destination(collector: CollectorProcess) -> None:
    proc = subprocess.run([sys.executable, "-m", "stepwire", "export", "x", "--address", collector.address],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--tensorboard" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "stepwire", "export", "nope", "--address", collector.address,
                           "--csv", "x"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no run 'nope'" in proc.stderr
