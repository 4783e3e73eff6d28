"""The main window's model work: "good part + add to the good set" (asks first, refuses
ERROR items and images already in the good set, builds a candidate) and the model
versions dialog.  A mixin of :class:`gui.main_window.MainWindow`.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from gui.data import QueueRow
from gui.decisions import PendingWrite, new_good_set
from gui.details import UnknownTag
from gui.models_dialog import ModelsDialog
from gui.qt_compat import emit
from inspectd.config import ROLE_QUALITY_ENGINEER
from inspectd.db import VERDICT_ERROR
from inspectd.good_set import Candidate, GoodSetCheck, build_candidate, check_image, keep_image


class ModelsMixin:
    """The good set and the model versions, for the main window."""

    def add_to_good_set(self) -> None:
        """Good part + add the image to the product's good set (quality engineers; asks first)."""
        row = self.current_row()
        if row is None:
            return
        if not self.person.may(ROLE_QUALITY_ENGINEER):
            self._error(f"{self.person.name} may not change a product's good set (quality engineer role)")
            return
        if row.verdict == VERDICT_ERROR:
            self.inform("Not added to the good set",
                        f"{row.file_name} could not be scored (ERROR): it cannot join the good set.")
            return
        if not self._may_redecide(row):
            return
        self.reads.submit(
            lambda: check_image(self.config, self.db, self.store, row.product, row.verdict, Path(row.source_image)),
            lambda check: self._confirm_good_set(row, check),
            lambda exc: self.inform("Not added to the good set", f"{row.file_name}: {exc}"))

    def _confirm_good_set(self, row: QueueRow, check: GoodSetCheck) -> None:
        score = "n/a" if row.normalized_score is None else f"{row.normalized_score:.2f} × threshold"
        if not self.confirm(
                "Add to the good set?",
                f"Add {row.file_name} to the good set of {row.product}?\n\nThe machine said {row.verdict} ({score}). "
                f"This records “Good part” and builds a candidate model: {check.active_version} + this image. "
                f"The candidate scores nothing until a quality engineer activates it after seeing its threshold "
                "and how many queue items it would change.",
                "&Add to the good set"):
            return
        try:
            tag, comment = self.decision_bar.take_inputs()
            kept = keep_image(self.config, row.product, Path(row.source_image), row.item_id)
        except (UnknownTag, OSError) as exc:
            self.inform("Not added to the good set", str(exc))
            return
        self._submit(new_good_set(row, self.person.name, check, str(kept), tag, comment))
        if self.current_row() is not None and self.current_row().item_id == row.item_id:
            self.advance()

    def _build_candidate(self, entry: PendingWrite) -> None:
        product = entry.product or ""
        self.jobs.start(
            f"Building a candidate model of {product} with {entry.file_name}…",
            lambda progress: build_candidate(self.config, self.db, self.store, product, entry.operator,
                                             progress=progress, enroll=self._enroll),
            self._candidate_ready,
            lambda exc: self._error(f"The candidate model of {product} was not built: {exc}"))

    def _candidate_ready(self, candidate: Candidate) -> None:
        self.statusBar().showMessage(
            f"{candidate.product}: candidate {candidate.version} is ready ({candidate.base_version} stays active "
            "until it is activated)", 15000)
        intro = (f"<b>Candidate {candidate.version}</b> of {candidate.product}: {candidate.base_version} + "
                 f"{', '.join(candidate.images)}. Threshold {candidate.base_threshold:.4g} → {candidate.threshold:.4g}. "
                 f"It scores nothing until you activate it; {candidate.base_version} stays active meanwhile.")
        dialog = self.show_models(candidate.product, focus=candidate.version, intro=intro)
        if dialog is not None:
            dialog.loaded.connect(dialog.preview_selected, Qt.ConnectionType.SingleShotConnection)
        emit(self.candidateReady, candidate)

    def show_models(self, product: str | None = None, focus: str | None = None,
                    intro: str = "") -> ModelsDialog | None:
        """The model versions of *product* (default: the current item's)."""
        row = self.current_row()
        product = product or (row.product if row is not None else None) or next(iter(self.store.products()), None)
        if product is None:
            self._error(f"No product has a model in {self.config.store_dir}")
            return None
        if self.models_dialog is not None:
            self.models_dialog.close()
        self.models_dialog = ModelsDialog(self.config, self.db, self.person, product, reads=self.reads,
                                          jobs=self.jobs, focus_version=focus, intro=intro, parent=self)
        self.models_dialog.activated.connect(
            lambda name, version: self.statusBar().showMessage(
                f"{name}: {version} is active; the daemon scores with it from its next batch", 15000))
        self.models_dialog.show()
        return self.models_dialog

    def _refresh_models(self) -> None:
        if self.models_dialog is not None and self.models_dialog.isVisible():
            self.models_dialog.reload()

