"""The queue table: whole rows, and Home/End go to the first/last item (QTableView's own
Home/End move between columns, which means nothing in a queue)."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtWidgets import QAbstractItemView, QStyledItemDelegate, QStyleOptionViewItem, QTableView, QWidget

Cursor = QAbstractItemView.CursorAction


class MiddleElided(QStyledItemDelegate):
    """Long camera file names keep both ends ("contami…006.png")."""

    def initStyleOption(self, option: QStyleOptionViewItem,  # noqa: N802 - Qt name
                        index: QModelIndex | QPersistentModelIndex) -> None:
        super().initStyleOption(option, index)
        option.textElideMode = Qt.TextElideMode.ElideMiddle


class QueueTable(QTableView):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._file_delegate = MiddleElided(self)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def moveCursor(self, action: Cursor, modifiers: Qt.KeyboardModifier) -> QModelIndex:  # noqa: N802 - Qt name
        model = self.model()
        if action in (Cursor.MoveHome, Cursor.MoveEnd) and model is not None and model.rowCount():
            row = 0 if action == Cursor.MoveHome else model.rowCount() - 1
            return model.index(row, max(self.currentIndex().column(), 0))
        return super().moveCursor(action, modifiers)

    def elide_in_the_middle(self, column: int) -> None:
        self.setItemDelegateForColumn(column, self._file_delegate)
