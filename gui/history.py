"""The decision history of one item: who decided what, when, with which comment,
including decisions that were undone or replaced, and those not yet saved."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QWidget

from gui.decisions import KIND_UNDO, PendingWrite, agreement, decision_label
from gui.queue_model import UNSAVED, format_time
from inspectd.db import DECISION_UNDO, ReviewRecord

STATE_IN_FORCE = "in force"
STATE_UNDONE = "undone"
STATE_REPLACED = "replaced"
STATE_UNDO = "undo"
STATE_UNSAVED = "unsaved"
COLOURS = {STATE_IN_FORCE: "#e6edf3", STATE_UNDONE: "#8b949e", STATE_REPLACED: "#8b949e", STATE_UNDO: "#a8b1bb",
           STATE_UNSAVED: "#e3b341"}


@dataclass(frozen=True)
class HistoryLine:
    text: str
    state: str


def history_lines(records: Sequence[ReviewRecord], unsaved: Sequence[PendingWrite] = ()) -> list[HistoryLine]:
    """One line per review row (oldest first), then the unsaved decisions."""
    undone_by = {r.undoes_review_id: r for r in records if r.decision == DECISION_UNDO}
    decisions = [r for r in records if r.decision != DECISION_UNDO]
    standing = [r for r in decisions if r.id not in undone_by]
    in_force = standing[-1].id if standing else None
    by_id = {r.id: r for r in records}
    lines: list[HistoryLine] = []
    so_far: list[ReviewRecord] = []  # decisions standing at each point; the last one is in force
    for record in records:
        when = format_time(record.decided_at)
        if record.decision == DECISION_UNDO:
            target = by_id.get(record.undoes_review_id or -1)
            what = decision_label(target) if target else f"review {record.undoes_review_id}"
            so_far = [r for r in so_far if r.id != record.undoes_review_id]
            lines.append(HistoryLine(f"{when}  {record.operator}: undo of “{what}”", STATE_UNDO))
            continue
        previous = so_far[-1] if so_far else None
        so_far.append(record)
        text = f"{when}  {record.operator}: {decision_label(record)}"
        compared = agreement(record.decision, record.verdict)
        if compared is not None:
            text += f" ({compared} with {record.verdict})" if compared == "agrees" else f" (overrules {record.verdict})"
        if previous is not None and previous.operator != record.operator:
            text += f", changing {previous.operator}'s decision"
        if record.comment:
            text += f" - “{record.comment}”"
        if record.id in undone_by:
            undo = undone_by[record.id]
            state = STATE_UNDONE
            text += f"  [undone by {undo.operator}, {format_time(undo.decided_at)}]"
        elif record.id == in_force:
            state = STATE_IN_FORCE
            text += "  [in force]"
        else:
            state = STATE_REPLACED
            text += "  [replaced by a later decision]"
        lines.append(HistoryLine(text, state))
    for entry in unsaved:
        what = "undo" if entry.kind == KIND_UNDO else entry.describe()
        lines.append(HistoryLine(f"{entry.created_at[:19].replace('T', ' ')} UTC  {entry.operator}: {what}  "
                                 f"[{UNSAVED}]", STATE_UNSAVED))
    return lines


class HistoryView(QListWidget):
    """The history lines of the current item."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setAlternatingRowColors(True)
        self.lines: list[HistoryLine] = []

    def show_lines(self, lines: Sequence[HistoryLine]) -> None:
        self.clear()
        self.lines = list(lines)
        if not lines:
            self.addItem("No decision yet.")
        for line in lines:
            item = QListWidgetItem(line.text)
            item.setForeground(QBrush(QColor(COLOURS[line.state])))
            if line.state in (STATE_UNDONE, STATE_REPLACED):
                font = QFont()
                font.setStrikeOut(line.state == STATE_UNDONE)
                item.setFont(font)
            self.addItem(item)
