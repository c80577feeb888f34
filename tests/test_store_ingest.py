"""The DuckDB store's write side as ingest sees it: chunk rows are checkpointed uncompressed (DuckDB's DICT_FSST
trained a symbol table on every blob at each checkpoint, 150 times the CPU of the rest of the checkpoint; see
docs/ingest.md), and every point reads back exactly after the checkpoint and a reopen."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
from stepwire.v1 import ingest_pb2

from stepwire import _core
from stepwire.collector.decode import decode_batch
from stepwire.store.duckdb_store import STORE_FILE, DuckDBStore

SERIES = 200
STEPS = 50  # per batch
BATCHES = 6


def raw_batch(sequence: int) -> ingest_pb2.Batch:
    """Batch ``sequence`` (from 1) of one stream: ``SERIES`` series of ``STEPS`` steps each, value = step * 1.5 +
    series index, wall time = 1e9 + step; the series are defined in the first batch."""
    first = (sequence - 1) * STEPS
    steps = np.arange(first, first + STEPS, dtype=np.int64)
    msg = ingest_pb2.Batch(run_id="run1", rank=0, stream_id="stream1", sequence=sequence,
                           compression=ingest_pb2.COMPRESSION_NONE)
    if sequence == 1:
        for i in range(SERIES):
            msg.series.add(id=i, name=f"layer{i}/loss", kind=_core.KIND_SCALAR)
    msg.scalars.point_count = SERIES * STEPS
    msg.scalars.series_ids = np.arange(SERIES, dtype=np.uint32).tobytes()
    msg.scalars.group_lengths = np.full(SERIES, STEPS, np.uint32).tobytes()
    msg.scalars.steps = np.tile(steps, SERIES).tobytes()
    offsets = np.repeat(np.arange(SERIES, dtype=np.float64), STEPS)
    msg.scalars.values = (np.tile(steps * 1.5, SERIES) + offsets).tobytes()
    msg.scalars.wall_times = np.tile(1e9 + steps.astype(np.float64), SERIES).tobytes()
    return msg


def test_chunk_rows_are_checkpointed_uncompressed_and_read_back_exactly(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    assert store.append_many([decode_batch(raw_batch(s)) for s in (1, 2, 3)]) == [True, True, True]
    for s in range(4, BATCHES + 1):
        assert store.append(decode_batch(raw_batch(s)))
    assert store.append(decode_batch(raw_batch(2))) is False  # a replay: stored once
    store.close()  # DuckDB checkpoints the WAL into the file at close

    with duckdb.connect(str(tmp_path / STORE_FILE), read_only=True) as con:
        used = dict(con.execute("""SELECT column_name, list(DISTINCT compression ORDER BY compression)
                                   FROM pragma_storage_info('scalar_chunks')
                                   WHERE segment_type NOT IN ('VALIDITY') GROUP BY column_name""").fetchall())
    assert used["points"] == ["Uncompressed"]
    assert used["name"] == ["Uncompressed"]

    reopened = DuckDBStore(tmp_path, read_only=True)
    try:
        assert {s.name for s in reopened.series("run1")} == {f"layer{i}/loss" for i in range(SERIES)}
        for i in (0, 17, SERIES - 1):
            points = reopened.scalars("run1", f"layer{i}/loss")
            steps = np.arange(BATCHES * STEPS)
            assert points.step.tolist() == steps.tolist()
            assert points.value.tolist() == (steps * 1.5 + i).tolist()
            assert points.wall_time.tolist() == (1e9 + steps).tolist()
    finally:
        reopened.close()
