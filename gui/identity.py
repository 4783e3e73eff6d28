"""Who is working: asked at start (and at each change of shift), never assumed to be
the OS account of a shared line PC.

``[review] identify`` decides: "auto" asks when people are listed, else uses
``operator`` or the login name; "list" asks for a name (or badge) from the list;
"badge" asks for a badge id only; "os_user" takes the login name.
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from gui.widgets import completing_combo
from inspectd.config import Person, ReviewSettings
from inspectd.identity import ROLE_NAMES, os_user


def person_without_asking(settings: ReviewSettings) -> Person | None:
    """The person when the configuration settles it, else None (the app must ask)."""
    if settings.identify == "os_user":
        return settings.person_named(os_user())
    if settings.identify == "auto" and not settings.operators:
        return settings.person_named(settings.operator.strip() or os_user())
    return None


def roles_text(person: Person) -> str:
    return ", ".join(ROLE_NAMES.get(role, role) for role in person.roles)


class SignInDialog(QDialog):
    """Pick your name from the list, or type or scan your badge id."""

    def __init__(self, settings: ReviewSettings, current: Person | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.person: Person | None = None
        self.setWindowTitle("Sign in: who is working?")
        self.setModal(True)
        self.setMinimumWidth(self.fontMetrics().horizontalAdvance("x") * 60)
        form = QFormLayout()
        # Inline: "Kim" shows "Kim Weber" and Enter signs in (a popup would take the first Enter).
        self.name = completing_combo([person.name for person in settings.operators], "your name", inline=True)
        self.badge = QLineEdit()
        self.badge.setPlaceholderText("type or scan your badge")
        self.badge.setEchoMode(QLineEdit.EchoMode.Password)
        if settings.identify != "badge":
            form.addRow("Name:", self.name)
        form.addRow("Badge:", self.badge)
        self.status = QLabel("Your decisions are signed with your name.")
        self.status.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Start reviewing")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        heading = QLabel("<b>Who is working?</b>" if current is None else
                         f"<b>Change of operator</b> (now: {current.name})")
        layout.addWidget(heading)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self.name.currentTextChanged.connect(self._refresh)
        self.badge.textChanged.connect(self._refresh)
        # Enter signs in (a badge scanner types the id and Enter); the combo would keep it.
        self.name.lineEdit().returnPressed.connect(self.accept)
        self.badge.returnPressed.connect(self.accept)
        self._refresh()
        (self.badge if settings.identify == "badge" else self.name).setFocus()

    def chosen(self) -> Person | None:
        """The listed person the fields name (a badge wins over a typed name)."""
        badge = self.badge.text().strip()
        if badge:
            found = self.settings.person(badge)
            return found if found is not None and found.badge == badge else None
        if self.settings.identify == "badge":
            return None
        typed = self.name.currentText().strip()
        exact = self.settings.person(typed)
        if exact is not None or not typed:
            return exact
        matching = [p for p in self.settings.operators if typed.casefold() in p.name.casefold()]
        return matching[0] if len(matching) == 1 else None  # "kim" is Kim Weber when only she matches

    def _refresh(self) -> None:
        person = self.chosen()
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(person is not None)
        if person is not None:
            self.status.setText(f"{person.name} ({roles_text(person)})")
        elif self.badge.text().strip():
            self.status.setText("Unknown badge.")
        elif self.name.currentText().strip():
            self.status.setText("Not in the list of operators (config.toml, [review] operators).")
        else:
            self.status.setText("Your decisions are signed with your name.")

    def accept(self) -> None:
        self.person = self.chosen()
        if self.person is not None:
            super().accept()


def ask_who_is_working(settings: ReviewSettings, current: Person | None = None,
                       parent: QWidget | None = None) -> Person | None:
    """Show the sign-in dialog; the person, or None if it was cancelled."""
    dialog = SignInDialog(settings, current, parent)
    return dialog.person if dialog.exec() == QDialog.DialogCode.Accepted else None
