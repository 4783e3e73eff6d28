"""Feedback to the model: "overrule and add to the good set".

The image is copied into ``<enroll_dir>/<product>/good/`` (kept for future
enrollments) and the product's current model is extended with it by incremental
enrollment (``add=True``) run on a staging folder that holds only the new image, so
earlier images are not processed again.  The daemon loads the new version itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QProgressDialog, QWidget

from gui.qt_compat import emit
from gui.workers import TaskRunner
from inspectd.config import Config
from inspectd.naming import validate_product_name

Progress = Callable[[str, int, int], None]
EnrollFn = Callable[..., Any]  # inspectd.enroll.enroll


@dataclass(frozen=True)
class FeedbackResult:
    """A finished feedback enrollment."""

    product: str
    kept_as: Path  # the copy in the product's good folder
    version: str
    threshold: float


def good_dir(config: Config, product: str) -> Path:
    """Where a product's good enrollment images are kept."""
    return config.enroll_dir / validate_product_name(product) / "good"


def keep_good_image(config: Config, product: str, image: Path) -> Path:
    """Copy *image* into the product's good folder (never overwriting) and return the copy."""
    if not image.is_file():
        raise FileNotFoundError(f"image not found: {image}")
    folder = good_dir(config, product)
    folder.mkdir(parents=True, exist_ok=True)
    target, number = folder / image.name, 1
    while target.exists():
        target = folder / f"{image.stem}_{number}{image.suffix}"
        number += 1
    shutil.copy2(image, target)
    return target


def default_enroll(*args: Any, **kwargs: Any) -> Any:
    from inspectd.enroll import enroll  # imports torch: only when feedback is used

    return enroll(*args, **kwargs)


def add_to_good_set(config: Config, product: str, image: Path, *, progress: Progress | None = None,
                    enroll: EnrollFn = default_enroll) -> FeedbackResult:
    """Keep *image* as a good image of *product* and extend the product's model with it."""
    kept = keep_good_image(config, product, image)
    with tempfile.TemporaryDirectory(prefix=".feedback-", dir=kept.parent.parent) as staging:
        staged = Path(staging) / kept.name
        try:
            os.link(kept, staged)
        except OSError:
            shutil.copy2(kept, staged)
        report = enroll(config, product, staging, add=True, progress=progress)
    return FeedbackResult(product, kept, report.version, float(report.threshold))


class FeedbackJobs(QObject):
    """Runs feedback enrollments one at a time in a worker, with a progress dialog."""

    progressed = Signal(str, int, int)  # stage, done, total (from the worker thread)
    finished = Signal(object)  # FeedbackResult
    failed = Signal(str)

    def __init__(self, config: Config, parent: QWidget | None = None, enroll: EnrollFn = default_enroll) -> None:
        super().__init__(parent)
        self._config, self._enroll, self._parent = config, enroll, parent
        self._runner = TaskRunner(threads=1, parent=self)
        self._running = 0
        self.dialog: QProgressDialog | None = None
        self.progressed.connect(self._show_progress, Qt.ConnectionType.QueuedConnection)

    @property
    def running(self) -> int:
        """Jobs queued or under way."""
        return self._running

    def start(self, product: str, image: Path) -> None:
        """Queue a feedback enrollment of *image* for *product*."""
        self._running += 1
        dialog = self._dialog()
        dialog.setLabelText(f"Adding {image.name} to the good set of {product}…")
        dialog.show()
        self._runner.submit(
            lambda: add_to_good_set(self._config, product, image, progress=partial(emit, self.progressed),
                                    enroll=self._enroll),
            self._done, self._error,
        )

    def wait(self, timeout_ms: int = 30000) -> bool:
        return self._runner.wait(timeout_ms)

    def _dialog(self) -> QProgressDialog:
        if self.dialog is None:
            self.dialog = QProgressDialog(self._parent)
            self.dialog.setWindowTitle("Updating the model")
            self.dialog.setCancelButtonText("Hide")  # enrollment cannot be interrupted; it goes on
            self.dialog.setMinimumDuration(0)
            self.dialog.setAutoClose(False)
            self.dialog.setAutoReset(False)
            self.dialog.setRange(0, 0)
        return self.dialog

    def _show_progress(self, stage: str, done: int, total: int) -> None:
        if self.dialog is not None:
            self.dialog.setRange(0, max(total, 1))
            self.dialog.setValue(min(done, max(total, 1)))
            self.dialog.setLabelText(f"{stage}: {done} of {total}")

    def _settle(self) -> None:
        self._running -= 1
        if self._running == 0 and self.dialog is not None:
            self.dialog.hide()

    def _done(self, result: FeedbackResult) -> None:
        self._settle()
        emit(self.finished, result)

    def _error(self, exc: BaseException) -> None:
        self._settle()
        emit(self.failed, str(exc))
