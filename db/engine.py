"""Engines for SQLite (embedded default) and PostgreSQL, configured for the job/transfer queues.

SQLite: WAL journal, foreign keys on, a busy timeout, ``synchronous=FULL`` (an acknowledged
photo must survive power loss), and transactions opened with ``BEGIN IMMEDIATE`` when a
connection carries the ``WRITE`` execution option, so that writers queue on the database lock
instead of failing with a stale snapshot. PostgreSQL: plain READ COMMITTED with pre-ping.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

#: Execution option marking a connection whose transactions will write.
WRITE = "cleftscore_write"


def _sqlite_on_connect(busy_timeout_ms: int):
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event emits BEGIN
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()
    return on_connect


def _sqlite_on_begin(connection: sa.Connection) -> None:
    write = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def create_engine_for(url: str | sa.URL, *, busy_timeout_ms: int = 10_000,
                      echo: bool = False) -> sa.Engine:
    """An engine for ``sqlite:///path/to/file.db`` or ``postgresql+psycopg2://...``.

    The SQLite file's folder must exist. In-memory SQLite is refused: each pooled connection
    would see its own empty database.
    """
    if isinstance(busy_timeout_ms, bool) or not isinstance(busy_timeout_ms, int) \
            or busy_timeout_ms < 0:
        raise ValueError(f"busy_timeout_ms must be a non-negative integer, got {busy_timeout_ms!r}")
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed):
            raise ValueError("in-memory SQLite is not supported; give a file path "
                             "(sqlite:///path/to/cleftscore.db)")
        engine = sa.create_engine(parsed, echo=echo,
                                  connect_args={"timeout": busy_timeout_ms / 1000.0})
        sa.event.listen(engine, "connect", _sqlite_on_connect(busy_timeout_ms))
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend == "postgresql":
        return sa.create_engine(parsed, echo=echo, pool_pre_ping=True)
    raise ValueError(f"unsupported database backend {backend!r}; use sqlite or postgresql")
