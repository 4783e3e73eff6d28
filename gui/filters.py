"""The filter bar: review state (with counts), product, station, verdict, time, order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone

from PySide6.QtCore import QDateTime, Signal
from PySide6.QtWidgets import QComboBox, QDateTimeEdit, QHBoxLayout, QLabel, QWidget

from gui.data import (
    REVIEW_STATES,
    SORT_SCORE,
    SORT_TIME,
    STATE_UNREVIEWED,
    QueueFilter,
)
from gui.qt_compat import emit
from inspectd.db import VERDICT_ERROR, VERDICT_NG, VERDICT_OK

STATE_LABELS = {"unreviewed": "Unreviewed", "skipped": "Skipped", "reviewed": "Reviewed", "all": "All"}
VERDICT_CHOICES = (("All verdicts", None), ("NG", VERDICT_NG), ("Failed (ERROR)", VERDICT_ERROR),
                   ("Near threshold (OK)", VERDICT_OK))
TIME_CHOICES = (("All time", None), ("Last hour", timedelta(hours=1)), ("Last 8 hours", timedelta(hours=8)),
                ("Last 24 hours", timedelta(days=1)), ("Last 7 days", timedelta(days=7)), ("Custom range", "custom"))


def sort_key(sort: str, descending: bool) -> str:
    """The sort combo's data for an order ("score:desc")."""
    return f"{sort}:{'desc' if descending else 'asc'}"


SORT_CHOICES = (("Oldest first", sort_key(SORT_TIME, False)), ("Newest first", sort_key(SORT_TIME, True)),
                ("Highest score first", sort_key(SORT_SCORE, True)), ("Lowest score first", sort_key(SORT_SCORE, False)))
SORT_NAMES = {"oldest": sort_key(SORT_TIME, False), "newest": sort_key(SORT_TIME, True),
              "highest": sort_key(SORT_SCORE, True), "lowest": sort_key(SORT_SCORE, False)}
ANY_PRODUCT, ANY_STATION = "All products", "All stations"


def _combo(choices: Sequence[tuple[str, object]]) -> QComboBox:
    combo = QComboBox()
    for label, value in choices:
        combo.addItem(label, value)
    return combo


def _set_names(combo: QComboBox, any_label: str, names: Sequence[str]) -> None:
    """Refill *combo* with *names* (after "any"), keeping the current choice."""
    current = combo.currentData()
    if [combo.itemData(i) for i in range(1, combo.count())] == list(names):
        return
    combo.blockSignals(True)
    combo.clear()
    combo.addItem(any_label, None)
    for name in names:
        combo.addItem(name, name)
    found = combo.findData(current) if current is not None else 0
    combo.setCurrentIndex(max(found, 0))
    combo.blockSignals(False)


class FilterBar(QWidget):
    """Emits ``changed`` whenever the operator changes a filter."""

    changed = Signal()
    chosen = Signal()  # the operator picked an entry (the window gives the keyboard back to the queue)

    def __init__(self, band: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._band = band
        self.state = _combo([(STATE_LABELS[state], state) for state in REVIEW_STATES])
        self.product = _combo([(ANY_PRODUCT, None)])
        self.station = _combo([(ANY_STATION, None)])
        self.verdict = _combo(VERDICT_CHOICES)
        self.time = _combo(TIME_CHOICES)
        self.sort = _combo(SORT_CHOICES)
        now = QDateTime.currentDateTime()
        self.since, self.until = QDateTimeEdit(now.addDays(-1)), QDateTimeEdit(now)
        to_label = QLabel("to")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.state, self.product, self.station, self.verdict, self.time, self.since,
                       to_label, self.until, self.sort):
            layout.addWidget(widget)
        layout.addStretch(1)
        self._custom = (self.since, to_label, self.until)
        for edit in (self.since, self.until):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
            edit.dateTimeChanged.connect(self.changed)
        for combo in (self.state, self.product, self.station, self.verdict, self.sort):
            combo.currentIndexChanged.connect(self.changed)
        for combo in (self.state, self.product, self.station, self.verdict, self.time, self.sort):
            combo.activated.connect(self.chosen)
            # narrow panels: a combo may shrink below its longest entry
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(9)
        self.state.setMinimumContentsLength(16)  # "Unreviewed (12,345)"
        self.time.currentIndexChanged.connect(self._time_changed)
        self._show_custom(False)

    def current_filter(self) -> QueueFilter:
        """The filter the widgets describe (relative times counted from now)."""
        sort, direction = str(self.sort.currentData()).split(":")
        descending = direction == "desc"
        since, until = self._time_range()
        return QueueFilter(
            review_state=self.state.currentData() or STATE_UNREVIEWED, product=self.product.currentData(),
            station=self.station.currentData(), verdict=self.verdict.currentData(), since=since, until=until,
            sort=sort, descending=descending, band=self._band,
        )

    def set_options(self, products: Sequence[str], stations: Sequence[str]) -> None:
        _set_names(self.product, ANY_PRODUCT, products)
        _set_names(self.station, ANY_STATION, stations)

    def set_counts(self, counts: Mapping[str, int]) -> None:
        """Show the queue size of each review state in the state combo."""
        for index, state in enumerate(REVIEW_STATES):
            self.state.setItemText(index, f"{STATE_LABELS[state]} ({counts.get(state, 0):,})")

    def set_sort(self, sort: str, descending: bool) -> None:
        """Show (and apply) another order; a column order gets its own entry."""
        found = self.sort.findData(sort_key(sort, descending))
        if found < 0:
            self.sort.addItem(f"By {sort} {'(Z-A, high-low)' if descending else '(A-Z, low-high)'}",
                              sort_key(sort, descending))
            found = self.sort.count() - 1
        self.sort.setCurrentIndex(found)

    def select(self, **choices: object) -> None:
        """Choose combo entries by data value (tests, saved views): state=..., product=...,
        sort="newest" (or oldest/highest/lowest)."""
        for name, value in choices.items():
            if name == "sort" and isinstance(value, str):
                value = SORT_NAMES[value]
            combo: QComboBox = getattr(self, name)
            found = combo.findData(value)
            if found < 0:
                raise ValueError(f"no {name} choice {value!r}")
            combo.setCurrentIndex(found)

    def _time_range(self) -> tuple[datetime | None, datetime | None]:
        choice = self.time.currentData()
        if choice == "custom":
            return (self.since.dateTime().toPython().astimezone(timezone.utc),
                    self.until.dateTime().toPython().astimezone(timezone.utc))
        if choice is None:
            return None, None
        return datetime.now(timezone.utc) - choice, None

    def _time_changed(self) -> None:
        self._show_custom(self.time.currentData() == "custom")
        emit(self.changed)

    def _show_custom(self, visible: bool) -> None:
        for widget in self._custom:
            widget.setVisible(visible)
