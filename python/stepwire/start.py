"""``stepwire.init``: checks the arguments, agrees on the run id across ranks and starts a ``Run``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from stepwire.console import enabled as console_enabled
from stepwire.histogram import DEFAULT_K
from stepwire.lifecycle import install_signal_handlers
from stepwire.ranks import RankInfo, agree_run_id, detect_ranks
from stepwire.run import Run
from stepwire.system import DEFAULT_INTERVAL, MIN_INTERVAL
from stepwire.system import enabled as system_enabled
from stepwire.transport import TOKEN_ENV, check_token


def init(project: str = "default", name: str | None = None, config: Mapping[str, Any] | None = None,
         tags: list[str] | None = None, address: str | None = None, dir: str | os.PathLike[str] | None = None,
         mode: str = "online", *, run_id: str | None = None, rank: int | None = None,
         world_size: int | None = None, log_on_ranks: Iterable[int] | None = None, on_unreachable: str = "spool",
         token: str | None = None, tls_ca: str | os.PathLike[str] | None = None, quiet: bool = False,
         policy: str = "block",
         batch_bytes: int = 1 << 20, flush_interval: float = 0.1, ring_capacity: int = 1 << 16, k: int = DEFAULT_K,
         finish_timeout: float = 60.0, connect_timeout: float = 10.0, block_timeout: float = 60.0,
         system_metrics: bool | None = None, system_interval: float = DEFAULT_INTERVAL,
         console: bool | None = None) -> Run:
    """Start a run and return it.

    With no ``address`` the run goes to the local collector of the data directory (``dir``, else
    ``$STEPWIRE_DIR``, else ``./stepwire-data``), started on demand and shared by every process using that
    directory; it exits by itself once idle. With ``address`` (``host:port``) the run goes to that collector.

    Nothing is lost when the collector is away: what it does not acknowledge goes to the spool in
    ``{dir}/spool/`` and is replayed when it answers again, or by ``stepwire sync``. If no collector answers
    within ``connect_timeout`` seconds at ``init``, the run starts on the spool (``on_unreachable="spool"``)
    or raises ``ConnectionError`` (``"raise"``). ``mode="offline"`` (or ``$STEPWIRE_MODE=offline``) writes only
    to the spool. A remote collector may want a bearer ``token`` (default ``$STEPWIRE_TOKEN``) and TLS:
    ``tls_ca`` is the PEM file of the CA that signed its certificate. ``finish`` prints a one-line summary of
    what logging cost to stderr unless ``quiet``.

    ``policy`` says what a full ring does: ``"block"`` waits (lossless while delivery keeps moving, but never
    longer than ``block_timeout`` seconds: then the call drops and counts, with one warning), ``"drop"`` drops
    and counts. Batches are sealed every ``flush_interval`` seconds or at ``batch_bytes``. A point that can be
    neither delivered nor spooled (no collector answers and the disk is full) is counted in
    ``stats()["lost"]``, never dropped silently.

    Distributed jobs: rank and world size come from ``rank=``/``world_size=``, an initialized
    ``torch.distributed``, or the launcher (torchrun, Open MPI, MPICH, SLURM); every rank joins one run whose id
    comes from ``run_id=``, ``$STEPWIRE_RUN_ID``, rank 0 through ``torch.distributed``, or the launcher's job id.
    Ranks not in ``log_on_ranks`` (default: all) get a run whose logging calls are accepted and discarded.

    System metrics and console: unless ``system_metrics=False`` (default: ``$STEPWIRE_SYSTEM_METRICS``, on unless
    ``0``), a daemon thread logs process, host (on local rank 0) and GPU figures every ``system_interval`` seconds
    as series under ``system/`` (``stepwire.system``); unless ``console=False`` (default: ``$STEPWIRE_CONSOLE``,
    on unless ``0``), what the process prints to ``sys.stdout``/``sys.stderr`` is kept with the run, still printed
    as before (``stepwire.console``; read with ``RunView.console``).
    """
    mode = os.environ.get("STEPWIRE_MODE", mode)
    if mode not in ("online", "offline"):
        raise ValueError(f"mode (or $STEPWIRE_MODE) must be 'online' or 'offline', got {mode!r}")
    if token or os.environ.get(TOKEN_ENV):
        check_token(token or os.environ[TOKEN_ENV])
    if on_unreachable not in ("spool", "raise"):
        raise ValueError(f"on_unreachable must be 'spool' or 'raise', got {on_unreachable!r}")
    if not system_interval >= MIN_INTERVAL:
        raise ValueError(f"system_interval must be at least {MIN_INTERVAL} s, got {system_interval!r}")
    ranks = detect_ranks(rank, world_size)
    agreed = agree_run_id(ranks, run_id)
    logging_ranks = set(range(ranks.world_size)) if log_on_ranks is None else set(log_on_ranks)
    active = ranks.rank in logging_ranks
    # the run is finished once every rank that logs has finished
    ranks = RankInfo(ranks.rank, ranks.world_size, ranks.local_rank, ranks.source,
                     len(logging_ranks & set(range(ranks.world_size))))
    install_signal_handlers()
    return Run(project=project, name=name, config=config, tags=tags, address=address, dir=dir, ranks=ranks,
               run_id=agreed, active=active, offline=mode == "offline", on_unreachable=on_unreachable,
               token=token, tls_ca=tls_ca, quiet=quiet,
               policy=policy, batch_bytes=batch_bytes, flush_interval=flush_interval,
               ring_capacity=ring_capacity, k=k, finish_timeout=finish_timeout, connect_timeout=connect_timeout,
               block_timeout=block_timeout, system_metrics=system_enabled(system_metrics),
               system_interval=system_interval, console=console_enabled(console))
