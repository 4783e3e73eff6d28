"""The :class:`Database` facade and :func:`open_database`.

Every public method is one short transaction of its own, retried while the database
is locked, and returns plain records or dicts (never live ORM objects).
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from inspectd.db.engine import DEFAULT_BUSY_TIMEOUT_MS, create_db_engine, sqlite_file
from inspectd.db.items import ItemOperations
from inspectd.db.migrations import ensure_schema
from inspectd.db.model_life import ModelLifeCycleOperations
from inspectd.db.model_versions import ModelVersionOperations
from inspectd.db.reports import ReportOperations
from inspectd.db.results import ResultOperations
from inspectd.db.retry import RetryPolicy, retry_on_busy, translate
from inspectd.db.reviews import ReviewOperations
from inspectd.errors import DatabaseError

log = logging.getLogger(__name__)


class Database(ItemOperations, ResultOperations, ModelVersionOperations, ReviewOperations, ReportOperations,
               ModelLifeCycleOperations):
    """All repository operations on one engine.  Thread-safe: each call uses its own
    session and pooled connection.  Use as a context manager or call :meth:`close`."""


def open_database(
    url: str,
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    create: bool = True,
    retry_policy: RetryPolicy = RetryPolicy(),
) -> Database:
    """Connect to *url*, create or upgrade the schema, and return a :class:`Database`.

    With ``create=False`` a missing SQLite file or an empty database is an error.
    A schema newer than this code is refused (SchemaVersionError).  Errors are
    raised as :class:`inspectd.errors.DatabaseError`.
    """
    where = _describe(url)
    _prepare_sqlite_file(url, create, where)
    try:
        engine = create_db_engine(url, busy_timeout_ms=busy_timeout_ms)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
        raise DatabaseError(f"cannot use database URL {where}: {exc}") from exc
    _initialise(engine, create, retry_policy, where)
    log.debug("opened database %s", where)
    return Database(engine, retry_policy=retry_policy)


def _initialise(engine: Engine, create: bool, retry_policy: RetryPolicy, where: str) -> None:
    """Create/upgrade/check the schema; dispose of *engine* if that fails."""
    try:
        retry_on_busy(
            lambda: ensure_schema(engine, create=create),
            policy=retry_policy,
            what=f"opening {where}",
        )
    except DBAPIError as exc:
        engine.dispose()
        raise translate(exc, "opening the database", where) from exc
    except BaseException:
        engine.dispose()
        raise


def _prepare_sqlite_file(url: str, create: bool, where: str) -> None:
    """Create the directory of a new SQLite file, or refuse a missing one."""
    try:
        path = sqlite_file(url)
    except ArgumentError as exc:
        raise DatabaseError(f"invalid database URL {where}: {exc}") from exc
    if path is None:
        return
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"cannot create the directory of database file {path}: {exc}") from exc
    elif not path.exists():
        raise DatabaseError(f"database file {path} does not exist")


def _describe(url: str) -> str:
    """*url* with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)
