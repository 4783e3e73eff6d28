"""A calm dark theme: images and heatmaps read best on a neutral dark background."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

_COLOURS = {
    QPalette.ColorRole.Window: "#22262b",
    QPalette.ColorRole.WindowText: "#d8dde3",
    QPalette.ColorRole.Base: "#1a1d21",
    QPalette.ColorRole.AlternateBase: "#23272c",
    QPalette.ColorRole.Text: "#d8dde3",
    QPalette.ColorRole.Button: "#2d3238",
    QPalette.ColorRole.ButtonText: "#d8dde3",
    QPalette.ColorRole.Highlight: "#2f6fb3",
    QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.ToolTipBase: "#2d3238",
    QPalette.ColorRole.ToolTipText: "#d8dde3",
    QPalette.ColorRole.PlaceholderText: "#7d8590",
}

STYLE = """
QLabel#paneTitle { color: #9aa4af; font-weight: bold; padding: 2px 4px; }
QLabel#placeholder { color: #c9a04a; background: #181a1d; border: 1px dashed #4a4f56; padding: 16px; }
QLabel#fieldName { color: #8b949e; }
QLabel#counts { color: #9aa4af; padding: 0 6px; }
QLabel#unsavedBanner { color: #1a1d21; background: #e3b341; padding: 4px 6px; font-weight: bold; }
QToolButton { padding: 4px 8px; border: 1px solid #444c56; border-radius: 4px; background: #2d3238; }
QToolButton:hover { background: #373e46; }
QToolButton#decision_confirm { border-color: #e5534b; }
QToolButton#decision_good, QToolButton#decision_good_set { border-color: #57ab5a; }
QTableView { gridline-color: #2d3238; }
QTabWidget::pane { border-top: 1px solid #3a4048; }
"""


def apply_theme(app: QApplication) -> None:
    """Fusion style with the dark palette and a few accents."""
    app.setStyle("Fusion")
    palette = QPalette()
    for role, colour in _COLOURS.items():
        palette.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6e7681"))
    app.setPalette(palette)
    app.setStyleSheet(STYLE)
