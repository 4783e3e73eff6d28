"""Small widgets shared by the review app's dialogs and bars."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QCompleter, QWidget


def completing_combo(choices: Sequence[str], placeholder: str, *, inline: bool = False,
                     parent: QWidget | None = None) -> QComboBox:
    """An editable combo of *choices* (after an empty entry) with case-insensitive completion:
    inline (the rest of the first match is typed ahead) or a popup of the entries containing the text."""
    combo = QComboBox(parent)
    combo.setEditable(True)
    combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
    combo.addItems(["", *choices])
    completer = QCompleter(list(choices), combo)
    completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
    if inline:
        completer.setCompletionMode(QCompleter.CompletionMode.InlineCompletion)
    else:
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
    combo.setCompleter(completer)
    combo.lineEdit().setPlaceholderText(placeholder)
    return combo
