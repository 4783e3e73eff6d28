"""Writing the single result of an item together with its final state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inspectd.db.exceptions import DuplicateResultError, UnknownItemError
from inspectd.db.schema import (
    STATE_DONE,
    STATE_ERROR,
    VERDICT_ERROR,
    VERDICT_NG,
    VERDICT_OK,
    VERDICTS,
    Item,
    Result,
    require_member,
    utcnow,
)
from inspectd.db.session import SessionScope


def finish_item(session: Session, item_id: int, state: str, result: Result) -> None:
    """Insert *result* for *item_id* and move the item to *state* (same transaction).

    Raises UnknownItemError or DuplicateResultError; nothing is written then.
    """
    item = session.get(Item, item_id)
    if item is None:
        raise UnknownItemError(f"no item with id {item_id}")
    existing = session.scalar(select(Result).where(Result.item_id == item_id))
    if existing is not None:
        raise DuplicateResultError(
            f"item {item_id} ({item.path}) already has a result (verdict {existing.verdict}, "
            f"scored at {existing.scored_at.isoformat()}); refusing to record a second one"
        )
    result.item_id = item_id
    session.add(result)
    item.state = state
    item.last_error = result.error
    item.updated_at = utcnow()
    session.flush()


class ResultOperations(SessionScope):
    """record_result / record_error."""

    def record_result(
        self,
        item_id: int,
        *,
        raw_score: float,
        normalized_score: float,
        verdict: str,
        model_version: str,
        threshold: float,
        timings: dict[str, Any] | None,
        heatmap_path: str | None,
        anomaly_map_path: str | None,
        image_path: str | None = None,
        scored_at: datetime | None = None,
    ) -> None:
        """Store the scoring result of an item and mark it 'done'.

        *verdict* is 'OK' or 'NG' (errors go through :meth:`record_error`).  A second
        result for the same item raises DuplicateResultError.
        """
        require_member(verdict, (VERDICT_OK, VERDICT_NG), "verdict for record_result")
        result = Result(
            raw_score=float(raw_score), normalized_score=float(normalized_score), verdict=verdict,
            model_version=model_version, threshold=float(threshold), timings=timings,
            heatmap_path=_optional_str(heatmap_path), anomaly_map_path=_optional_str(anomaly_map_path),
            image_path=_optional_str(image_path), error=None, scored_at=scored_at or utcnow(),
        )
        self._store(item_id, STATE_DONE, result)

    def record_error(
        self,
        item_id: int,
        message: str,
        *,
        verdict: str = VERDICT_ERROR,
        model_version: str | None = None,
        threshold: float | None = None,
        timings: dict[str, Any] | None = None,
        image_path: str | None = None,
    ) -> None:
        """Store an error result (unreadable image, model failure) and mark the item
        'error'. *image_path* is where the file is now (kept, or archived)."""
        require_member(verdict, VERDICTS, "verdict")
        result = Result(
            verdict=verdict, model_version=model_version, threshold=threshold, timings=timings,
            image_path=_optional_str(image_path), error=message, scored_at=utcnow(),
        )
        self._store(item_id, STATE_ERROR, result)

    def _store(self, item_id: int, state: str, result: Result) -> None:
        """Write *result* in one transaction; a unique-constraint race is a duplicate."""
        try:
            self._write("record result", lambda session: finish_item(session, item_id, state, result))
        except IntegrityError as exc:
            raise DuplicateResultError(
                f"item {item_id} already has a result (written concurrently); refusing a second one"
            ) from exc


def _optional_str(value: object | None) -> str | None:
    """``str(value)`` for paths, keeping None."""
    return None if value is None else str(value)
