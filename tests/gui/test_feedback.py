"""Overrule and add to the good set: file copy, staging folder, worker and progress wiring."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from gui.feedback import FeedbackJobs, FeedbackResult, add_to_good_set, good_dir, keep_good_image
from gui.main_window import MainWindow
from inspectd.config import Config
from inspectd.db import DECISION_OVERRULE, Database
from inspectd.errors import ProductNameError


@dataclass
class FakeReport:
    version: str
    threshold: float


class FakeEnroll:
    """Records what enrollment was asked to do and reports progress like the engine."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, config: Config, product: str, folder: str, *, add: bool, progress) -> FakeReport:
        files = sorted(path.name for path in Path(folder).iterdir())
        self.calls.append({"product": product, "files": files, "add": add, "folder": Path(folder)})
        for done in range(1, 4):
            progress("features", done, 3)
        return FakeReport(version=f"v{len(self.calls) + 1:04d}", threshold=2.5)


def test_image_is_kept_and_enrolled_alone(config: Config, demo, tmp_path: Path) -> None:
    old = good_dir(config, "tiles")
    old.mkdir(parents=True)
    (old / "earlier.png").write_bytes(b"x")
    image = demo.root / "images" / "good_001.png"
    enroll, stages = FakeEnroll(), []
    result = add_to_good_set(config, "tiles", image, enroll=enroll, progress=lambda *args: stages.append(args))
    assert result == FeedbackResult("tiles", old / "good_001.png", "v0002", 2.5)
    assert (old / "good_001.png").read_bytes() == image.read_bytes()
    [call] = enroll.calls
    assert call["files"] == ["good_001.png"] and call["add"] is True  # the earlier image is not re-processed
    assert not call["folder"].exists()  # the staging folder is removed afterwards
    assert stages[-1] == ("features", 3, 3)
    again = keep_good_image(config, "tiles", image)  # same name twice: never overwritten
    assert again.name == "good_001_1.png"


def test_bad_product_names_and_missing_images_are_refused(config: Config, tmp_path: Path) -> None:
    with pytest.raises(ProductNameError):
        good_dir(config, "../etc")
    with pytest.raises(FileNotFoundError):
        add_to_good_set(config, "tiles", tmp_path / "nope.png", enroll=FakeEnroll())


def test_jobs_run_in_a_worker_with_a_progress_dialog(qtbot, config: Config, demo) -> None:
    enroll = FakeEnroll()
    jobs = FeedbackJobs(config, enroll=enroll)
    seen = []
    jobs.progressed.connect(lambda *args: seen.append(args))
    with qtbot.waitSignal(jobs.finished, timeout=5000) as signal:
        jobs.start("tiles", demo.root / "images" / "good_002.png")
        assert jobs.dialog is not None and jobs.dialog.isVisible()
    assert signal.args[0].version == "v0002"
    qtbot.waitUntil(lambda: len(seen) == 3)
    assert jobs.dialog.value() == 3 and jobs.dialog.maximum() == 3
    assert not jobs.dialog.isVisible() and jobs.running == 0
    with qtbot.waitSignal(jobs.failed, timeout=5000) as failure:
        jobs.start("tiles", demo.root / "images" / "missing.png")
    assert "image not found" in failure.args[0]


def test_g_key_overrules_and_feeds_the_model(qtbot, config: Config, db: Database) -> None:
    enroll = FakeEnroll()
    window = MainWindow(config, db, enroll=enroll)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.current_row() is not None, timeout=5000)
    row = window.current_row()
    with qtbot.waitSignals([window.decisionWritten, window.feedback.finished], timeout=5000):
        qtbot.keyClick(window.table, Qt.Key.Key_G)
    assert db.effective_review(row.item_id).decision == DECISION_OVERRULE
    assert enroll.calls[0]["product"] == row.product and enroll.calls[0]["files"] == [row.file_name]
    assert (good_dir(config, row.product) / row.file_name).is_file()
    assert "v0002" in window.statusBar().currentMessage()
    window.shutdown()


def test_real_incremental_enrollment_with_a_tiny_random_model(config: Config, demo, tmp_path: Path) -> None:
    """The real engine (random resnet18 weights, 64 px): a new version that adds only the new image."""
    import dataclasses
    import warnings

    from inspectd.config import ProductSettings
    from inspectd.enroll import enroll
    from inspectd.synthetic import generate_images
    from inspectd.store import ModelStore

    tiny = dataclasses.replace(config, device="cpu", defaults=ProductSettings(
        backbone="resnet18", weights="random", size=64, embed_dim=64, search="exact"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = enroll(tiny, "tiles", generate_images(tmp_path / "first", 5, 0, size=(64, 64))[0].parent)
        stages: list[tuple[str, int, int]] = []
        result = add_to_good_set(tiny, "tiles", demo.root / "images" / "good_007.png",
                                 progress=lambda *stage: stages.append(stage))
    assert (first.version, result.version) == ("v0001", "v0002")
    model = ModelStore(tiny.store_dir).open("tiles", "v0002")
    assert model.metadata["parent_version"] == "v0001"
    enrolled = [entry["name"] for role in ("bank", "calibration") for entry in model.metadata["images"][role]]
    assert enrolled.count("good_007.png") == 1 and len(enrolled) == 6
    assert stages and stages[0][0] == "features" and stages[0][2] == 1  # only the new image was processed
