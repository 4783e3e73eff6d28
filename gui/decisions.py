"""Writing operator decisions: every decision and every undo is a new review row.

The row records the operator, the time, and the verdict, model version and threshold
of the result that was reviewed.  Nothing is updated in place.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

from inspectd.db import DECISION_UNDO, Database, ReviewRecord
from gui.data import QueueRow

DEFECT_TAGS: tuple[str, ...] = ("", "scratch", "spot", "contamination", "crack", "dent", "missing part", "other")


def resolve_operator(configured: str) -> str:
    """The configured operator name, else the OS user, else "operator"."""
    if configured.strip():
        return configured.strip()
    try:
        return getpass.getuser() or "operator"
    except (KeyError, OSError):  # no passwd entry (containers)
        return os.environ.get("USER", "operator") or "operator"


@dataclass(frozen=True)
class Outcome:
    """What a write left in force for the item."""

    item_id: int
    effective: ReviewRecord | None  # the item's effective review after the write
    written_id: int | None  # the review row written (None: nothing to undo)


class ReviewWriter:
    """Appends review rows for one operator.  Thread-safe (one call, one transaction)."""

    def __init__(self, db: Database, operator: str) -> None:
        self._db = db
        self.operator = operator

    def decide(self, row: QueueRow, decision: str, tag: str | None = None, comment: str | None = None) -> Outcome:
        """Record *decision* (confirm_defect / overrule / skip) on *row*."""
        written = self._db.add_review(
            row.item_id, decision, self.operator, verdict=row.verdict, model_version=row.model_version,
            threshold=row.threshold, tag=tag or None, comment=comment or None,
        )
        return Outcome(row.item_id, self._db.effective_review(row.item_id), written)

    def undo(self, item_id: int) -> Outcome:
        """Cancel the effective review of *item_id* (if any) with an 'undo' row."""
        target = self._db.effective_review(item_id)
        if target is None:
            return Outcome(item_id, None, None)
        written = self._db.add_review(
            item_id, DECISION_UNDO, self.operator, verdict=target.verdict, model_version=target.model_version,
            threshold=target.threshold, undoes_review_id=target.id,
        )
        return Outcome(item_id, self._db.effective_review(item_id), written)
