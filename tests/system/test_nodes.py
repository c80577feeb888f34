"""A simulated three-node job on one machine, PostgreSQL in a fourth "node": four network namespaces, each joined
to the root namespace by a veth pair of its own subnet, the root namespace routing between them (forwarding on
those links alone). Each node runs its collector on the shared store and 4 ranks of one 12-rank run; the database
node runs a PostgreSQL cluster of the test's own (initdb into a temporary directory, trust for the test's
subnets), listening on its address only, which the nodes reach by IP routing as they would a database server.
The run must come out whole: 12 ranks, every point once, histograms merged across ranks exactly as numpy counts the
same values, and a dashboard started on a node reading it. Then the faults of a multi-node job, each with exact
counts after recovery: a node's collector SIGKILLed while its ranks log (they spool and replay to its restart),
PostgreSQL crashed (``pg_ctl stop -m immediate``) and started again in its namespace while every rank logs, a
node's link cut with ``ip link set down`` for a few seconds, and the database node's link cut likewise (every node
loses the database at once).

Needs root, ``ip netns`` (iproute2) and Debian's PostgreSQL binaries (initdb, pg_ctl); skips without them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from pg_cluster import Cluster, postgres_bindir

import stepwire
from stepwire.histogram import bucket_edges

NODES = 3
RANKS_PER_NODE = 4
WORLD = NODES * RANKS_PER_NODE
STEPS = 200
GATE = 100  # ranks log steps [0, GATE), wait for the test's "go" (the fault is then in place), then the rest
HIST_EVERY = 10
COLLECTOR_PORT = 7070  # every node has a loopback of its own: the same port on each
ROLE = "stepwire_test"  # the job's role in the database node's cluster (its password the same)

RANK_SCRIPT = """
import json, os, sys, time
from pathlib import Path
import numpy as np
import stepwire

rank, steps, gate, every = int(os.environ["RANK"]), int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
marks = Path(sys.argv[4])
run = stepwire.init(project="nodes", name="three-nodes", address=os.environ["NODE_COLLECTOR"], quiet=True,
                    flush_interval=0.05, finish_timeout=120)
for step in range(steps):
    if step == gate:
        (marks / f"ready-{rank}").touch()
        while not (marks / "go").exists():
            time.sleep(0.02)
    run.log({"loss": rank * 1000.0 + step, "lr": 0.5 ** rank}, step=step)
    if step % every == 0:  # the same values as histogram_values() in test_nodes.py
        values = np.random.default_rng([rank, step]).standard_normal(64).astype(np.float32) * (rank + 1)
        run.log_histogram("w", values, step=step)
    if step >= gate:
        time.sleep(0.01)
(marks / f"logged-{rank}").touch()  # every step logged (not yet delivered)
delivered = run.flush(timeout=120)  # a training loop goes on: what waits in the spool is replayed meanwhile
run.finish()
stats = run.stats()
print(json.dumps({"rank": rank, "delivered": delivered, "lost": stats["lost"], "spooled": stats["spooled"]}))
sys.exit(0 if delivered and not stats["lost"] and not stats["spooled"] else 1)
"""


def histogram_values(rank: int, step: int) -> npt.NDArray[np.float32]:
    """The values rank ``rank`` logs as histogram "w" at ``step`` (as RANK_SCRIPT computes them)."""
    values: npt.NDArray[np.float32] = (np.random.default_rng([rank, step]).standard_normal(64)
                                       .astype(np.float32) * (rank + 1))
    return values


def run_ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip ARGS`` (in namespace ``netns`` if given)."""
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}")
    return out


@dataclass
class Node:
    """One simulated node: a namespace, the root side of its veth (name and address), its own address behind it,
    and the processes the test started in it."""

    netns: str
    veth: str
    host_ip: str
    node_ip: str
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def popen(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``args`` in this node's namespace, output to ``log``; it is killed when the test ends."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *args], stdout=out,
                                    stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def popen_text(self, args: list[str]) -> subprocess.Popen[str]:
        """Start ``args`` in this node's namespace, its stdout a text pipe; it is killed when the test ends."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        """Kill what the test started in this namespace (and close its pipes)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()


@dataclass
class Network:
    """The three nodes and the database node, each a namespace linked to the root namespace, which routes between
    them; the PostgreSQL cluster running in the database node."""

    nodes: list[Node]
    database: Node
    cluster: Cluster

    def url(self, database: str) -> str:
        """The URL of ``database`` over the network, as the job's role (the same from every node and the root)."""
        return f"postgresql://{ROLE}:{ROLE}@{self.database.node_ip}:{self.cluster.port}/{database}"


@pytest.fixture(scope="module")
def nodes() -> Iterator[Network]:
    """Three node namespaces and a database namespace, each with a veth link to the root namespace (10.x.i.0/30
    each, routed through the root namespace), and a PostgreSQL cluster of the test's own in the database
    namespace; all removed afterwards, whatever happened (postmaster stopped, namespaces and links deleted)."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` (iproute2) for network namespaces")
    if postgres_bindir() is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) for the database node's cluster")
    tag = f"swt{os.getpid() % 100000}"
    octet = 100 + os.getpid() % 100
    with contextlib.ExitStack() as cleanup:
        try:
            made = [make_node(cleanup, tag, f"n{i}", i, octet) for i in range(NODES)]
            database = make_node(cleanup, tag, "db", NODES, octet)
        except (RuntimeError, OSError) as exc:  # e.g. a container without veth or namespaces of its own
            pytest.skip(f"cannot make the nodes' network here: {exc}")
        cluster = Cluster(host=database.node_ip, port=5432, netns=database.netns, trust=[f"10.{octet}.0.0/16"])
        cleanup.callback(cluster.remove)  # first of all: no postmaster outlives its namespace
        with psycopg.connect(cluster.socket_url(), autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE}'")
        yield Network(made, database, cluster)


def make_node(cleanup: contextlib.ExitStack, tag: str, name: str, index: int, octet: int) -> Node:
    """Namespace ``{tag}{name}`` linked to the root namespace by a veth on 10.``octet``.``index``.0/30 (its root
    side ``{tag}r{index}``, the namespace's ``{tag}p{index}``), forwarding enabled on the link's root side and the
    namespace's default route through it; each made thing's removal goes on ``cleanup`` as it is made. Skips where
    the kernel refuses namespaces."""
    node = Node(f"{tag}{name}", f"{tag}r{index}", f"10.{octet}.{index}.1", f"10.{octet}.{index}.2")
    peer = f"{tag}p{index}"
    out = run_ip("netns", "add", node.netns, check=False)
    if out.returncode != 0:
        pytest.skip(f"`ip netns add` is unavailable here: {out.stderr.strip()}")
    cleanup.callback(run_ip, "netns", "del", node.netns, check=False)
    run_ip("link", "add", node.veth, "type", "veth", "peer", "name", peer)
    cleanup.callback(run_ip, "link", "del", node.veth, check=False)
    cleanup.callback(node.kill_all)
    run_ip("link", "set", peer, "netns", node.netns)
    run_ip("addr", "add", f"{node.host_ip}/30", "dev", node.veth)
    run_ip("link", "set", node.veth, "up")
    # the root namespace routes between the links: forwarding on this link alone (not net.ipv4.ip_forward, which
    # would turn it on for every interface of the root namespace); it goes with the link
    Path(f"/proc/sys/net/ipv4/conf/{node.veth}/forwarding").write_text("1")
    run_ip("addr", "add", f"{node.node_ip}/30", "dev", peer, netns=node.netns)
    run_ip("link", "set", peer, "up", netns=node.netns)
    run_ip("link", "set", "lo", "up", netns=node.netns)
    run_ip("route", "add", "default", "via", node.host_ip, netns=node.netns)
    return node


@dataclass
class Job:
    """One 12-rank run on the three nodes: each node's collector and its 4 ranks, over database ``database`` of
    the database node's cluster."""

    network: Network
    database: str
    root: Path
    run_id: str = "three-nodes"
    collectors: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ranks: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def nodes(self) -> list[Node]:
        """The three nodes."""
        return self.network.nodes

    @property
    def pg_url(self) -> str:
        """The store's URL, over the network (from the nodes and from the root namespace alike)."""
        return self.network.url(self.database)

    @property
    def socket_url(self) -> str:
        """The store's URL through the cluster's Unix socket: read from the root namespace while links are cut."""
        return self.network.cluster.socket_url(self.database)

    def node_dir(self, i: int) -> Path:
        """Node ``i``'s own directory (its collector's and its ranks' data)."""
        return self.root / f"node{i}"

    def launch_collector(self, i: int) -> None:
        """Start node ``i``'s collector (again); ``wait_collector`` waits until it serves."""
        node, d = self.nodes[i], self.node_dir(i) / "collector"
        d.mkdir(parents=True, exist_ok=True)
        proc = node.popen([sys.executable, "-m", "stepwire", "collector", "--listen",
                           f"127.0.0.1:{COLLECTOR_PORT}", "--dir", str(d), "--store", self.pg_url,
                           "--blob-dir", str(self.root / "blobs")], d / "test-collector.log")
        if len(self.collectors) > i:
            self.collectors[i] = proc
        else:
            self.collectors.append(proc)

    def wait_collector(self, i: int) -> None:
        """Wait until node ``i``'s collector serves (it wrote its address file)."""
        proc, d = self.collectors[i], self.node_dir(i) / "collector"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if json.loads((d / "collector.json").read_text())["pid"] == proc.pid:
                    return
            except (OSError, ValueError, KeyError):
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"node {i}'s collector did not start: " + (d / "test-collector.log").read_text())

    def start(self) -> None:
        """Every node's collector, then its 4 ranks, which log steps [0, GATE) and wait for ``go()``."""
        script = self.root / "rank.py"
        script.write_text(RANK_SCRIPT)
        (self.root / "marks").mkdir(parents=True)
        for i in range(NODES):
            self.launch_collector(i)
        for i in range(NODES):
            self.wait_collector(i)
        for i, node in enumerate(self.nodes):
            for local in range(RANKS_PER_NODE):
                rank = i * RANKS_PER_NODE + local
                env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(local),
                       "STEPWIRE_RUN_ID": self.run_id, "STEPWIRE_DIR": str(self.node_dir(i) / "data"),
                       "NODE_COLLECTOR": f"127.0.0.1:{COLLECTOR_PORT}"}
                self.ranks.append(node.popen([sys.executable, str(script), str(STEPS), str(GATE), str(HIST_EVERY),
                                              str(self.root / "marks")], self.root / f"rank{rank}.log", env))

    def wait_ready(self) -> None:
        """Wait until every rank has logged its first GATE steps."""
        deadline = time.monotonic() + 120
        while len(list((self.root / "marks").glob("ready-*"))) < WORLD:
            assert time.monotonic() < deadline, "the ranks did not reach the gate"
            assert all(p.poll() is None for p in self.ranks), self.logs()
            time.sleep(0.05)

    def go(self) -> None:
        """Let the ranks log their second half."""
        (self.root / "marks" / "go").touch()

    def wait_logged(self, ranks: range) -> None:
        """Wait until ``ranks`` have logged every step (what they logged need not be delivered yet)."""
        deadline = time.monotonic() + 120
        while not all((self.root / "marks" / f"logged-{rank}").exists() for rank in ranks):
            assert time.monotonic() < deadline, "the ranks did not log their second half"
            assert all(p.poll() is None for p in self.ranks), self.logs()
            time.sleep(0.05)

    def finish(self) -> None:
        """Wait for every rank to finish (each asserts it lost nothing), then stop the collectors."""
        for p in self.ranks:
            assert p.wait(timeout=180) == 0, self.logs()
        for p in self.collectors:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)

    def logs(self) -> str:
        """The tail of every log of the job, for a failure's message."""
        return "\n".join(f"== {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.root.rglob("*.log")))


@pytest.fixture
def job(nodes: Network, tmp_path: Path) -> Iterator[Job]:
    """A job on the three nodes over a fresh database of the database node's cluster; every process of it is killed
    afterwards (the database goes with the cluster)."""
    database = f"nodes_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(nodes.cluster.socket_url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}" OWNER {ROLE}')
    yield Job(nodes, database, tmp_path)
    for node in nodes.nodes:
        node.kill_all()


def assert_whole(pg_url: str, run_id: str) -> None:
    """The run holds exactly what the 12 ranks logged: every point once, histograms merged exactly."""
    view = stepwire.Api(store=pg_url).run(run_id)
    assert view.status == "finished"
    assert view.meta["ranks"] == {str(r): "finished" for r in range(WORLD)}
    loss = view.scalars("loss")
    assert np.array_equal(np.bincount(loss["rank"], minlength=WORLD), [STEPS] * WORLD)  # nothing lost or doubled
    for r in range(WORLD):
        mine = loss["rank"] == r
        assert np.array_equal(loss["step"][mine], np.arange(STEPS))
        assert np.array_equal(loss["value"][mine], r * 1000.0 + np.arange(STEPS))
    assert np.array_equal(view.scalars("loss", agg="mean")["value"], 5500.0 + np.arange(STEPS))
    # last: the value at the highest step, of the lowest rank there (as the DuckDB store answers)
    assert view.summary()["lr"] == {"last": 1.0, "min": 0.5 ** (WORLD - 1), "max": 1.0}
    per_rank = view.histograms("w", merge_ranks=False)
    assert sorted((h.rank, h.step) for h in per_rank) == [
        (r, s) for r in range(WORLD) for s in range(0, STEPS, HIST_EVERY)]
    merged = view.histograms("w")
    assert [h.step for h in merged] == list(range(0, STEPS, HIST_EVERY))
    for h in merged:
        values = np.concatenate([histogram_values(r, h.step) for r in range(WORLD)]).astype(np.float64)
        assert h.rank is None and h.count == len(values) == WORLD * 64
        assert (h.min, h.max) == (values.min(), values.max())
        assert h.sum == pytest.approx(values.sum(), rel=1e-6)  # float32 values are summed at float32 precision
        lo, hi = bucket_edges(h.indices, h.k)  # numpy's count of the values in each stored bucket
        idx = h.indices[:, None]
        inside = np.where(idx > 0, (values >= lo[:, None]) & (values < hi[:, None]),
                          np.where(idx < 0, (values > lo[:, None]) & (values <= hi[:, None]),
                                   (values > lo[:, None]) & (values < hi[:, None])))
        assert np.array_equal(inside.sum(axis=1), h.counts) and h.counts.sum() == len(values)


def stored_per_rank(pg_url: str, run_id: str) -> npt.NDArray[np.int64]:
    """Points of "loss" stored so far, by rank (read from the root namespace, directly)."""
    counts: npt.NDArray[np.int64] = np.bincount(stepwire.Api(store=pg_url).run(run_id).scalars("loss")["rank"],
                                                minlength=WORLD)
    return counts


def get_json(url: str, token: str | None = "node-token") -> Any:
    """GET ``url`` (with the dashboard's token unless None) as JSON."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def test_three_nodes_log_one_run_that_a_dashboard_on_a_node_reads(job: Job) -> None:
    job.start()
    job.wait_ready()
    job.go()
    job.finish()
    assert_whole(job.pg_url, job.run_id)
    node = job.nodes[1]  # a dashboard on a node, over the network, served on the node's address (behind a token)
    ui = node.popen_text([sys.executable, "-m", "stepwire", "ui", "--store", job.pg_url, "--http",
                          f"{node.node_ip}:0", "--token", "node-token", "--dir", str(job.root / "ui")])
    assert ui.stdout is not None
    line = ui.stdout.readline()
    url = next(word for word in line.split() if word.startswith("http://")).split("?")[0]
    assert url.startswith(f"http://{node.node_ip}:") and f"{ROLE}:{ROLE}@" not in line, line
    with pytest.raises(urllib.error.HTTPError, match="401"):
        get_json(url + "api/runs", token=None)
    (run,) = get_json(url + "api/runs")
    assert (run["id"], run["name"]) == (job.run_id, "three-nodes")
    chart = get_json(url + f"api/scalars?run={job.run_id}&name=loss&points=1000")
    assert chart["total"] == WORLD * STEPS
    assert sorted(r["rank"] for r in chart["ranks"]) == list(range(WORLD))
    ui.terminate()
    ui.wait(timeout=20)
    ui.stdout.close()


def test_a_nodes_collector_sigkilled_mid_run_and_restarted(job: Job) -> None:
    job.start()
    job.wait_ready()
    job.collectors[0].kill()  # node 0's collector dies while its ranks log their second half: they spool
    job.collectors[0].wait()
    job.go()
    time.sleep(2)
    job.launch_collector(0)  # the same address: the ranks replay what they spooled
    job.wait_collector(0)
    job.finish()
    assert_whole(job.pg_url, job.run_id)
    for rank in range(RANKS_PER_NODE):  # node 0's ranks did spool
        assert "collector does not answer: spooling to" in (job.root / f"rank{rank}.log").read_text()


def test_postgres_restarted_mid_run(job: Job) -> None:
    job.start()
    job.wait_ready()
    job.go()
    job.network.cluster.stop("immediate")  # a crash while every rank logs: each session killed, nothing flushed
    time.sleep(1)  # down for a moment: the collectors' connections fail, new ones are refused
    job.network.cluster.start()  # crash recovery in the database node, then it accepts again
    job.finish()
    assert_whole(job.pg_url, job.run_id)
    logs = [(job.node_dir(i) / "collector" / "test-collector.log").read_text() for i in range(NODES)]
    assert all("reconnected to the store postgresql://" in log for log in logs), logs  # each lost its connection


def test_a_nodes_link_cut_for_seconds(job: Job) -> None:
    job.start()
    job.wait_ready()
    node, its_ranks = job.nodes[2], slice(2 * RANKS_PER_NODE, 3 * RANKS_PER_NODE)
    run_ip("link", "set", node.veth, "down")  # node 2 loses the database while its ranks log their second half
    try:
        before = stored_per_rank(job.pg_url, job.run_id)[its_ranks]  # the other links still reach it
        job.go()
        time.sleep(3)
        job.wait_logged(range(2 * RANKS_PER_NODE, 3 * RANKS_PER_NODE))  # they logged it all meanwhile
        during = stored_per_rank(job.pg_url, job.run_id)[its_ranks]
    finally:
        run_ip("link", "set", node.veth, "up")
    assert np.array_equal(during, before) and before.sum() < RANKS_PER_NODE * STEPS  # the cut did hold it back
    job.finish()
    assert_whole(job.pg_url, job.run_id)


def test_the_database_nodes_link_cut_for_seconds(job: Job) -> None:
    job.start()
    job.wait_ready()
    database = job.network.database
    run_ip("link", "set", database.veth, "down")  # every node loses the database at once, mid-run
    try:
        before = stored_per_rank(job.socket_url, job.run_id)  # read through the socket file: no link needed
        job.go()
        time.sleep(3)
        job.wait_logged(range(WORLD))  # every rank logged it all meanwhile
        during = stored_per_rank(job.socket_url, job.run_id)
    finally:
        run_ip("link", "set", database.veth, "up")
    assert np.array_equal(during, before) and before.sum() < WORLD * STEPS  # no node stored anything meanwhile
    job.finish()
    assert_whole(job.pg_url, job.run_id)
