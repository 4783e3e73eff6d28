"""Retrying whole transactions while the database is locked or busy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from inspectd.db.exceptions import DatabaseBusyError, DatabaseFullError, DatabaseUnavailableError
from inspectd.errors import DatabaseError

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLite lock contention, and the PostgreSQL conflicts that are safe to retry.
_BUSY_MARKERS = (
    "database is locked",
    "database is busy",
    "deadlock detected",
    "could not serialize access",
)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off: initial_delay_s, doubling (``multiplier``) up to
    max_delay_s, giving up once total_s seconds have passed since the first try."""

    total_s: float = 30.0
    initial_delay_s: float = 0.05
    max_delay_s: float = 2.0
    multiplier: float = 2.0


def is_busy_error(exc: BaseException) -> bool:
    """True for an OperationalError caused by a lock/busy condition."""
    if not isinstance(exc, OperationalError):
        return False
    text = str(exc.orig if exc.orig is not None else exc).lower()
    return any(marker in text for marker in _BUSY_MARKERS)


def retry_on_busy(
    operation: Callable[[], T],
    *,
    policy: RetryPolicy = RetryPolicy(),
    what: str = "database operation",
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run *operation*; while it fails because the database is locked, wait and retry.

    *operation* must be a complete transaction (it is run again from the start).
    Each retry is logged as a warning.  Other errors propagate unchanged; when the
    time budget is spent, :class:`DatabaseBusyError` is raised.
    """
    started = clock()
    delay = policy.initial_delay_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return operation()
        except OperationalError as exc:
            if not is_busy_error(exc):
                raise
            elapsed = clock() - started
            remaining = policy.total_s - elapsed
            if remaining <= 0:
                raise DatabaseBusyError(
                    f"{what}: database still locked after {elapsed:.1f} s and {attempt} attempt(s), "
                    f"giving up ({_short(exc)})"
                ) from exc
            pause = min(delay, policy.max_delay_s, remaining)
            log.warning(
                "%s: database locked (attempt %d, %.2f s elapsed), retrying in %.2f s",
                what, attempt, elapsed, pause,
            )
            sleep(pause)
            delay *= policy.multiplier


_FULL_MARKERS = ("database or disk is full", "disk full", "no space left", "could not extend file",
                 "quota exceeded")


def translate(exc: DBAPIError, what: str, where: str) -> DatabaseError:
    """A driver error as one clear DatabaseError: full, busy, or unavailable."""
    text = _short(exc)
    lowered = text.lower()
    if any(marker in lowered for marker in _FULL_MARKERS):
        return DatabaseFullError(f"{what}: the disk holding database {where} is full ({text})")
    if is_busy_error(exc):
        return DatabaseBusyError(f"{what}: database {where} is locked by another program ({text})")
    return DatabaseUnavailableError(f"{what}: database {where} is not usable ({text})")


def _short(exc: DBAPIError) -> str:
    """The driver's message without SQLAlchemy's SQL and background-link suffix."""
    return str(exc.orig if exc.orig is not None else exc).splitlines()[0]
