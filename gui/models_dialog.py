"""Model versions of a product: which one is active, candidates from the good set, the
history of activations; preview a version on the current queue and activate it
(quality engineers only), e.g. to roll back to an earlier one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.data import STATE_UNREVIEWED, QueueFilter, fetch_page
from gui.feedback import ModelJobs
from gui.qt_compat import emit
from gui.queue_model import format_time
from gui.workers import TaskRunner
from inspectd.config import ROLE_QUALITY_ENGINEER, Config, Person
from inspectd.db import ActivationRecord, Database
from inspectd.good_set import Preview, QueueImage, preview
from inspectd.lifecycle import STATE_ACTIVE, STATE_CANDIDATE, STATE_WITHDRAWN, VersionInfo, activate, version_states
from inspectd.store import ModelStore

log = logging.getLogger(__name__)
PREVIEW_LIMIT = 500  # queue items rescored by a preview (the newest first)
COLUMNS = ("Version", "State", "Threshold", "Images", "Created", "Built from", "Added from review")


@dataclass(frozen=True)
class Versions:
    infos: list[VersionInfo]
    history: list[ActivationRecord]


def queue_images(db: Database, config: Config, product: str, limit: int = PREVIEW_LIMIT) -> list[QueueImage]:
    """The product's unreviewed queue (newest first), as a preview rescores it."""
    queue_filter = QueueFilter(review_state=STATE_UNREVIEWED, product=product, descending=True,
                               band=config.review.band_below_threshold)
    return [QueueImage(row.item_id, row.source_image, row.verdict) for row in fetch_page(db, queue_filter, None, limit)]


def preview_text(result: Preview) -> str:
    if not result.queue:
        return f"{result.version}: the queue of this product is empty; nothing to compare."
    return (f"{result.version} (threshold {result.threshold:.4g}) on the current queue: "
            f"{result.flips} of {result.rescored} rescored items would change verdict "
            f"({len(result.to_ok)} NG → OK, {len(result.to_ng)} OK → NG)"
            + (f"; {result.queue - result.rescored} could not be read" if result.rescored < result.queue else "")
            + ".")


class ModelsDialog(QDialog):
    """Versions of one product.  ``activated(product, version)`` after an activation."""

    activated = Signal(str, str)
    loaded = Signal()  # versions (re)loaded (tests wait on it)
    previewed = Signal(object)  # Preview

    def __init__(self, config: Config, db: Database, person: Person, product: str, *, reads: TaskRunner,
                 jobs: ModelJobs, focus_version: str | None = None, intro: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.config, self.db, self.person, self.product = config, db, person, product
        self.store = ModelStore(config.store_dir)
        self._reads, self._jobs, self._focus = reads, jobs, focus_version
        self.versions: Versions | None = None
        self.setWindowTitle(f"Model versions: {product}")
        self.resize(900, 520)
        self.intro = QLabel(intro)
        self.intro.setWordWrap(True)
        self.intro.setVisible(bool(intro))
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.history = QListWidget()
        self.preview_button = QPushButton("&Preview on the current queue")
        self.activate_button = QPushButton("Activate")
        close = QPushButton("Close")
        may = person.may(ROLE_QUALITY_ENGINEER)
        self.activate_button.setToolTip("Make the selected version the one the daemon scores with" if may else
                                        f"{person.name} may not change the active model: that needs the "
                                        "quality engineer role")
        buttons = QHBoxLayout()
        for button in (self.preview_button, self.activate_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.intro)
        layout.addWidget(self.table, 3)
        layout.addWidget(self.summary)
        layout.addWidget(QLabel("Activation history (newest first):"))
        layout.addWidget(self.history, 1)
        layout.addLayout(buttons)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.preview_button.clicked.connect(self.preview_selected)
        self.activate_button.clicked.connect(self.activate_selected)
        close.clicked.connect(self.close)
        self._selection_changed()
        self.reload()

    # --- loading ----------------------------------------------------------------------

    def reload(self) -> None:
        self._reads.submit(lambda: Versions(version_states(self.db, self.store, self.product),
                                            self.db.activation_history(self.product)),
                           self._loaded, lambda exc: self.summary.setText(f"Cannot read the versions: {exc}"))

    def _loaded(self, versions: Versions) -> None:
        self.versions = versions
        self.table.setRowCount(len(versions.infos))
        for row, info in enumerate(reversed(versions.infos)):  # newest first
            cells = (info.version, info.state + (" (unreadable)" if info.error else ""),
                     "-" if info.threshold is None else f"{info.threshold:.4g}", str(info.images),
                     (info.created_at or "")[:16].replace("T", " "), info.parent_version or "",
                     ", ".join(name.rsplit("/", 1)[-1] for name in info.added_from_review))
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, info.version)
                if info.state == STATE_ACTIVE:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(row, column, item)
        self.history.clear()
        for record in reversed(versions.history):
            self.history.addItem(f"{format_time(record.activated_at)}  {record.previous_version or '-'} → "
                                 f"{record.version}  by {record.activated_by}: {record.reason}")
        if not versions.history:
            self.history.addItem("No activation recorded: the newest version is active.")
        focus = self._focus or next((i.version for i in versions.infos if i.state == STATE_ACTIVE), None)
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == focus:
                self.table.selectRow(row)
        self._selection_changed()
        emit(self.loaded)

    # --- selection, preview, activation -------------------------------------------------

    def selected(self) -> VersionInfo | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or self.versions is None:
            return None
        version = self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)
        return next((info for info in self.versions.infos if info.version == version), None)

    def active(self) -> VersionInfo | None:
        if self.versions is None:
            return None
        return next((info for info in self.versions.infos if info.state == STATE_ACTIVE), None)

    def _selection_changed(self) -> None:
        info, active = self.selected(), self.active()
        may = self.person.may(ROLE_QUALITY_ENGINEER)
        self.preview_button.setEnabled(info is not None and info.error is None)
        self.activate_button.setEnabled(may and info is not None and info.state not in (STATE_ACTIVE, STATE_WITHDRAWN)
                                        and info.error is None)
        self.activate_button.setText(f"&Activate {info.version}" if info is not None else "&Activate")
        if info is None:
            self.summary.setText("")
            return
        text = f"<b>{info.version}</b>: {info.state}"
        if info.state == STATE_CANDIDATE:
            text += " (scores nothing until it is activated)"
        if info.state == STATE_WITHDRAWN:
            text += " (built with an image that has left the good set; it cannot be activated)"
        if info.threshold is not None and active is not None and active.threshold is not None and info is not active:
            text += f". Threshold {info.threshold:.4g} (active {active.version}: {active.threshold:.4g})"
        if info.added_from_review:
            text += ". Adds from review: " + ", ".join(name.rsplit("/", 1)[-1] for name in info.added_from_review)
        if info.error:
            text += f". {info.error}"
        self.summary.setText(text + ".")

    def preview_selected(self) -> None:
        info = self.selected()
        if info is None:
            return
        version = info.version

        def work(progress: Callable[[str, int, int], None]) -> Preview:
            return preview(self.config, self.store, self.product, version,
                           queue_images(self.db, self.config, self.product), progress=progress)

        def done(result: Preview) -> None:
            self.summary.setText(self.summary.text() + "<br>" + preview_text(result))
            emit(self.previewed, result)

        self._jobs.start(f"Rescoring the queue of {self.product} with {version}…", work, done,
                         lambda exc: self.summary.setText(f"Preview failed: {exc}"))

    def activate_selected(self) -> None:
        info, active = self.selected(), self.active()
        if info is None or not self.person.may(ROLE_QUALITY_ENGINEER):
            return
        answer = QMessageBox.question(
            self, "Activate model version",
            f"Make {info.version} the active model of {self.product}"
            + (f" (instead of {active.version})" if active is not None else "")
            + "?\n\nThe daemon scores every new image with it from its next batch. "
            "Any earlier version can be activated again later.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
        if answer == QMessageBox.StandardButton.Yes:
            self.activate_version(info.version)

    def activate_version(self, version: str) -> None:
        """Activate *version* in the background (no question asked; tests and the button)."""

        def done(record: ActivationRecord) -> None:
            self._focus = record.version
            self.reload()
            emit(self.activated, self.product, record.version)

        self._reads.submit(lambda: activate(self.db, self.store, self.product, version, self.person.name,
                                            "activated in the review app"),
                           done, self._not_activated)

    def _not_activated(self, exc: BaseException) -> None:
        log.error("activation failed: %s", exc)
        self.summary.setText(f"<b>Not activated:</b> {exc}")
