"""Read queries of the review app against the inspectd schema.

Everything here is plain SQLAlchemy on ``Database.engine``; each function is one read
transaction, retried while the database is locked.  Results are immutable records
that may cross threads.

The review queue is every scored item whose result is NG or ERROR, or OK with a
normalised score in ``[band, 1.0)``.  The *effective review* of an item is its latest
non-undo review that no undo row cancels (the same rule as
``Database.effective_reviews``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, literal, or_, select
from sqlalchemy.orm import Session, aliased

from inspectd.db import (
    DECISION_CONFIRM_DEFECT,
    DECISION_OVERRULE,
    DECISION_SKIP,
    DECISION_UNDO,
    VERDICT_ERROR,
    VERDICT_NG,
    VERDICT_OK,
    Database,
    RetryPolicy,
    ReviewRecord,
    retry_on_busy,
)
from inspectd.db.schema import Item, Product, Result, Review

T = TypeVar("T")

STATE_UNREVIEWED = "unreviewed"
STATE_SKIPPED = "skipped"
STATE_REVIEWED = "reviewed"
STATE_ALL = "all"
REVIEW_STATES: tuple[str, ...] = (STATE_UNREVIEWED, STATE_SKIPPED, STATE_REVIEWED, STATE_ALL)

SORT_TIME = "time"
SORT_SCORE = "score"
SORT_PRODUCT = "product"
SORT_STATION = "station"
SORT_FILE = "file"
SORT_VERDICT = "verdict"
SORT_REVIEW = "review"
SORTS: tuple[str, ...] = (SORT_TIME, SORT_FILE, SORT_VERDICT, SORT_SCORE, SORT_REVIEW, SORT_PRODUCT, SORT_STATION)

# Failed items have no score; they sort above every score.
ERROR_SCORE_KEY = math.inf
GUI_RETRY = RetryPolicy(total_s=10.0)


@dataclass(frozen=True)
class QueueFilter:
    """What the queue shows and in which order.  ``verdict`` narrows the queue to
    NG, ERROR or OK (the near-threshold band); ``since`` inclusive, ``until`` exclusive
    (both on the scoring time)."""

    review_state: str = STATE_UNREVIEWED
    product: str | None = None
    station: str | None = None
    verdict: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    sort: str = SORT_TIME
    descending: bool = False
    band: float = 0.9


@dataclass(frozen=True)
class QueueRow:
    """One queue entry: the item, its result and its effective review."""

    item_id: int
    result_id: int
    path: str
    file_name: str
    product: str
    station: str
    discovered_at: datetime
    scored_at: datetime
    verdict: str
    raw_score: float | None
    normalized_score: float | None
    model_version: str | None
    threshold: float | None
    heatmap_path: str | None
    anomaly_map_path: str | None
    image_path: str | None
    error: str | None
    review: ReviewRecord | None = None

    @property
    def source_image(self) -> str:
        """Where the image is now: the archived copy if any, else the drop-folder path."""
        return self.image_path or self.path

    @property
    def review_state(self) -> str:
        """unreviewed / skipped / reviewed."""
        return review_state_of(self.review.decision if self.review else None)

    def with_review(self, review: ReviewRecord | None) -> QueueRow:
        """A copy with another effective review."""
        return replace(self, review=review)

    def sort_key(self, sort: str) -> tuple[Any, int]:
        """The (value, result id) this row is ordered by, ascending (as the SQL orders it)."""
        if sort == SORT_SCORE:
            score = ERROR_SCORE_KEY if self.normalized_score is None else self.normalized_score
            return score, self.result_id
        if sort == SORT_TIME:
            return self.scored_at, self.result_id
        value = {SORT_PRODUCT: self.product, SORT_STATION: self.station, SORT_FILE: self.file_name,
                 SORT_VERDICT: self.verdict, SORT_REVIEW: self.review.decision if self.review else ""}[sort]
        return value, self.result_id


@dataclass(frozen=True)
class Watermarks:
    """Cheap fingerprint of the tables the GUI follows; a change means "look again"."""

    max_result_id: int = 0
    results: int = 0
    max_review_id: int = 0
    reviews: int = 0


def review_state_of(decision: str | None) -> str:
    """The review state of an effective decision."""
    if decision is None:
        return STATE_UNREVIEWED
    return STATE_SKIPPED if decision == DECISION_SKIP else STATE_REVIEWED


# --- SQL building blocks ------------------------------------------------------------------

EFFECTIVE = aliased(Review, name="effective")

_ROW_COLUMNS = (
    Item.id.label("item_id"), Result.id.label("result_id"), Item.path, Item.file_name, Item.product,
    Item.station, Item.discovered_at, Result.scored_at, Result.verdict, Result.raw_score,
    Result.normalized_score, Result.model_version, Result.threshold, Result.heatmap_path,
    Result.anomaly_map_path, Result.image_path, Result.error,
)
_REVIEW_FIELDS = ("id", "item_id", "decision", "operator", "decided_at", "verdict", "model_version",
                  "threshold", "tag", "comment", "undoes_review_id", "client_id")
_REVIEW_COLUMNS = tuple(getattr(EFFECTIVE, name).label(f"review_{name}") for name in _REVIEW_FIELDS)


def effective_review_id(item_id: ColumnElement[int]) -> Any:
    """Correlated scalar subquery: the id of the effective review of *item_id*."""
    review, undo = aliased(Review), aliased(Review)
    return (
        select(review.id)
        .where(review.item_id == item_id, review.decision != DECISION_UNDO,
               ~exists().where(undo.undoes_review_id == review.id))
        .order_by(review.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _in_queue(verdict: str | None, band: float) -> ColumnElement[bool]:
    """The queue condition, narrowed to one verdict if given."""
    near = and_(Result.verdict == VERDICT_OK, Result.normalized_score >= band, Result.normalized_score < 1.0)
    if verdict == VERDICT_OK:
        return near
    if verdict in (VERDICT_NG, VERDICT_ERROR):
        return Result.verdict == verdict
    return or_(Result.verdict.in_((VERDICT_NG, VERDICT_ERROR)), near)


def _state_condition(state: str) -> ColumnElement[bool] | None:
    """WHERE term selecting one review state (None: all)."""
    if state == STATE_UNREVIEWED:
        return EFFECTIVE.id.is_(None)
    if state == STATE_SKIPPED:
        return EFFECTIVE.decision == DECISION_SKIP
    if state == STATE_REVIEWED:
        return EFFECTIVE.decision.in_((DECISION_CONFIRM_DEFECT, DECISION_OVERRULE))
    if state == STATE_ALL:
        return None
    raise ValueError(f"unknown review state {state!r}")


def _sort_column(sort: str) -> ColumnElement[Any]:
    columns: dict[str, Callable[[], ColumnElement[Any]]] = {
        SORT_SCORE: lambda: func.coalesce(Result.normalized_score, literal(ERROR_SCORE_KEY)),
        SORT_TIME: lambda: Result.scored_at,
        SORT_PRODUCT: lambda: Item.product,
        SORT_STATION: lambda: Item.station,
        SORT_FILE: lambda: Item.file_name,
        SORT_VERDICT: lambda: Result.verdict,
        SORT_REVIEW: lambda: func.coalesce(EFFECTIVE.decision, literal("")),
    }
    if sort not in columns:
        raise ValueError(f"unknown sort {sort!r}")
    return columns[sort]()


def _filtered(query: Select[Any], filt: QueueFilter, *, with_state: bool = True) -> Select[Any]:
    """*query* (over results, items, effective review) with the filter's WHERE terms."""
    query = (
        query.join(Item, Item.id == Result.item_id)
        .outerjoin(EFFECTIVE, EFFECTIVE.id == effective_review_id(Item.id))
        .where(_in_queue(filt.verdict, filt.band))
    )
    if filt.product is not None:
        query = query.where(Item.product == filt.product)
    if filt.station is not None:
        query = query.where(Item.station == filt.station)
    if filt.since is not None:
        query = query.where(Result.scored_at >= filt.since)
    if filt.until is not None:
        query = query.where(Result.scored_at < filt.until)
    state = _state_condition(filt.review_state) if with_state else None
    return query if state is None else query.where(state)


def _rows_query(filt: QueueFilter) -> Select[Any]:
    return _filtered(select(*_ROW_COLUMNS, *_REVIEW_COLUMNS).select_from(Result), filt)


def _after(filt: QueueFilter, key: tuple[Any, int]) -> ColumnElement[bool]:
    """Keyset condition: rows strictly after *key* in the filter's order."""
    column, (value, result_id) = _sort_column(filt.sort), key
    if filt.descending:
        return and_(column <= value, or_(column < value, Result.id < result_id))
    return and_(column >= value, or_(column > value, Result.id > result_id))


def _ordered(query: Select[Any], filt: QueueFilter) -> Select[Any]:
    column = _sort_column(filt.sort)
    if filt.descending:
        return query.order_by(column.desc(), Result.id.desc())
    return query.order_by(column, Result.id)


def _to_row(mapping: Any) -> QueueRow:
    fields = {column.key: mapping[column.key] for column in _ROW_COLUMNS}
    review = None
    if mapping["review_id"] is not None:
        review = ReviewRecord(**{name: mapping[f"review_{name}"] for name in _REVIEW_FIELDS})
    return QueueRow(**fields, review=review)


def read(db: Database, what: str, work: Callable[[Session], T]) -> T:
    """Run *work* in one read transaction on *db*, retried while the database is locked."""

    def attempt() -> T:
        with Session(db.engine) as session, session.begin():
            return work(session)

    return retry_on_busy(attempt, policy=GUI_RETRY, what=what)


# --- queries -----------------------------------------------------------------------------


def fetch_page(db: Database, filt: QueueFilter, after: tuple[Any, int] | None, limit: int) -> list[QueueRow]:
    """Up to *limit* queue rows following *after* (a row's ``sort_key``), in order."""
    query = _rows_query(filt)
    if after is not None:
        query = query.where(_after(filt, after))
    query = _ordered(query, filt).limit(limit)
    return read(db, "loading the review queue", lambda s: [_to_row(r._mapping) for r in s.execute(query)])


def fetch_new_rows(db: Database, filt: QueueFilter, after_result_id: int, limit: int = 5000) -> list[QueueRow]:
    """Queue rows whose result id is above *after_result_id* (newest results)."""
    query = _rows_query(filt).where(Result.id > after_result_id).order_by(Result.id).limit(limit)
    return read(db, "polling new results", lambda s: [_to_row(r._mapping) for r in s.execute(query)])


def iter_rows(db: Database, filt: QueueFilter, chunk: int = 2000) -> Iterator[QueueRow]:
    """Every row of the filter in order, read in keyset pages (for export)."""
    after = None
    while True:
        page = fetch_page(db, filt, after, chunk)
        yield from page
        if len(page) < chunk:
            return
        after = page[-1].sort_key(filt.sort)


def review_counts(db: Database, filt: QueueFilter) -> dict[str, int]:
    """Queue size per review state (ignoring the filter's own state), plus 'all'."""
    state = case(
        (EFFECTIVE.id.is_(None), STATE_UNREVIEWED),
        (EFFECTIVE.decision == DECISION_SKIP, STATE_SKIPPED),
        else_=STATE_REVIEWED,
    ).label("state")
    query = _filtered(select(state, func.count()).select_from(Result), filt, with_state=False).group_by(state)
    counts = dict.fromkeys(REVIEW_STATES, 0)
    for name, number in read(db, "counting the review queue", lambda s: s.execute(query).all()):
        counts[name] = number
    counts[STATE_ALL] = sum(counts[name] for name in (STATE_UNREVIEWED, STATE_SKIPPED, STATE_REVIEWED))
    return counts


def watermarks(db: Database) -> Watermarks:
    """Highest ids and row counts of results and reviews (counts catch late commits)."""
    query = select(*(
        select(aggregate).scalar_subquery()
        for aggregate in (func.coalesce(func.max(Result.id), 0), func.count(Result.id),
                          func.coalesce(func.max(Review.id), 0), func.count(Review.id))
    ))
    return Watermarks(*read(db, "polling", lambda s: s.execute(query).one()))


def reviewed_items_since(db: Database, after_review_id: int) -> set[int]:
    """Items that got a review row (of any kind) with id above *after_review_id*."""
    query = select(Review.item_id).where(Review.id > after_review_id).distinct()
    return set(read(db, "polling reviews", lambda s: s.scalars(query).all()))


def filter_options(db: Database) -> tuple[list[str], list[str]]:
    """Known products and stations, sorted."""

    def load(session: Session) -> tuple[list[str], list[str]]:
        products = session.scalars(select(Product.name).order_by(Product.name)).all()
        stations = session.scalars(select(Item.station).distinct().order_by(Item.station)).all()
        return list(products), [station for station in stations if station]

    return read(db, "listing products", load)


@dataclass(frozen=True)
class ScoreSample:
    """Normalised scores of one product for the statistics view.

    Reviewed items are split by what the operator said the part is (defect / good),
    whatever the machine said; ``agreed``/``overruled`` count the decisions that agree
    with the machine's verdict and those that overrule it."""

    verdicts: dict[str, int]  # verdict -> number of results
    scores: list[float]  # every normalised score of the product
    defects: list[float]  # scores of items the operator called a defect
    good: list[float]  # scores of items the operator called a good part
    agreed: int = 0
    overruled: int = 0


def score_sample(db: Database, product: str) -> ScoreSample:
    """Verdict counts and score lists of *product* (reviewed ones split by the operator's call)."""
    verdicts = (
        select(Result.verdict, func.count()).join(Item, Item.id == Result.item_id)
        .where(Item.product == product).group_by(Result.verdict)
    )
    scores = (
        select(Result.normalized_score).join(Item, Item.id == Result.item_id)
        .where(Item.product == product, Result.normalized_score.is_not(None))
    )
    reviewed = (
        select(EFFECTIVE.decision, Result.verdict, Result.normalized_score)
        .join(Result, Result.item_id == EFFECTIVE.item_id)
        .join(Item, Item.id == EFFECTIVE.item_id)
        .where(Item.product == product, Result.normalized_score.is_not(None),
               EFFECTIVE.decision.in_((DECISION_CONFIRM_DEFECT, DECISION_OVERRULE)),
               EFFECTIVE.id == effective_review_id(EFFECTIVE.item_id))
    )

    def load(session: Session) -> ScoreSample:
        split: dict[str, list[float]] = {DECISION_CONFIRM_DEFECT: [], DECISION_OVERRULE: []}
        agreed = overruled = 0
        for decision, verdict, score in session.execute(reviewed):
            split[decision].append(score)
            # "defect" agrees with NG, "good part" with OK (stored as confirm_defect / overrule)
            agrees = (decision == DECISION_CONFIRM_DEFECT) == (verdict == VERDICT_NG)
            agreed, overruled = agreed + agrees, overruled + (not agrees)
        return ScoreSample(
            verdicts={verdict: number for verdict, number in session.execute(verdicts)},
            scores=list(session.scalars(scores)),
            defects=split[DECISION_CONFIRM_DEFECT],
            good=split[DECISION_OVERRULE],
            agreed=agreed,
            overruled=overruled,
        )

    return read(db, "loading statistics", load)


# --- live polling ------------------------------------------------------------------------

# Ids below the watermark that are looked at again: on PostgreSQL a transaction may
# commit after one with a higher id (duplicates are dropped by the model).
LOOKBACK_IDS = 256


@dataclass(frozen=True)
class PollResult:
    """What changed since the previous poll (``changed`` False: nothing, rest empty)."""

    marks: Watermarks
    changed: bool
    new_rows: tuple[QueueRow, ...] = ()
    reviews: dict[int, ReviewRecord | None] | None = None  # item id -> effective review now
    counts: dict[str, int] | None = None
    products: tuple[str, ...] = ()
    stations: tuple[str, ...] = ()


def poll(db: Database, filt: QueueFilter, marks: Watermarks | None, force: bool = False) -> PollResult:
    """New queue rows, changed reviews and fresh counts since *marks* (None: first poll).

    Cheap when nothing changed: one query of four aggregates over primary keys.
    """
    now = watermarks(db)
    if now == marks and not force:
        return PollResult(now, changed=False)
    new_rows: list[QueueRow] = []
    reviews: dict[int, ReviewRecord | None] = {}
    if marks is not None:
        new_rows = fetch_new_rows(db, filt, max(0, marks.max_result_id - LOOKBACK_IDS))
        items = reviewed_items_since(db, max(0, marks.max_review_id - LOOKBACK_IDS))
        effective = db.effective_reviews(items)
        reviews = {item_id: effective.get(item_id) for item_id in items}
    products, stations = filter_options(db)
    return PollResult(now, True, tuple(new_rows), reviews, review_counts(db, filt), tuple(products), tuple(stations))
