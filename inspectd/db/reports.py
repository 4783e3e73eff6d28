"""Read-only reports: the status summary and the result export query."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from inspectd.db.exceptions import InvalidValueError
from inspectd.db.records import LastError, StatusSummary
from inspectd.db.schema import STATE_PENDING, STATE_SCORING, VERDICTS, Item, Result, require_member, utcnow
from inspectd.db.session import SessionScope

# Columns of query_results(), in export order (use as CSV header).
RESULT_EXPORT_COLUMNS = (
    Item.id.label("item_id"),
    Item.path,
    Item.file_name,
    Item.product,
    Item.station,
    Item.size,
    Item.mtime_ns,
    Item.sha256,
    Item.discovered_at,
    Item.state,
    Item.attempts,
    Result.scored_at,
    Result.verdict,
    Result.raw_score,
    Result.normalized_score,
    Result.threshold,
    Result.model_version,
    Result.timings,
    Result.heatmap_path,
    Result.anomaly_map_path,
    Result.image_path,
    Result.error,
)
RESULT_EXPORT_FIELDS: tuple[str, ...] = tuple(column.key for column in RESULT_EXPORT_COLUMNS)

DEFAULT_STATUS_WINDOW = timedelta(hours=1)


class ReportOperations(SessionScope):
    """status_summary / query_results."""

    def status_summary(self, since: datetime | None = None) -> StatusSummary:
        """Item counts per product and state, queue depth, results scored since
        *since* (default: the last hour) and the most recent error."""
        since = since or utcnow() - DEFAULT_STATUS_WINDOW

        def load(session: Session) -> StatusSummary:
            counts = _state_counts(session)
            queue = sum(n for states in counts.values() for state, n in states.items() if state in _QUEUED)
            recent = session.scalar(select(func.count(Result.id)).where(Result.scored_at >= since)) or 0
            return StatusSummary(
                counts=counts, queue_depth=queue, since=since, results_since=recent, last_error=_last_error(session)
            )

        return self._read("status_summary", load)

    def queue_depth(self, stations: Collection[str] | None = None) -> int:
        """Items pending or being scored (of *stations*; None: of every station)."""
        query = select(func.count(Item.id)).where(Item.state.in_(_QUEUED))
        if stations is not None:
            query = query.where(Item.station.in_(sorted(stations)))
        return self._read("queue_depth", lambda session: session.scalar(query) or 0)

    def query_results(
        self,
        product: str | None = None,
        verdict: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        station: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Scored items (item joined with its result) as plain dicts keyed by
        :data:`RESULT_EXPORT_FIELDS`, ordered by scored_at.

        *since* is inclusive, *until* exclusive.  Timestamps are ISO 8601 UTC strings;
        ``timings`` stays a dict (JSON-encode it for CSV).
        """
        query = _results_query(product, verdict, since, until, station, limit, offset)

        def load(session: Session) -> list[dict[str, Any]]:
            return [_export_row(row._asdict()) for row in session.execute(query)]

        return self._read("query_results", load)


_QUEUED = (STATE_PENDING, STATE_SCORING)


def _state_counts(session: Session) -> dict[str, dict[str, int]]:
    """product -> state -> number of items."""
    counts: dict[str, dict[str, int]] = {}
    rows = session.execute(select(Item.product, Item.state, func.count(Item.id)).group_by(Item.product, Item.state))
    for product, state, number in rows:
        counts.setdefault(product, {})[state] = number
    return counts


def _last_error(session: Session) -> LastError | None:
    """The newest result that carries an error message."""
    row = session.execute(
        select(Result.error, Item.path, Result.scored_at)
        .join(Item, Item.id == Result.item_id)
        .where(Result.error.is_not(None))
        .order_by(Result.scored_at.desc(), Result.id.desc())
        .limit(1)
    ).first()
    return None if row is None else LastError(message=row.error, path=row.path, at=row.scored_at)


def _results_query(
    product: str | None,
    verdict: str | None,
    since: datetime | None,
    until: datetime | None,
    station: str | None,
    limit: int | None,
    offset: int,
) -> Select[Any]:
    """The filtered, ordered export query."""
    if (limit is not None and limit < 0) or offset < 0:
        raise InvalidValueError(f"limit and offset must be >= 0, got limit={limit} offset={offset}")
    query = select(*RESULT_EXPORT_COLUMNS).join(Result, Result.item_id == Item.id)
    if product is not None:
        query = query.where(Item.product == product)
    if station is not None:
        query = query.where(Item.station == station)
    if verdict is not None:
        query = query.where(Result.verdict == require_member(verdict, VERDICTS, "verdict"))
    if since is not None:
        query = query.where(Result.scored_at >= since)
    if until is not None:
        query = query.where(Result.scored_at < until)
    return query.order_by(Result.scored_at, Result.id).limit(limit).offset(offset or None)


def _export_row(row: dict[str, Any]) -> dict[str, Any]:
    """Timestamps to ISO strings; everything else is already JSON-friendly."""
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}
