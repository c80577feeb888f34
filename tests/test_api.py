"""Api readers over several ranks of one run: per-rank series, aggregation per step, merged histograms."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

import stepwire
from conftest import CollectorProcess
from stepwire.transport import GRPC_OPTIONS
from test_collector_helpers import push_rank


@pytest.fixture
def three_ranks(collector: CollectorProcess) -> tuple[str, np.ndarray, list[list[np.ndarray]]]:
    """A run with ranks 0..2, each logging x = values[rank, step] and one histogram per step."""
    rng = np.random.default_rng(7)
    values = rng.standard_normal((3, 50))
    values[1, 5] = np.nan
    hist_data = [[rng.standard_normal(1000).astype(np.float32) for _ in range(3)] for _ in range(3)]
    run_id = uuid.uuid4().hex[:16]
    with grpc.insecure_channel(collector.address, options=GRPC_OPTIONS) as channel:
        stub = ingest_pb2_grpc.IngestStub(channel)
        stub.OpenRun(ingest_pb2.RunInfo(run_id=run_id, project="ranks"))
        for rank in range(3):
            push_rank(stub, run_id, rank, values[rank], hist_data[rank])
    return run_id, values, hist_data


def test_per_rank_and_aggregated_scalars(collector: CollectorProcess, three_ranks) -> None:  # type: ignore[no-untyped-def]
    run_id, values, _ = three_ranks
    view = stepwire.Api(address=collector.address).run(run_id)
    d = view.scalars("x")
    assert len(d["step"]) == 150
    assert d["step"].tolist() == sorted(d["step"].tolist())
    np.testing.assert_array_equal(view.scalars("x", ranks=[2])["value"], values[2])
    mean = view.scalars("x", agg="mean")
    np.testing.assert_array_equal(mean["step"], np.arange(50))
    np.testing.assert_allclose(mean["value"], values.mean(axis=0))  # NaN at step 5 propagates
    assert mean["count"].tolist() == [3] * 50
    np.testing.assert_allclose(view.scalars("x", agg="sum")["value"], values.sum(axis=0))
    lo = view.scalars("x", agg="min")
    np.testing.assert_array_equal(lo["value"], np.nanmin(values, axis=0))
    np.testing.assert_array_equal(lo["rank"], np.nanargmin(values, axis=0))
    hi = view.scalars("x", agg="max")
    np.testing.assert_array_equal(hi["value"], np.nanmax(values, axis=0))
    np.testing.assert_array_equal(hi["rank"], np.nanargmax(values, axis=0))
    with pytest.raises(ValueError, match="agg"):
        view.scalars("x", agg="median")
    assert view.scalars("missing", agg="mean")["step"].size == 0
    (series,) = [s for s in view.series() if s.name == "x"]
    assert series.ranks == [0, 1, 2] and series.items == 150


def test_histograms_merge_exactly_across_ranks(collector: CollectorProcess, three_ranks) -> None:  # type: ignore[no-untyped-def]
    run_id, _, hist_data = three_ranks
    view = stepwire.Api(address=collector.address).run(run_id)
    per_rank = view.histograms("h", merge_ranks=False)
    assert [(h.step, h.rank) for h in per_rank] == [(s, r) for s in range(3) for r in range(3)]
    merged = view.histograms("h")
    assert [h.step for h in merged] == [0, 1, 2] and all(h.rank is None for h in merged)
    for step, h in enumerate(merged):
        whole = stepwire.Histogram.from_values(np.concatenate([hist_data[r][step] for r in range(3)]))
        assert h.indices.tolist() == whole.indices.tolist()
        assert h.counts.tolist() == whole.counts.tolist()
        assert h.count == 3000 and h.min == whole.min and h.max == whole.max
