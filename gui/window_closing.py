"""Closing the main window without losing anything: with unsaved decisions it asks
whether to wait until they are stored or to close and keep them on this PC (the next
start sends them); it never hangs on a locked database.  A mixin of
:class:`gui.main_window.MainWindow`.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QMessageBox, QProgressDialog


class ClosingMixin:
    """closeEvent with the unsaved-decision question, for the main window."""

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
