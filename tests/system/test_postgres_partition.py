"""A node cut off from the database for longer than the store's TCP time-out (``tcp_user_timeout``, 15 s): its
collector's statements fail instead of hanging (the error-then-retry path: UNAVAILABLE, the ranks spool), the
connection is replaced once the link is back, and the run comes out whole. The three-node job of
``test_nodes.py`` (network namespaces, veth links, PostgreSQL in a fourth namespace), its helpers imported.

Needs root, ``ip netns`` (iproute2) and ``$STEPWIRE_TEST_PG_URL`` (``.ci/postgres.sh``); skips without them."""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_nodes import RANKS_PER_NODE, STEPS, Job, assert_whole, job, nodes, run_ip, stored_per_rank

__all__ = ["job", "nodes"]  # the fixtures of test_nodes.py, used here

CUT_S = 16.0
"""How long node 2's link stays down at least: past ``LINK_DEFAULTS["tcp_user_timeout"]`` (15 s)."""


def test_a_nodes_link_cut_past_the_tcp_timeout(job: Job, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPWIRE_COLLECTOR_TTL", "600")  # the other nodes leave the cut node's ranks alone
    job.start()
    job.wait_ready()
    node, its_ranks = job.nodes[2], slice(2 * RANKS_PER_NODE, 3 * RANKS_PER_NODE)
    log = job.node_dir(2) / "collector" / "test-collector.log"
    run_ip("link", "set", node.veth, "down")  # node 2 loses the database while its ranks log their second half
    cut = time.monotonic()
    try:
        before = stored_per_rank(job.pg_url, job.run_id)[its_ranks]
        job.go()
        # down past the store's TCP time-out (tcp_user_timeout 15 s), and until the silence became an error, which
        # the collector's heartbeat logs
        while "StoreUnavailable" not in log.read_text() or time.monotonic() < cut + CUT_S:
            assert time.monotonic() < cut + 90, job.logs()
            time.sleep(0.2)
        during = stored_per_rank(job.pg_url, job.run_id)[its_ranks]
    finally:
        run_ip("link", "set", node.veth, "up")
    assert np.array_equal(during, before) and before.sum() < RANKS_PER_NODE * STEPS  # the cut did hold it back
    job.finish()
    assert_whole(job.pg_url, job.run_id)
    assert "reconnected to the store postgresql://" in log.read_text()  # the connection was replaced
