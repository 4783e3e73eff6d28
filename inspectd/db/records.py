"""Plain, immutable snapshots of database rows handed out by the repository.

They are detached from any session, so they can cross threads and outlive the
transaction that read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from inspectd.db.schema import GoodSetImage, Item, ModelActivation, ModelVersion, Review


@dataclass(frozen=True)
class ItemRecord:
    """One discovered file and its processing state."""

    id: int
    path: str
    file_name: str
    size: int
    mtime_ns: int
    sha256: str | None
    product: str
    station: str
    state: str
    attempts: int
    discovered_at: datetime
    claimed_at: datetime | None
    last_error: str | None
    ctime_ns: int | None = None
    inode: int | None = None

    @classmethod
    def from_row(cls, row: Item) -> ItemRecord:
        return cls(
            id=row.id, path=row.path, file_name=row.file_name, size=row.size, mtime_ns=row.mtime_ns,
            sha256=row.sha256, product=row.product, station=row.station, state=row.state,
            attempts=row.attempts, discovered_at=row.discovered_at, claimed_at=row.claimed_at,
            last_error=row.last_error, ctime_ns=row.ctime_ns, inode=row.inode,
        )


@dataclass(frozen=True)
class ReviewRecord:
    """One operator decision (see :class:`inspectd.db.schema.Review`)."""

    id: int
    item_id: int
    decision: str
    operator: str
    decided_at: datetime
    verdict: str
    model_version: str | None
    threshold: float | None
    tag: str | None
    comment: str | None
    undoes_review_id: int | None
    client_id: str | None = None

    @classmethod
    def from_row(cls, row: Review) -> ReviewRecord:
        return cls(
            id=row.id, item_id=row.item_id, decision=row.decision, operator=row.operator,
            decided_at=row.decided_at, verdict=row.verdict, model_version=row.model_version,
            threshold=row.threshold, tag=row.tag, comment=row.comment,
            undoes_review_id=row.undoes_review_id, client_id=row.client_id,
        )


@dataclass(frozen=True)
class ModelVersionRecord:
    """A registered model of a product."""

    id: int
    product: str
    version: str
    path: str
    threshold: float
    bank_size: int
    backbone: str
    created_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: ModelVersion) -> ModelVersionRecord:
        return cls(
            id=row.id, product=row.product, version=row.version, path=row.path,
            threshold=row.threshold, bank_size=row.bank_size, backbone=row.backbone,
            created_at=row.created_at, metadata=dict(row.model_metadata or {}),
        )


@dataclass(frozen=True)
class ActivationRecord:
    """One change of a product's active model version."""

    id: int
    product: str
    version: str
    previous_version: str | None
    activated_by: str
    activated_at: datetime
    reason: str
    review_id: int | None

    @classmethod
    def from_row(cls, row: ModelActivation) -> ActivationRecord:
        return cls(
            id=row.id, product=row.product, version=row.version, previous_version=row.previous_version,
            activated_by=row.activated_by, activated_at=row.activated_at, reason=row.reason,
            review_id=row.review_id,
        )


@dataclass(frozen=True)
class GoodSetRecord:
    """An image added to a product's good set from the review queue."""

    id: int
    product: str
    item_id: int
    review_id: int
    sha256: str
    kept_as: str
    added_by: str
    added_at: datetime
    active_before: str | None
    candidate_version: str | None
    removed_at: datetime | None
    removed_by: str | None

    @property
    def pending(self) -> bool:
        """Still in the good set (not taken out by an undo)."""
        return self.removed_at is None

    @classmethod
    def from_row(cls, row: GoodSetImage) -> GoodSetRecord:
        return cls(
            id=row.id, product=row.product, item_id=row.item_id, review_id=row.review_id, sha256=row.sha256,
            kept_as=row.kept_as, added_by=row.added_by, added_at=row.added_at, active_before=row.active_before,
            candidate_version=row.candidate_version, removed_at=row.removed_at, removed_by=row.removed_by,
        )


@dataclass(frozen=True)
class LastError:
    """The most recent scoring error."""

    message: str
    path: str
    at: datetime


@dataclass(frozen=True)
class StatusSummary:
    """What ``inspectd status`` shows."""

    counts: dict[str, dict[str, int]]  # product -> state -> number of items
    queue_depth: int  # items pending or being scored
    since: datetime
    results_since: int  # results scored at or after ``since``
    last_error: LastError | None
