"""The review window end to end: keys, auto-advance, undo, persistence, live updates,
placeholders, export, statistics and a rendered screenshot."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from gui.data import STATE_ALL, STATE_UNREVIEWED, QueueFilter, iter_rows
from gui.main_window import MainWindow
from gui.queue_model import COLUMNS
from gui.theme import apply_theme
from inspectd.config import Config
from inspectd.db import (
    DECISION_CONFIRM_DEFECT,
    DECISION_OVERRULE,
    DECISION_SKIP,
    DECISION_UNDO,
    VERDICT_NG,
    Database,
    open_database,
)

SCREENSHOT = Path("/tmp/gui_main_window.png")


@pytest.fixture()
def window(qtbot, config: Config, db: Database) -> Iterator[MainWindow]:
    main = MainWindow(config, db)
    qtbot.addWidget(main)
    main.show()
    main.activateWindow()
    qtbot.waitUntil(lambda: main.current_row() is not None and main.viewer.images is not None, timeout=5000)
    yield main
    main.shutdown()


def press(qtbot, window: MainWindow, key: Qt.Key, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    qtbot.keyClick(window.table, key, modifier)


def wait_written(qtbot, window: MainWindow, count: int = 1) -> None:
    for _ in range(count):
        with qtbot.waitSignal(window.decisionWritten, timeout=5000):
            pass


def history(db_url: str, item_id: int):
    """Review rows of *item_id* read through a separate connection."""
    with open_database(db_url, create=False) as other:
        return other.review_history(item_id)


def test_decision_keys_write_rows_and_advance(qtbot, window: MainWindow, config: Config) -> None:
    rows = [window.model.row_at(i) for i in range(3)]
    window.decision_bar.tag.setEditText("scratch")
    window.decision_bar.comment.setText("edge of tile")
    with qtbot.waitSignals([window.decisionWritten] * 3, timeout=5000):
        press(qtbot, window, Qt.Key.Key_D)
        assert window.current_row().item_id == rows[1].item_id  # advanced at once
        press(qtbot, window, Qt.Key.Key_O)
        press(qtbot, window, Qt.Key.Key_S)
    assert window.current_row().item_id == window.model.row_at(3).item_id
    for row, decision in zip(rows, (DECISION_CONFIRM_DEFECT, DECISION_OVERRULE, DECISION_SKIP)):
        [review] = history(config.database_url, row.item_id)
        assert (review.decision, review.operator, review.verdict, review.model_version, review.threshold) == (
            decision, "tester", row.verdict, row.model_version, row.threshold)
    first = history(config.database_url, rows[0].item_id)[0]
    assert (first.tag, first.comment) == ("scratch", "edge of tile")
    assert history(config.database_url, rows[1].item_id)[0].tag is None  # inputs are cleared
    assert window.model.row_at(0).review.decision == DECISION_CONFIRM_DEFECT
    assert window.model.data(window.model.index(0, COLUMNS.index("Review"))) == "Defect (scratch)"


def test_undo_appends_an_undo_row_and_returns_to_the_item(qtbot, window: MainWindow, config: Config) -> None:
    first = window.current_row()
    with qtbot.waitSignal(window.decisionWritten, timeout=5000):
        press(qtbot, window, Qt.Key.Key_D)
    assert window.current_row().item_id != first.item_id
    with qtbot.waitSignal(window.decisionWritten, timeout=5000) as signal:
        press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.current_row().item_id == first.item_id
    assert signal.args[0].effective is None
    confirm, undo = history(config.database_url, first.item_id)
    assert (confirm.decision, undo.decision, undo.undoes_review_id) == (DECISION_CONFIRM_DEFECT, DECISION_UNDO, confirm.id)
    assert window.model.row_at(0).review is None
    with qtbot.waitSignal(window.decisionWritten, timeout=5000):
        press(qtbot, window, Qt.Key.Key_O)
    window.select_row(0)
    with qtbot.waitSignal(window.decisionWritten, timeout=5000):
        press(qtbot, window, Qt.Key.Key_U)
    assert [review.decision for review in history(config.database_url, first.item_id)] == [
        DECISION_CONFIRM_DEFECT, DECISION_UNDO, DECISION_OVERRULE, DECISION_UNDO]
    assert window.current_row().item_id == first.item_id


def test_auto_advance_skips_decided_rows_and_fetches_the_next_page(qtbot, config: Config, db: Database) -> None:
    window = MainWindow(config, db)
    qtbot.addWidget(window)
    window.resize(1000, 330)  # the table shows fewer rows than a page: no fetching to fill it
    window.show()
    qtbot.waitUntil(lambda: window.current_row() is not None, timeout=5000)
    assert window.model.rowCount() == 10 and window.model.canFetchMore()  # page size 10
    window.select_row(2)
    with qtbot.waitSignal(window.decisionWritten, timeout=5000):
        press(qtbot, window, Qt.Key.Key_S)
    window.select_row(1)
    with qtbot.waitSignal(window.decisionWritten, timeout=5000):
        press(qtbot, window, Qt.Key.Key_D)
    assert window.table.currentIndex().row() == 3  # row 2 is already decided
    window.select_row(9)
    with qtbot.waitSignal(window.decisionWritten, timeout=5000):
        press(qtbot, window, Qt.Key.Key_O)
    qtbot.waitUntil(lambda: window.table.currentIndex().row() == 10, timeout=5000)
    assert window.model.rowCount() > 10
    window.shutdown()


def test_filters_reload_the_queue_and_show_counts(qtbot, window: MainWindow) -> None:
    qtbot.waitUntil(lambda: "(" in window.filters.state.itemText(0), timeout=5000)
    qtbot.waitUntil(lambda: not window.model.canFetchMore() and not window.model.loading, timeout=5000)
    assert window.filters.state.itemText(0) == f"Unreviewed ({window.model.rowCount()})"
    window.filters.select(product="plates")
    qtbot.waitUntil(lambda: window.model.queue_filter.product == "plates" and not window.model.loading, timeout=5000)
    products = {window.model.row_at(i).product for i in range(window.model.rowCount())}
    assert products == {"plates"}
    window.filters.select(product=None, verdict="ERROR")
    qtbot.waitUntil(lambda: window.model.rowCount() == 1 and window.model.row_at(0).verdict == "ERROR", timeout=5000)
    window.filters.select(verdict=None, state=STATE_ALL)
    qtbot.waitUntil(lambda: window.filters.state.itemText(3).startswith("All ("), timeout=5000)
    assert window.model.queue_filter.review_state == STATE_ALL


def test_new_items_from_another_process_appear_live(qtbot, window: MainWindow, config: Config, demo) -> None:
    window.filters.select(sort="newest")  # new items on top
    qtbot.waitUntil(lambda: window.model.queue_filter.descending and window.model.rowCount() > 0, timeout=5000)
    before = window.filters.state.itemText(0)
    image = demo.root / "images" / "good_000.png"
    script = textwrap.dedent("""
        import sys
        from inspectd.db import open_database
        with open_database(sys.argv[1], create=False) as db:
            item_id, _ = db.add_item(sys.argv[2] + ".live", 10, 10, "b" * 64, "tiles", "line7")
            db.record_result(item_id, raw_score=4.0, normalized_score=2.0, verdict="NG", model_version="v0009",
                             threshold=2.0, timings=None, heatmap_path=None, anomaly_map_path=None)
            print(item_id)
    """)
    done = subprocess.run([sys.executable, "-c", script, config.database_url, str(image)],
                          capture_output=True, text=True, timeout=60, check=True)
    new_id = int(done.stdout.strip())
    qtbot.waitUntil(lambda: window.model.row_of_item(new_id) is not None, timeout=4000)  # polled every 0.2 s
    assert window.model.row_of_item(new_id) == 0
    assert window.model.row_at(0).model_version == "v0009"
    qtbot.waitUntil(lambda: window.filters.state.itemText(0) != before, timeout=4000)
    assert window.filters.station.findData("line7") >= 0


def test_missing_files_show_placeholders_with_the_reason(qtbot, window: MainWindow, db: Database, tmp_path) -> None:
    item_id, _ = db.add_item(str(tmp_path / "gone.png"), 5, 5, "c" * 64, "tiles", "line1")
    db.record_result(item_id, raw_score=3.0, normalized_score=1.5, verdict=VERDICT_NG, model_version="v0001",
                     threshold=2.0, timings=None, heatmap_path=str(tmp_path / "gone_heat.png"),
                     anomaly_map_path=str(tmp_path / "gone.npy"))
    window.apply_filter()
    qtbot.waitUntil(lambda: not window.model.loading, timeout=5000)
    while window.model.row_of_item(item_id) is None and window.model.canFetchMore():
        window.model.fetchMore()
        qtbot.waitUntil(lambda: not window.model.loading, timeout=5000)
    with qtbot.waitSignal(window.imagesShown, timeout=5000):
        window.select_row(window.model.row_of_item(item_id))
    image, heatmap = window.viewer.image_pane, window.viewer.heatmap_pane
    assert image.showing_placeholder and heatmap.showing_placeholder
    assert f"file not found: {tmp_path / 'gone.png'}" in image.placeholder.text()
    assert "gone_heat.png" in heatmap.placeholder.text()
    window.filters.select(verdict="ERROR")
    qtbot.waitUntil(lambda: window.current_row() is not None and window.current_row().verdict == "ERROR", timeout=5000)
    qtbot.waitUntil(lambda: window.viewer.images is not None and window.viewer.images.item_id == window.current_row().item_id,
                    timeout=5000)
    assert "cannot decode" in image.placeholder.text()
    assert "scoring failed" in heatmap.placeholder.text()


def test_export_of_the_current_filter(qtbot, window: MainWindow, db: Database, tmp_path: Path) -> None:
    with qtbot.waitSignal(window.decisionWritten, timeout=5000):
        press(qtbot, window, Qt.Key.Key_D)
    window.filters.select(state=STATE_ALL)
    qtbot.waitUntil(lambda: window.model.queue_filter.review_state == STATE_ALL, timeout=5000)
    target = tmp_path / "export.csv"
    with qtbot.waitSignal(window.exported, timeout=5000) as signal:
        window.export_to(target)
    with target.open(newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    expected = list(iter_rows(db, QueueFilter(review_state=STATE_ALL)))
    assert signal.args[0] == len(records) == len(expected) > 10  # all rows, not just the loaded page
    assert [record["decision"] for record in records].count(DECISION_CONFIRM_DEFECT) == 1


def test_statistics_tab_loads_and_answers_what_if(qtbot, window: MainWindow) -> None:
    product = window.current_row().product
    with qtbot.waitSignal(window.decisionWritten, timeout=5000):
        press(qtbot, window, Qt.Key.Key_D)
    window.tabs.setCurrentWidget(window.stats)
    window.stats.product.setCurrentText(product)
    qtbot.waitUntil(lambda: window.stats.sample is not None and bool(window.stats.sample.defects), timeout=5000)
    assert "Scored" in window.stats.counts.text()
    window.stats.slider.setValue(150)
    assert "At threshold 1.50" in window.stats.summary.text()
    assert window.stats.histogram.counts is not None


def test_screenshot_of_the_main_window(qtbot, window: MainWindow, qapp, tmp_path: Path) -> None:
    apply_theme(qapp)
    window.decision_bar.tag.setEditText("crack")
    with qtbot.waitSignals([window.decisionWritten] * 2, timeout=5000):
        press(qtbot, window, Qt.Key.Key_D)
        press(qtbot, window, Qt.Key.Key_O)
    qtbot.waitUntil(lambda: window.filters.state.itemText(2) == "Reviewed (2)", timeout=5000)
    rows = [window.model.row_at(i) for i in range(1, window.model.rowCount())]
    ng = max((row for row in rows if row.verdict == VERDICT_NG), key=lambda row: row.normalized_score)
    with qtbot.waitSignal(window.imagesShown, timeout=5000):
        window.select_row(window.model.row_of_item(ng.item_id))
    qtbot.wait(100)
    for path in (tmp_path / "main_window.png", SCREENSHOT):
        assert window.grab().save(str(path))
    image = QImage(str(tmp_path / "main_window.png"))
    assert (image.width(), image.height()) == (window.width(), window.height())
    pixels = np.frombuffer(image.convertToFormat(QImage.Format.Format_RGB888).constBits(), np.uint8)
    assert pixels.std() > 20  # not a blank window
    assert not window.viewer.image_pane.showing_placeholder
    assert window.viewer.images.outline is not None and not window.viewer.images.outline.isEmpty()
    assert window.model.queue_filter.review_state == STATE_UNREVIEWED
    assert window.model.data(window.model.index(0, COLUMNS.index("Review"))) == "Defect (crack)"
