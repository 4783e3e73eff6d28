"""Schema versioning: create a fresh schema, upgrade older ones, refuse newer ones.

The version lives in the single-row ``schema_info`` table.  To change the schema:
edit :mod:`inspectd.db.schema`, bump :data:`SCHEMA_VERSION`, and append a
:class:`Migration` with ``from_version`` = the old version to :data:`MIGRATIONS`.
Each step runs in its own transaction together with the version bump, so a failed
step leaves the database at the previous version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, inspect, select, text

from inspectd.db import upgrade_v2, upgrade_v3
from inspectd.db.engine import immediate_engine
from inspectd.db.exceptions import SchemaVersionError
from inspectd.db.schema import Base, SchemaInfo, utcnow

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3


@dataclass(frozen=True)
class Migration:
    """One upgrade step from ``from_version`` to ``from_version + 1``."""

    from_version: int
    description: str
    upgrade: Callable[[Connection], None]

    @property
    def to_version(self) -> int:
        return self.from_version + 1


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "file identity by inode and ctime; items without content", upgrade_v2.upgrade),
    Migration(2, "model life cycle: active versions, good set, review client ids", upgrade_v3.upgrade),
)

_PG_LOCK_KEY = 0x696E_7370  # "insp": serializes concurrent schema setup on PostgreSQL


def plan_upgrade(current: int, target: int, migrations: Sequence[Migration]) -> list[Migration]:
    """The steps taking a database from *current* to *target*, in order.

    Raises SchemaVersionError for a duplicate step or a gap in the chain.
    """
    by_version: dict[int, Migration] = {}
    for step in migrations:
        if step.from_version in by_version:
            raise SchemaVersionError(f"two migrations start at schema version {step.from_version}")
        by_version[step.from_version] = step
    missing = [version for version in range(current, target) if version not in by_version]
    if missing:
        raise SchemaVersionError(
            f"cannot upgrade database schema from version {current} to {target}: "
            f"no migration from version {missing[0]}"
        )
    return [by_version[version] for version in range(current, target)]


def read_schema_version(connection: Connection) -> int | None:
    """The stored schema version, or None when the database has no inspectd schema."""
    if not inspect(connection).has_table(SchemaInfo.__tablename__):
        return None
    version = connection.execute(select(SchemaInfo.version).where(SchemaInfo.id == 1)).scalar_one_or_none()
    if version is None:
        raise SchemaVersionError("table schema_info exists but holds no version row")
    return version


def ensure_schema(
    engine: Engine,
    *,
    create: bool = True,
    target: int = SCHEMA_VERSION,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> int:
    """Bring the database behind *engine* to schema version *target* and return it.

    An empty database gets the current schema (if *create*), an older one is upgraded
    step by step, a newer one is refused with :class:`SchemaVersionError`.  The usual
    case, a database already at *target*, is settled by a read transaction and so
    does not wait for writers.
    """
    where = engine.url.render_as_string(hide_password=True)
    with engine.connect() as connection:
        version = read_schema_version(connection)
    if version is not None and _settled(version, target, where):
        return version
    # Creating or upgrading: take the write lock (BEGIN IMMEDIATE on SQLite) and
    # re-read the version each step, since another process may be doing the same.
    with immediate_engine(engine).connect() as connection, _foreign_keys_off(connection):
        while True:
            with connection.begin():
                _lock_schema(connection)
                version = read_schema_version(connection)
                if version is None:
                    _create_schema(connection, create, where)
                    continue
                if _settled(version, target, where):
                    return version
                step = plan_upgrade(version, target, migrations)[0]
                log.info("upgrading %s schema %d -> %d: %s", where, version, step.to_version, step.description)
                step.upgrade(connection)
                _check_foreign_keys(connection, step)
                _write_version(connection, step.to_version)


@contextmanager
def _foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite: foreign keys off while upgrading, as its manual asks for table rebuilds
    (dropping a referenced table would otherwise cascade). The pragma only takes
    effect outside a transaction, so it goes to the driver connection directly."""
    if connection.dialect.name != "sqlite":
        yield
        return
    driver = connection.connection.driver_connection
    driver.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        driver.execute("PRAGMA foreign_keys = ON")


def _check_foreign_keys(connection: Connection, step: Migration) -> None:
    """Refuse (roll back) a step that left rows pointing nowhere."""
    if connection.dialect.name == "sqlite" and connection.execute(text("PRAGMA foreign_key_check")).first():
        raise SchemaVersionError(f"schema upgrade to version {step.to_version} ({step.description}) "
                                 "left broken references; nothing was changed")


def _settled(version: int, target: int, where: str) -> bool:
    """True when *version* is *target*; raise if it is newer; False if it is older."""
    if version > target:
        raise SchemaVersionError(
            f"database {where} has schema version {version}, newer than version {target} "
            f"supported by this inspectd; upgrade inspectd (or use another database)"
        )
    return version == target


def _create_schema(connection: Connection, create: bool, where: str) -> None:
    """Create all tables on an empty database at :data:`SCHEMA_VERSION`."""
    if inspect(connection).get_table_names():
        raise SchemaVersionError(f"database {where} has tables but no inspectd schema_info; not an inspectd database?")
    if not create:
        raise SchemaVersionError(f"database {where} has no inspectd schema (and creating it was not requested)")
    log.info("creating inspectd schema version %d in %s", SCHEMA_VERSION, where)
    Base.metadata.create_all(connection)
    connection.execute(SchemaInfo.__table__.insert().values(id=1, version=SCHEMA_VERSION, updated_at=utcnow()))


def _write_version(connection: Connection, version: int) -> None:
    """Store *version* as the schema version."""
    table = SchemaInfo.__table__
    connection.execute(table.update().where(table.c.id == 1).values(version=version, updated_at=utcnow()))


def _lock_schema(connection: Connection) -> None:
    """Serialize schema setup between processes (SQLite does it with BEGIN IMMEDIATE)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
