"""Operator decisions: what they mean, how they travel, how they are stored.

An operator says what the part *is*: a defect or a good part (or skips it), whatever
the machine said.  Stored values date from the first release: ``confirm_defect`` is
"defect" and ``overrule`` is "good part"; whether a decision agrees with the machine
or overrules it follows from the machine's verdict (:func:`agreement`).

Every decision is a :class:`PendingWrite` first: a plain, JSON-serialisable record
with a client id, queued by :mod:`gui.outbox` until the database has it.  The client
id makes a retried write idempotent.  :class:`DecisionWriter` stores one.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from gui.data import QueueRow
from inspectd.db import (
    DECISION_CONFIRM_DEFECT,
    DECISION_OVERRULE,
    DECISION_SKIP,
    DECISION_UNDO,
    VERDICT_NG,
    VERDICT_OK,
    ActivationRecord,
    Database,
    GoodSetRecord,
    InvalidReviewError,
    ReviewFields,
    ReviewRecord,
)
from inspectd.good_set import GoodSetCheck, undo_decision
from inspectd.store import ModelStore

PART_DEFECT = DECISION_CONFIRM_DEFECT  # the operator says: this part is defective
PART_GOOD = DECISION_OVERRULE  # the operator says: this part is good
DECISION_LABELS = {PART_DEFECT: "Defect", PART_GOOD: "Good part", DECISION_SKIP: "Skipped", DECISION_UNDO: "Undo"}

KIND_DECIDE = "decide"
KIND_GOOD_SET = "good_set"  # good part + add to the good set
KIND_UNDO = "undo"


def agreement(decision: str, verdict: str) -> str | None:
    """"agrees" or "overrules" (the machine's verdict), None when there is nothing to compare."""
    said = {PART_DEFECT: VERDICT_NG, PART_GOOD: VERDICT_OK}.get(decision)
    if said is None or verdict not in (VERDICT_OK, VERDICT_NG):
        return None
    return "agrees" if said == verdict else "overrules"


def decision_label(review: ReviewRecord | None) -> str:
    """"Defect (scratch)", "Good part", "Skipped"; empty without a review."""
    if review is None:
        return ""
    label = DECISION_LABELS.get(review.decision, review.decision)
    return f"{label} ({review.tag})" if review.tag else label


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass(frozen=True)
class PendingWrite:
    """One decision, good-set decision or undo on its way to the database."""

    kind: str
    client_id: str
    item_id: int
    operator: str
    created_at: str
    decision: str | None = None
    verdict: str | None = None
    model_version: str | None = None
    threshold: float | None = None
    tag: str | None = None
    comment: str | None = None
    # good set: the image's content hash, the copy in the good folder, the version it extends
    product: str | None = None
    sha256: str | None = None
    kept_as: str | None = None
    active_before: str | None = None
    file_name: str | None = None
    # undo: the decision it cancels (its client id; its review id if it was stored before)
    target_client_id: str | None = None
    target_review_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingWrite:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)} in a saved decision")
        entry = cls(**data)
        if entry.kind not in (KIND_DECIDE, KIND_GOOD_SET, KIND_UNDO) or not isinstance(entry.item_id, int):
            raise ValueError(f"not a saved decision: {data!r}")
        return entry

    def as_review(self) -> ReviewRecord:
        """How the queue shows this decision until it is stored."""
        return ReviewRecord(id=0, item_id=self.item_id, decision=self.decision or DECISION_UNDO,
                            operator=self.operator, decided_at=datetime.fromisoformat(self.created_at),
                            verdict=self.verdict or "", model_version=self.model_version, threshold=self.threshold,
                            tag=self.tag, comment=self.comment, undoes_review_id=None, client_id=self.client_id)

    def describe(self) -> str:
        """A short text for messages and the close dialog."""
        if self.kind == KIND_UNDO:
            return f"undo on item {self.item_id}"
        what = DECISION_LABELS.get(self.decision or "", self.decision or "")
        extra = " + add to the good set" if self.kind == KIND_GOOD_SET else ""
        return f"{what}{extra} on {self.file_name or f'item {self.item_id}'} by {self.operator}"


def new_decision(row: QueueRow, decision: str, operator: str, tag: str | None = None,
                 comment: str | None = None) -> PendingWrite:
    return PendingWrite(KIND_DECIDE, str(uuid.uuid4()), row.item_id, operator, _now(), decision=decision,
                        verdict=row.verdict, model_version=row.model_version, threshold=row.threshold,
                        tag=tag, comment=comment, file_name=row.file_name)


def new_good_set(row: QueueRow, operator: str, check: GoodSetCheck, kept_as: str, tag: str | None = None,
                 comment: str | None = None) -> PendingWrite:
    return dataclasses.replace(new_decision(row, PART_GOOD, operator, tag, comment), kind=KIND_GOOD_SET,
                               product=row.product, sha256=check.sha256, kept_as=kept_as,
                               active_before=check.active_version)


def new_undo(target: PendingWrite, operator: str) -> PendingWrite:
    return PendingWrite(KIND_UNDO, str(uuid.uuid4()), target.item_id, operator, _now(),
                        verdict=target.verdict, target_client_id=target.client_id, file_name=target.file_name)


@dataclass(frozen=True)
class Outcome:
    """What storing a :class:`PendingWrite` left in force."""

    entry: PendingWrite
    effective: ReviewRecord | None  # the item's effective review now
    written_id: int
    good_set: GoodSetRecord | None = None  # the image a good-set decision added or an undo took out
    restored: ActivationRecord | None = None  # the version an undo of a good-set decision restored

    @property
    def item_id(self) -> int:
        return self.entry.item_id


class DecisionWriter:
    """Stores pending writes; thread-safe (each call is its own transactions)."""

    def __init__(self, db: Database, store: ModelStore) -> None:
        self._db, self._store = db, store

    def apply(self, entry: PendingWrite) -> Outcome:
        if entry.kind == KIND_UNDO:
            return self._undo(entry)
        fields = ReviewFields(entry.item_id, entry.decision or "", entry.operator, verdict=entry.verdict or "",
                              model_version=entry.model_version, threshold=entry.threshold, tag=entry.tag,
                              comment=entry.comment, decided_at=datetime.fromisoformat(entry.created_at),
                              client_id=entry.client_id)
        if entry.kind == KIND_GOOD_SET:
            stored = self._db.add_good_set_decision(fields, product=entry.product or "", sha256=entry.sha256 or "",
                                                    kept_as=entry.kept_as or "", fallback_active=entry.active_before)
            return Outcome(entry, self._db.effective_review(entry.item_id), stored.review_id, good_set=stored.image)
        written = self._db.add_review(
            fields.item_id, fields.decision, fields.operator, verdict=fields.verdict,
            model_version=fields.model_version, threshold=fields.threshold, tag=fields.tag, comment=fields.comment,
            decided_at=fields.decided_at, client_id=fields.client_id)
        return Outcome(entry, self._db.effective_review(entry.item_id), written)

    def _undo(self, entry: PendingWrite) -> Outcome:
        target_id = entry.target_review_id
        if target_id is None and entry.target_client_id is not None:
            target = self._db.review_by_client_id(entry.target_client_id)
            if target is None:
                raise InvalidReviewError(f"the decision to undo on item {entry.item_id} was never stored")
            target_id = target.id
        if target_id is None:
            raise InvalidReviewError(f"an undo on item {entry.item_id} names no decision")
        result = undo_decision(self._db, self._store, entry.item_id, target_id, entry.operator, entry.client_id)
        return Outcome(entry, self._db.effective_review(entry.item_id), result.review_id, good_set=result.removed,
                       restored=result.restored)
