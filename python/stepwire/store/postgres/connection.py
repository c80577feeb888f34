"""The PostgreSQL store's connections: the writer's (the schema migrated when it opens) and a few readers'
(``ReadPool``), each opened on demand and replaced when it breaks.

Every error of the database becomes ``StoreUnavailable`` (the collector answers UNAVAILABLE, which clients retry,
spooling meanwhile): a lost connection, a restarted or shutting-down server, a serialisation failure or a
deadlock, a server gone read-only or refusing a privilege: nothing was stored and the same request may succeed
later. The one exception is the data of a single batch, which the store refuses alone (``BatchError``, before
the error gets here). The next call connects again. Passwords never appear in messages (``mask``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from stepwire.store import mask
from stepwire.store.base import StoreUnavailable
from stepwire.store.postgres.schema import migrate

log = logging.getLogger("stepwire.store")
T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]

_EXPECTED_CLASSES = ("08", "40", "53", "57", "58")
"""SQLSTATE classes of the database's own passing troubles, not logged: connection, transaction rollback
(serialisation, deadlock), insufficient resources, operator intervention (shutdown, restart), system error.
Others (a server gone read-only, a privilege revoked, a table missing) are logged too: they need an operator."""


LINK_DEFAULTS = {"keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "2", "keepalives_count": "3",
                 "tcp_user_timeout": "15000"}
"""libpq settings unless the URL says otherwise: a link to the database that goes silent (a network partition)
fails a query within about 15 s, instead of after the kernel's retransmissions (~15 min): the collector answers
UNAVAILABLE meanwhile and reconnects once the link is back."""


class Connection:
    """One connection to ``url`` (autocommit outside ``run``'s transactions), thread-safe by a lock; it shows as
    ``application_name`` in ``pg_stat_activity``."""

    def __init__(self, url: str, connect_timeout: float = 10.0, migrate_schema: bool = True,
                 application_name: str = "stepwire") -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.migrate_schema = migrate_schema
        self.application_name = application_name
        self.lock = threading.RLock()
        self._conn: Conn | None = None
        self._connected = False  # once connected, a later connect is a reconnect
        self.reconnected = 0  # times a broken connection was replaced
        self.on_reconnect: Callable[[], None] = lambda: None

    @property
    def masked_url(self) -> str:
        """The URL without its password."""
        return mask(self.url)

    def _live(self) -> Conn:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self.drop()
        try:
            given = conninfo_to_dict(self.url)
            settings = {k: v for k, v in {**LINK_DEFAULTS, "application_name": self.application_name,
                                          "connect_timeout": str(max(1, int(self.connect_timeout)))}.items()
                        if k not in given}
            conn: Conn = psycopg.connect(make_conninfo(self.url, **settings), autocommit=True)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to {self.masked_url}: {mask(_first_line(exc))}") from None
        try:
            if self.migrate_schema:
                migrate(conn)
        except psycopg.Error as exc:
            conn.close()
            self._fail(exc)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self.on_reconnect()
        if self._connected:
            self.reconnected += 1
            log.warning("reconnected to the store %s", self.masked_url)
        self._connected = True
        return conn

    def run(self, fn: Callable[[Conn], T], transaction: bool = True) -> T:
        """``fn(connection)`` in one transaction (committed when it returns); a failure of the database raises
        ``StoreUnavailable`` with nothing committed (unless the connection broke during COMMIT: then the
        transaction may have committed, which exactly-once keys make safe to retry). Without ``transaction``
        (reads), a connection found broken is replaced and ``fn`` tried once more on the new one."""
        with self.lock:
            conn = self._live()
            try:
                if not transaction:
                    return fn(conn)
                with conn.transaction():
                    return fn(conn)
            except psycopg.Error as exc:
                if transaction or not conn.broken:
                    self._fail(exc)
            # a read on a connection found broken (the server restarted since its last use): once more, anew
            self.drop()
            try:
                return fn(self._live())
            except psycopg.Error as exc:
                self._fail(exc)

    def _fail(self, exc: psycopg.Error) -> NoReturn:
        """``StoreUnavailable`` for any error of the database (the request changed nothing and may be retried);
        a connection it left unusable is replaced at the next call."""
        conn = self._conn
        broken = conn is None or conn.closed or conn.broken
        if broken or isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            self.drop()  # a connection an error of the link left unusable without saying so (one stuck in pipeline
            #              mode after a restart mid-statement) is replaced too, not reused for ever
        elif not exc.sqlstate or exc.sqlstate[:2] not in _EXPECTED_CLASSES:
            log.warning("the store %s failed: %s (%s)", self.masked_url, mask(_first_line(exc)),
                        type(exc).__name__)
        raise StoreUnavailable(f"the store {self.masked_url} cannot take this now: {mask(_first_line(exc))} "
                               f"(SQLSTATE {exc.sqlstate or 'none'})") from None

    def drop(self) -> None:
        """Close the connection (the next call opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def close(self) -> None:
        """Close for good (a later call would connect again)."""
        with self.lock:
            self.drop()

    def __del__(self) -> None:  # a reader nobody closed (Api(store=URL)) closes its connection when collected
        self.drop()


class ReadPool:
    """Up to ``size`` reader connections to ``url`` (opened as reads need them, never migrating the schema), apart
    from the writer's: a long read holds up neither ingest nor other reads, and a broken one is replaced alone."""

    def __init__(self, url: str, connect_timeout: float = 10.0, size: int = 3) -> None:
        if size < 1:
            raise ValueError(f"a read pool needs at least one connection, got {size}")
        self.connections = [Connection(url, connect_timeout, migrate_schema=False,
                                       application_name="stepwire-read") for _ in range(size)]
        self._free: queue.LifoQueue[Connection] = queue.LifoQueue()  # the last used first: idle ones stay closed
        for c in reversed(self.connections):
            self._free.put(c)

    @property
    def reconnected(self) -> int:
        """Times a broken reader connection was replaced."""
        return sum(c.reconnected for c in self.connections)

    def run(self, fn: Callable[[Conn], T]) -> T:
        """``fn(connection)`` on a free reader connection (waiting for one), outside a transaction; see
        ``Connection.run``."""
        conn = self._free.get()
        try:
            return conn.run(fn, transaction=False)
        finally:
            self._free.put(conn)

    def close(self) -> None:
        """Close every reader connection (a later read opens one again)."""
        for c in self.connections:
            c.close()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n", 1)[0]
