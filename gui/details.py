"""The facts of the current item, and the decision bar under them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QAction, QKeyEvent
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gui.data import QueueRow
from gui.decisions import agreement, decision_label
from gui.qt_compat import emit
from gui.widgets import completing_combo
from gui.queue_model import UNSAVED, VERDICT_COLOURS, format_score, format_time
from inspectd.db import VERDICT_ERROR

FIELDS = ("Product", "Station", "Captured", "Scored", "Verdict", "Score", "Raw score", "Threshold",
          "Model", "File", "Review", "Error")
COLUMN_FIELDS = (("Product", "Station", "Captured", "Scored", "Model", "File"),
                 ("Verdict", "Score", "Raw score", "Threshold", "Review", "Error"))


def review_summary(row: QueueRow, unsaved: bool = False) -> str:
    """The item's decision in force: what, whether it agrees with the machine, who, when."""
    review = row.review
    if review is None:
        return f"undo ({UNSAVED})" if unsaved else "not reviewed"
    text = decision_label(review)
    compared = agreement(review.decision, row.verdict)
    if compared is not None:
        text += f" ({compared} with the machine)" if compared == "agrees" else " (overrules the machine)"
    text += f", {review.operator}, {format_time(review.decided_at)}"
    if review.comment:
        text += f" - “{review.comment}”"
    return f"{text} [{UNSAVED}]" if unsaved else text


def describe(row: QueueRow, unsaved: bool = False) -> dict[str, str]:
    """The text of each field for *row*."""
    failed = row.verdict == VERDICT_ERROR
    return {
        "Product": row.product,
        "Station": row.station or "-",
        "Captured": format_time(row.discovered_at),
        "Scored": format_time(row.scored_at),
        "Verdict": row.verdict,
        "Score": "n/a (scoring failed)" if failed or row.normalized_score is None
        else f"{format_score(row.normalized_score)} × threshold",
        "Raw score": "n/a" if row.raw_score is None else format_score(row.raw_score),
        "Threshold": "n/a" if row.threshold is None else format_score(row.threshold),
        "Model": row.model_version or "-",
        "File": row.source_image,
        "Review": review_summary(row, unsaved),
        "Error": row.error or "",
    }


class DetailsPanel(QWidget):
    """Product, station, times, scores, model and review of one item."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.labels: dict[str, QLabel] = {}
        columns = QHBoxLayout(self)
        columns.setContentsMargins(4, 4, 4, 4)
        for names in COLUMN_FIELDS:
            form = QFormLayout()
            form.setHorizontalSpacing(10)
            form.setVerticalSpacing(3)
            for name in names:
                label = QLabel()
                label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
                label.setWordWrap(name in ("File", "Error", "Review"))
                label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
                self.labels[name] = label
                title = QLabel(f"{name}:")
                title.setObjectName("fieldName")
                form.addRow(title, label)
            columns.addLayout(form, 1)
        self.show_row(None)

    def show_row(self, row: QueueRow | None, unsaved: bool = False) -> None:
        values = describe(row, unsaved) if row is not None else dict.fromkeys(FIELDS, "")
        for name, text in values.items():
            self.labels[name].setText(text)
        colour = VERDICT_COLOURS.get(row.verdict) if row is not None else None
        self.labels["Verdict"].setStyleSheet(f"color: {colour.name()}; font-weight: bold;" if colour else "")
        self.labels["Score"].setStyleSheet("font-weight: bold;")
        self.labels["File"].setToolTip(row.path if row is not None else "")


class _ReturnKeys(QObject):
    """Enter and Escape in a field give the keyboard back to the queue."""

    def __init__(self, back: Signal, parent: QObject) -> None:
        super().__init__(parent)
        self._back = back

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt name
        if event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent):
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Escape):
                emit(self._back)
                return True
        return False


class UnknownTag(ValueError):
    """A tag that is not in the configured list."""


class DecisionBar(QWidget):
    """Buttons for the decision actions, a defect tag (from the configured list, with
    completion) and a comment.  ``backToQueue`` (Enter or Escape in either field) asks to
    give the keyboard back to the queue; what was typed stays for the next decision."""

    backToQueue = Signal()

    def __init__(self, actions: Iterable[QAction], tags: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tags = tuple(tags)
        buttons = QHBoxLayout()
        buttons.setSpacing(6)
        self.buttons: dict[str, QToolButton] = {}
        for action in actions:
            button = QToolButton()
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setObjectName(f"decision_{action.objectName()}")
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the keyboard stays in the queue
            self.buttons[action.objectName()] = button
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.tag = completing_combo(self.tags, "defect tag (T)")
        self.tag.setMinimumContentsLength(12)
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("comment (C to type, Enter or Esc to return)")
        for field in (self.tag, self.tag.lineEdit(), self.comment):  # the combo passes keys to its line edit
            field.installEventFilter(_ReturnKeys(self.backToQueue, field))
        inputs = QHBoxLayout()
        inputs.addWidget(QLabel("Tag:"))
        inputs.addWidget(self.tag)
        inputs.addWidget(QLabel("Comment:"))
        inputs.addWidget(self.comment, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addLayout(inputs)

    def tag_value(self) -> str | None:
        """The chosen tag (matched to the list regardless of case); UnknownTag otherwise."""
        text = self.tag.currentText().strip()
        if not text:
            return None
        for tag in self.tags:
            if tag.casefold() == text.casefold():
                return tag
        raise UnknownTag(f"unknown tag {text!r}; choose one of: {', '.join(self.tags)}")

    def take_inputs(self) -> tuple[str | None, str | None]:
        """The tag and comment for a decision; both are cleared for the next item."""
        tag, comment = self.tag_value(), self.comment.text().strip()
        self.clear_inputs()
        return tag, comment or None

    def clear_inputs(self) -> None:
        self.tag.setCurrentIndex(0)
        self.tag.setEditText("")
        self.comment.clear()
