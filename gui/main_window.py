"""The main window: filter bar, queue table, viewer, details and history, decisions,
statistics, menus.

Decisions say what the part is (Defect / Good part), whatever the machine said, and
are signed by the person who signed in.  Each one goes through the outbox: it shows
as "not yet saved" until the database has it and survives a locked database or a
closed window.  U undoes your own decisions of this session only; deciding an item
someone else decided asks first and is a new review.  After the last item of the
filter the queue is "done": no key re-decides anything.  The keys are in the menus
and in the overview (F1 or ?).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QGuiApplication
from PySide6.QtWidgets import (
    QFileDialog,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressDialog,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from gui.data import (
    STATE_ALL,
    PollResult,
    QueueFilter,
    QueueRow,
    Watermarks,
    fetch_page,
    poll,
    review_counts,
    score_sample,
)
from gui.decisions import (
    KIND_GOOD_SET,
    KIND_UNDO,
    PART_DEFECT,
    PART_GOOD,
    DecisionWriter,
    Outcome,
    PendingWrite,
    decision_label,
    new_decision,
    new_good_set,
    new_undo,
)
from gui.details import DecisionBar, DetailsPanel, UnknownTag
from gui.export import export_csv
from gui.feedback import ModelJobs
from gui.filters import STATE_LABELS, FilterBar
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
from gui.workers import Poller, PrefetchLoader, TaskRunner
from inspectd.config import ROLE_QUALITY_ENGINEER, Config, Person
from inspectd.db import DECISION_SKIP, VERDICT_ERROR, Database, RetryPolicy, create_db_engine
from inspectd.good_set import Candidate, EnrollFn, GoodSetCheck, build_candidate, check_image, default_enroll, keep_image
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


class MainWindow(QMainWindow):
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

    # --- decisions ---------------------------------------------------------------------------

    def confirm(self, title: str, text: str, yes: str) -> bool:
        """Ask; the safe answer is the default (tests replace this)."""
        box = QMessageBox(QMessageBox.Icon.Question, title, text, parent=self)
        accept = box.addButton(yes, QMessageBox.ButtonRole.AcceptRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(cancel)
        box.exec()
        return box.clickedButton() is accept

    def inform(self, title: str, text: str) -> None:
        """Tell the operator why something was refused (tests replace this)."""
        self.statusBar().showMessage(text, 15000)
        QMessageBox.information(self, title, text)

    def decide(self, decision: str) -> None:
        """Record what the operator says about the current item and move on."""
        row = self.current_row()
        if row is None:
            self.statusBar().showMessage("Queue done: nothing to decide here" if self.done else "No item selected",
                                         5000)
            return
        if not self._may_redecide(row):
            return
        try:
            tag, comment = self.decision_bar.take_inputs()
        except UnknownTag as exc:
            self._error(str(exc))
            self.decision_bar.tag.setFocus()
            return
        self._submit(new_decision(row, decision, self.person.name, tag, comment))
        self.advance()

    def _may_redecide(self, row: QueueRow) -> bool:
        """Deciding an item someone else decided is a new review: ask first."""
        review = row.review
        if review is None or review.operator == self.person.name or self.model.unsaved(row.item_id):
            return True
        return self.confirm(
            "Change another operator's decision?",
            f"{review.operator} decided “{decision_label(review)}” on {row.file_name}. Record your decision as "
            f"a new review signed by {self.person.name}? {review.operator}'s decision stays in the item's history.",
            "&Record my decision")

    def _submit(self, entry: PendingWrite) -> None:
        self.outbox.submit(entry)
        if entry.kind != KIND_UNDO:
            self._mine.append(entry)
        self.model.set_unsaved(entry.item_id, None if entry.kind == KIND_UNDO else entry.as_review())

    def undo(self) -> None:
        """Undo this person's latest decision of this session and go back to its item."""
        if not self._mine:
            self.statusBar().showMessage(
                f"Nothing of yours to undo in this session ({self.person.name}). To change another decision, "
                "decide the item again: that is recorded as a new review.", 8000)
            return
        target = self._mine.pop()
        if self.outbox.cancel(target.client_id):  # it never reached the database
            if target.kind == KIND_GOOD_SET and target.kept_as:
                Path(target.kept_as).unlink(missing_ok=True)
            self._refresh_unsaved_view(target.item_id)
        else:
            self._submit(new_undo(target, self.person.name))
        position = self.model.row_of_item(target.item_id)
        if position is not None:
            self.select_row(position)

    def _refresh_unsaved_view(self, item_id: int) -> None:
        """Show what the item's remaining unsaved entries leave, else what the database says."""
        waiting = [entry for entry in self.outbox.entries() if entry.item_id == item_id]
        if waiting:
            last = waiting[-1]
            self.model.set_unsaved(item_id, None if last.kind == KIND_UNDO else last.as_review())
            return
        self.reads.submit(lambda: self.db.effective_review(item_id),
                          lambda review: self.model.clear_unsaved(item_id, review),
                          lambda exc: self._error(f"Cannot read item {item_id}: {exc}"))

    def _written(self, outcome: Outcome) -> None:
        item_id = outcome.item_id
        if not any(entry.item_id == item_id for entry in self.outbox.entries()):
            self.model.clear_unsaved(item_id, outcome.effective)
        if outcome.entry.kind == KIND_GOOD_SET and outcome.good_set is not None:
            self._build_candidate(outcome.entry)
        if outcome.restored is not None:
            self.statusBar().showMessage(
                f"{outcome.restored.product}: {outcome.restored.version} is active again "
                f"(the image left the good set)", 15000)
            self._refresh_models()
        emit(self.decisionWritten, outcome)

    def _rejected(self, entry: PendingWrite, reason: str) -> None:
        self._mine = [mine for mine in self._mine if mine.client_id != entry.client_id]
        if entry.kind == KIND_GOOD_SET and entry.kept_as:
            Path(entry.kept_as).unlink(missing_ok=True)
        self._refresh_unsaved_view(entry.item_id)
        self._error(f"The database refused {entry.describe()}: {reason}")
        emit(self.decisionRejected, entry, reason)

    def _unsaved_changed(self) -> None:
        count = self.outbox.count
        if count == 0:
            self.unsaved.setText("All decisions saved")
            self.unsaved.setStyleSheet("")
            self.unsaved.setToolTip("")
            self.banner.hide()
            return
        waiting = self.outbox.waiting_s
        reason = self.outbox.reason()
        text = f"⚠ {count} decision{'s' if count != 1 else ''} not yet saved"
        self.unsaved.setText(text)
        self.unsaved.setStyleSheet("color: #1a1d21; background: #e3b341; padding: 1px 6px; font-weight: bold;")
        self.unsaved.setToolTip("Kept and retried until the database takes them"
                                + (f" ({reason}; {self.outbox.last_error})" if reason else "")
                                + (f"\n{self.outbox.journal_error}" if self.outbox.journal_error else ""))
        self.banner.setText(f"{text}: {reason}, retrying. Keep working; nothing is lost." if waiting is not None
                            else f"{text}: saving…")
        self.banner.show()

    def _edit_comment(self) -> None:
        self.decision_bar.comment.setFocus()

    def _edit_tag(self) -> None:
        self.decision_bar.tag.setFocus()
        self.decision_bar.tag.lineEdit().selectAll()

    # --- the good set and model versions ------------------------------------------------------

    def add_to_good_set(self) -> None:
        """Good part + add the image to the product's good set (quality engineers; asks first)."""
        row = self.current_row()
        if row is None:
            return
        if not self.person.may(ROLE_QUALITY_ENGINEER):
            self._error(f"{self.person.name} may not change a product's good set (quality engineer role)")
            return
        if row.verdict == VERDICT_ERROR:
            self.inform("Not added to the good set",
                        f"{row.file_name} could not be scored (ERROR): it cannot join the good set.")
            return
        if not self._may_redecide(row):
            return
        self.reads.submit(
            lambda: check_image(self.config, self.db, self.store, row.product, row.verdict, Path(row.source_image)),
            lambda check: self._confirm_good_set(row, check),
            lambda exc: self.inform("Not added to the good set", f"{row.file_name}: {exc}"))

    def _confirm_good_set(self, row: QueueRow, check: GoodSetCheck) -> None:
        score = "n/a" if row.normalized_score is None else f"{row.normalized_score:.2f} × threshold"
        if not self.confirm(
                "Add to the good set?",
                f"Add {row.file_name} to the good set of {row.product}?\n\nThe machine said {row.verdict} ({score}). "
                f"This records “Good part” and builds a candidate model: {check.active_version} + this image. "
                f"The candidate scores nothing until a quality engineer activates it after seeing its threshold "
                "and how many queue items it would change.",
                "&Add to the good set"):
            return
        try:
            tag, comment = self.decision_bar.take_inputs()
            kept = keep_image(self.config, row.product, Path(row.source_image), row.item_id)
        except (UnknownTag, OSError) as exc:
            self.inform("Not added to the good set", str(exc))
            return
        self._submit(new_good_set(row, self.person.name, check, str(kept), tag, comment))
        if self.current_row() is not None and self.current_row().item_id == row.item_id:
            self.advance()

    def _build_candidate(self, entry: PendingWrite) -> None:
        product = entry.product or ""
        self.jobs.start(
            f"Building a candidate model of {product} with {entry.file_name}…",
            lambda progress: build_candidate(self.config, self.db, self.store, product, entry.operator,
                                             progress=progress, enroll=self._enroll),
            self._candidate_ready,
            lambda exc: self._error(f"The candidate model of {product} was not built: {exc}"))

    def _candidate_ready(self, candidate: Candidate) -> None:
        self.statusBar().showMessage(
            f"{candidate.product}: candidate {candidate.version} is ready ({candidate.base_version} stays active "
            "until it is activated)", 15000)
        intro = (f"<b>Candidate {candidate.version}</b> of {candidate.product}: {candidate.base_version} + "
                 f"{', '.join(candidate.images)}. Threshold {candidate.base_threshold:.4g} → {candidate.threshold:.4g}. "
                 f"It scores nothing until you activate it; {candidate.base_version} stays active meanwhile.")
        dialog = self.show_models(candidate.product, focus=candidate.version, intro=intro)
        if dialog is not None:
            dialog.loaded.connect(dialog.preview_selected, Qt.ConnectionType.SingleShotConnection)
        emit(self.candidateReady, candidate)

    def show_models(self, product: str | None = None, focus: str | None = None,
                    intro: str = "") -> ModelsDialog | None:
        """The model versions of *product* (default: the current item's)."""
        row = self.current_row()
        product = product or (row.product if row is not None else None) or next(iter(self.store.products()), None)
        if product is None:
            self._error(f"No product has a model in {self.config.store_dir}")
            return None
        if self.models_dialog is not None:
            self.models_dialog.close()
        self.models_dialog = ModelsDialog(self.config, self.db, self.person, product, reads=self.reads,
                                          jobs=self.jobs, focus_version=focus, intro=intro, parent=self)
        self.models_dialog.activated.connect(
            lambda name, version: self.statusBar().showMessage(
                f"{name}: {version} is active; the daemon scores with it from its next batch", 15000))
        self.models_dialog.show()
        return self.models_dialog

    def _refresh_models(self) -> None:
        if self.models_dialog is not None and self.models_dialog.isVisible():
            self.models_dialog.reload()

    def show_shortcuts(self) -> ShortcutsDialog:
        dialog = ShortcutsDialog(self.specs, self.actions, self)
        dialog.show()
        return dialog

    # --- live updates -----------------------------------------------------------------------

    def _submit_poll(self, done: Callable[[], None]) -> None:
        queue_filter, marks, force = self.model.queue_filter, self._marks, self._force_poll
        self._force_poll = False

        def arrived(result: PollResult) -> None:
            done()
            self._poll_arrived(queue_filter, result)

        def failed(exc: BaseException) -> None:
            done()
            self._force_poll = True
            self.live.setText("Database unavailable")
            self.live.setToolTip(str(exc))

        self.reads.submit(lambda: poll(self.db, queue_filter, marks, force), arrived, failed)

    def _poll_arrived(self, queue_filter: QueueFilter, result: PollResult) -> None:
        if queue_filter != self.model.queue_filter:
            self._force_poll = True  # answer for an old filter: ask again
            return
        self._marks = result.marks
        self.live.setText(f"Live · {datetime.now().strftime('%H:%M:%S')}")
        self.live.setToolTip("")
        if not result.changed:
            return
        added = self.model.merge_new(result.new_rows)
        self.model.set_reviews(result.reviews or {})
        if result.counts is not None:
            self.filters.set_counts(result.counts)
            self.counts.setText("   ".join(f"{STATE_LABELS[name]}: {number:,}" for name, number in result.counts.items()))
        self.filters.set_options(result.products, result.stations)
        self.stats.set_products(result.products)
        self._load_stats()
        if self.done and added:
            self.advance()  # new items arrived after "queue done"

    # --- statistics and export --------------------------------------------------------------

    def _load_stats(self, *_changed: object) -> None:
        product = self.stats.product.currentText()
        if self.tabs.currentWidget() is not self.stats or not product:
            return
        queue_filter = QueueFilter(review_state=STATE_ALL, product=product,
                                   band=self.config.review.band_below_threshold)
        self.reads.submit(lambda: (score_sample(self.db, product), review_counts(self.db, queue_filter)),
                          lambda loaded: self.stats.set_data(*loaded),
                          lambda exc: self._error(f"Cannot load statistics: {exc}"))

    def export_to(self, path: Path) -> None:
        """Export the current filter to *path* in the background; ``exported`` follows."""
        queue_filter = self.model.queue_filter

        def done(count: int) -> None:
            self.statusBar().showMessage(f"Exported {count:,} rows of the current filter to {path}", 10000)
            emit(self.exported, count)

        self.reads.submit(lambda: export_csv(self.db, queue_filter, path), done,
                          lambda exc: self._error(f"Export failed: {exc}"))

    def filter_description(self) -> str:
        """The current filter in words (for the export dialog)."""
        bar = self.filters
        parts = [bar.state.currentText(), bar.product.currentText(), bar.station.currentText(),
                 bar.verdict.currentText(), bar.time.currentText(), bar.sort.currentText()]
        return ", ".join(part for part in parts if part)

    def _ask_export(self) -> None:
        name = f"inspectd-review-{datetime.now():%Y%m%d-%H%M}.csv"
        path, _ = QFileDialog.getSaveFileName(
            self, f"Export the current filter ({self.filter_description()}) to CSV", name, "CSV files (*.csv)")
        if path:
            self.export_to(Path(path))

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

    def ask_unsaved(self, count: int) -> str:
        """What to do with unsaved decisions at closing time: "wait", "keep" or "cancel"
        (tests replace this)."""
        box = QMessageBox(QMessageBox.Icon.Warning, "Decisions not yet saved",
                          f"{count} decision{'s are' if count != 1 else ' is'} not saved in the database yet"
                          + (f": {self.outbox.reason()}" if self.outbox.reason() else "") + ".", parent=self)
        wait = box.addButton("&Wait until saved, then close", QMessageBox.ButtonRole.AcceptRole)
        keep = None
        if self.outbox.journal_error is None:
            box.setInformativeText("Closing now keeps them on this PC: they are sent when the review app starts "
                                   "here again. Nothing is lost either way.")
            keep = box.addButton("&Close now, keep them", QMessageBox.ButtonRole.DestructiveRole)
        else:
            box.setInformativeText(f"They cannot be kept after closing: {self.outbox.journal_error}")
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(wait)
        box.exec()
        clicked = box.clickedButton()
        return "wait" if clicked is wait else "keep" if keep is not None and clicked is keep else "cancel"

    def _wait_then_close(self) -> None:
        progress = QProgressDialog("Saving decisions… (the database is busy)", "Don't close", 0, 0, self)
        progress.setWindowTitle("Saving decisions")
        progress.setMinimumDuration(0)
        progress.setModal(True)
        self._closing_after_save = True

        def check() -> None:
            if not self._closing_after_save:
                return
            if self.outbox.count == 0:
                progress.close()
                self.close()
            else:
                progress.setLabelText(f"Saving {self.outbox.count} decision(s)… "
                                      f"{self.outbox.reason() or 'the database is busy'}")
                QTimer.singleShot(200, check)

        def cancelled() -> None:
            self._closing_after_save = False

        progress.canceled.connect(cancelled)
        progress.show()
        QTimer.singleShot(0, check)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt name
        if self.outbox.count:
            answer = self.ask_unsaved(self.outbox.count)
            if answer == "wait":
                event.ignore()
                self._wait_then_close()
                return
            if answer != "keep":
                event.ignore()
                return
        if self.jobs.running and not self.confirm(
                "Model work running", "A candidate model is being built; it finishes before the app closes.",
                "&Close when it is done"):
            event.ignore()
            return
        self.shutdown(timeout_ms=10 * 60 * 1000 if self.jobs.running else 10000)
        event.accept()
