"""The PostgreSQL store: one database shared by the collectors of every node (``pip install stepwire[postgres]``)."""

from stepwire.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
