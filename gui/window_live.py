"""The main window's reads in the background: live updates of the queue (new items,
other operators' decisions, counts), the statistics tab and the CSV export of the
current filter.  A mixin of :class:`gui.main_window.MainWindow`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from gui.data import STATE_ALL, PollResult, QueueFilter, poll, review_counts, score_sample
from gui.export import export_csv
from gui.filters import STATE_LABELS
from gui.qt_compat import emit


class LiveMixin:
    """Polling, statistics and export, for the main window."""

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

