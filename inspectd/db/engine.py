"""Creating engines: SQLite pragmas and transaction handling, pooling for servers.

SQLite notes
------------
* Every new connection gets ``journal_mode=WAL`` (readers never block the writer),
  ``busy_timeout`` (wait for a lock instead of failing at once), ``foreign_keys=ON``
  and ``synchronous=NORMAL`` (safe with WAL, far fewer fsyncs).
* The sqlite3 module's legacy transaction handling is switched off and SQLAlchemy
  emits ``BEGIN`` itself, so reads and DDL are transactional too.  Engines returned
  by :func:`immediate_engine` begin with ``BEGIN IMMEDIATE``: a writer takes the
  write lock up front (waiting up to ``busy_timeout``) instead of failing half-way
  when it upgrades from a stale read snapshot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT_MS = 5000
_BEGIN_OPTION = "inspectd_sqlite_begin"


def is_sqlite(url: str | URL) -> bool:
    """True when *url* names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_file(url: str | URL) -> Path | None:
    """The database file of a SQLite URL, or None (in-memory DB, other backend)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def create_db_engine(url: str | URL, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Engine:
    """An engine for *url*; SQLite engines get the pragmas and BEGIN handling above."""
    if busy_timeout_ms < 0:
        raise ValueError(f"busy_timeout_ms must be >= 0, got {busy_timeout_ms}")
    if not is_sqlite(url):
        # Long-running daemon: survive server restarts and idle-connection drops.
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url)
    _install_sqlite_hooks(engine, busy_timeout_ms)
    return engine


def immediate_engine(engine: Engine) -> Engine:
    """A view of *engine* whose SQLite transactions start with BEGIN IMMEDIATE.

    Shares the pool and event hooks of *engine*; on other backends it is the same
    as *engine*.
    """
    return engine.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})


def apply_sqlite_pragmas(dbapi_connection: Any, busy_timeout_ms: int) -> None:
    """Set the per-connection pragmas on a raw sqlite3 connection."""
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first, so switching the journal mode waits for other users.
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("SQLite journal_mode is %r, not 'wal' (in-memory or unsupported filesystem?)", mode)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _install_sqlite_hooks(engine: Engine, busy_timeout_ms: int) -> None:
    """Register the connect (pragmas) and begin (explicit BEGIN) listeners."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop the sqlite3 module from issuing BEGIN/COMMIT on its own.
        dbapi_connection.isolation_level = None
        apply_sqlite_pragmas(dbapi_connection, busy_timeout_ms)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql(connection.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))
