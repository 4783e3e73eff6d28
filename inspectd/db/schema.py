"""Table definitions (SQLAlchemy 2.x typed declarative) and the value sets they allow.

The schema is portable: it uses only generic types and constraints, so the same
models create the same tables on SQLite and PostgreSQL.  Timestamps are stored as
UTC; :class:`UTCDateTime` refuses naive datetimes and always returns aware ones.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from inspectd.db.exceptions import InvalidValueError

# --- value sets -------------------------------------------------------------------

STATE_PENDING = "pending"
STATE_SCORING = "scoring"
STATE_DONE = "done"
STATE_ERROR = "error"
ITEM_STATES: tuple[str, ...] = (STATE_PENDING, STATE_SCORING, STATE_DONE, STATE_ERROR)

VERDICT_OK = "OK"
VERDICT_NG = "NG"
VERDICT_ERROR = "ERROR"
VERDICTS: tuple[str, ...] = (VERDICT_OK, VERDICT_NG, VERDICT_ERROR)

DECISION_CONFIRM_DEFECT = "confirm_defect"
DECISION_OVERRULE = "overrule"
DECISION_SKIP = "skip"
DECISION_UNDO = "undo"
REVIEW_DECISIONS: tuple[str, ...] = (
    DECISION_CONFIRM_DEFECT,
    DECISION_OVERRULE,
    DECISION_SKIP,
    DECISION_UNDO,
)

NAME_LENGTH = 128  # products, stations, operators
VERSION_LENGTH = 32  # model version strings such as "v0003"
CLIENT_ID_LENGTH = 36  # a UUID in text form


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def require_member(value: str, allowed: tuple[str, ...], what: str) -> str:
    """Return *value* if it is one of *allowed*, else raise InvalidValueError."""
    if value not in allowed:
        raise InvalidValueError(f"invalid {what} {value!r}; expected one of {', '.join(allowed)}")
    return value


# --- column types -----------------------------------------------------------------


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamp, stored portably.

    PostgreSQL gets ``TIMESTAMP WITH TIME ZONE``; SQLite stores the UTC wall time as
    text (which also sorts correctly).  Values read back are always aware UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidValueError(f"naive datetime {value.isoformat()} given; use an aware (UTC) datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# 64-bit ids on servers; SQLite needs plain INTEGER for the rowid alias.
IdType = BigInteger().with_variant(Integer(), "sqlite")


def _one_of(column: str, allowed: tuple[str, ...], name: str) -> CheckConstraint:
    """A portable ``column IN (...)`` check constraint over constant strings."""
    values = ", ".join(f"'{value}'" for value in allowed)
    return CheckConstraint(f"{column} IN ({values})", name=name)


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with deterministic constraint names (needed by migrations)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


# --- tables -----------------------------------------------------------------------


class SchemaInfo(Base):
    """Single row holding the schema version of this database."""

    __tablename__ = "schema_info"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class Product(Base):
    """A product (one model family, one watched folder tree)."""

    __tablename__ = "products"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    created_at: Mapped[datetime]


class ModelVersion(Base):
    """A trained model of a product; (product, version) is unique."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("product", "version", name="uq_model_versions_product_version"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    product: Mapped[str] = mapped_column(String(NAME_LENGTH), ForeignKey("products.name"))
    version: Mapped[str] = mapped_column(String(VERSION_LENGTH))
    path: Mapped[str] = mapped_column(String)
    threshold: Mapped[float] = mapped_column(Float)
    bank_size: Mapped[int] = mapped_column(Integer)
    backbone: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    # "metadata" is reserved on declarative classes, hence the attribute name.
    model_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)


class Item(Base):
    """One file that landed in a watched folder.  ``ctime_ns`` and ``inode`` change
    whenever a file is written or replaced (a camera cannot set them), so together
    with path, size and mtime they tell a start-up scan whether a file on disk is one
    already recorded.  ``sha256`` is the hash of the bytes taken in (and scored);
    NULL when nothing could be read (a FIFO, a link, a file the service may not read).
    """

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("path", "size", "mtime_ns", "ctime_ns", "sha256", name="uq_items_landing"),
        _one_of("state", ITEM_STATES, "state"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        # claim_pending: WHERE state=? [AND product=?] ORDER BY discovered_at, id
        Index("ix_items_state_product_discovered", "state", "product", "discovered_at", "id"),
        Index("ix_items_state_discovered", "state", "discovered_at", "id"),
        Index("ix_items_product_station", "product", "station"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    path: Mapped[str] = mapped_column(String)
    file_name: Mapped[str] = mapped_column(String)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    ctime_ns: Mapped[int | None] = mapped_column(BigInteger)
    inode: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    product: Mapped[str] = mapped_column(String(NAME_LENGTH), ForeignKey("products.name"))
    station: Mapped[str] = mapped_column(String(NAME_LENGTH))
    discovered_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16), default=STATE_PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]


class Result(Base):
    """The single scoring outcome of an item (``item_id`` is unique)."""

    __tablename__ = "results"
    __table_args__ = (
        _one_of("verdict", VERDICTS, "verdict"),
        Index("ix_results_scored_at", "scored_at"),
        Index("ix_results_verdict_scored_at", "verdict", "scored_at"),
        Index("ix_results_normalized_score", "normalized_score"),
        Index("ix_results_verdict_normalized_score", "verdict", "normalized_score"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    item_id: Mapped[int] = mapped_column(IdType, ForeignKey("items.id", ondelete="CASCADE"), unique=True)
    raw_score: Mapped[float | None] = mapped_column(Float)
    normalized_score: Mapped[float | None] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(8))
    model_version: Mapped[str | None] = mapped_column(String(VERSION_LENGTH))
    threshold: Mapped[float | None] = mapped_column(Float)
    timings: Mapped[dict[str, Any] | None]
    heatmap_path: Mapped[str | None] = mapped_column(String)
    anomaly_map_path: Mapped[str | None] = mapped_column(String)
    # Where the source image is after scoring (the archive when files are moved;
    # NULL when they are deleted); the drop-folder path stays on the item.
    image_path: Mapped[str | None] = mapped_column(String)
    error: Mapped[str | None] = mapped_column(Text)
    scored_at: Mapped[datetime]


class Review(Base):
    """An operator decision.  Append-only: an 'undo' row cancels an earlier row."""

    __tablename__ = "reviews"
    __table_args__ = (
        _one_of("decision", REVIEW_DECISIONS, "decision"),
        _one_of("verdict", VERDICTS, "verdict"),
        CheckConstraint(
            "(decision = 'undo' AND undoes_review_id IS NOT NULL)"
            " OR (decision <> 'undo' AND undoes_review_id IS NULL)",
            name="undo_target",
        ),
        Index("ix_reviews_item_id_id", "item_id", "id"),
        # A review can be undone at most once (NULLs do not collide).
        Index("ix_reviews_undoes_review_id", "undoes_review_id", unique=True),
        Index("ix_reviews_decided_at", "decided_at"),
        Index("ix_reviews_client_id", "client_id", unique=True),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    item_id: Mapped[int] = mapped_column(IdType, ForeignKey("items.id", ondelete="CASCADE"))
    decision: Mapped[str] = mapped_column(String(16))
    undoes_review_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("reviews.id"))
    operator: Mapped[str] = mapped_column(String(NAME_LENGTH))
    decided_at: Mapped[datetime]
    verdict: Mapped[str] = mapped_column(String(8))
    model_version: Mapped[str | None] = mapped_column(String(VERSION_LENGTH))
    threshold: Mapped[float | None] = mapped_column(Float)
    tag: Mapped[str | None] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(Text)
    # Chosen by the client that made the decision, so that a write retried after a lost
    # answer (lock, dropped connection) is stored once (schema version 2).
    client_id: Mapped[str | None] = mapped_column(String(CLIENT_ID_LENGTH))


class ModelActivation(Base):
    """Which model version of a product is active: an append-only history in which the
    latest row of a product wins.  A product without a row uses its newest stored version
    (schema version 2)."""

    __tablename__ = "model_activations"
    __table_args__ = (Index("ix_model_activations_product_id", "product", "id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    product: Mapped[str] = mapped_column(String(NAME_LENGTH), ForeignKey("products.name"))
    version: Mapped[str] = mapped_column(String(VERSION_LENGTH))
    previous_version: Mapped[str | None] = mapped_column(String(VERSION_LENGTH))
    activated_by: Mapped[str] = mapped_column(String(NAME_LENGTH))
    activated_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
    # The undo review that returned the product to this version, if that is how it came back.
    review_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("reviews.id"))


class GoodSetImage(Base):
    """An image a quality engineer added to a product's good set from the review queue
    ("good part + add to the good set").  Removed again (``removed_at``) when that
    decision is undone; never deleted (schema version 2)."""

    __tablename__ = "good_set_images"
    __table_args__ = (Index("ix_good_set_images_product_sha256", "product", "sha256"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    product: Mapped[str] = mapped_column(String(NAME_LENGTH), ForeignKey("products.name"))
    item_id: Mapped[int] = mapped_column(IdType, ForeignKey("items.id", ondelete="CASCADE"))
    review_id: Mapped[int] = mapped_column(IdType, ForeignKey("reviews.id"), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    kept_as: Mapped[str] = mapped_column(String)  # the copy in the product's good folder
    added_by: Mapped[str] = mapped_column(String(NAME_LENGTH))
    added_at: Mapped[datetime]
    active_before: Mapped[str | None] = mapped_column(String(VERSION_LENGTH))
    candidate_version: Mapped[str | None] = mapped_column(String(VERSION_LENGTH))
    removed_at: Mapped[datetime | None]
    removed_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
