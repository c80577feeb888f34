"""The PostgreSQL store answers exactly what the DuckDB store answers: the same runs, ranks, batches (NaN and
infinities, steps out of order, repeated steps, several ranks), histograms, texts, artifacts and media written to
both, every reader call compared (skipped without ``$STEPWIRE_TEST_PG_URL``)."""

from __future__ import annotations

import dataclasses
import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from stepwire import _core
from stepwire.collector.decode import DecodedBatch
from stepwire.store.base import MediaEntry, RunRecord, Store, TextEntry
from stepwire.store.duckdb_store import DuckDBStore
from stepwire.store.postgres import PostgresStore


def scalar_batch(rng: np.random.Generator, run: str, rank: int, stream: str, seq: int, names: list[str]
                 ) -> DecodedBatch:
    lengths = rng.integers(1, 2500, len(names))
    steps = np.concatenate([np.sort(rng.integers(0, 3000, n)) if rng.random() < 0.7 else rng.integers(0, 3000, n)
                            for n in lengths]).astype(np.int64)
    values = rng.standard_normal(len(steps)).round(2)
    values[rng.random(len(steps)) < 0.03] = np.nan
    values[rng.random(len(steps)) < 0.01] = np.inf
    if names[-1] == "all-nan":
        values[len(steps) - int(lengths[-1]):] = np.nan
    walls = 1e9 + np.sort(rng.random(len(steps))) * 100
    defs = [(i, n, _core.KIND_SCALAR) for i, n in enumerate(names)] if seq == 1 else []
    return DecodedBatch(run, rank, stream, seq, defs, np.arange(len(names), dtype=np.uint32),
                        lengths.astype(np.uint32), steps, values, walls)


def histogram_batch(rng: np.random.Generator, run: str, rank: int, stream: str, seq: int) -> DecodedBatch:
    m = 5
    lengths = rng.integers(1, 6, m).astype(np.uint32)
    hist = {"series_ids": np.zeros(m, np.uint32), "steps": rng.integers(0, 4, m).astype(np.int64),
            "wall_times": 1e9 + rng.random(m), "k": np.full(m, 3, np.uint8),
            "count": rng.integers(1, 100, m).astype(np.int64), "sum": rng.standard_normal(m),
            "min": np.where(rng.random(m) < 0.3, np.nan, -1.0), "max": np.ones(m),
            "nan": rng.integers(0, 3, m).astype(np.int64), "pos_inf": np.zeros(m, np.int64),
            "neg_inf": np.ones(m, np.int64), "bucket_lengths": lengths,
            "bucket_indices": rng.integers(-300, 300, int(lengths.sum())).astype(np.int32),
            "bucket_counts": rng.integers(1, 9, int(lengths.sum())).astype(np.int64)}
    empty = np.empty(0)
    return DecodedBatch(run, rank, stream, seq, [(0, "h", _core.KIND_HISTOGRAM)] if seq == 1 else [],
                        np.empty(0, np.uint32), np.empty(0, np.uint32), empty.astype(np.int64), empty, empty, hist)


def png(color: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def fill(store: Store) -> None:
    rng = np.random.default_rng(3)
    for rank in (1, 0, 2):
        store.open_run(RunRecord("r1", "proj", "first", ["a"], {"lr": 0.1, "rank": rank}, 10.0 + rank,
                                 meta={"host": f"h{rank}"}), rank=rank, world_size=3)
    store.open_run(RunRecord("r2", "other", "second", created=5.0))
    for seq in range(1, 8):
        for rank in (0, 1, 2):
            assert store.append(scalar_batch(rng, "r1", rank, f"s{rank}", seq, ["loss", "acc", "all-nan"]))
        for rank in (2, 0):
            assert store.append(histogram_batch(rng, "r1", rank, f"h{rank}", seq))
    assert not store.append(scalar_batch(rng, "r1", 0, "s0", 3, ["loss", "acc", "all-nan"]))
    assert store.append(scalar_batch(rng, "r2", 0, "t", 1, ["Zeta", "alpha", "beta_1", "_x"]))
    store.update_run("r1", config={"epochs": 3}, meta={"ranks_extra": {"1": "x"}}, status="finished", rank=1,
                     finished=99.0)
    store.update_run("r2", status="failed", finished=50.0)
    for i, (name, step, rank) in enumerate([("notes", 3, 1), ("notes", 1, 0), ("b", 1, 0), ("notes", 3, 0)]):
        assert store.add_text("r1", TextEntry(name, step, rank, 100.0 + i, f"text {i} ü"), dedup=("txt", i + 1))
    assert not store.add_text("r1", TextEntry("notes", 9, 0, 1.0, "again"), dedup=("txt", 1))
    assert store.add_text("r1", TextEntry("console", 4, 2, 105.0, "a NUL \x00 and \u2028 kept"))
    store.put_artifact("r1", "model.bin", 3, 0, 7.0, [b"abc", b"def"])
    store.put_artifact("r1", "B.txt", 1, 1, 8.0, [b"same"])
    store.put_artifact("r1", "a.txt", 2, 2, 9.0, [b"same"])
    store.put_artifact("r1", "model.bin", 4, 0, 7.5, [b"newer"])  # replaced: its old blob released
    store.delete_artifact("r1", "a.txt")
    base = MediaEntry("img", 0, 0, 1.0, "image", "image/png", "", 0, 0, 0, "")
    for name, step, rank, color in [("img", 2, 1, (1, 2, 3)), ("img", 1, 0, (9, 9, 9)), ("Img", 1, 0, (1, 2, 3)),
                                    ("img", 2, 1, (4, 5, 6))]:
        store.put_media("r1", dataclasses.replace(base, name=name, step=step, rank=rank, caption=f"c{step}"),
                        [png(color, (3 + step, 2))])


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and arrays compared by value (dataclasses field by field)."""
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        return type(a) is type(b) and all(same(getattr(a, f.name), getattr(b, f.name))
                                          for f in dataclasses.fields(a))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=np.asarray(a).dtype.kind == "f")
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def test_both_stores_answer_the_same(tmp_path: Path, pg_url: str) -> None:
    (tmp_path / "duck").mkdir()
    duck = DuckDBStore(tmp_path / "duck")
    pg = PostgresStore(pg_url, tmp_path / "pg-blobs")
    stores: list[Any] = [duck, pg]
    for store in stores:
        fill(store)
    d, p = stores
    for project in (None, "proj", "nothing"):
        assert same(d.runs(project), p.runs(project))
    assert [r.status for r in p.runs()] == ["failed", "running"]  # r2 was created first
    assert p.texts("r1", "console")[0].text == "a NUL \x00 and \u2028 kept"
    for run in ("r1", "r2", "none"):
        assert same(d.series(run), p.series(run)), run
        assert same(d.summary(run), p.summary(run)), run
        assert same(d.texts(run), p.texts(run)) and same(d.texts(run, "notes"), p.texts(run, "notes"))
        assert same(d.artifacts(run), p.artifacts(run))
        assert same(d.media(run), p.media(run))
        for name in ("loss", "acc", "all-nan", "Zeta", "h", "none"):
            for ranks, start, end in [(None, None, None), ([1], None, None), ([0, 2], 100, 2000), (None, 2999, None)]:
                assert same(d.scalars(run, name, ranks, start, end), p.scalars(run, name, ranks, start, end)), name
            assert same(d.histograms(run, name), p.histograms(run, name)), name
            assert same(d.histograms(run, name, [1, 2]), p.histograms(run, name, [1, 2])), name
            assert same(d.scalar_blocks(run, name), p.scalar_blocks(run, name)), name
    assert p.scalar_blocks("r2", "alpha") is not None  # one rank, steps ascending: block extremes
    assert same(d.media("r1", "img", 2, "image"), p.media("r1", "img", 2, "image"))
    for store in stores:
        assert b"".join(store.read_artifact("r1", "model.bin")) == b"newer"
        (media,) = store.media("r1", "img", 2)
        assert b"".join(store.read_media("r1", media.sha256)) == png((4, 5, 6), (5, 2))
        with pytest.raises(KeyError):
            store.read_artifact("r1", "a.txt")
        assert time.time() - store.last_data("r1", 0) < 600
    blobs = sorted(x.name for x in (tmp_path / "pg-blobs").rglob("*") if x.is_file())
    assert blobs == sorted(x.name for x in (tmp_path / "duck" / "blobs").rglob("*") if x.is_file())
    for store in stores:
        store.close()
