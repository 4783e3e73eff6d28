"""Model work started from the review app (building a candidate from the good set,
rescoring the queue with a version), run one at a time in a worker with a progress
dialog.  The engine work itself is :mod:`inspectd.good_set`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QProgressDialog, QWidget

from gui.qt_compat import emit
from gui.workers import TaskRunner

Progress = Callable[[str, int, int], None]
Work = Callable[[Progress], Any]


class ModelJobs(QObject):
    """Runs model jobs in order in one worker; shows their progress."""

    progressed = Signal(str, int, int)  # stage, done, total (from the worker thread)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._parent = parent
        self._runner = TaskRunner(threads=1, parent=self)
        self._running = 0
        self.dialog: QProgressDialog | None = None
        self.progressed.connect(self._show_progress, Qt.ConnectionType.QueuedConnection)

    @property
    def running(self) -> int:
        """Jobs queued or under way."""
        return self._running

    def start(self, title: str, work: Work, on_done: Callable[[Any], None],
              on_error: Callable[[BaseException], None]) -> None:
        """Run ``work(progress)`` in the worker; then *on_done(value)* or *on_error(exc)* on the GUI thread."""
        self._running += 1
        dialog = self._dialog()
        dialog.setLabelText(title)
        dialog.setRange(0, 0)
        dialog.show()

        def done(value: Any) -> None:
            self._settle()
            on_done(value)

        def failed(exc: BaseException) -> None:
            self._settle()
            on_error(exc)

        self._runner.submit(lambda: work(lambda *stage: emit(self.progressed, *stage)), done, failed)

    def wait(self, timeout_ms: int = 30000) -> bool:
        return self._runner.wait(timeout_ms)

    def _dialog(self) -> QProgressDialog:
        if self.dialog is None:
            self.dialog = QProgressDialog(self._parent)
            self.dialog.setWindowTitle("Model work")
            self.dialog.setCancelButtonText("Hide")  # the work cannot be interrupted; it goes on
            self.dialog.setMinimumDuration(0)
            self.dialog.setAutoClose(False)
            self.dialog.setAutoReset(False)
        return self.dialog

    def _show_progress(self, stage: str, done: int, total: int) -> None:
        if self.dialog is not None:
            self.dialog.setRange(0, max(total, 1))
            self.dialog.setValue(min(done, max(total, 1)))
            self.dialog.setLabelText(f"{stage}: {done} of {total}")

    def _settle(self) -> None:
        self._running -= 1
        if self._running == 0 and self.dialog is not None:
            self.dialog.hide()
