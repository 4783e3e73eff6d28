"""The review queue as a lazily fetched table model.

Rows arrive in keyset pages (``canFetchMore``/``fetchMore``), loaded by a runner so
the database is never queried on the GUI thread.  Live updates are merged in sort
order when they fall inside the loaded range (later ones come with the next page),
and review changes update rows in place.  Rows stay after being decided until the
filter is applied again, so the operator keeps their place.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont

from gui.data import (
    SORT_FILE,
    SORT_PRODUCT,
    SORT_REVIEW,
    SORT_SCORE,
    SORT_STATION,
    SORT_TIME,
    SORT_VERDICT,
    QueueFilter,
    QueueRow,
)
from gui.decisions import PART_DEFECT, PART_GOOD, decision_label
from gui.qt_compat import emit
from gui.workers import ImmediateRunner, TaskRunner
from inspectd.db import DECISION_SKIP, ReviewRecord

PageLoader = Callable[[QueueFilter, Any, int], list[QueueRow]]  # (filter, after key, limit) -> rows
Index = QModelIndex | QPersistentModelIndex

ROW_ROLE = Qt.ItemDataRole.UserRole + 1  # data(index, ROW_ROLE) -> QueueRow

# What an operator needs first comes first: the Review column stays in view on a narrow panel.
COLUMNS = ("Time", "File", "Verdict", "Score", "Review", "Product", "Station")
COLUMN_SORTS = {"Time": SORT_TIME, "File": SORT_FILE, "Verdict": SORT_VERDICT, "Score": SORT_SCORE,
                "Review": SORT_REVIEW, "Product": SORT_PRODUCT, "Station": SORT_STATION}
VERDICT_COLOURS = {"NG": QColor("#ff6b61"), "ERROR": QColor("#e3b341"), "OK": QColor("#6bc46d")}
DECISION_COLOURS = {PART_DEFECT: QColor("#ff6b61"), PART_GOOD: QColor("#6bc46d"), DECISION_SKIP: QColor("#a8b1bb")}
UNSAVED = "not yet saved"
UNSAVED_COLOUR = QColor("#e3b341")


@functools.total_ordering
class _Descending:
    """Wraps a value so that it sorts in reverse (keys of descending orders)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and self.value == other.value

    def __lt__(self, other: _Descending) -> bool:
        return other.value < self.value


def format_time(moment: datetime) -> str:
    """Local wall time, to the second."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def short_time(moment: datetime) -> str:
    """Local wall time for the queue: the time of day, with the date when it is not today."""
    local = moment.astimezone()
    return local.strftime("%H:%M:%S" if local.date() == datetime.now().astimezone().date() else "%m-%d %H:%M")


def format_score(score: float | None) -> str:
    return "-" if score is None else f"{score:.3f}"


UNSAVED_MARK = "⚠ "  # in front of a decision the database does not have yet


def review_text(review: ReviewRecord | None, unsaved: bool = False) -> str:
    """The Review column: "Defect (scratch)"; "⚠ Defect" until the database has it."""
    if review is None:
        return f"{UNSAVED_MARK}undo" if unsaved else ""
    return f"{UNSAVED_MARK if unsaved else ''}{decision_label(review)}"


def review_tooltip(review: ReviewRecord | None, unsaved: bool = False) -> str:
    if review is None:
        return f"Undo, {UNSAVED}" if unsaved else "Not reviewed"
    text = f"{decision_label(review)} by {review.operator}, {format_time(review.decided_at)}"
    return f"{text} ({UNSAVED})" if unsaved else text


class QueueModel(QAbstractTableModel):
    """Rows of the review queue for one :class:`QueueFilter`.

    Decisions that are not stored yet are shown from :meth:`set_unsaved` until
    :meth:`clear_unsaved`; reviews read from the database meanwhile do not replace them.
    ``sortRequested(sort, descending)`` asks for another order (a header was clicked).
    """

    pageLoaded = Signal(int)  # rows added by the page
    loadFailed = Signal(str)
    sortRequested = Signal(str, bool)

    def __init__(self, load_page: PageLoader, runner: TaskRunner | ImmediateRunner, page_size: int = 200,
                 parent: Any = None) -> None:
        super().__init__(parent)
        self._load_page, self._runner, self._page_size = load_page, runner, page_size
        self._filter = QueueFilter()
        self._rows: list[QueueRow] = []
        self._keys: list[tuple[Any, int]] = []  # ascending sort keys, parallel to _rows
        self._ids: set[int] = set()
        self._more = False
        self._loading = False
        self._generation = 0
        self._unsaved: dict[int, ReviewRecord | None] = {}  # item id -> what its unsaved decisions leave

    # --- state ----------------------------------------------------------------------

    @property
    def queue_filter(self) -> QueueFilter:
        return self._filter

    @property
    def loading(self) -> bool:
        return self._loading

    def row_at(self, row: int) -> QueueRow | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def row_of_item(self, item_id: int) -> int | None:
        """The row showing *item_id*, if loaded."""
        if item_id not in self._ids:
            return None
        return next(i for i, row in enumerate(self._rows) if row.item_id == item_id)

    def item_ids(self) -> set[int]:
        return set(self._ids)

    def set_filter(self, queue_filter: QueueFilter) -> None:
        """Show *queue_filter*: clear the rows and load its first page."""
        self._generation += 1
        self.beginResetModel()
        self._filter = queue_filter
        self._rows, self._keys, self._ids = [], [], set()
        self._more, self._loading = True, False
        self.endResetModel()
        self.fetchMore(QModelIndex())

    def reload(self) -> None:
        self.set_filter(self._filter)

    # --- Qt model interface -----------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"Sort by {COLUMNS[section].lower()} (click again to reverse)"
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Header click: the rows come from the database in that order (see ``sortRequested``)."""
        if 0 <= column < len(COLUMNS):
            emit(self.sortRequested, COLUMN_SORTS[COLUMNS[column]], order == Qt.SortOrder.DescendingOrder)

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows) or not 0 <= index.column() < len(COLUMNS):
            return None
        row, column = self._rows[index.row()], COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(row, column)
        if role == ROW_ROLE:
            return row
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == "Review":
                return review_tooltip(row.review, row.item_id in self._unsaved)
            return f"{format_time(row.scored_at)}  {row.error or row.source_image}"
        if role == Qt.ItemDataRole.ForegroundRole:
            colour = UNSAVED_COLOUR if column == "Review" and row.item_id in self._unsaved else _colour(row, column)
            return QBrush(colour) if colour is not None else None
        if role == Qt.ItemDataRole.FontRole and column == "Review" and row.item_id in self._unsaved:
            font = QFont()
            font.setItalic(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and column == "Score":
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _display(self, row: QueueRow, column: str) -> str:
        if column == "Time":
            return short_time(row.scored_at)
        if column == "Score":
            return format_score(row.normalized_score)
        if column == "Review":
            return review_text(row.review, row.item_id in self._unsaved)
        return str({"Product": row.product, "Station": row.station, "File": row.file_name,
                    "Verdict": row.verdict}[column])

    def canFetchMore(self, parent: Index = QModelIndex()) -> bool:
        return not parent.isValid() and self._more and not self._loading

    def fetchMore(self, parent: Index = QModelIndex()) -> None:
        if not self.canFetchMore(parent):
            return
        self._loading = True
        generation, queue_filter = self._generation, self._filter
        after = self._rows[-1].sort_key(queue_filter.sort) if self._rows else None
        self._runner.submit(
            lambda: self._load_page(queue_filter, after, self._page_size),
            lambda rows: self._page_arrived(generation, rows),
            lambda exc: self._page_failed(generation, exc),
        )

    # --- updates ----------------------------------------------------------------------

    def _page_arrived(self, generation: int, rows: list[QueueRow]) -> None:
        if generation != self._generation:
            return  # the filter changed meanwhile
        self._loading = False
        self._more = len(rows) >= self._page_size
        fresh = [row for row in rows if row.item_id not in self._ids]
        if fresh:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(fresh) - 1)
            for row in fresh:
                self._rows.append(row)
                self._keys.append(self._key(row))
                self._ids.add(row.item_id)
            self.endInsertRows()
        emit(self.pageLoaded, len(fresh))

    def _page_failed(self, generation: int, exc: BaseException) -> None:
        if generation != self._generation:
            return
        self._loading = False
        emit(self.loadFailed, str(exc))

    def merge_new(self, rows: Iterable[QueueRow]) -> int:
        """Insert live rows that belong inside the loaded range; returns how many.

        Rows past the last loaded row are left to ``fetchMore``.
        """
        added = 0
        for row in rows:
            if row.item_id in self._ids:
                continue
            key = self._key(row)
            if self._more and (not self._keys or key > self._keys[-1]):
                continue
            position = bisect.bisect_left(self._keys, key)
            self.beginInsertRows(QModelIndex(), position, position)
            self._rows.insert(position, row)
            self._keys.insert(position, key)
            self._ids.add(row.item_id)
            self.endInsertRows()
            added += 1
        return added

    def set_reviews(self, reviews: Mapping[int, ReviewRecord | None]) -> None:
        """Show new effective reviews (None: no review any more) for loaded items; items
        with unsaved decisions keep showing those."""
        for item_id, review in reviews.items():
            if item_id not in self._unsaved:
                self._show_review(item_id, review)

    def set_unsaved(self, item_id: int, review: ReviewRecord | None) -> None:
        """Show *review* (None: its undo) on *item_id* as "not yet saved"."""
        self._unsaved[item_id] = review
        self._show_review(item_id, review, changed=True)

    def clear_unsaved(self, item_id: int, effective: ReviewRecord | None) -> None:
        """The item's decisions are stored: show the effective review from the database."""
        self._unsaved.pop(item_id, None)
        self._show_review(item_id, effective, changed=True)

    def unsaved(self, item_id: int) -> bool:
        return item_id in self._unsaved

    def _show_review(self, item_id: int, review: ReviewRecord | None, changed: bool = False) -> None:
        position = self.row_of_item(item_id)
        if position is None or (self._rows[position].review == review and not changed):
            return
        self._rows[position] = self._rows[position].with_review(review)
        emit(self.dataChanged, self.index(position, 0), self.index(position, len(COLUMNS) - 1))

    def _key(self, row: QueueRow) -> tuple[Any, ...]:
        """Ascending key of *row* in the model's order (reversed when descending)."""
        value, result_id = row.sort_key(self._filter.sort)
        if not self._filter.descending:
            return value, result_id
        if self._filter.sort == SORT_TIME:
            return -value.timestamp(), -result_id
        return _Descending(value), -result_id


def _colour(row: QueueRow, column: str) -> QColor | None:
    if column == "Verdict":
        return VERDICT_COLOURS.get(row.verdict)
    if column == "Review" and row.review is not None:
        return DECISION_COLOURS.get(row.review.decision)
    return None
