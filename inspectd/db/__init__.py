"""Database layer: schema, connection handling, migrations and repository operations.

Typical use::

    from inspectd.db import open_database

    with open_database("sqlite:////var/lib/inspectd/inspectd.db") as db:
        item_id, created = db.add_item(path, size, mtime_ns, sha256, "bearing", "st1")
"""

from inspectd.db.engine import DEFAULT_BUSY_TIMEOUT_MS, create_db_engine
from inspectd.db.exceptions import (
    DatabaseBusyError,
    DatabaseFullError,
    DatabaseUnavailableError,
    DatabaseUnreachableError,
    DuplicateResultError,
    InvalidReviewError,
    InvalidValueError,
    SchemaVersionError,
    UnknownItemError,
)
from inspectd.db.items import FileIdentity
from inspectd.db.migrations import MIGRATIONS, SCHEMA_VERSION, Migration, ensure_schema
from inspectd.db.model_life import AlreadyInGoodSetError, GoodSetDecision, UndoResult
from inspectd.db.records import (
    ActivationRecord,
    GoodSetRecord,
    ItemRecord,
    LastError,
    ModelVersionRecord,
    ReviewRecord,
    StatusSummary,
)
from inspectd.db.reviews import ReviewFields
from inspectd.db.reports import RESULT_EXPORT_FIELDS
from inspectd.db.repository import Database, open_database
from inspectd.db.retry import RetryPolicy, is_busy_error, is_unreachable_error, retry_on_busy
from inspectd.db.schema import (
    DECISION_CONFIRM_DEFECT,
    DECISION_OVERRULE,
    DECISION_SKIP,
    DECISION_UNDO,
    ITEM_STATES,
    REVIEW_DECISIONS,
    STATE_DONE,
    STATE_ERROR,
    STATE_PENDING,
    STATE_SCORING,
    VERDICT_ERROR,
    VERDICT_NG,
    VERDICT_OK,
    VERDICTS,
)
from inspectd.errors import DatabaseError

__all__ = [
    "DECISION_CONFIRM_DEFECT",
    "DECISION_OVERRULE",
    "DECISION_SKIP",
    "DECISION_UNDO",
    "DEFAULT_BUSY_TIMEOUT_MS",
    "ITEM_STATES",
    "MIGRATIONS",
    "RESULT_EXPORT_FIELDS",
    "REVIEW_DECISIONS",
    "SCHEMA_VERSION",
    "STATE_DONE",
    "STATE_ERROR",
    "STATE_PENDING",
    "STATE_SCORING",
    "VERDICTS",
    "VERDICT_ERROR",
    "VERDICT_NG",
    "VERDICT_OK",
    "ActivationRecord",
    "AlreadyInGoodSetError",
    "Database",
    "DatabaseBusyError",
    "DatabaseError",
    "DatabaseFullError",
    "DatabaseUnavailableError",
    "DatabaseUnreachableError",
    "DuplicateResultError",
    "FileIdentity",
    "GoodSetDecision",
    "GoodSetRecord",
    "InvalidReviewError",
    "InvalidValueError",
    "ItemRecord",
    "LastError",
    "Migration",
    "ModelVersionRecord",
    "RetryPolicy",
    "ReviewFields",
    "ReviewRecord",
    "SchemaVersionError",
    "StatusSummary",
    "UndoResult",
    "UnknownItemError",
    "create_db_engine",
    "ensure_schema",
    "is_busy_error",
    "is_unreachable_error",
    "open_database",
    "retry_on_busy",
]
