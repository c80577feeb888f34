"""Reading back through the Query service a series far larger than one gRPC message (64 MiB)."""

from __future__ import annotations

import numpy as np

import stepwire
from conftest import CollectorProcess
from stepwire.transport import MAX_MESSAGE_BYTES


def test_a_histogram_series_larger_than_a_message_reads_back_whole(collector: CollectorProcess) -> None:
    rng = np.random.default_rng(0)
    values = np.ldexp(rng.standard_normal(60_000), rng.integers(-120, 120, 60_000)).astype(np.float32)
    with stepwire.init(address=collector.address, k=6, quiet=True) as run:
        for step in range(300):
            run.log_histogram("h", np.roll(values, step), step=step)
    hists = stepwire.Api(address=collector.address).run(run.id).histograms("h", merge_ranks=False)
    assert [h.step for h in hists] == list(range(300))
    assert sum(12 * len(h.indices) for h in hists) > MAX_MESSAGE_BYTES  # one message could not hold them
    assert all(h.count == 60_000 for h in hists)
    np.testing.assert_array_equal(hists[-1].counts, hists[0].counts)  # the same values, rolled
