"""Helpers shared by the review-app tests (a plain module; fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from gui.data import QueueRow
from gui.decisions import DecisionWriter, Outcome, PendingWrite, new_decision, new_undo
from inspectd.db import Database
from inspectd.store import ModelStore


class Writer:
    """Stores decisions of one operator the way the app's outbox does, synchronously."""

    def __init__(self, db: Database, operator: str, store_dir: Path = Path("/nonexistent/models")) -> None:
        self.operator = operator
        self._writer = DecisionWriter(db, ModelStore(store_dir))
        self._last: dict[int, PendingWrite] = {}

    def decide(self, row: QueueRow, decision: str, tag: str | None = None, comment: str | None = None) -> Outcome:
        entry = new_decision(row, decision, self.operator, tag, comment)
        self._last[row.item_id] = entry
        return self._writer.apply(entry)

    def undo(self, item_id: int) -> Outcome:
        """Undo this writer's latest decision on *item_id*."""
        return self._writer.apply(new_undo(self._last.pop(item_id), self.operator))
