"""Issue 9, point 4: the model changes only on purpose and can be changed back.

With a real (tiny, random-weight) model of product "tiles": "good part + add to the
good set" asks first, is refused for ERROR items and for images already in the good
set, builds a *candidate* that scores nothing until a quality engineer activates it
after its preview on the queue; undo takes the image out of the good set again and
returns the product to the version that was active before."""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox

from gui.main_window import MainWindow
from gui.models_dialog import queue_images
from inspectd.active import active_version
from inspectd.config import Config, Person, ProductSettings
from inspectd.db import DECISION_OVERRULE, VERDICT_ERROR, VERDICT_NG, Database
from inspectd.good_set import Preview, good_dir
from inspectd.hashing import file_sha256
from inspectd.lifecycle import STATE_ACTIVE, STATE_CANDIDATE, STATE_WITHDRAWN, state_of
from inspectd.model import ProductModel
from inspectd.store import ModelStore
from inspectd.synthetic import generate_images

pytestmark = pytest.mark.slow
QE = Person("kim", roles=("quality_engineer",))
TINY = ProductSettings(backbone="resnet18", weights="random", layers=("layer1", "layer2"), size=64, embed_dim=64,
                       search="exact", false_alarm_rate=0.2, calibration_fraction=0.3, coreset_ratio=0.2)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """Product "tiles" enrolled once (v0001) from the same good images the demo queue was made of."""
    from inspectd.enroll import enroll

    root = tmp_path_factory.mktemp("tiny")
    goods = generate_images(root / "good", n_good=10, n_defect=0, size=(256, 256), seed=0)
    config = Config(store_dir=root / "models", device="cpu", defaults=TINY, enroll_dir=root / "enroll")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enroll(config, "tiles", goods[0].parent)
    return root / "models", goods


@pytest.fixture()
def qe(qtbot, config: Config, db: Database, tiny_store) -> Iterator[tuple[MainWindow, Config, list]]:
    store_dir, _ = tiny_store
    shutil.copytree(store_dir, config.store_dir)
    config = dataclasses.replace(config, device="cpu", defaults=TINY)
    window = MainWindow(config, db, person=QE)
    qtbot.addWidget(window)
    told: list[str] = []
    window.inform = lambda title, text: told.append(text)
    window.show()
    qtbot.waitUntil(lambda: window.current_row() is not None, timeout=5000)
    yield window, config, told
    if window.models_dialog is not None:
        window.models_dialog.close()
    window.shutdown()


def select(qtbot, window: MainWindow, predicate) -> None:
    while window.model.canFetchMore() or window.model.loading:
        window.model.fetchMore()
        qtbot.waitUntil(lambda: not window.model.loading, timeout=5000)
    window.select_row(next(i for i in range(window.model.rowCount()) if predicate(window.model.row_at(i))))


def back_to_queue(qtbot, window: MainWindow) -> None:
    """The operator clicks the main window again (its shortcuts work where it is active)."""
    window.activateWindow()
    if not window.isActiveWindow():  # the offscreen platform does not hand activation back by itself
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            QApplication.setActiveWindow(window)
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    window.table.setFocus()


def add_item_like(db: Database, source: Path, copy: Path, verdict: str = VERDICT_NG) -> int:
    """A queue item whose image has the bytes of *source* (as a camera would drop it again)."""
    shutil.copyfile(source, copy)
    item_id, _ = db.add_item(str(copy), copy.stat().st_size, copy.stat().st_mtime_ns, file_sha256(copy), "tiles",
                             "line1")
    db.record_result(item_id, raw_score=3.0, normalized_score=1.5, verdict=verdict, model_version="v0001",
                     threshold=2.0, timings=None, heatmap_path=None, anomaly_map_path=None)
    return item_id


def test_good_set_asks_builds_a_candidate_that_waits_for_activation_and_undo_restores(
        qtbot, qe, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    window, config, told = qe
    store = ModelStore(config.store_dir)
    select(qtbot, window, lambda row: row.product == "tiles" and row.verdict == VERDICT_NG
           and not row.file_name.startswith("good"))
    row = window.current_row()
    asked: list[str] = []
    window.confirm = lambda title, text, yes: asked.append(text) or False
    qtbot.keyClick(window.table, Qt.Key.Key_G)
    qtbot.waitUntil(lambda: bool(asked), timeout=5000)
    assert "candidate model: v0001 + this image" in asked[0] and "scores nothing until" in asked[0]
    qtbot.wait(200)
    assert window.outbox.count == 0 and db.review_history(row.item_id) == []  # "no" changes nothing
    assert not good_dir(config, "tiles").exists() or not any(good_dir(config, "tiles").iterdir())

    window.confirm = lambda title, text, yes: True
    with qtbot.waitSignal(window.candidateReady, timeout=120000) as ready:
        qtbot.keyClick(window.table, Qt.Key.Key_G)
    candidate = ready.args[0]
    assert (candidate.version, candidate.base_version) == ("v0002", "v0001")
    [review] = db.review_history(row.item_id)
    assert (review.decision, review.operator) == (DECISION_OVERRULE, "kim")
    [image] = db.good_set_images("tiles")
    assert image.pending and image.candidate_version == "v0002" and Path(image.kept_as).is_file()
    assert active_version(db, store, "tiles").version == "v0001"  # a candidate is not active
    assert state_of(db, store, "tiles", "v0002").state == STATE_CANDIDATE

    dialog = window.models_dialog
    assert dialog is not None and dialog.isVisible() and "Candidate v0002" in dialog.intro.text()
    with qtbot.waitSignal(dialog.previewed, timeout=120000) as previewed:
        pass
    result: Preview = previewed.args[0]
    model = ProductModel.load(store, "tiles", "v0002")
    queue = queue_images(db, config, "tiles")
    scorable = [entry for entry in queue if entry.verdict != VERDICT_ERROR]
    expected = sum(1 for entry in scorable if model.score_images([model.read(entry.path)[1]])[0].verdict != entry.verdict)
    assert result.queue == result.rescored == len(scorable) and result.flips == expected
    assert "would change verdict" in dialog.summary.text()

    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kwargs: QMessageBox.StandardButton.Yes)
    assert dialog.selected().version == "v0002" and dialog.activate_button.isEnabled()
    with qtbot.waitSignal(dialog.activated, timeout=10000) as activated:
        dialog.activate_button.click()
    assert activated.args == ["tiles", "v0002"]
    assert active_version(db, store, "tiles").activation.activated_by == "kim"
    assert active_version(db, store, "tiles").version == "v0002"

    back_to_queue(qtbot, window)
    window.select_row(window.model.row_of_item(row.item_id))
    with qtbot.waitSignal(window.decisionWritten, timeout=10000) as undone:
        qtbot.keyClick(window.table, Qt.Key.Key_U)
    assert undone.args[0].restored.version == "v0001"
    assert active_version(db, store, "tiles").version == "v0001"
    assert not Path(image.kept_as).exists() and not db.good_set_images("tiles", pending_only=True)
    assert state_of(db, store, "tiles", "v0002").state == STATE_WITHDRAWN
    assert [(a.previous_version, a.version) for a in db.activation_history("tiles")] == [
        (None, "v0001"), ("v0001", "v0002"), ("v0002", "v0001")]
    qtbot.waitUntil(lambda: dialog.versions is not None and any(
        info.version == "v0002" and info.state == STATE_WITHDRAWN for info in dialog.versions.infos), timeout=5000)
    for position in range(dialog.table.rowCount()):
        if dialog.table.item(position, 0).text() == "v0002":
            dialog.table.selectRow(position)
    assert not dialog.activate_button.isEnabled()  # a withdrawn version cannot come back
    assert state_of(db, store, "tiles", "v0001").state == STATE_ACTIVE


def test_error_items_and_images_already_in_the_good_set_are_refused(qtbot, qe, db: Database, tiny_store, demo,
                                                                    tmp_path: Path) -> None:
    window, config, told = qe
    window.confirm = lambda title, text, yes: True
    window.filters.select(verdict=VERDICT_ERROR)
    qtbot.waitUntil(lambda: window.current_row() is not None and window.current_row().verdict == VERDICT_ERROR,
                    timeout=5000)
    qtbot.keyClick(window.table, Qt.Key.Key_G)
    assert told and "could not be scored (ERROR): it cannot join the good set" in told[-1]
    window.filters.select(verdict=None)
    _, goods = tiny_store
    enrolled = add_item_like(db, goods[3], tmp_path / "again_good_003.png")
    defect = demo.root / "images" / "scratch_000.png"
    first = add_item_like(db, defect, tmp_path / "cam_a.png")
    twin = add_item_like(db, defect, tmp_path / "cam_b.png")  # the same part dropped twice
    window.apply_filter()
    select(qtbot, window, lambda row: row.item_id == enrolled)
    qtbot.keyClick(window.table, Qt.Key.Key_G)
    qtbot.waitUntil(lambda: len(told) == 2, timeout=5000)
    assert "already in the good set: tiles v0001 was built with it" in told[-1]
    select(qtbot, window, lambda row: row.item_id == first)
    with qtbot.waitSignal(window.candidateReady, timeout=120000):
        qtbot.keyClick(window.table, Qt.Key.Key_G)
    window.models_dialog.close()
    back_to_queue(qtbot, window)
    select(qtbot, window, lambda row: row.item_id == twin)
    qtbot.keyClick(window.table, Qt.Key.Key_G)
    qtbot.waitUntil(lambda: len(told) == 3, timeout=5000)
    assert "already in the good set: added by kim" in told[-1] and "candidate v0002" in told[-1]
    assert len(db.good_set_images("tiles")) == 1  # no duplicate copy, no second entry
    assert [p.name for p in good_dir(config, "tiles").iterdir()] == [f"review-{first:08d}-cam_a.png"]
