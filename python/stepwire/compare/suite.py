"""Runs every workload for every peer, each in a fresh process, and reports figures, ratios and data checks.

Workloads (quick sizes; ``--full`` multiplies them):
  A  one scalar per call: median and p99 ns per call
  B  100 scalars per step: median µs per step
  C  a histogram of 1,000,000 float32 values: median ms per call
  D  an MLP training loop on CPU, loss and every parameter's gradient histogram every step: median step ms, and
     the overhead over as many unlogged steps run in the same process just before
  E  ingest: points/s from the first call until the run is finished (flushed, stored)
  F  data check: what each peer stored, read back from its own storage, against what was logged
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from stepwire.compare.peers import Peer, Unsupported, all_peers

WORKLOADS = {"A": "1 scalar per call", "B": "100 scalars per step", "C": "histogram of 1M float32",
             "D": "MLP step, loss + gradient histograms", "E": "ingest incl. flush"}
SIZES = {"A": 20_000, "B": 300, "C": 20, "D": 15, "E": 200_000}
BUDGET_S = {False: 8.0, True: 30.0}
"""A slow peer stops a workload after this long (quick, full); figures are medians over what it did."""


def run_one(peer: Peer, workload: str, scale: int, workdir: Path, budget_s: float = BUDGET_S[False]) -> dict[str, Any]:
    """One workload for one peer in this process: its figures, and stored vs expected items."""
    n = SIZES[workload] * scale
    out: dict[str, Any] = {}
    expected: int
    if workload == "D":
        return _training(peer, n, workdir)
    peer.start(workdir)
    deadline = time.perf_counter() + budget_s  # from the first call: starting a run is not counted
    if workload == "A":
        blocks: list[float] = []
        while len(blocks) < n // 100 and time.perf_counter() < deadline:
            t = time.perf_counter_ns()
            for i in range(100):
                peer.scalar("loss", 0.5, len(blocks) * 100 + i)
            blocks.append((time.perf_counter_ns() - t) / 100)
        out = {"median_ns": float(np.median(blocks)), "p99_ns": float(np.percentile(blocks, 99))}
        expected = len(blocks) * 100
    elif workload == "B":
        values = {f"layer{i}/norm": float(i) for i in range(100)}
        times: list[int] = []
        while len(times) < n and time.perf_counter() < deadline:
            t = time.perf_counter_ns()
            peer.scalars(values, len(times))
            times.append(time.perf_counter_ns() - t)
        out = {"median_us": float(np.median(times)) / 1e3}
        expected = len(times) * 100
    elif workload == "C":
        x = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)
        times = []
        while len(times) < n and time.perf_counter() < deadline:
            t = time.perf_counter_ns()
            peer.histogram("weights", x, len(times))
            times.append(time.perf_counter_ns() - t)
        out = {"median_ms": float(np.median(times)) / 1e6}
        expected = len(times)
    else:  # E
        values = {f"m{i}": float(i) for i in range(1000)}
        t0, steps = time.perf_counter(), 0
        while steps < n // 1000 and time.perf_counter() < deadline:
            peer.scalars(values, steps)
            steps += 1
        peer.finish()
        out = {"points_per_s": steps * 1000 / (time.perf_counter() - t0)}
        return {**out, "expected": steps * 1000, "stored": peer.stored()}
    peer.finish()
    return {**out, "expected": expected, "stored": peer.stored()}


def _training(peer: Peer, steps: int, workdir: Path) -> dict[str, Any]:
    """``steps`` training steps without logging, then ``steps`` with it, in this process with the peer started:
    the overhead is the difference of the medians (comparing processes would add their run-to-run noise)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                torch.nn.ReLU(), torch.nn.Linear(512, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))

    def block(logged: bool) -> float:
        times = []
        for step in range(steps + 3):
            t = time.perf_counter_ns()
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if logged:
                peer.after_backward(model, step)
            opt.step()
            if logged:
                peer.scalar("loss", loss.item(), step)
            else:
                loss.item()
            if step >= 3:  # warm-up steps are not timed
                times.append(time.perf_counter_ns() - t)
        return float(np.median(times)) / 1e6

    peer.start(workdir)
    base = block(logged=False)
    peer.watch(model)
    logged = block(logged=True)
    peer.finish()
    params = len(list(model.parameters()))
    return {"median_ms": logged, "base_ms": base, "overhead_ms": logged - base,
            "expected": (steps + 3) * (1 + params * peer.items_per_watched_parameter), "stored": peer.stored()}


def measure(peer: Peer, workload: str, scale: int, budget_s: float = BUDGET_S[False]) -> dict[str, Any]:
    """Run one (peer, workload) in a fresh process; missing peers and unsupported workloads are reported."""
    if not peer.available():
        return {"status": "missing", "detail": f"{peer.module} is not installed (pip install 'stepwire[bench]')"}
    limit = budget_s * 4 + 120
    with tempfile.TemporaryDirectory(prefix="stepwire-compare-") as tmp:
        try:
            proc = subprocess.run([sys.executable, "-m", "stepwire.compare.suite", "--one", peer.name, workload,
                                   str(scale), tmp, str(budget_s)], capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "detail": f"did not finish (flush included) within {limit:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"status": "error", "detail": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return json.loads(lines[-1])


def _child(peer_name: str, workload: str, scale: int, workdir: str, budget_s: float) -> None:
    peer = next(p for p in all_peers() if p.name == peer_name)
    try:
        result = {"status": "ok", **run_one(peer, workload, scale, Path(workdir), budget_s)}
    except Unsupported:
        result = {"status": "unsupported", "detail": f"{peer_name} has no way to log this"}
    print(json.dumps(result), flush=True)


def headline(workload: str, r: dict[str, Any]) -> float | None:
    """The figure compared across peers (lower is better; E is inverted to seconds per million points)."""
    if r.get("status") != "ok":
        return None
    return {"A": r.get("median_ns"), "B": r.get("median_us"), "C": r.get("median_ms"), "D": r.get("overhead_ms"),
            "E": 1e6 / r["points_per_s"] if r.get("points_per_s") else None}[workload]


def run_suite(full: bool = False, out: Path | None = None) -> Path:
    """Run everything, print a table, and write JSON and a PNG of overhead ratios; returns the JSON path."""
    from rich.console import Console

    scale = 10 if full else 1
    out = out or Path("stepwire-bench")
    results: dict[str, dict[str, Any]] = {w: {} for w in WORKLOADS}
    console = Console()
    for w in WORKLOADS:
        for peer in all_peers():
            console.print(f"[dim]{w} {WORKLOADS[w]}: {peer.name}...[/]")
            results[w][peer.name] = measure(peer, w, scale, BUDGET_S[full])
    return report(results, full, out)


def _figure(w: str, r: dict[str, Any]) -> str:
    if w == "A":
        return f"{r['median_ns']:.0f} ({r['p99_ns']:.0f})"
    if w == "B":
        return f"{r['median_us']:.1f}"
    if w == "C":
        return f"{r['median_ms']:.2f}"
    if w == "D":
        return f"{r['median_ms']:.1f} ({r['overhead_ms']:+.2f})"
    return f"{r['points_per_s']:.3g}"


def report(results: dict[str, dict[str, Any]], full: bool, out: Path) -> Path:
    """Write ``bench.json`` and ``bench.png`` under ``out`` and print the table; returns the JSON path."""
    from rich.console import Console
    from rich.table import Table

    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench.json"
    path.write_text(json.dumps({"full": full, "results": results}, indent=2))
    png = _chart(results, out / "bench.png")
    units = {"A": "ns/call (p99)", "B": "µs/step", "C": "ms/call", "D": "ms/step (overhead over unlogged steps)",
             "E": "points/s"}
    peers = list(next(iter(results.values())))
    table = Table(title=f"logging overhead, {'full' if full else 'quick'} run; F = stored/logged")
    table.add_column("workload")
    for p in peers:
        table.add_column(p, justify="right")
    for w in WORKLOADS:
        cells = []
        for p in peers:
            r = results[w].get(p, {})
            if r.get("status") != "ok":
                cells.append(str(r.get("status", "?")))
                continue
            stored = r.get("stored")
            check = "?" if stored is None else f"{stored}/{r['expected']}"
            cells.append(f"{_figure(w, r)}\nF {check}")
        table.add_row(f"{w} {WORKLOADS[w]}\n{units[w]}", *cells)
    console = Console()
    console.print(table)
    console.print(f"results: {path}" + (f", chart: {png}" if png else ""))
    return path


def _chart(results: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """Bars of each peer's cost relative to stepwire's, per workload (log scale); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    peers = [p for p in next(iter(results.values())) if p not in ("baseline", "stepwire")]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(peers), 1)
    for i, p in enumerate(peers):
        ratios = []
        for w in WORKLOADS:
            ours, theirs = headline(w, results[w].get("stepwire", {})), headline(w, results[w].get(p, {}))
            ratios.append(theirs / ours if ours and theirs and ours > 0 and theirs > 0 else 0.0)
        ax.bar(np.arange(len(WORKLOADS)) + i * width, ratios, width, label=p)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(WORKLOADS)) + 0.4 - width / 2, [f"{w}: {d}" for w, d in WORKLOADS.items()],
                  fontsize=7)
    ax.set_ylabel("peer cost / stepwire cost (log)")
    ax.set_title("Logging overhead relative to stepwire (higher = stepwire cheaper)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m stepwire.compare.suite [--full] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="stepwire bench", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="ten times the quick sizes")
    parser.add_argument("--out", type=Path, default=Path("stepwire-bench"), help="where JSON and PNG go")
    parser.add_argument("--one", nargs=5, metavar=("PEER", "WORKLOAD", "SCALE", "DIR", "BUDGET"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        _child(args.one[0], args.one[1], int(args.one[2]), args.one[3], float(args.one[4]))
        return 0
    run_suite(args.full, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
