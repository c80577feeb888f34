"""A simulated three-node job on one machine: three network namespaces ("nodes"), each joined to the root
namespace by a veth pair of its own subnet, each running its collector on the shared PostgreSQL store and 4 ranks
of one 12-rank run; PostgreSQL stays in the root namespace, reached from the nodes through a TCP relay listening on
the root side of each veth (the cluster's own settings are left as they are). The run must come out whole: 12
ranks, every point once, histograms merged across ranks exactly as numpy counts the same values, and a dashboard
started on a node reading it. Then the faults of a multi-node job, each with exact counts after recovery: a node's
collector SIGKILLed while its ranks log (they spool and replay to its restart), PostgreSQL restarted while every
rank logs, and a node's link to the database cut with ``ip link set down`` for a few seconds.

Needs root, ``ip netns`` (iproute2) and ``$STEPWIRE_TEST_PG_URL`` (``.ci/postgres.sh``); skips without them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt
import pytest

import stepwire
from conftest import pg_admin_url
from stepwire.histogram import bucket_edges

NODES = 3
RANKS_PER_NODE = 4
WORLD = NODES * RANKS_PER_NODE
STEPS = 200
GATE = 100  # ranks log steps [0, GATE), wait for the test's "go" (the fault is then in place), then the rest
HIST_EVERY = 10
COLLECTOR_PORT = 7070  # every node has a loopback of its own: the same port on each

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


class Relay:
    """A TCP relay in the root namespace: connections to ``(host, port)`` are joined to ``target``. A connection
    whose other side closes (PostgreSQL restarting) is closed too, as a router's would break."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server((host, 0))
        self.server.settimeout(0.2)
        self.host, self.port = host, int(self.server.getsockname()[1])
        self.sockets: list[socket.socket] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:  # the server is down: refuse, as a router would pass on its refusal
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        """Stop accepting and close every connection relayed."""
        self.closed.set()
        self.server.close()
        self.thread.join(timeout=5)
        for s in self.sockets:
            s.close()


@dataclass
class Node:
    """One simulated node: a namespace, the root side of its veth, and the relay to PostgreSQL there."""

    netns: str
    veth: str
    host_ip: str
    node_ip: str
    relay: Relay | None = None
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def url(self, pg_url: str) -> str:
        """``pg_url`` as this node reaches it: through the relay on its link."""
        assert self.relay is not None
        parts = urlsplit(pg_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"{self.relay.host}:{self.relay.port}"
        return urlunsplit(parts._replace(netloc=netloc))

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


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[Node]]:
    """Three namespaces with veth links to the root namespace (10.x.i.0/30 each) and a relay to PostgreSQL on the
    root side of each; all removed afterwards, whatever happened."""
    admin = urlsplit(pg_admin_url())
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` (iproute2) for network namespaces")
    tag = f"swt{os.getpid() % 100000}"
    octet = 100 + os.getpid() % 100
    made: list[Node] = []
    try:
        make_nodes(made, tag, octet, (admin.hostname or "127.0.0.1", admin.port or 5432))
        yield made
    finally:
        for node in made:
            node.kill_all()
            if node.relay is not None:
                node.relay.close()
            run_ip("link", "del", node.veth, check=False)
            run_ip("netns", "del", node.netns, check=False)


def make_nodes(made: list[Node], tag: str, octet: int, database: tuple[str, int]) -> None:
    """The namespaces, links and relays (into ``made`` as they are made); skips where the kernel refuses."""
    try:
        for i in range(NODES):
            node = Node(f"{tag}n{i}", f"{tag}r{i}", f"10.{octet}.{i}.1", f"10.{octet}.{i}.2")
            out = run_ip("netns", "add", node.netns, check=False)
            if out.returncode != 0:
                pytest.skip(f"`ip netns add` is unavailable here: {out.stderr.strip()}")
            made.append(node)
            run_ip("link", "add", node.veth, "type", "veth", "peer", "name", f"{tag}p{i}")
            run_ip("link", "set", f"{tag}p{i}", "netns", node.netns)
            run_ip("addr", "add", f"{node.host_ip}/30", "dev", node.veth)
            run_ip("link", "set", node.veth, "up")
            run_ip("addr", "add", f"{node.node_ip}/30", "dev", f"{tag}p{i}", netns=node.netns)
            run_ip("link", "set", f"{tag}p{i}", "up", netns=node.netns)
            run_ip("link", "set", "lo", "up", netns=node.netns)
            node.relay = Relay(node.host_ip, database)
    except (RuntimeError, OSError) as exc:  # e.g. a container without veth or namespaces of its own
        pytest.skip(f"cannot make the nodes' network here: {exc}")


@dataclass
class Job:
    """One 12-rank run on the three nodes: each node's collector and its 4 ranks."""

    nodes: list[Node]
    pg_url: str
    root: Path
    run_id: str = "three-nodes"
    collectors: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ranks: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def node_dir(self, i: int) -> Path:
        """Node ``i``'s own directory (its collector's and its ranks' data)."""
        return self.root / f"node{i}"

    def launch_collector(self, i: int) -> None:
        """Start node ``i``'s collector (again); ``wait_collector`` waits until it serves."""
        node, d = self.nodes[i], self.node_dir(i) / "collector"
        d.mkdir(parents=True, exist_ok=True)
        proc = node.popen([sys.executable, "-m", "stepwire", "collector", "--listen",
                           f"127.0.0.1:{COLLECTOR_PORT}", "--dir", str(d), "--store", node.url(self.pg_url),
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
def job(nodes: list[Node], pg_url: str, tmp_path: Path) -> Iterator[Job]:
    """A job on the three nodes over a fresh database; every process of it is killed afterwards."""
    yield Job(nodes, pg_url, tmp_path)
    for node in nodes:
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


def test_three_nodes_log_one_run_that_a_dashboard_on_a_node_reads(job: Job, pg_url: str) -> None:
    job.start()
    job.wait_ready()
    job.go()
    job.finish()
    assert_whole(pg_url, job.run_id)
    node = job.nodes[1]  # a dashboard on a node, over the node's link, served on its address (behind a token)
    ui = node.popen_text([sys.executable, "-m", "stepwire", "ui", "--store", node.url(pg_url), "--http",
                          f"{node.node_ip}:0", "--token", "node-token", "--dir", str(job.root / "ui")])
    assert ui.stdout is not None
    line = ui.stdout.readline()
    url = next(word for word in line.split() if word.startswith("http://")).split("?")[0]
    assert url.startswith(f"http://{node.node_ip}:") and "stepwire_test:stepwire_test@" not in line, line
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


def test_a_nodes_collector_sigkilled_mid_run_and_restarted(job: Job, pg_url: str) -> None:
    job.start()
    job.wait_ready()
    job.collectors[0].kill()  # node 0's collector dies while its ranks log their second half: they spool
    job.collectors[0].wait()
    job.go()
    time.sleep(2)
    job.launch_collector(0)  # the same address: the ranks replay what they spooled
    job.wait_collector(0)
    job.finish()
    assert_whole(pg_url, job.run_id)
    for rank in range(RANKS_PER_NODE):  # node 0's ranks did spool
        assert "collector does not answer: spooling to" in (job.root / f"rank{rank}.log").read_text()


def test_postgres_restarted_mid_run(job: Job, pg_url: str) -> None:
    lines = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True).stdout.splitlines()
    online = [line.split() for line in lines if "online" in line]
    if not online:
        pytest.skip("no local PostgreSQL cluster to restart (pg_ctlcluster)")
    job.start()
    job.wait_ready()
    job.go()
    subprocess.run(["pg_ctlcluster", online[0][0], online[0][1], "restart"], check=True, timeout=120)
    job.finish()
    assert_whole(pg_url, job.run_id)
    logs = [(job.node_dir(i) / "collector" / "test-collector.log").read_text() for i in range(NODES)]
    assert all("reconnected to the store postgresql://" in log for log in logs), logs  # each lost its connection


def test_a_nodes_link_cut_for_seconds(job: Job, pg_url: str) -> None:
    job.start()
    job.wait_ready()
    node, its_ranks = job.nodes[2], slice(2 * RANKS_PER_NODE, 3 * RANKS_PER_NODE)
    run_ip("link", "set", node.veth, "down")  # node 2 loses the database while its ranks log their second half
    try:
        before = stored_per_rank(pg_url, job.run_id)[its_ranks]
        job.go()
        time.sleep(3)
        during = stored_per_rank(pg_url, job.run_id)[its_ranks]
    finally:
        run_ip("link", "set", node.veth, "up")
    assert np.array_equal(during, before) and before.sum() < RANKS_PER_NODE * STEPS  # the cut did hold it back
    job.finish()
    assert_whole(pg_url, job.run_id)
