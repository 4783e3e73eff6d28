"""Issue 9, points 2, 3, 5-9, 11 and 12 in the real window: the end of the queue, whose
decisions U may undo, who is working and what their role allows, the keyboard, names
of the actions, menus and shortcuts, sorting and sizes, ERROR items, item history."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication, QDialogButtonBox

from gui.data import STATE_ALL, score_sample
from gui.decisions import PART_DEFECT, PART_GOOD
from gui.history import STATE_IN_FORCE, STATE_UNDO, STATE_UNDONE
from gui.identity import SignInDialog, person_without_asking
from gui.main_window import MainWindow
from gui.queue_model import COLUMNS
from gui.shortcuts import ShortcutsDialog
from inspectd.config import Config, Person, ReviewSettings
from inspectd.db import DECISION_UNDO, VERDICT_ERROR, VERDICT_NG, VERDICT_OK, Database, open_database

REVIEW = COLUMNS.index("Review")
QE = Person("kim", badge="20001", roles=("quality_engineer",))


def open_window(qtbot, config: Config, db: Database, person: Person | None = None) -> MainWindow:
    window = MainWindow(config, db, person=person)
    qtbot.addWidget(window)
    window.show()
    window.activateWindow()
    qtbot.waitUntil(lambda: window.current_row() is not None and not window.model.loading, timeout=5000)
    return window


@pytest.fixture()
def window(qtbot, config: Config, db: Database) -> Iterator[MainWindow]:
    main = open_window(qtbot, config, db)
    yield main
    main.shutdown()


def stored(db_url: str, item_id: int):
    with open_database(db_url, create=False) as other:
        return other.review_history(item_id)


def all_loaded(qtbot, window: MainWindow) -> None:
    while window.model.canFetchMore() or window.model.loading:
        window.model.fetchMore()
        qtbot.waitUntil(lambda: not window.model.loading, timeout=5000)


def decide(qtbot, window: MainWindow, key: Qt.Key) -> None:
    with qtbot.waitSignal(window.decisionWritten, timeout=5000):
        qtbot.keyClick(window.table, key)


def select_item(qtbot, window: MainWindow, predicate) -> None:
    all_loaded(qtbot, window)
    position = next(i for i in range(window.model.rowCount()) if predicate(window.model.row_at(i)))
    window.select_row(position)


# --- point 2: past the end nothing is re-decided ------------------------------------------


def test_after_the_last_item_the_queue_is_done_and_keys_decide_nothing(qtbot, window: MainWindow, config: Config,
                                                                     db: Database, demo) -> None:
    all_loaded(qtbot, window)
    count = window.model.rowCount()
    with qtbot.waitSignals([window.decisionWritten] * count, timeout=20000):
        for _ in range(count):
            qtbot.keyClick(window.table, Qt.Key.Key_D)
    assert window.done and window.current_row() is None
    assert "Queue done" in window.viewer.image_pane.placeholder.text()
    last = window.model.row_at(count - 1)
    for key in (Qt.Key.Key_O, Qt.Key.Key_D, Qt.Key.Key_S):
        qtbot.keyClick(window.table, key)
    qtbot.wait(300)
    assert window.outbox.count == 0
    assert [r.decision for r in stored(config.database_url, last.item_id)] == [PART_DEFECT]  # not re-decided
    assert "nothing to decide" in window.statusBar().currentMessage()
    # a new item that arrives later is selected by itself
    item_id, _ = db.add_item(str(demo.root / "late.png"), 3, 3, "d" * 64, "tiles", "line1")
    db.record_result(item_id, raw_score=3.0, normalized_score=1.5, verdict=VERDICT_NG, model_version="v0001",
                     threshold=2.0, timings=None, heatmap_path=None, anomaly_map_path=None)
    qtbot.waitUntil(lambda: window.current_row() is not None and window.current_row().item_id == item_id,
                    timeout=5000)


# --- point 3: undo is for your own decisions of this session ----------------------------------


def test_undo_never_touches_another_operators_decision(qtbot, config: Config, db: Database) -> None:
    ana = open_window(qtbot, config, db, Person("ana"))
    row = ana.current_row()
    decide(qtbot, ana, Qt.Key.Key_D)
    ana.shutdown()
    ben = open_window(qtbot, config, db, Person("ben"))
    ben.filters.select(state=STATE_ALL)
    qtbot.waitUntil(lambda: ben.model.queue_filter.review_state == STATE_ALL and not ben.model.loading, timeout=5000)
    ben.select_row(ben.model.row_of_item(row.item_id))
    qtbot.keyClick(ben.table, Qt.Key.Key_U)
    qtbot.wait(300)
    assert ben.outbox.count == 0 and "Nothing of yours to undo" in ben.statusBar().currentMessage()
    asked: list[str] = []
    ben.confirm = lambda title, text, yes: asked.append(text) or False
    qtbot.keyClick(ben.table, Qt.Key.Key_O)
    assert asked and "ana decided “Defect”" in asked[0] and ben.outbox.count == 0
    ben.confirm = lambda title, text, yes: True
    ben.select_row(ben.model.row_of_item(row.item_id))
    decide(qtbot, ben, Qt.Key.Key_O)
    first, second = stored(config.database_url, row.item_id)
    assert (first.operator, first.decision, second.operator, second.decision) == ("ana", PART_DEFECT, "ben", PART_GOOD)
    ben.select_row(ben.model.row_of_item(row.item_id))
    qtbot.waitUntil(lambda: any("changing ana's decision" in line.text for line in ben.history.lines), timeout=5000)
    decide(qtbot, ben, Qt.Key.Key_U)  # ben's own decision: undone; ana's is in force again
    assert [r.decision for r in stored(config.database_url, row.item_id)] == [PART_DEFECT, PART_GOOD, DECISION_UNDO]
    assert db.effective_review(row.item_id).operator == "ana"
    ben.shutdown()


# --- point 5: who is working, and what their role allows --------------------------------------


def test_the_app_asks_who_is_working_by_list_or_badge(qtbot) -> None:
    settings = ReviewSettings(operators=(Person("Ana Lima", badge="10442"), QE))
    assert person_without_asking(settings) is None  # people are listed: ask
    dialog = SignInDialog(settings)
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled()
    dialog.badge.setText("99999")
    assert not ok.isEnabled() and "Unknown badge" in dialog.status.text()
    dialog.badge.setText("20001")  # a scanned badge
    assert ok.isEnabled() and dialog.chosen() == QE and "quality engineer" in dialog.status.text()
    dialog.badge.clear()
    dialog.name.setEditText("ana lima")
    assert dialog.chosen().name == "Ana Lima"
    dialog.name.setEditText("i")  # in both names: nobody yet
    assert dialog.chosen() is None and not ok.isEnabled()
    dialog.name.setEditText("kim")  # only one name holds it
    assert dialog.chosen() == QE
    dialog.name.setEditText("Ana Lima")
    dialog.accept()
    assert dialog.person.name == "Ana Lima"
    badge_only = SignInDialog(ReviewSettings(identify="badge", operators=(QE,)))
    qtbot.addWidget(badge_only)
    badge_only.name.setEditText("kim")  # the name field is not offered: a name alone signs nobody in
    assert badge_only.chosen() is None
    os_user = person_without_asking(ReviewSettings(identify="os_user", operators=(Person(os.environ.get("USER") or
                                                                                         "root", roles=("quality_engineer",)),)))
    assert os_user is not None and os_user.may("quality_engineer")


def test_an_operator_cannot_change_the_good_set_and_decisions_carry_the_signed_in_name(
        qtbot, config: Config, db: Database) -> None:
    window = open_window(qtbot, config, db, Person("ana"))
    assert not window.actions["good_set"].isEnabled()
    assert "quality engineer" in window.actions["good_set"].toolTip()
    row = window.current_row()
    qtbot.keyClick(window.table, Qt.Key.Key_G)
    qtbot.wait(300)
    assert window.outbox.count == 0 and stored(config.database_url, row.item_id) == []
    decide(qtbot, window, Qt.Key.Key_D)
    assert stored(config.database_url, row.item_id)[0].operator == "ana"
    assert "Operator: ana (operator)" == window.operator_label.text()
    window.set_person(QE)  # shift change
    assert window.actions["good_set"].isEnabled() and "kim" in window.operator_label.text()
    qtbot.keyClick(window.table, Qt.Key.Key_U)  # ana's decision is not kim's to undo
    qtbot.wait(300)
    assert window.outbox.count == 0 and len(stored(config.database_url, row.item_id)) == 1
    window.shutdown()


# --- point 6: the keyboard ---------------------------------------------------------------------


def test_focus_starts_in_the_queue_and_tag_and_comment_give_it_back(qtbot, window: MainWindow,
                                                                    config: Config) -> None:
    assert QApplication.focusWidget() is window.table
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Down)
    assert window.table.currentIndex().row() == 1
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_End)
    assert window.table.currentIndex().row() == window.model.rowCount() - 1
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Home)
    assert window.table.currentIndex().row() == 0
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_PageDown)
    assert window.table.currentIndex().row() > 0
    window.select_row(0)
    row = window.current_row()
    qtbot.keyClick(window.table, Qt.Key.Key_T)
    assert QApplication.focusWidget() in (window.decision_bar.tag, window.decision_bar.tag.lineEdit())
    qtbot.keyClicks(QApplication.focusWidget(), "CRACK")
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Return)
    assert QApplication.focusWidget() is window.table
    qtbot.keyClick(window.table, Qt.Key.Key_C)
    qtbot.keyClicks(QApplication.focusWidget(), "do not")  # "d" and "o" are typed, not decisions
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Escape)
    assert QApplication.focusWidget() is window.table and window.outbox.count == 0
    decide(qtbot, window, Qt.Key.Key_D)
    [review] = stored(config.database_url, row.item_id)
    assert (review.tag, review.comment) == ("crack", "do not")  # the tag from the configured list


def test_a_tag_outside_the_configured_list_is_refused(qtbot, window: MainWindow) -> None:
    assert [window.decision_bar.tag.itemText(i) for i in range(1, window.decision_bar.tag.count())] == list(
        window.config.review.tags)
    window.decision_bar.tag.setEditText("bogus")
    qtbot.keyClick(window.table, Qt.Key.Key_D)
    qtbot.wait(200)
    assert window.outbox.count == 0 and "unknown tag 'bogus'" in window.statusBar().currentMessage()


# --- point 7: actions say what the operator means ------------------------------------------------


def test_good_part_on_an_ok_item_agrees_with_the_machine(qtbot, window: MainWindow, config: Config, db: Database,
                                                         tmp_path: Path) -> None:
    assert window.actions["confirm"].text() == "Defect" and window.actions["good"].text() == "Good part"
    select_item(qtbot, window, lambda row: row.verdict == VERDICT_OK)  # near the threshold
    near_ok = window.current_row()
    decide(qtbot, window, Qt.Key.Key_O)
    select_item(qtbot, window, lambda row: row.verdict == VERDICT_NG and row.product == near_ok.product)
    false_alarm = window.current_row()
    decide(qtbot, window, Qt.Key.Key_O)
    sample = score_sample(db, near_ok.product)
    assert (sample.agreed, sample.overruled) == (1, 1)
    assert sorted(sample.good) == sorted([near_ok.normalized_score, false_alarm.normalized_score])
    window.filters.select(state=STATE_ALL)
    qtbot.waitUntil(lambda: window.model.queue_filter.review_state == STATE_ALL and not window.model.loading,
                    timeout=5000)
    window.select_row(window.model.row_of_item(near_ok.item_id))
    assert "Good part (agrees with the machine)" in window.details.labels["Review"].text()
    window.export_to(tmp_path / "out.csv")
    qtbot.waitSignal(window.exported, timeout=5000).wait()
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as handle:
        records = {int(r["item_id"]): r for r in csv.DictReader(handle)}
    assert (records[near_ok.item_id]["part"], records[near_ok.item_id]["machine"]) == ("good part", "agrees")
    assert records[false_alarm.item_id]["machine"] == "overrules"


# --- point 8: shortcuts overview and menus -----------------------------------------------------------


@pytest.mark.parametrize("key", [Qt.Key.Key_F1, Qt.Key.Key_Question])
def test_f1_and_question_mark_list_every_action_with_its_keys(qtbot, window: MainWindow, key: Qt.Key) -> None:
    qtbot.keyClick(window.table, key)
    dialogs = [w for w in QApplication.topLevelWidgets() if isinstance(w, ShortcutsDialog) and w.isVisible()]
    assert dialogs
    rows = dialogs[-1].rows()
    for spec in window.specs:
        assert any(window.actions[spec.name].text() in row[1] and row[2] for row in rows), spec.name
    assert ("Review", "Defect", "D") in rows and ("Help", "Keyboard shortcuts", "F1 or ?") in rows
    assert any("not for your role" in row[1] for row in rows)  # the good set, for an operator
    for dialog in dialogs:
        dialog.close()


def test_the_menu_bar_holds_every_action_and_export_says_it_exports_the_filter(window: MainWindow) -> None:
    in_menus = {action.objectName() for menu in window.menuBar().actions() for action in menu.menu().actions()}
    assert in_menus == {spec.name for spec in window.specs}
    assert [menu.text().replace("&", "") for menu in window.menuBar().actions()] == [
        "Review", "Go", "View", "Model", "File", "Help"]
    export = window.actions["export"]
    assert export.text() == "Export the current filter to CSV…" and export.shortcut().toString() == "Ctrl+E"
    window.filters.select(verdict=VERDICT_NG)
    assert "Unreviewed" in window.filter_description() and "NG" in window.filter_description()


# --- point 9: sorting, sizes, scale -------------------------------------------------------------


def test_column_headers_sort_in_the_database_order(qtbot, window: MainWindow) -> None:
    header = window.table.horizontalHeader()
    score = COLUMNS.index("Score")

    def loaded_scores() -> list[float]:
        all_loaded(qtbot, window)
        rows = [window.model.row_at(i) for i in range(window.model.rowCount())]
        return [row.normalized_score if row.normalized_score is not None else float("inf") for row in rows]

    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton,
                     pos=QPoint(header.sectionViewportPosition(score) + 5, header.height() // 2))  # a real click
    qtbot.waitUntil(lambda: window.model.queue_filter.sort == "score", timeout=5000)
    ascending = loaded_scores()
    assert ascending == sorted(ascending) and header.sortIndicatorSection() == score
    header.setSortIndicator(score, Qt.SortOrder.DescendingOrder)
    qtbot.waitUntil(lambda: window.model.queue_filter.descending, timeout=5000)
    assert loaded_scores() == sorted(ascending, reverse=True)
    assert window.filters.sort.currentText() == "Highest score first"
    header.setSortIndicator(COLUMNS.index("File"), Qt.SortOrder.AscendingOrder)
    qtbot.waitUntil(lambda: window.model.queue_filter.sort == "file" and not window.model.loading, timeout=5000)
    all_loaded(qtbot, window)
    names = [window.model.row_at(i).file_name for i in range(window.model.rowCount())]
    assert names == sorted(names) and "By file" in window.filters.sort.currentText()


def test_the_window_fits_a_1024x768_panel_and_the_image_keeps_its_share(qtbot, window: MainWindow) -> None:
    assert window.minimumSizeHint().width() <= 1024 and window.minimumSizeHint().height() <= 768
    for height, share in ((768, 0.45), (560, 0.38)):
        window.resize(1024, height)
        qtbot.waitUntil(lambda: window.height() == height, timeout=2000)
        qtbot.wait(50)
        assert window.width() == 1024
        assert window.viewer.height() >= share * height, (height, window.viewer.height())
    review_right = window.table.columnViewportPosition(REVIEW) + window.table.columnWidth(REVIEW) // 2
    assert review_right < window.table.viewport().width()  # the Review column is in view
    row_height = window.table.rowHeight(0)
    assert row_height >= window.table.fontMetrics().height() + 4


SCALED = textwrap.dedent("""
    import json, os, sys
    from PySide6.QtWidgets import QApplication
    app = QApplication([])
    if float(sys.argv[3]):  # a larger desktop font (what a 4K panel's DPI setting does to text)
        font = app.font()
        font.setPointSizeF(float(sys.argv[3]))
        app.setFont(font)
    from inspectd.config import Config, ReviewSettings
    from inspectd.db import open_database
    from gui.main_window import MainWindow
    from pathlib import Path
    url, unsaved = sys.argv[1], Path(sys.argv[2])
    db = open_database(url, create=False)
    window = MainWindow(Config(database_url=url, review=ReviewSettings(operator="x", unsaved_dir=unsaved)), db)
    window.resize(1024, 768)
    window.show()
    for _ in range(50):
        app.processEvents()
    image = window.grab().toImage()
    print(json.dumps({"ratio": window.devicePixelRatio(), "grab": [image.width(), image.height()],
                      "logical": [window.width(), window.height()], "font_px": window.table.fontMetrics().height(),
                      "row": window.table.verticalHeader().defaultSectionSize()}))
    window.shutdown()
""")


def run_scaled(config: Config, tmp_path: Path, point_size: float = 0, **env: str) -> dict:
    environment = {**os.environ, "QT_QPA_PLATFORM": "offscreen", **env,
                   "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", SCALED, config.database_url, str(tmp_path / "unsaved"),
                           str(point_size)], capture_output=True, text=True, timeout=120, env=environment)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_qt_scale_factor_and_font_dpi_of_a_4k_screen_are_honoured(config: Config, tmp_path: Path) -> None:
    plain = run_scaled(config, tmp_path)
    scaled = run_scaled(config, tmp_path, QT_SCALE_FACTOR="2")
    assert scaled["ratio"] == 2.0
    assert scaled["grab"] == [2 * scaled["logical"][0], 2 * scaled["logical"][1]]  # drawn with twice the pixels
    big_text = run_scaled(config, tmp_path, point_size=20)
    assert big_text["font_px"] >= 1.6 * plain["font_px"]
    for info in (plain, scaled, big_text):
        assert info["row"] >= info["font_px"] + 4  # queue rows grow with their text (no clipped rows)


# --- point 11: ERROR items -------------------------------------------------------------------------


def test_error_items_show_no_zoom_and_no_score(qtbot, window: MainWindow) -> None:
    window.filters.select(verdict=VERDICT_ERROR)
    qtbot.waitUntil(lambda: window.current_row() is not None and window.current_row().verdict == VERDICT_ERROR,
                    timeout=5000)
    qtbot.waitUntil(lambda: window.viewer.images is not None
                    and window.viewer.images.item_id == window.current_row().item_id, timeout=5000)
    assert window.viewer.zoom_label.text() == ""
    labels = window.details.labels
    assert labels["Score"].text() == "n/a (scoring failed)"
    assert "threshold" not in labels["Score"].text() and labels["Threshold"].text() == "n/a"
    assert "%" not in window.viewer.zoom_label.text()


# --- point 12: the history of an item -------------------------------------------------------------


def test_each_item_shows_its_history_including_undone_decisions(qtbot, window: MainWindow) -> None:
    row = window.current_row()
    window.decision_bar.comment.setText("edge chipped")
    decide(qtbot, window, Qt.Key.Key_D)
    decide(qtbot, window, Qt.Key.Key_U)
    decide(qtbot, window, Qt.Key.Key_O)
    window.select_row(window.model.row_of_item(row.item_id))
    qtbot.waitUntil(lambda: len(window.history.lines) == 3, timeout=5000)
    defect, undo, good = window.history.lines
    assert defect.state == STATE_UNDONE and "tester: Defect" in defect.text and "edge chipped" in defect.text
    assert "undone by tester" in defect.text
    assert undo.state == STATE_UNDO and "undo of “Defect”" in undo.text
    assert good.state == STATE_IN_FORCE and "Good part" in good.text
    assert window.info.tabText(1) == "History"
