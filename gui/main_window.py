"""The main window: filter bar, queue table, viewer, details and history, decisions,
statistics, menus.

Decisions say what the part is (Defect / Good part), whatever the machine said, and
are signed by the person who signed in.  Each one goes through the outbox: it shows
as "not yet saved" until the database has it and survives a locked database or a
closed window.  U undoes your own decisions of this session only; deciding an item
someone else decided asks first and is a new review.  After the last item of the
filter the queue is "done": no key re-decides anything.  The keys are in the menus
and in the overview (F1 or ?).

This module builds the window and moves through the queue; the mixins beside it do
the rest: ``window_decisions`` (decide, undo, the unsaved counter), ``window_models``
(the good set, model versions), ``window_live`` (polling, statistics, export) and
``window_closing`` (closing with unsaved decisions).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QMainWindow,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from gui.data import STATE_ALL, QueueRow, Watermarks, fetch_page
from gui.decisions import KIND_UNDO, PART_DEFECT, PART_GOOD, DecisionWriter, PendingWrite
from gui.details import DecisionBar, DetailsPanel
from gui.feedback import ModelJobs
from gui.filters import FilterBar
from gui.history import HistoryView, history_lines
from gui.identity import ask_who_is_working, person_without_asking, roles_text
from gui.images import ItemImages, StoredGeometry, decode_row
from gui.models_dialog import ModelsDialog
from gui.outbox import Journal, Outbox, default_journal_dir
from gui.qt_compat import emit
from gui.queue_model import COLUMN_SORTS, COLUMNS, QueueModel
from gui.queue_view import QueueTable
from gui.shortcuts import ActionSpec, ShortcutsDialog, make_actions
from gui.stats import StatsView
from gui.viewer import ImageViewer
from gui.window_closing import ClosingMixin
from gui.window_decisions import DecisionsMixin
from gui.window_live import LiveMixin
from gui.window_models import ModelsMixin
from gui.workers import Poller, PrefetchLoader, TaskRunner
from inspectd.config import ROLE_QUALITY_ENGINEER, Config, Person
from inspectd.db import DECISION_SKIP, Database, RetryPolicy, create_db_engine
from inspectd.good_set import EnrollFn, default_enroll
from inspectd.identity import os_user
from inspectd.store import ModelStore

log = logging.getLogger(__name__)

PREFETCH_AHEAD = 3
WRITE_ATTEMPT_MS = 1000  # one attempt of the outbox waits at most this long for a lock
DEFAULT_SIZE = (1600, 960)


def writer_database(db: Database) -> Database:
    """A second connection for the outbox: short lock waits, no retries of its own."""
    return Database(create_db_engine(db.engine.url, busy_timeout_ms=WRITE_ATTEMPT_MS),
                    retry_policy=RetryPolicy(total_s=0.0))


class MainWindow(DecisionsMixin, ModelsMixin, LiveMixin, ClosingMixin, QMainWindow):
    """The review app.  The signals let callers (tests, bench) wait for what happened."""

    decisionWritten = Signal(object)  # Outcome
    decisionRejected = Signal(object, str)  # PendingWrite, why
    exported = Signal(int)  # rows written
    imagesShown = Signal(int)  # item id now in the viewer
    historyShown = Signal(int)  # item id whose history is shown
    candidateReady = Signal(object)  # Candidate
    queueDone = Signal()

    def __init__(self, config: Config, db: Database, *, person: Person | None = None,
                 enroll: EnrollFn = default_enroll, journal_dir: Path | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.config, self.db = config, db
        self.person = person or person_without_asking(config.review) or config.review.person_named(os_user())
        self.store = ModelStore(config.store_dir)
        self._enroll = enroll
        self.reads, self.decodes = TaskRunner(2, self), TaskRunner(2, self)
        self.model = QueueModel(partial(fetch_page, db), self.reads, config.review.page_size, self)
        self.loader = PrefetchLoader(self.decodes, partial(decode_row, geometry=StoredGeometry(config.store_dir)),
                                     key=lambda row: row.item_id, parent=self)
        self.jobs = ModelJobs(self)
        self._writer_db = writer_database(db)
        journal = Journal(journal_dir or config.review.unsaved_dir or default_journal_dir(), db.url)
        self.outbox = Outbox(DecisionWriter(self._writer_db, self.store).apply, journal, self)
        self._marks: Watermarks | None = None
        self._force_poll = True
        self._mine: list[PendingWrite] = []  # this person's decisions of this session, for undo
        self._advance_pending = False
        self.done = False  # past the end of the queue: nothing selected, nothing to decide
        self.models_dialog: ModelsDialog | None = None
        self._closing_after_save = False
        self.poller = Poller(config.review.poll_seconds, self._submit_poll, self)
        self._build()
        self._connect()
        self._apply_person()
        inherited = self.outbox.start()
        for entry in inherited:
            self.model.set_unsaved(entry.item_id, None if entry.kind == KIND_UNDO else entry.as_review())
        if inherited:
            self.statusBar().showMessage(f"Sending {len(inherited)} decision(s) kept from an earlier session", 15000)
        self._unsaved_changed()
        self.apply_filter()
        self.poller.start()
        self.poller.poll_now()

    # --- construction ---------------------------------------------------------------------

    def _build(self) -> None:
        self.setWindowTitle("inspectd review")
        self.filters = FilterBar(self.config.review.band_below_threshold)
        self.counts = QLabel()
        self.counts.setObjectName("counts")
        self.counts.setWordWrap(True)  # never widens the queue pane
        self.table = self._build_table()
        self.viewer = ImageViewer()
        self.details = DetailsPanel()
        self.history = HistoryView()
        self.specs = self._action_specs()
        self.actions = make_actions(self, self.specs)
        decision_names = ("confirm", "good", "good_set", "skip", "undo")
        for name, label in zip(decision_names, ("Defect [D]", "Good part [O]", "Add to good set… [G]",
                                                "Skip [S]", "Undo mine [U]")):
            self.actions[name].setIconText(label)  # the buttons show the key
        self.decision_bar = DecisionBar([self.actions[name] for name in decision_names], self.config.review.tags)
        self.stats = StatsView()
        queue = QWidget()
        queue_layout = QVBoxLayout(queue)
        queue_layout.setContentsMargins(0, 0, 0, 0)
        self.banner = QLabel()
        self.banner.setObjectName("unsavedBanner")
        self.banner.setWordWrap(True)
        self.banner.hide()
        queue_layout.addWidget(self.banner)
        queue_layout.addWidget(self.counts)
        queue_layout.addWidget(self.table, 1)
        details_scroll = QScrollArea()
        details_scroll.setWidget(self.details)
        details_scroll.setWidgetResizable(True)
        self.info = QTabWidget()
        self.info.addTab(details_scroll, "Details")
        self.info.addTab(self.history, "History")
        self.info.setMinimumHeight(90)
        item = QSplitter(Qt.Orientation.Vertical)  # the image keeps its share of a short window
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.viewer, 1)
        top_layout.addWidget(self.decision_bar)
        item.addWidget(top)
        item.addWidget(self.info)
        item.setStretchFactor(0, 3)
        item.setStretchFactor(1, 1)
        item.setChildrenCollapsible(False)
        self.item_split = item
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(queue)
        split.addWidget(item)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 5)
        split.setChildrenCollapsible(False)
        self._user_split = False  # once the operator drags a splitter, resizing keeps their choice
        for splitter in (split, item):
            splitter.splitterMoved.connect(self._split_by_user)
        review = QWidget()
        review_layout = QVBoxLayout(review)
        review_layout.addWidget(self.filters)
        review_layout.addWidget(split, 1)
        self.tabs = QTabWidget()
        self.tabs.addTab(review, "Review")
        self.tabs.addTab(self.stats, "Statistics")
        self.setCentralWidget(self.tabs)
        self.unsaved = QLabel()
        self.unsaved.setObjectName("unsaved")
        self.live = QLabel("Connecting…")
        self.operator_label = QLabel()
        where = QLabel(self.db.url.rsplit("/", 1)[-1] if self.db.url.startswith("sqlite") else self.db.url)
        where.setToolTip(self.db.url)  # the short name leaves the status bar room for messages
        for widget in (self.unsaved, self.operator_label, where, self.live):
            self.statusBar().addPermanentWidget(widget)
        self._initial_size()

    def _initial_size(self) -> None:
        screen = QGuiApplication.primaryScreen()
        available = screen.availableGeometry() if screen is not None else None
        width, height = DEFAULT_SIZE
        if available is not None:
            width, height = min(width, available.width()), min(height, available.height())
        self.resize(width, height)
        self._shared_out = False

    def _split_by_user(self, *_moved: object) -> None:
        self._user_split = True

    def resizeEvent(self, event: object) -> None:  # noqa: N802 - Qt name
        super().resizeEvent(event)  # type: ignore[arg-type]
        if self._shared_out and not self._user_split:
            self._share_out()

    def _share_out(self) -> None:
        """Splitter shares for the size the window really has (until the operator drags one)."""
        self._shared_out = True
        width, height = self.width(), self.height()
        split = self.item_split.parentWidget()
        if isinstance(split, QSplitter):  # on a narrow panel the queue needs a larger share for its columns
            share = 0.42 if width < 1300 else 0.34
            split.blockSignals(True)
            split.setSizes([int(width * share), int(width * (1 - share))])
            split.blockSignals(False)
        self.item_split.blockSignals(True)
        self.item_split.setSizes([int(height * 0.72), int(height * 0.28)])
        self.item_split.blockSignals(False)

    def _build_table(self) -> QueueTable:
        table = QueueTable()
        table.setModel(self.model)
        table.setAlternatingRowColors(True)
        table.setShowGrid(False)
        table.setWordWrap(False)
        table.elide_in_the_middle(COLUMNS.index("File"))
        table.verticalHeader().hide()
        # Rows as tall as the text needs (fonts scale on 4K screens and with QT_SCALE_FACTOR).
        table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 8)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        header.setSectionsClickable(True)
        header.setSortIndicatorShown(True)
        header.setSortIndicator(0, Qt.SortOrder.AscendingOrder)
        return table

    def _action_specs(self) -> list[ActionSpec]:
        viewer = self.viewer
        return [
            ActionSpec("confirm", "&Review", "Defect", ("D",), lambda: self.decide(PART_DEFECT),
                       "The part is defective (whatever the machine said)"),
            ActionSpec("good", "&Review", "Good part", ("O",), lambda: self.decide(PART_GOOD),
                       "The part is good (whatever the machine said)"),
            ActionSpec("good_set", "&Review", "Good part + add to the good set…", ("G",), self.add_to_good_set,
                       "Good part, and build a candidate model with this image (quality engineers; asks first)"),
            ActionSpec("skip", "&Review", "Skip", ("S",), lambda: self.decide(DECISION_SKIP), "Decide later"),
            ActionSpec("undo", "&Review", "Undo my last decision", ("U", "Ctrl+Z"), self.undo,
                       "Undo your own latest decision of this session"),
            ActionSpec("tag", "&Review", "Defect tag", ("T",), self._edit_tag, "Type or pick a defect tag"),
            ActionSpec("comment", "&Review", "Comment", ("C",), self._edit_comment, "Type a comment"),
            ActionSpec("next", "&Go", "Next item", ("N", "J"), lambda: self.move(1)),
            ActionSpec("previous", "&Go", "Previous item", ("P", "K"), lambda: self.move(-1)),
            ActionSpec("next_unreviewed", "&Go", "Next undecided item", ("Space",), self.advance),
            ActionSpec("fit", "&View", "Fit", ("F",), viewer.fit),
            ActionSpec("actual", "&View", "Actual size", ("1",), viewer.actual_size),
            ActionSpec("overlay", "&View", "Heatmap overlay", ("V",), viewer.toggle_overlay),
            ActionSpec("zoom_in", "&View", "Zoom in", ("+", "="), viewer.zoom_in),
            ActionSpec("zoom_out", "&View", "Zoom out", ("-",), viewer.zoom_out),
            ActionSpec("reload", "&View", "Reload the queue", ("F5",), self.apply_filter),
            ActionSpec("models", "&Model", "Model versions…", ("Ctrl+M",), self.show_models,
                       "Active and candidate versions, preview, activate (roll back)"),
            ActionSpec("export", "&File", "Export the current filter to CSV…", ("Ctrl+E",), self._ask_export,
                       "Every row of the current filter (not only the loaded ones), with its decision"),
            ActionSpec("switch", "&File", "Change operator…", ("F2",), self.change_operator,
                       "Another person takes over (shift change)"),
            ActionSpec("quit", "&File", "Quit", ("Ctrl+Q",), self.close),
            ActionSpec("shortcuts", "&Help", "Keyboard shortcuts", ("F1", "?"), self.show_shortcuts),
        ]

    def _connect(self) -> None:
        self.filters.changed.connect(self.apply_filter)
        self.filters.chosen.connect(self.table.setFocus)
        self.table.selectionModel().currentRowChanged.connect(self._current_changed)
        self.table.horizontalHeader().sortIndicatorChanged.connect(self._header_sort)
        self.model.sortRequested.connect(self.filters.set_sort)
        self.model.pageLoaded.connect(self._page_loaded)
        self.model.loadFailed.connect(self._queue_failed)
        self.model.dataChanged.connect(self._rows_changed)
        self.loader.loaded.connect(self._images_loaded)
        self.decision_bar.backToQueue.connect(self.table.setFocus)
        self.outbox.changed.connect(self._unsaved_changed)
        self.outbox.written.connect(self._written)
        self.outbox.rejected.connect(self._rejected)
        self.stats.productChanged.connect(self._load_stats)
        self.tabs.currentChanged.connect(self._load_stats)

    def show_fitted(self) -> None:
        """Show the window; maximized on a panel smaller than its default size, so that the
        status bar (with the unsaved-decision counter) is never below the screen's edge."""
        screen = QGuiApplication.primaryScreen()
        available = screen.availableGeometry() if screen is not None else None
        small = available is not None and (available.width() <= DEFAULT_SIZE[0] or available.height() <= DEFAULT_SIZE[1])
        self.showMaximized() if small else self.show()

    def showEvent(self, event: object) -> None:  # noqa: N802 - Qt name
        super().showEvent(event)  # type: ignore[arg-type]
        if not self._shared_out:
            self._share_out()
        self.table.setFocus()  # arrows, PgUp/PgDn, Home/End work at once

    # --- who is working ---------------------------------------------------------------------

    def _apply_person(self) -> None:
        person = self.person
        self.setWindowTitle(f"inspectd review · {person.name}")
        self.operator_label.setText(f"Operator: {person.name} ({roles_text(person)})")
        good_set = self.actions["good_set"]
        may = person.may(ROLE_QUALITY_ENGINEER)
        good_set.setEnabled(may)
        good_set.setToolTip("Good part, and build a candidate model with this image (asks first) (G)" if may else
                            f"{person.name} may not change a product's good set: that needs the quality engineer "
                            "role ([review] operators in config.toml)")

    def change_operator(self) -> None:
        """Shift change: someone else signs the next decisions; undo starts afresh."""
        if not self.config.review.operators:
            self._error("Nobody is listed in [review] operators: the operator is set by the configuration")
            return
        person = ask_who_is_working(self.config.review, self.person, self)
        if person is not None:
            self.set_person(person)

    def set_person(self, person: Person) -> None:
        self.person = person
        self._mine.clear()
        self._apply_person()
        self.statusBar().showMessage(f"{person.name} is working now", 8000)

    # --- queue and selection ----------------------------------------------------------------

    def current_row(self) -> QueueRow | None:
        return None if self.done else self.model.row_at(self.table.currentIndex().row())

    def select_row(self, position: int) -> None:
        self.done = False
        index = self.model.index(position, 0)
        self.table.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.table.scrollTo(index)

    def apply_filter(self) -> None:
        """Reload the queue for the filter bar's current filter."""
        self._advance_pending = False
        self.done = False
        queue_filter = self.filters.current_filter()
        header = self.table.horizontalHeader()
        header.blockSignals(True)
        column = next((i for i, name in enumerate(COLUMNS) if COLUMN_SORTS[name] == queue_filter.sort), 0)
        header.setSortIndicator(column, Qt.SortOrder.DescendingOrder if queue_filter.descending
                                else Qt.SortOrder.AscendingOrder)
        header.blockSignals(False)
        self.model.set_filter(queue_filter)
        self._force_poll = True
        self.poller.poll_now()

    def _header_sort(self, column: int, order: Qt.SortOrder) -> None:
        self.model.sort(column, order)

    def move(self, step: int) -> None:
        position = (-1 if self.done else self.table.currentIndex().row()) + step
        if 0 <= position < self.model.rowCount():
            self.select_row(position)
        elif step > 0 and self.model.canFetchMore():
            self.model.fetchMore()

    def _wanted(self, row: QueueRow | None) -> bool:
        wanted = self.model.queue_filter.review_state
        return row is not None and (wanted == STATE_ALL or row.review_state == wanted)

    def advance(self) -> None:
        """Go to the next row still in the filter's review state (fetching more if needed);
        past the last one the queue is done."""
        start = -1 if self.done else self.table.currentIndex().row()
        for position in range(start + 1, self.model.rowCount()):
            if self._wanted(self.model.row_at(position)):
                self.select_row(position)
                return
        if self.model.canFetchMore() or self.model.loading:
            self._advance_pending = True
            self.model.fetchMore()
        else:
            self._queue_done()

    def _queue_done(self) -> None:
        self.done = True
        self.table.selectionModel().clearSelection()
        self.table.selectionModel().setCurrentIndex(QModelIndex(), QItemSelectionModel.SelectionFlag.NoUpdate)
        remaining = [self.model.row_at(i) for i in range(self.model.rowCount())]
        left = sum(1 for row in remaining if self._wanted(row))
        message = ("Queue done: every item of this filter is decided." if left == 0 else
                   f"End of the queue: {left} item(s) above are still undecided.")
        self.viewer.show_message(f"{message}\n\nNew items appear here as they arrive.")
        self.details.show_row(None)
        self.history.show_lines([])
        self.statusBar().showMessage(message, 10000)
        emit(self.queueDone)

    def _page_loaded(self, added: int) -> None:
        if self._advance_pending and (added or not self.model.canFetchMore()):
            self._advance_pending = False
            self.advance()
        elif self.done and added:
            self.advance()  # new items after "queue done"
        elif not self.done and not self.table.currentIndex().isValid() and self.model.rowCount():
            self._fit_columns()
            self.select_row(0)
        elif not self.model.rowCount():
            self.viewer.show_message("Nothing to review for this filter")
            self.details.show_row(None)

    def _fit_columns(self) -> None:
        self.table.resizeColumnsToContents()
        metrics = self.table.fontMetrics()
        file_column, review_column = COLUMNS.index("File"), COLUMNS.index("Review")
        widest = metrics.horizontalAdvance("x" * 15)  # elided in the middle beyond this
        self.table.setColumnWidth(file_column, min(self.table.columnWidth(file_column), widest))
        # room for the longest usual decision, even while the loaded rows have none
        review = metrics.horizontalAdvance("⚠ Good part (scratch)") + 12
        self.table.setColumnWidth(review_column, max(self.table.columnWidth(review_column), review))

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        row = self.model.row_at(current.row())
        if row is None:
            if not self.done:
                self.viewer.show_message("No item selected")
                self.details.show_row(None)
            return
        self.done = False
        self.details.show_row(row, self.model.unsaved(row.item_id))
        self._load_history(row.item_id)
        images = self.loader.request(row)
        if images is not None:
            self._show(images)
        else:
            self.viewer.show_message("Loading…")
        ahead = (self.model.row_at(current.row() + step) for step in (*range(1, PREFETCH_AHEAD + 1), -1))
        self.loader.prefetch(neighbour for neighbour in ahead if neighbour is not None)

    def _images_loaded(self, item_id: int, images: ItemImages) -> None:
        row = self.current_row()
        if row is not None and row.item_id == item_id:
            self._show(images)

    def _show(self, images: ItemImages) -> None:
        self.viewer.show_images(images)
        emit(self.imagesShown, images.item_id)

    def _rows_changed(self, top_left: QModelIndex, bottom_right: QModelIndex) -> None:
        row = self.current_row()
        if row is not None and top_left.row() <= self.table.currentIndex().row() <= bottom_right.row():
            self.details.show_row(row, self.model.unsaved(row.item_id))
            self._load_history(row.item_id)

    def _load_history(self, item_id: int) -> None:
        unsaved = [entry for entry in self.outbox.entries() if entry.item_id == item_id]

        def shown(records: list) -> None:
            row = self.current_row()
            if row is not None and row.item_id == item_id:
                self.history.show_lines(history_lines(records, unsaved))
                emit(self.historyShown, item_id)

        self.reads.submit(lambda: self.db.review_history(item_id), shown,
                          lambda exc: self.history.show_lines(history_lines([], unsaved)))

    def show_shortcuts(self) -> ShortcutsDialog:
        dialog = ShortcutsDialog(self.specs, self.actions, self)
        dialog.show()
        return dialog

    # --- misc ---------------------------------------------------------------------------------

    def _queue_failed(self, message: str) -> None:
        self._error(f"Cannot load the queue: {message}")

    def _error(self, message: str) -> None:
        log.error("%s", message)
        self.statusBar().showMessage(message, 15000)

    def shutdown(self, timeout_ms: int = 10000) -> None:
        """Stop polling and background work; unsaved decisions stay in the journal."""
        self.poller.stop()
        self.outbox.stop(timeout_s=2.0)
        for runner in (self.reads, self.decodes):
            runner.wait(timeout_ms)
        self.jobs.wait(timeout_ms)
        self._writer_db.close()

