"""Specific database errors; all derive from :class:`inspectd.errors.DatabaseError`."""

from __future__ import annotations

from inspectd.errors import DatabaseError


class DatabaseBusyError(DatabaseError):
    """The database stayed locked/busy for longer than the retry budget."""


class DatabaseFullError(DatabaseError):
    """The disk (or quota) holding the database is full: nothing can be written."""


class DatabaseUnavailableError(DatabaseError):
    """The database cannot be reached or written: server down, I/O error, read-only."""


class SchemaVersionError(DatabaseError):
    """The database schema is newer than this code, missing, or cannot be upgraded."""


class UnknownItemError(DatabaseError):
    """An operation named an item id that does not exist."""


class DuplicateResultError(DatabaseError):
    """A second result was offered for an item that already has one."""


class InvalidReviewError(DatabaseError):
    """A review decision that is not allowed (bad decision, bad undo target)."""


class InvalidValueError(DatabaseError, ValueError):
    """A value outside its allowed set (state, verdict, naive timestamp, ...)."""
