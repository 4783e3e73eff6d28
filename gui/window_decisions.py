"""The main window's decisions: what the operator says about an item, through the outbox.

A decision shows at once (as "not yet saved" until the database has it), then the
window moves on.  U undoes this person's latest decision of this session, also one
the database never saw (it is simply withdrawn); deciding an item someone else
decided asks first.  A mixin of :class:`gui.main_window.MainWindow`.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from gui.data import QueueRow
from gui.decisions import KIND_GOOD_SET, KIND_UNDO, Outcome, PendingWrite, decision_label, new_decision, new_undo
from gui.details import UnknownTag
from gui.qt_compat import emit


class DecisionsMixin:
    """decide / undo / the unsaved counter, for the main window."""

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

