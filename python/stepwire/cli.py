"""The ``stepwire`` command: collector, ui, runs, show, logs, export, sync, bench, demo."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.table import Table

from stepwire.collector.embedded import data_dir


def _reader_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", help="data directory (default: $STEPWIRE_DIR or ./stepwire-data)")
    p.add_argument("--address", help="host:port of a collector to query instead of a directory")
    p.add_argument("--token", help="the collector's bearer token (default: $STEPWIRE_TOKEN)")
    p.add_argument("--tls-ca", help="PEM file of the CA that signed the collector's certificate (TLS)")
    p.add_argument("--store", help="read this store directly: a postgresql://user@host/db URL (default: "
                                   "$STEPWIRE_STORE), or a data directory")


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="where to store: a postgresql://user@host/db URL (a database shared by "
                                   "collectors; default $STEPWIRE_STORE), or else the data directory's DuckDB file")
    p.add_argument("--blob-dir", help="artifacts and media of a --store URL (default: {data dir}/blobs; on a "
                                      "cluster, a shared filesystem)")


def _api(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from stepwire.api import Api

    return Api(dir=args.dir, address=args.address, token=args.token, tls_ca=args.tls_ca, store=args.store)


def _error_line(exc: BaseException, args: argparse.Namespace) -> str | None:
    """What to tell the user about an error a command stopped on, in one line saying what to do; ``None`` for an
    error nobody foresaw (then the traceback is the useful thing)."""
    import errno

    import grpc

    if isinstance(exc, KeyError):  # str(KeyError) quotes its message again
        return str(exc.args[0]) if exc.args else "not found"
    if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
        where = getattr(args, "address", None) or "the data directory's collector"
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            return f"{where} wants its token: pass --token or set $STEPWIRE_TOKEN"
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return (f"{where} does not answer ({exc.code().name.lower()}): check --address, or start one with "
                    "`stepwire collector`")
        return f"{where} refused the request: {exc.details()}"
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] in ("tensorboard", "tensorflow"):
        return "TensorBoard export needs the tensorboard package: pip install 'stepwire[tensorboard]'"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (f"{getattr(args, 'http', None) or getattr(args, 'listen', 'the address')} is taken (another "
                "`stepwire ui` or collector?): pass a free one with --http HOST:PORT (port 0 picks one)")
    if isinstance(exc, (OSError, ConnectionError)):  # a damaged store file is an OSError too
        return str(exc)
    return None


def cmd_collector(args: argparse.Namespace) -> int:
    from stepwire.collector import malloc_tuning
    from stepwire.collector.server import Collector
    from stepwire.store import StoreUnavailable, describe, mask, store_spec

    if args.detach:
        return _detach(args)
    malloc_tuning.tune()  # before the worker threads exist

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        collector = Collector(data_dir(args.dir), listen=args.listen,
                              token=args.token or os.environ.get("STEPWIRE_TOKEN"), tls_cert=args.tls_cert,
                              tls_key=args.tls_key, insecure=args.insecure, http=args.http,
                              store=store_spec(args.store), blob_dir=args.blob_dir)
    except (PermissionError, ValueError, OSError, StoreUnavailable, ImportError) as exc:
        print(f"stepwire collector: {mask(_error_line(exc, args) or str(exc))}", file=sys.stderr)
        return 2
    collector.start()
    _stop_on_signals(collector.request_stop)
    print(f"stepwire collector listening on {collector.address}, store {describe(collector.store)}", flush=True)
    if collector.http_url:
        print(f"stepwire dashboard: {collector.http_url}", flush=True)
    collector.serve(exit_when_idle=args.exit_when_idle)
    return 0


def _cmd_agent(args: argparse.Namespace) -> int:
    from stepwire.agent import cmd_agent

    return cmd_agent(args)


def _stop_on_signals(stop: Callable[[], None]) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_ui(args: argparse.Namespace) -> int:
    """Print the dashboard URL of the directory's collector; start one (in the foreground) if none runs.

    With a token (``--token`` or ``$STEPWIRE_TOKEN``) the URL printed carries it (``/?token=...``, which sets the
    dashboard's cookie and redirects to ``/``); a dashboard served here over a collector's Query service wants the
    same token as that collector.
    """
    import grpc

    from stepwire.collector.embedded import dashboard_url, running_collector
    from stepwire.collector.server import Collector
    from stepwire.dashboard.server import Dashboard, url_with_token
    from stepwire.query_client import RemoteReader
    from stepwire.store import StoreUnavailable, is_url, mask, store_spec
    from stepwire.transport import TOKEN_ENV

    token = args.token or os.environ.get(TOKEN_ENV) or None
    directory = data_dir(args.dir)
    store = store_spec(args.store) if args.store or not args.dir else None  # --dir alone: that directory
    if is_url(store):  # a shared database: a dashboard over it in this process, read-only, whoever writes there
        from stepwire.store import open_store

        try:
            shared = open_store(store, directory, read_only=True)
            dashboard = Dashboard(shared, args.http, token=token)
        except (PermissionError, OSError, StoreUnavailable, ImportError) as exc:
            print(f"stepwire ui: {mask(_error_line(exc, args) or str(exc))}", file=sys.stderr)
            return 2
        dashboard.start()
        stopped = threading.Event()
        _stop_on_signals(stopped.set)
        print(f"stepwire dashboard for {mask(str(store))}: {url_with_token(dashboard.url, token)} (Ctrl-C stops it)",
              flush=True)
        stopped.wait()
        dashboard.stop()
        shared.close()
        return 0
    url = dashboard_url(directory)
    address = running_collector(directory)
    if url and address:
        return _keep_alive(address, token, f"stepwire dashboard for {directory}: {url_with_token(url, token)} "
                                           f"(collector {address}, kept up until Ctrl-C)")
    try:
        if address:  # a collector without a dashboard: serve one over its Query service, behind the same token
            reader = RemoteReader(address, token=token or "")
            try:
                reader.runs()
            except grpc.RpcError as exc:
                if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    print(f"stepwire ui: the collector at {address} wants its token: pass --token or set "
                          f"${TOKEN_ENV}", file=sys.stderr)
                    return 2
                raise ConnectionError(f"the collector at {address} did not answer: {exc}") from None
            dashboard = Dashboard(reader, args.http, token=token)
            dashboard.start()
            stopped = threading.Event()
            _stop_on_signals(stopped.set)
            print(f"stepwire dashboard for {directory} (collector {address}): "
                  f"{url_with_token(dashboard.url, token)}", flush=True)
            stopped.wait()
            dashboard.stop()
            return 0
        collector = Collector(directory, listen="127.0.0.1:0", http=args.http, token=token)
    except (PermissionError, OSError) as exc:
        print(f"stepwire ui: {_error_line(exc, args)}", file=sys.stderr)
        return 2
    collector.start()
    _stop_on_signals(collector.request_stop)
    print(f"stepwire dashboard for {directory}: {url_with_token(collector.http_url or '', token)} "
          f"(collector {collector.address}; Ctrl-C stops it)", flush=True)
    collector.serve()
    return 0


def _keep_alive(address: str, token: str | None, announce: str) -> int:
    """Print ``announce`` (the dashboard's URL) and hold a lease on the collector at ``address`` until Ctrl-C or
    SIGTERM, so that one started by a run (which exits once idle) keeps serving that URL; 1 if the collector stops
    answering."""
    import secrets

    import grpc

    from stepwire.collector.leases import LEASE_TTL_S
    from stepwire.transport import open_channel
    from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

    lease = ingest_pb2.Lease(client_id=f"ui-{os.getpid()}-{secrets.token_hex(4)}")
    stopped = threading.Event()
    _stop_on_signals(stopped.set)
    channel = open_channel(address, token)
    stub = ingest_pb2_grpc.IngestStub(channel)
    print(announce, flush=True)
    try:
        while True:
            try:
                stub.Heartbeat(lease, timeout=5.0)
            except grpc.RpcError as exc:
                print(f"stepwire ui: the collector at {address} stopped answering ({exc}): run `stepwire ui` again "
                      "to start one", file=sys.stderr)
                return 1
            if stopped.wait(LEASE_TTL_S / 3):
                break
        try:
            stub.Heartbeat(ingest_pb2.Lease(client_id=lease.client_id, release=True), timeout=5.0)
        except grpc.RpcError:
            pass  # gone already: nothing to release
        return 0
    finally:
        channel.close()


def cmd_export(args: argparse.Namespace) -> int:
    from stepwire.export import to_csv, to_parquet, to_tensorboard

    if not (args.tensorboard or args.csv or args.parquet):
        print("stepwire export: say where to: --tensorboard LOGDIR, --csv DIR and/or --parquet DIR", file=sys.stderr)
        return 2
    run = _api(args).run(args.run)
    if args.tensorboard:
        print(f"TensorBoard event files: {to_tensorboard(run, args.tensorboard, per_rank=args.per_rank)}")
    if args.csv:
        print(f"CSV files: {', '.join(map(str, to_csv(run, args.csv)))}")
    if args.parquet:
        print(f"Parquet files: {', '.join(map(str, to_parquet(run, args.parquet)))}")
    return 0


def _detach(args: argparse.Namespace) -> int:
    """Start the collector in a session of its own (it outlives us, nobody's child to reap) and return once it
    serves: 0, or 1 if it exited first."""
    from stepwire.collector.embedded import START_TIMEOUT_S, running_collector

    directory = data_dir(args.dir)
    argv = [sys.executable, "-m", "stepwire", "collector", "--dir", str(directory), "--listen", args.listen]
    if args.store:
        argv += ["--store", args.store]
    if args.blob_dir:
        argv += ["--blob-dir", args.blob_dir]
    if args.http is not None:
        argv += ["--http", args.http]
    if args.exit_when_idle is not None:
        argv += ["--exit-when-idle", str(args.exit_when_idle)]
    pid = os.posix_spawn(sys.executable, argv, os.environ, setsid=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            print(f"stepwire: the collector for {directory} exited during start-up", file=sys.stderr)
            return 1
        if running_collector(directory, pid=pid):
            return 0
        time.sleep(0.05)
    print(f"stepwire: the collector for {directory} did not start within {START_TIMEOUT_S:g} s", file=sys.stderr)
    return 1


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def cmd_runs(args: argparse.Namespace) -> int:
    runs = _api(args).runs(args.project)
    table = Table(title=f"{len(runs)} runs")
    table.add_column("id", no_wrap=True, min_width=max((len(r.id) for r in runs), default=2))  # copyable whole
    for col in ("project", "name", "status", "created", "tags"):
        table.add_column(col, overflow="fold")
    for r in runs:
        table.add_row(r.id, r.project, r.name, r.status, _when(r.created), ", ".join(r.tags))
    Console().print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    run = _api(args).run(args.run)
    console = Console()
    console.print(f"[bold]{run.name}[/] ({run.id}) project={run.project} status={run.status} "
                  f"created={_when(run.created)} config={run.config}")
    series = {s.name: s for s in run.series()}
    table = Table(title="scalars")
    for col in ("name", "points", "ranks", "last", "min", "max"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for name, s in run.summary().items():
        info = series.get(name)
        table.add_row(name, str(info.items if info else ""), ",".join(map(str, info.ranks)) if info else "",
                      f"{s['last']:.6g}", f"{s['min']:.6g}", f"{s['max']:.6g}")
    console.print(table)
    ranks = sorted({r for s in series.values() for r in s.ranks})
    if len(ranks) > 1:
        skew = run.step_skew()
        behind = (f"; furthest behind: rank {skew['most_behind']}, {skew['most_behind_lag']:.3f} s"
                  if skew["most_behind"] not in (None, skew["slowest"]) else "")
        st = Table(title=f"per-rank step timing ({skew['series']}); slowest rank {skew['slowest']} (step time "
                         f"x{skew['step_time_ratio']:.2f} the median, {skew['lag']:.3f} s behind it){behind}")
        for col in ("rank", "steps", "step time s", "lag s"):
            st.add_column(col, justify="right")
        for row in skew["ranks"]:
            st.add_row(str(row["rank"]), str(row["steps"]), f"{row['step_time']:.4f}", f"{row['lag']:.4f}")
        console.print(st)
        from stepwire.dashboard.panels import likely_cause, system_by_rank

        cause = likely_cause(skew["slowest"], system_by_rank(run)) if skew["slowest"] is not None else ""
        if cause:
            console.print(f"likely cause for rank {skew['slowest']}: {cause}", markup=False)
    hists = [s for s in series.values() if s.kind == "histogram"]
    if hists:
        ht = Table(title="histograms")
        for col in ("name", "histograms", "ranks"):
            ht.add_column(col)
        for s in hists:
            ht.add_row(s.name, str(s.items), ",".join(map(str, s.ranks)))
        console.print(ht)
    return 0


def _console_line(line: object, ranks: bool) -> str:
    from stepwire.console import ConsoleLine

    assert isinstance(line, ConsoleLine)
    stamp = time.strftime("%H:%M:%S", time.localtime(line.wall_time))
    err = " err" if line.stream == "stderr" else ""
    return f"{f'[{line.rank}] ' if ranks else ''}{stamp} {line.step:>6}{err} | {line.text}"


def cmd_logs(args: argparse.Namespace) -> int:
    """Print what a run's ranks printed (``--follow``: then poll for more every second until Ctrl-C)."""
    from stepwire.console import CONSOLE_NAME, parse

    run = _api(args).run(args.run)
    reader = run._reader
    seen: set[tuple[int, float, int]] = set()  # console records printed already: (rank, wall time, size)
    ranks = args.rank is None
    try:
        while True:
            fresh = [t for t in reader.texts(run.id, CONSOLE_NAME) if (t.rank, t.wall_time, len(t.text)) not in seen
                     and (args.rank is None or t.rank == args.rank)]
            seen.update((t.rank, t.wall_time, len(t.text)) for t in fresh)
            for line in parse(fresh, args.rank):
                print(_console_line(line, ranks))
            sys.stdout.flush()
            if not args.follow:
                return 0
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # stepwire logs RUN | head
        return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from stepwire.sync import sync

    directory = data_dir(args.dir)
    logging.basicConfig(level=logging.ERROR, format="stepwire sync: %(message)s")  # damaged records, one line each
    try:
        report = sync(directory, args.address, show_progress=not args.quiet, tls_ca=args.tls_ca)
    except OSError as exc:  # a full disk, a collector that does not answer: nothing is lost, sync again later
        print(f"stepwire sync: {exc}", file=sys.stderr)
        return 1
    if report.spools == 0:
        print(f"nothing to sync in {directory / 'spool'}")
        return 0
    aside = sorted({str(p.parent) for p in report.set_aside})
    print(f"synced {report.spools} spool(s) from {directory}: {report.records} records ({report.items} points and "
          f"histograms) delivered, {report.refused} refused as invalid, {report.corrupt} damaged"
          + (f" (kept in {', '.join(aside)})" if aside else ""))
    return 0 if report.refused == 0 and report.corrupt == 0 else 2


def cmd_bench(args: argparse.Namespace) -> int:
    from stepwire.compare.suite import run_suite

    run_suite(args.full, args.out)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stepwire.demo import run_demo

    return run_demo(dir=args.dir, epochs=args.epochs, backend=args.backend)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stepwire`` console script."""
    from stepwire import __version__

    parser = argparse.ArgumentParser(prog="stepwire", description="stepwire: metrics logging for training")
    parser.add_argument("--version", action="version", version=f"stepwire {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collector", help="run a collector (gRPC Ingest + Query) over a data directory")
    p.add_argument("--listen", default="127.0.0.1:7717", help="address to bind (default: loopback, port 7717)")
    p.add_argument("--dir", help="data directory (default: $STEPWIRE_DIR or ./stepwire-data)")
    p.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="exit after this long with no client and no request")
    p.add_argument("--detach", action="store_true", help="start the collector in the background and return")
    p.add_argument("--token", help="require this bearer token on every RPC (default: $STEPWIRE_TOKEN)")
    p.add_argument("--tls-cert", help="PEM certificate: serve over TLS (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--insecure", action="store_true",
                   help="allow listening on a non-loopback address without a token")
    p.add_argument("--http", metavar="ADDR", help="also serve the web dashboard at ADDR (host:port)")
    _store_args(p)
    p.set_defaults(fn=cmd_collector)

    p = sub.add_parser("ui", help="the web dashboard of a data directory (starts a collector if none runs)")
    p.add_argument("--dir", help="data directory (default: $STEPWIRE_DIR or ./stepwire-data)")
    p.add_argument("--http", default="127.0.0.1:7718", metavar="ADDR",
                   help="where to serve it when starting one (default 127.0.0.1:7718)")
    p.add_argument("--token", help="the collector's token, which the dashboard then wants too (default: "
                                   "$STEPWIRE_TOKEN); the URL printed carries it")
    p.add_argument("--store", help="serve the dashboard of this postgresql://user@host/db store (default: "
                                   "$STEPWIRE_STORE) instead of a data directory's")
    p.set_defaults(fn=cmd_ui)

    p = sub.add_parser("export", help="write a run as TensorBoard event files, CSV or Parquet")
    p.add_argument("run", help="run id")
    _reader_args(p)
    p.add_argument("--tensorboard", metavar="LOGDIR", help="event files for `tensorboard --logdir LOGDIR`")
    p.add_argument("--per-rank", action="store_true",
                   help="TensorBoard: one event directory per rank (default: scalars averaged across ranks, "
                        "histograms merged)")
    p.add_argument("--csv", metavar="DIR", help="scalars.csv and histograms.csv")
    p.add_argument("--parquet", metavar="DIR", help="scalars.parquet and histograms.parquet")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("runs", help="list runs")
    _reader_args(p)
    p.add_argument("--project")
    p.set_defaults(fn=cmd_runs)

    p = sub.add_parser("show", help="summary table of one run")
    p.add_argument("run", help="run id")
    _reader_args(p)
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("logs", help="what a run printed (stdout and stderr of every rank)")
    p.add_argument("run", help="run id")
    _reader_args(p)
    p.add_argument("--rank", type=int, help="only this rank's lines (default: every rank's, merged by time)")
    p.add_argument("--follow", "-f", action="store_true", help="keep polling for new lines (Ctrl-C stops)")
    p.set_defaults(fn=cmd_logs)

    p = sub.add_parser("sync", help="deliver what runs left in a data directory's spool (offline runs too)")
    p.add_argument("dir", nargs="?", help="data directory (default: $STEPWIRE_DIR or ./stepwire-data)")
    p.add_argument("--address", help="host:port of the collector (default: the directory's own collector)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--tls-ca", help="PEM file of the CA that signed the collector's certificate (TLS)")
    p.set_defaults(fn=cmd_sync)

    p = sub.add_parser("agent", help="store what dead processes logging to a remote collector left in shared "
                                     "memory (runs start it)")
    p.add_argument("--dir", required=True, help="the data directory of the runs it serves")
    p.add_argument("--address", required=True, help="host:port of the remote collector (token: $STEPWIRE_TOKEN)")
    p.add_argument("--tls-ca", help="PEM file of the CA that signed the collector's certificate (TLS)")
    p.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="exit once no run has left a segment for this long (default: $STEPWIRE_IDLE_EXIT or 10)")
    p.set_defaults(fn=_cmd_agent)

    p = sub.add_parser("bench", help="logging overhead of stepwire against W&B, MLflow, TensorBoard and ClearML")
    p.add_argument("--full", action="store_true", help="the long version (ten times the quick sizes)")
    p.add_argument("--out", type=Path, default=Path("stepwire-bench"), help="where the JSON and PNG go")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("demo", help="train a small model and log it to the embedded default")
    p.add_argument("--dir", help="data directory (default: $STEPWIRE_DIR or ./stepwire-data)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--backend", choices=["auto", "ignite", "numpy"], default="auto",
                   help="ignite (needs torch and pytorch-ignite) or numpy; auto picks ignite when installed")
    p.set_defaults(fn=cmd_demo)

    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except Exception as exc:
        line = _error_line(exc, args)
        if line is None:
            raise
        print(f"stepwire {args.command}: {line}", file=sys.stderr)
        return 1
