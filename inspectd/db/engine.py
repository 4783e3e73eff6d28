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

PostgreSQL notes
----------------
* ``postgresql://`` (and ``postgres://``) URLs use psycopg 3, the ``postgresql``
  extra: ``pip install 'inspectd[postgresql]'``.
* A line PC must notice a lost server quickly, not after the kernel's TCP timeout
  (minutes): connections time out after :data:`CONNECT_TIMEOUT_S`, unacknowledged
  data after ``tcp_user_timeout``, idle connections are probed by TCP keepalives,
  and the pool checks a connection before handing it out.  Settings given in the
  URL's query (``?connect_timeout=...``, ``sslmode=verify-full``, ...) win.
* ``application_name`` is ``inspectd@<host>``, so the server shows which line PC
  holds which connection (``pg_stat_activity``).
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 5
_BEGIN_OPTION = "inspectd_sqlite_begin"
_POSTGRES_DRIVER = "postgresql+psycopg"


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


def is_postgresql(url: str | URL) -> bool:
    """True when *url* names a PostgreSQL database."""
    return make_url(url).get_backend_name() == "postgresql"


def with_default_driver(url: str | URL) -> URL:
    """*url* with psycopg 3 as the driver of a plain ``postgresql://`` (or the
    ``postgres://`` spelling other tools use); other URLs unchanged."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    if text.startswith("postgres://"):
        text = "postgresql://" + text[len("postgres://"):]
    parsed = make_url(text)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername=_POSTGRES_DRIVER)
    return parsed


def create_db_engine(url: str | URL, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Engine:
    """An engine for *url*; SQLite engines get the pragmas and BEGIN handling above,
    PostgreSQL engines the connection settings."""
    if busy_timeout_ms < 0:
        raise ValueError(f"busy_timeout_ms must be >= 0, got {busy_timeout_ms}")
    url = with_default_driver(url)
    if url.drivername == _POSTGRES_DRIVER:
        _require_psycopg()
        return create_engine(url, pool_pre_ping=True, connect_args=postgres_connect_args(url))
    if not is_sqlite(url):
        # Long-running daemon: survive server restarts and idle-connection drops.
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url)
    _install_sqlite_hooks(engine, busy_timeout_ms)
    return engine


def postgres_connect_args(url: URL) -> dict[str, Any]:
    """libpq settings for a line PC (see the module notes); the URL's own win."""
    defaults: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": f"inspectd@{socket.gethostname()}"[:63],
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": 15000,  # ms: data unacknowledged this long means the link is gone
    }
    return {key: value for key, value in defaults.items() if key not in url.query}


def _require_psycopg() -> None:
    """A clear message instead of SQLAlchemy's when the extra is not installed."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise ImportError("PostgreSQL needs psycopg 3: pip install 'inspectd[postgresql]'") from exc


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
