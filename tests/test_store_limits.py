"""The DuckDB store's memory bound, in-process: its limit is configurable and held to under sustained writes
(long runs of one series are stored in small rows, row groups are small, the WAL is checkpointed at a quarter of
the limit); a store that DuckDB invalidates answers ``StoreUnavailable`` and reopens with everything committed.
Long runs of one series are cut into small rows in the PostgreSQL store too (that test runs on each store)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

import stepwire.store.duckdb_store as ds
from stepwire import _core
from stepwire.collector.decode import DecodedBatch
from stepwire.store.base import Store, StoreUnavailable
from stepwire.store.duckdb_store import DuckDBStore
from stepwire.store.sequence_set import SequenceSet


def batch(stream: str, rank: int, seq: int, series: dict[int, tuple[str, np.ndarray, np.ndarray]],
          define: bool) -> DecodedBatch:
    """A batch of ``series``: id -> (name, steps, values); wall times ascend."""
    ids = sorted(series)
    steps = np.concatenate([series[i][1] for i in ids]).astype(np.int64)
    values = np.concatenate([series[i][2] for i in ids]).astype(np.float64)
    return DecodedBatch("run", rank, stream, seq, [(i, series[i][0], _core.KIND_SCALAR) for i in ids] if define else [],
                        np.array(ids, np.uint32), np.array([len(series[i][1]) for i in ids], np.uint32), steps,
                        values, time.time() + np.arange(len(steps)) * 1e-6)


def test_long_runs_of_one_series_are_stored_in_small_rows(make_store: Callable[[], Store]) -> None:
    store: Any = make_store()  # each store: DuckDB, PostgreSQL
    n = 5 * ds.MAX_CHUNK_POINTS + 17
    values = np.arange(n, dtype=np.float64)
    store.append(batch("s", 0, 0, {0: ("x", np.zeros(n, np.int64), values), 1: ("y", np.arange(n), -values)}, True))
    order = "rowid" if isinstance(store, DuckDBStore) else "id"
    rows = store._query(f"SELECT name, n, octet_length(points) FROM scalar_chunks ORDER BY name, {order}")
    assert [r[1] for r in rows if r[0] == "x"] == [ds.MAX_CHUNK_POINTS] * 5 + [17]
    assert max(r[2] for r in rows) == 24 * ds.MAX_CHUNK_POINTS
    summary = {e.name: e for e in store.summary("run")}
    assert (summary["x"].last, summary["x"].count) == (n - 1, n)  # all at step 0: the last logged wins
    assert (summary["y"].last, summary["y"].min, summary["y"].last_step) == (-(n - 1), -(n - 1), n - 1)
    found = store.scalar_blocks("run", "y")
    assert found is not None and found[:2] == (0, n) and found[2]["min_value"].min() == -(n - 1)
    x = store.scalars("run", "x")
    assert np.array_equal(x.step, np.zeros(n)) and np.array_equal(x.value, values) and not x.rank.any()


def test_memory_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ds.parse_bytes("512MB") == 512 * 10**6 and ds.parse_bytes("1 GiB") == 1 << 30
    assert ds.parse_bytes("123") == 123
    with pytest.raises(ValueError):
        ds.parse_bytes("lots")
    assert ds.memory_limit() == ds.DEFAULT_MEMORY_LIMIT == 1 << 30
    assert ds.checkpoint_threshold(1 << 30) == 256 << 20 and ds.checkpoint_threshold(ds.MIN_MEMORY_LIMIT) == 16 << 20
    monkeypatch.setenv(ds.MEMORY_LIMIT_ENV, "200MiB")
    store = DuckDBStore(tmp_path)
    assert store.memory_limit == 200 << 20 and store.checkpoint_threshold == 50 << 20
    setting = store._query("SELECT current_setting('memory_limit'), current_setting('checkpoint_threshold')")
    assert setting == [("200.0 MiB", "50.0 MiB")]
    monkeypatch.setenv(ds.MEMORY_LIMIT_ENV, "1MB")
    assert ds.memory_limit() == ds.MIN_MEMORY_LIMIT


def test_sustained_writes_stay_within_a_small_memory_limit(tmp_path: Path) -> None:
    """16 MiB batches of two series, 7.5 times the memory limit in all, across a row group: before rows were
    capped at MAX_CHUNK_POINTS and row groups made smaller, DuckDB could not commit (or checkpoint) a few batches
    into it, nor fill a row group."""
    store = DuckDBStore(tmp_path, memory_limit=ds.MIN_MEMORY_LIMIT)
    per = (16 << 20) // 24 // 2
    rng = np.random.default_rng(0)
    wal = tmp_path / (ds.STORE_FILE + ".wal")
    largest = 0
    batches = 30
    assert batches * 2 * -(-per // ds.MAX_CHUNK_POINTS) > ds.ROW_GROUP_ROWS
    for seq in range(batches):
        steps = np.arange(seq * per, (seq + 1) * per)
        assert store.append(batch("s", 0, seq, {0: ("a", steps, rng.random(per)), 1: ("b", steps, rng.random(per))},
                                  seq == 0))
        largest = max(largest, wal.stat().st_size if wal.exists() else 0)
    assert largest <= store.checkpoint_threshold + (20 << 20)  # checkpointed at its threshold, one batch past
    assert store._query("SELECT sum(n) FROM scalar_chunks") == [(batches * 2 * per,)]
    store.close()
    reopened = DuckDBStore(tmp_path, memory_limit=ds.MIN_MEMORY_LIMIT)
    assert reopened._query("SELECT count(*) FROM batches") == [(batches,)]


def test_an_invalidated_store_answers_unavailable_then_reopens(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = DuckDBStore(tmp_path)
    store.append(batch("s", 0, 0, {0: ("a", np.arange(10), np.arange(10.0))}, True))

    class Invalidated:
        """A connection DuckDB invalidated: every statement fails."""

        def execute(self, *args: Any) -> Any:
            raise duckdb.FatalException("FATAL Error: Failed: database has been invalidated")

        def close(self) -> None:
            pass

    real = store._con
    store._con = Invalidated()  # type: ignore[assignment]
    real.close()
    with pytest.raises(StoreUnavailable):
        store.append(batch("s", 0, 1, {0: ("a", np.arange(10, 20), np.arange(10.0))}, False))
    assert store.reopened == 1  # and everything committed is back:
    assert store.append(batch("s", 0, 1, {0: ("a", np.arange(10, 20), np.arange(10.0))}, False))
    assert not store.append(batch("s", 0, 0, {0: ("a", np.arange(10), np.arange(10.0))}, False))  # a duplicate
    assert len(store.scalars("run", "a")) == 20


def test_a_store_that_cannot_checkpoint_stays_unavailable_until_given_memory(tmp_path: Path) -> None:
    """Rows of the old layout (a batch of one series in one blob) that the memory limit cannot checkpoint, as a
    store written before MAX_CHUNK_POINTS may hold: every call answers StoreUnavailable (nothing crashes, nothing
    is lost), and a store opened with more memory has all of it."""
    store = DuckDBStore(tmp_path, memory_limit=ds.MIN_MEMORY_LIMIT)
    store.append(batch("s", 0, 0, {0: ("a", np.arange(1000), np.arange(1000.0))}, True))
    committed = 0
    with pytest.raises(duckdb.Error):  # DuckDB fails at one of these commits' checkpoints
        for _ in range(40):
            store._con.execute("INSERT INTO scalar_chunks (run_id, rank, name, n, points) VALUES ('old', 0, 'x', 0, ?)",
                               [b"\0" * (8 << 20)])
            committed += 1
    for seq in (1, 2):
        with pytest.raises(StoreUnavailable):
            store.append(batch("s", 0, seq, {0: ("a", np.arange(1000) + 1000 * seq, np.arange(1000.0))}, False))
    with pytest.raises(StoreUnavailable):
        store.runs()
    del store
    bigger = DuckDBStore(tmp_path, memory_limit=1 << 30)
    assert bigger._query("SELECT count(*) FROM scalar_chunks WHERE run_id = 'old'")[0][0] >= committed
    assert bigger.append(batch("s", 0, 1, {0: ("a", np.arange(1000, 2000), np.arange(1000.0))}, False))
    assert len(bigger.scalars("run", "a")) == 2000


def test_each_batch_is_stored_once_across_gaps_retries_and_a_reopened_store(make_store: Callable[[], Store]) -> None:
    """Exactly-once by (stream, sequence), whatever the store remembers of earlier transactions: sequences with
    gaps, a batch sent again in the same group, and the same batches again after the store was closed."""
    def one(seq: int) -> DecodedBatch:
        return batch("s", 0, seq, {7: ("x", np.array([seq]), np.array([float(seq)]))}, seq == 1)

    first = [1, 2, 3, 5, 9, 10]
    store = make_store()
    assert [store.append(one(seq)) for seq in first] == [True] * len(first)
    assert store.append_many([one(3), one(4), one(4), one(11)]) == [False, True, False, True]
    store.close()
    store = make_store()  # nothing of the first in memory: what is stored says it
    assert [store.append(one(seq)) for seq in range(1, 14)] == [seq in (6, 7, 8, 12, 13) for seq in range(1, 14)]
    assert [store.append(one(seq)) for seq in range(1, 14)] == [False] * 13
    assert store.scalars("run", "x").step.tolist() == list(range(1, 14))


def test_a_sequence_set_is_the_set_of_what_was_added() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        values = [int(v) for v in rng.integers(0, 60, rng.integers(0, 50))]
        added = SequenceSet()
        for v in values:
            added.add(v)
        loaded = SequenceSet((v, v) for v in values)  # as ranges read back from a store, one per value
        for s in (added, loaded):
            assert [v for v in range(-1, 62) if v in s] == sorted(set(values))
            ranges = s.ranges()
            assert all(hi >= lo for lo, hi in ranges)
            assert all(b[0] > a[1] + 1 for a, b in itertools.pairwise(ranges))  # disjoint, never adjacent
        assert added.ranges() == loaded.ranges()
