"""The main window: filter bar, queue table, viewer, details, decisions, statistics.

Keys (window-wide; typing in the comment field is not affected):
D confirm defect, O overrule, G overrule and add to the good set, S skip,
U or Ctrl+Z undo, N/P next/previous, F fit, 1 actual size, V overlay, +/- zoom,
C comment, F5 reload, Ctrl+E export.  A decision advances to the next item that is
still in the filter's review state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QTableView,
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
from gui.decisions import Outcome, ReviewWriter, resolve_operator
from gui.details import DecisionBar, DetailsPanel
from gui.export import export_csv
from gui.feedback import EnrollFn, FeedbackJobs, FeedbackResult, default_enroll
from gui.filters import STATE_LABELS, FilterBar
from gui.images import ItemImages, StoredGeometry, decode_row
from gui.qt_compat import emit
from gui.queue_model import QueueModel
from gui.stats import StatsView
from gui.viewer import ImageViewer
from gui.workers import Poller, PrefetchLoader, TaskRunner
from inspectd.config import Config
from inspectd.db import DECISION_CONFIRM_DEFECT, DECISION_OVERRULE, DECISION_SKIP, Database, ReviewRecord

log = logging.getLogger(__name__)

PREFETCH_AHEAD = 3


class MainWindow(QMainWindow):
    """The review app.  ``decisionWritten`` and ``exported`` let callers (tests, bench) wait."""

    decisionWritten = Signal(object)  # Outcome
    exported = Signal(int)  # rows written
    imagesShown = Signal(int)  # item id now in the viewer

    def __init__(self, config: Config, db: Database, *, operator: str | None = None,
                 enroll: EnrollFn = default_enroll, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.config, self.db = config, db
        self.writer = ReviewWriter(db, operator or resolve_operator(config.review.operator))
        self.reads, self.writes, self.decodes = TaskRunner(2, self), TaskRunner(1, self), TaskRunner(2, self)
        self.model = QueueModel(partial(fetch_page, db), self.reads, config.review.page_size, self)
        self.loader = PrefetchLoader(self.decodes, partial(decode_row, geometry=StoredGeometry(config.store_dir)),
                                     key=lambda row: row.item_id, parent=self)
        self.feedback = FeedbackJobs(config, self, enroll=enroll)
        self._marks: Watermarks | None = None
        self._force_poll = True
        self._history: list[int] = []  # items decided in this session, for undo
        self._advance_pending = False
        self.poller = Poller(config.review.poll_seconds, self._submit_poll, self)
        self._build()
        self._connect()
        self.apply_filter()
        self.poller.start()
        self.poller.poll_now()

    # --- construction ---------------------------------------------------------------------

    def _build(self) -> None:
        self.setWindowTitle("inspectd review")
        self.filters = FilterBar(self.config.review.band_below_threshold)
        self.counts = QLabel()
        self.counts.setObjectName("counts")
        self.table = self._build_table()
        self.viewer = ImageViewer()
        self.details = DetailsPanel()
        self.decision_actions = self._build_actions()
        self.decision_bar = DecisionBar(self.decision_actions)
        self.stats = StatsView()

        queue = QWidget()
        queue_layout = QVBoxLayout(queue)
        queue_layout.setContentsMargins(0, 0, 0, 0)
        queue_layout.addWidget(self.counts)
        queue_layout.addWidget(self.table, 1)
        item = QWidget()
        item_layout = QVBoxLayout(item)
        item_layout.setContentsMargins(0, 0, 0, 0)
        item_layout.addWidget(self.viewer, 1)
        item_layout.addWidget(self.decision_bar)
        item_layout.addWidget(self.details)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(queue)
        split.addWidget(item)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 5)
        split.setSizes([610, 990])
        review = QWidget()
        review_layout = QVBoxLayout(review)
        review_layout.addWidget(self.filters)
        review_layout.addWidget(split, 1)
        self.tabs = QTabWidget()
        self.tabs.addTab(review, "Review")
        self.tabs.addTab(self.stats, "Statistics")
        self.setCentralWidget(self.tabs)
        self.live = QLabel("Connecting…")
        self.statusBar().addPermanentWidget(QLabel(f"Operator: {self.writer.operator}"))
        self.statusBar().addPermanentWidget(QLabel(self.db.url))
        self.statusBar().addPermanentWidget(self.live)
        self.resize(1600, 960)

    def _build_table(self) -> QTableView:
        table = QTableView()
        table.setModel(self.model)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setAlternatingRowColors(True)
        table.setShowGrid(False)
        table.setWordWrap(False)
        table.verticalHeader().hide()
        table.verticalHeader().setDefaultSectionSize(24)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        return table

    def _action(self, name: str, text: str, keys: list[str], slot: Callable[[], None]) -> QAction:
        action = QAction(text, self)
        action.setObjectName(name)
        action.setShortcuts([QKeySequence(key) for key in keys])
        action.setToolTip(f"{text} ({' or '.join(keys)})")
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> list[QAction]:
        """Window-wide shortcuts; returns the decision actions for the decision bar."""
        decisions = [
            self._action("confirm", "Confirm defect [D]", ["D"], lambda: self.decide(DECISION_CONFIRM_DEFECT)),
            self._action("overrule", "Overrule: false alarm [O]", ["O"], lambda: self.decide(DECISION_OVERRULE)),
            self._action("good", "Overrule + add to good set [G]", ["G"],
                         lambda: self.decide(DECISION_OVERRULE, add_to_good_set=True)),
            self._action("skip", "Skip [S]", ["S"], lambda: self.decide(DECISION_SKIP)),
            self._action("undo", "Undo [U]", ["U", "Ctrl+Z"], self.undo),
        ]
        for name, text, keys, slot in (
            ("next", "Next item", ["N", "J"], lambda: self.move(1)),
            ("previous", "Previous item", ["P", "K"], lambda: self.move(-1)),
            ("fit", "Fit", ["F"], self.viewer.fit),
            ("actual", "Actual size", ["1"], self.viewer.actual_size),
            ("overlay", "Toggle overlay", ["V"], self.viewer.toggle_overlay),
            ("zoom_in", "Zoom in", ["+", "="], self.viewer.zoom_in),
            ("zoom_out", "Zoom out", ["-"], self.viewer.zoom_out),
            ("comment", "Comment", ["C"], self._edit_comment),
            ("reload", "Reload", ["F5"], self.apply_filter),
            ("export", "Export CSV…", ["Ctrl+E"], self._ask_export),
        ):
            self._action(name, text, keys, slot)
        return decisions

    def _connect(self) -> None:
        self.filters.changed.connect(self.apply_filter)
        self.table.selectionModel().currentRowChanged.connect(self._current_changed)
        self.model.pageLoaded.connect(self._page_loaded)
        self.model.loadFailed.connect(self._queue_failed)
        self.model.dataChanged.connect(self._rows_changed)
        self.loader.loaded.connect(self._images_loaded)
        self.decision_bar.comment.returnPressed.connect(self.table.setFocus)
        self.feedback.finished.connect(self._feedback_done)
        self.feedback.failed.connect(self._feedback_failed)
        self.stats.productChanged.connect(self._load_stats)
        self.tabs.currentChanged.connect(self._load_stats)

    # --- queue and selection ----------------------------------------------------------------

    def current_row(self) -> QueueRow | None:
        return self.model.row_at(self.table.currentIndex().row())

    def select_row(self, position: int) -> None:
        index = self.model.index(position, 0)
        self.table.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.table.scrollTo(index)

    def apply_filter(self) -> None:
        """Reload the queue for the filter bar's current filter."""
        self._advance_pending = False
        self.model.set_filter(self.filters.current_filter())
        self._force_poll = True
        self.poller.poll_now()

    def move(self, step: int) -> None:
        position = self.table.currentIndex().row() + step
        if 0 <= position < self.model.rowCount():
            self.select_row(position)
        elif step > 0 and self.model.canFetchMore():
            self.model.fetchMore()

    def advance(self) -> None:
        """Go to the next row still in the filter's review state (fetching more if needed)."""
        wanted = self.model.queue_filter.review_state
        for position in range(self.table.currentIndex().row() + 1, self.model.rowCount()):
            row = self.model.row_at(position)
            if row is not None and (wanted == STATE_ALL or row.review_state == wanted):
                self.select_row(position)
                return
        if self.model.canFetchMore() or self.model.loading:
            self._advance_pending = True
            self.model.fetchMore()
        else:
            self.statusBar().showMessage("End of the queue for this filter", 5000)

    def _page_loaded(self, added: int) -> None:
        if self._advance_pending and (added or not self.model.canFetchMore()):
            self._advance_pending = False
            self.advance()
        elif not self.table.currentIndex().isValid() and self.model.rowCount():
            self.table.resizeColumnsToContents()
            self.select_row(0)
        elif not self.model.rowCount():
            self.viewer.show_message("Nothing to review for this filter")
            self.details.show_row(None)

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        row = self.model.row_at(current.row())
        self.details.show_row(row)
        if row is None:
            self.viewer.show_message("No item selected")
            return
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
        current = self.table.currentIndex().row()
        if top_left.row() <= current <= bottom_right.row():
            self.details.show_row(self.current_row())

    # --- decisions ---------------------------------------------------------------------------

    def decide(self, decision: str, add_to_good_set: bool = False) -> None:
        """Record *decision* on the current item (in the background) and move on."""
        row = self.current_row()
        if row is None:
            return
        tag, comment = self.decision_bar.take_inputs()
        self._history.append(row.item_id)
        self.model.set_reviews({row.item_id: self._pending_review(row, decision, tag, comment)})
        self.writes.submit(lambda: self.writer.decide(row, decision, tag, comment), self._written,
                           lambda exc: self._write_failed(row.item_id, exc))
        if add_to_good_set:
            self.feedback.start(row.product, Path(row.source_image))
        self.advance()

    def undo(self) -> None:
        """Undo this session's latest decision (else the current item's) and go back to it."""
        if self._history:
            item_id = self._history.pop()
        else:
            row = self.current_row()
            if row is None or row.review is None:
                self.statusBar().showMessage("Nothing to undo", 4000)
                return
            item_id = row.item_id
        self.writes.submit(lambda: self.writer.undo(item_id), self._written,
                           lambda exc: self._write_failed(item_id, exc))
        position = self.model.row_of_item(item_id)
        if position is not None:
            self.select_row(position)

    def _pending_review(self, row: QueueRow, decision: str, tag: str | None, comment: str | None) -> ReviewRecord:
        """What the row shows until the write is confirmed."""
        return ReviewRecord(id=0, item_id=row.item_id, decision=decision, operator=self.writer.operator,
                            decided_at=datetime.now(timezone.utc), verdict=row.verdict,
                            model_version=row.model_version, threshold=row.threshold, tag=tag, comment=comment,
                            undoes_review_id=None)

    def _written(self, outcome: Outcome) -> None:
        self.model.set_reviews({outcome.item_id: outcome.effective})
        emit(self.decisionWritten, outcome)

    def _write_failed(self, item_id: int, exc: BaseException) -> None:
        self._error(f"Could not save the decision on item {item_id}: {exc}")
        self.reads.submit(lambda: self.db.effective_review(item_id),
                          lambda review: self.model.set_reviews({item_id: review}))

    def _edit_comment(self) -> None:
        self.decision_bar.comment.setFocus()

    def _queue_failed(self, message: str) -> None:
        self._error(f"Cannot load the queue: {message}")

    def _feedback_failed(self, message: str) -> None:
        self._error(f"Adding to the good set failed: {message}")

    def _feedback_done(self, result: FeedbackResult) -> None:
        self.statusBar().showMessage(
            f"{result.product}: model {result.version} written with {result.kept_as.name} "
            f"(threshold {result.threshold:.4g}); the daemon uses it for the next items", 15000)

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
        self.model.merge_new(result.new_rows)
        self.model.set_reviews(result.reviews or {})
        if result.counts is not None:
            self.filters.set_counts(result.counts)
            self.counts.setText("   ".join(f"{STATE_LABELS[name]}: {number:,}" for name, number in result.counts.items()))
        self.filters.set_options(result.products, result.stations)
        self.stats.set_products(result.products)
        self._load_stats()

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
            self.statusBar().showMessage(f"Exported {count:,} rows to {path}", 10000)
            emit(self.exported, count)

        self.reads.submit(lambda: export_csv(self.db, queue_filter, path), done,
                          lambda exc: self._error(f"Export failed: {exc}"))

    def _ask_export(self) -> None:
        name = f"inspectd-review-{datetime.now():%Y%m%d-%H%M}.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export CSV", name, "CSV files (*.csv)")
        if path:
            self.export_to(Path(path))

    # --- misc ---------------------------------------------------------------------------------

    def _error(self, message: str) -> None:
        log.error("%s", message)
        self.statusBar().showMessage(message, 15000)

    def shutdown(self, timeout_ms: int = 10000) -> None:
        """Stop polling and wait for pending work (decisions are never dropped)."""
        self.poller.stop()
        for runner in (self.writes, self.reads, self.decodes):
            runner.wait(timeout_ms)
        self.feedback.wait(timeout_ms)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt name
        if self.feedback.running:
            answer = QMessageBox.question(
                self, "Model update running",
                "A model update is still running and will finish before the app closes. Close anyway?")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self.shutdown(timeout_ms=10 * 60 * 1000 if self.feedback.running else 10000)
        event.accept()
