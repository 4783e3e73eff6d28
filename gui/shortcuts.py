"""Actions of the review app: each one is in the menu bar with its keys, and the
shortcut overview (F1 or ?) lists them all from the same definitions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QMainWindow, QTableWidget, QTableWidgetItem, QVBoxLayout

# Keys the queue table handles itself once it has the keyboard (listed in the overview).
QUEUE_KEYS = (("Up / Down", "Previous / next item"), ("PgUp / PgDn", "A page up / down"),
              ("Home / End", "First / last loaded item"), ("Enter or Esc in Tag or Comment", "Back to the queue"))


@dataclass(frozen=True)
class ActionSpec:
    """One action: object name, menu, text, keys, what it does."""

    name: str
    menu: str
    text: str
    keys: tuple[str, ...]
    slot: Callable[[], None]
    tip: str = ""


def make_actions(window: QMainWindow, specs: Sequence[ActionSpec]) -> dict[str, QAction]:
    """Create the actions (window-wide shortcuts) and the menu bar; returns them by name."""
    actions: dict[str, QAction] = {}
    menus: dict[str, object] = {}
    for spec in specs:
        action = QAction(spec.text, window)
        action.setObjectName(spec.name)
        action.setShortcuts([QKeySequence(key) for key in spec.keys])
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        keys = " or ".join(spec.keys)
        action.setToolTip(f"{spec.tip or spec.text} ({keys})" if keys else spec.tip or spec.text)
        action.setStatusTip(spec.tip or spec.text)
        action.triggered.connect(spec.slot)
        window.addAction(action)
        if spec.menu not in menus:
            menus[spec.menu] = window.menuBar().addMenu(spec.menu)
        menus[spec.menu].addAction(action)  # type: ignore[attr-defined]
        actions[spec.name] = action
    return actions


def key_text(action: QAction) -> str:
    return " or ".join(sequence.toString(QKeySequence.SequenceFormat.NativeText) for sequence in action.shortcuts())


class ShortcutsDialog(QDialog):
    """Every action with its keys, grouped by menu."""

    def __init__(self, specs: Sequence[ActionSpec], actions: dict[str, QAction], parent: QMainWindow) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        rows = [(spec.menu.replace("&", ""), actions[spec.name].text(), key_text(actions[spec.name]),
                 actions[spec.name].isEnabled()) for spec in specs]
        rows += [("Queue", text, keys, True) for keys, text in QUEUE_KEYS]
        self.table = QTableWidget(len(rows), 3)
        self.table.setHorizontalHeaderLabels(["Menu", "Action", "Keys"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for row, (menu, text, keys, enabled) in enumerate(rows):
            for column, value in enumerate((menu, text if enabled else f"{text} (not for your role)", keys)):
                self.table.setItem(row, column, QTableWidgetItem(value))
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(620, min(720, 60 + 26 * len(rows)))

    def rows(self) -> list[tuple[str, str, str]]:
        """The table's text (tests)."""
        return [tuple(self.table.item(r, c).text() for c in range(3)) for r in range(self.table.rowCount())]  # type: ignore[misc]
