"""Operator reviews: an append-only log of decisions; 'undo' rows cancel earlier ones.

A row is never updated or deleted.  The effective review of an item is its latest
non-undo decision that no 'undo' row points at.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session, aliased

from inspectd.db.exceptions import InvalidReviewError, UnknownItemError
from inspectd.db.records import ReviewRecord
from inspectd.db.schema import (
    DECISION_UNDO,
    CLIENT_ID_LENGTH,
    NAME_LENGTH,
    REVIEW_DECISIONS,
    VERDICTS,
    Item,
    Review,
    require_member,
    utcnow,
)
from inspectd.db.session import SessionScope, chunked


class ReviewOperations(SessionScope):
    """add_review / effective_review(s) / review_history."""

    def add_review(
        self,
        item_id: int,
        decision: str,
        operator: str,
        *,
        verdict: str,
        model_version: str | None,
        threshold: float | None,
        tag: str | None = None,
        comment: str | None = None,
        undoes_review_id: int | None = None,
        decided_at: datetime | None = None,
        client_id: str | None = None,
    ) -> int:
        """Append a decision and return its id.

        'undo' needs *undoes_review_id*: an earlier, not yet undone, non-undo review
        of the same item.  Other decisions must not name one.  With *client_id*, a
        second call with the same id returns the first row instead of adding one.
        """
        fields = ReviewFields(item_id, decision, operator, verdict=verdict, model_version=model_version,
                              threshold=threshold, tag=tag, comment=comment, undoes_review_id=undoes_review_id,
                              decided_at=decided_at, client_id=client_id)
        fields.validate()
        return self._write("add_review", fields.append)

    def review_by_client_id(self, client_id: str) -> ReviewRecord | None:
        """The review written with *client_id*, if any."""

        def load(session: Session) -> ReviewRecord | None:
            row = session.scalar(select(Review).where(Review.client_id == client_id))
            return ReviewRecord.from_row(row) if row is not None else None

        return self._read("review_by_client_id", load)

    def effective_review(self, item_id: int) -> ReviewRecord | None:
        """The decision in force for *item_id*, or None."""
        return self.effective_reviews([item_id]).get(item_id)

    def effective_reviews(self, item_ids: Iterable[int]) -> dict[int, ReviewRecord]:
        """Effective decisions for many items at once; items without one are absent."""
        ids = sorted(set(item_ids))

        def load(session: Session) -> dict[int, ReviewRecord]:
            effective: dict[int, ReviewRecord] = {}
            for chunk in chunked(ids):
                for row in session.scalars(_effective_query(chunk)):
                    effective[row.item_id] = ReviewRecord.from_row(row)  # ascending ids: latest wins
            return effective

        return self._read("effective_reviews", load) if ids else {}

    def review_history(self, item_id: int) -> list[ReviewRecord]:
        """Every review row of *item_id*, oldest first (undo rows included)."""

        def load(session: Session) -> list[ReviewRecord]:
            rows = session.scalars(select(Review).where(Review.item_id == item_id).order_by(Review.id))
            return [ReviewRecord.from_row(row) for row in rows]

        return self._read("review_history", load)


def _effective_query(item_ids: list[int]) -> Select[Review]:
    """Non-undo reviews of *item_ids* that no undo row cancels, by item then id."""
    undo = aliased(Review)
    cancelled = exists().where(undo.undoes_review_id == Review.id)
    return (
        select(Review)
        .where(Review.item_id.in_(item_ids), Review.decision != DECISION_UNDO, ~cancelled)
        .order_by(Review.item_id, Review.id)
    )


def _check_undo_target(session: Session, item_id: int, target_id: int) -> None:
    """Raise InvalidReviewError unless *target_id* may be undone for *item_id*."""
    target = session.get(Review, target_id)
    if target is None or target.item_id != item_id:
        raise InvalidReviewError(f"review {target_id} does not exist for item {item_id}")
    if target.decision == DECISION_UNDO:
        raise InvalidReviewError(f"review {target_id} is itself an undo and cannot be undone")
    already = session.scalar(select(Review.id).where(Review.undoes_review_id == target_id))
    if already is not None:
        raise InvalidReviewError(f"review {target_id} of item {item_id} was already undone by review {already}")


@dataclass(frozen=True)
class ReviewFields:
    """One review row to append (shared by plain decisions and good-set decisions)."""

    item_id: int
    decision: str
    operator: str
    verdict: str
    model_version: str | None
    threshold: float | None
    tag: str | None = None
    comment: str | None = None
    undoes_review_id: int | None = None
    decided_at: datetime | None = None
    client_id: str | None = None

    def validate(self) -> None:
        """Raise InvalidReviewError/InvalidValueError for values the table refuses."""
        require_member(self.decision, REVIEW_DECISIONS, "review decision")
        require_member(self.verdict, VERDICTS, "verdict")
        if not self.operator or len(self.operator) > NAME_LENGTH:
            raise InvalidReviewError(f"invalid operator name {self.operator!r} (1 to {NAME_LENGTH} characters)")
        if (self.decision == DECISION_UNDO) != (self.undoes_review_id is not None):
            raise InvalidReviewError("an 'undo' review needs undoes_review_id, and only an 'undo' review may have one")
        if self.client_id is not None and not 0 < len(self.client_id) <= CLIENT_ID_LENGTH:
            raise InvalidReviewError(f"invalid client id {self.client_id!r} (1 to {CLIENT_ID_LENGTH} characters)")

    def append(self, session: Session) -> int:
        """Add the row in *session* and return its id (the earlier row of the same client id, if any)."""
        if self.client_id is not None:
            existing = session.scalar(select(Review.id).where(Review.client_id == self.client_id))
            if existing is not None:
                return existing
        if session.get(Item, self.item_id) is None:
            raise UnknownItemError(f"no item with id {self.item_id}")
        if self.undoes_review_id is not None:
            _check_undo_target(session, self.item_id, self.undoes_review_id)
        review = Review(
            item_id=self.item_id, decision=self.decision, undoes_review_id=self.undoes_review_id,
            operator=self.operator, decided_at=self.decided_at or utcnow(), verdict=self.verdict,
            model_version=self.model_version, threshold=self.threshold, tag=self.tag, comment=self.comment,
            client_id=self.client_id,
        )
        session.add(review)
        session.flush()
        return review.id
