"""The facts of the current item, and the decision bar under them."""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gui.data import QueueRow
from gui.decisions import DEFECT_TAGS
from gui.queue_model import VERDICT_COLOURS, format_score, format_time, review_label

FIELDS = ("Product", "Station", "Captured", "Scored", "Verdict", "Score", "Raw score", "Threshold",
          "Model", "File", "Review", "Error")
COLUMN_FIELDS = (("Product", "Station", "Captured", "Scored", "Model", "File"),
                 ("Verdict", "Score", "Raw score", "Threshold", "Review", "Error"))


def _review_text(row: QueueRow) -> str:
    review = row.review
    if review is None:
        return "not reviewed"
    text = f"{review_label(review)} by {review.operator}, {format_time(review.decided_at)}"
    return f"{text} - “{review.comment}”" if review.comment else text


def describe(row: QueueRow) -> dict[str, str]:
    """The text of each field for *row*."""
    return {
        "Product": row.product,
        "Station": row.station or "-",
        "Captured": format_time(row.discovered_at),
        "Scored": format_time(row.scored_at),
        "Verdict": row.verdict,
        "Score": f"{format_score(row.normalized_score)}  (1.000 = threshold)",
        "Raw score": format_score(row.raw_score),
        "Threshold": format_score(row.threshold),
        "Model": row.model_version or "-",
        "File": row.source_image,
        "Review": _review_text(row),
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
                self.labels[name] = label
                title = QLabel(f"{name}:")
                title.setObjectName("fieldName")
                form.addRow(title, label)
            columns.addLayout(form, 1)
        self.show_row(None)

    def show_row(self, row: QueueRow | None) -> None:
        values = describe(row) if row is not None else dict.fromkeys(FIELDS, "")
        for name, text in values.items():
            self.labels[name].setText(text)
        colour = VERDICT_COLOURS.get(row.verdict) if row is not None else None
        self.labels["Verdict"].setStyleSheet(f"color: {colour.name()}; font-weight: bold;" if colour else "")
        self.labels["Score"].setStyleSheet("font-weight: bold;")
        self.labels["File"].setToolTip(row.path if row is not None else "")


class DecisionBar(QWidget):
    """Buttons for the decision actions, a defect tag and a comment."""

    def __init__(self, actions: Iterable[QAction], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        buttons = QHBoxLayout()
        buttons.setSpacing(6)
        for action in actions:
            button = QToolButton()
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setObjectName(f"decision_{action.objectName()}")
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.tag = QComboBox()
        self.tag.setEditable(True)
        self.tag.setMinimumWidth(170)
        self.tag.addItems(list(DEFECT_TAGS))
        self.tag.lineEdit().setPlaceholderText("defect tag (optional)")
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("comment (optional, C to type, Enter to return)")
        inputs = QHBoxLayout()
        inputs.addWidget(QLabel("Tag:"))
        inputs.addWidget(self.tag)
        inputs.addWidget(QLabel("Comment:"))
        inputs.addWidget(self.comment, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addLayout(inputs)

    def take_inputs(self) -> tuple[str | None, str | None]:
        """The tag and comment for a decision; both are cleared for the next item."""
        tag, comment = self.tag.currentText().strip(), self.comment.text().strip()
        self.tag.setCurrentIndex(0)
        self.tag.setEditText("")
        self.comment.clear()
        return tag or None, comment or None
