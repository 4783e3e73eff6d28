"""Running repository work as short transactions, retried while the database is busy."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Self, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, InterfaceError, InternalError, OperationalError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from inspectd.db.engine import immediate_engine
from inspectd.db.retry import RetryPolicy, retry_on_busy, translate
from inspectd.errors import DatabaseError

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[Session], T]

# Keeps "IN (...)" lists well below SQLite's bound-parameter limit.
CHUNK_SIZE = 500


def chunked(values: Iterable[T], size: int = CHUNK_SIZE) -> Iterator[list[T]]:
    """Yield *values* in lists of at most *size*."""
    batch: list[T] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class SessionScope:
    """Owns the engine; runs each operation as one transaction with busy retries.

    Write transactions start with BEGIN IMMEDIATE on SQLite; reads use a plain
    (deferred) BEGIN and see one consistent snapshot.
    """

    def __init__(self, engine: Engine, *, retry_policy: RetryPolicy = RetryPolicy()) -> None:
        self._engine = engine
        self._retry_policy = retry_policy
        self._writer = sessionmaker(immediate_engine(engine), expire_on_commit=False)
        self._reader = sessionmaker(engine, expire_on_commit=False)

    @property
    def engine(self) -> Engine:
        """The underlying engine (for ad-hoc read queries and tests)."""
        return self._engine

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Close all pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def set_retry_policy(self, policy: RetryPolicy) -> None:
        """How long later operations keep retrying while the database is locked."""
        self._retry_policy = policy

    def _write(self, what: str, work: Work[T]) -> T:
        """Run *work* in a write transaction, committed on success."""
        return self._translated(what, lambda: retry_on_busy(lambda: _run(self._writer, work),
                                                            policy=self._retry_policy, what=what))

    def _read(self, what: str, work: Work[T]) -> T:
        """Run *work* in a read transaction."""
        return self._translated(what, lambda: retry_on_busy(lambda: _run(self._reader, work),
                                                            policy=self._retry_policy, what=what))

    def _translated(self, what: str, operation: Callable[[], T]) -> T:
        """Driver errors other than integrity conflicts become one clear DatabaseError
        (full disk, locked, unavailable) instead of an OperationalError."""
        try:
            return operation()
        except (OperationalError, InterfaceError, InternalError) as exc:
            raise translate(exc, what, self.url) from exc

    def _write_once_more_on_conflict(self, what: str, work: Work[T]) -> T:
        """Like :meth:`_write`, for get-or-create work racing other writers.

        If a concurrent transaction inserted the same unique row between our check and
        our insert, the IntegrityError is caught and *work* runs once more: it then
        finds that row instead of inserting it.
        """
        try:
            return self._write(what, work)
        except IntegrityError:
            log.debug("%s: unique conflict with a concurrent writer, retrying once", what)
            return self._write(what, work)


def _run(factory: sessionmaker[Session], work: Work[T]) -> T:
    """One transaction: begin, run *work*, commit (roll back on any error).

    Our own errors raised while binding a value (e.g. a naive datetime) reach us
    wrapped in StatementError; they are unwrapped so callers see the DatabaseError.
    """
    try:
        with factory.begin() as session:
            return work(session)
    except StatementError as exc:
        if isinstance(exc.orig, DatabaseError):
            raise exc.orig from exc
        raise

