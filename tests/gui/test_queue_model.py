"""The lazily fetched queue model."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from functools import partial

from PySide6.QtCore import QModelIndex, Qt

from gui.data import SORT_SCORE, STATE_ALL, QueueFilter, fetch_page, iter_rows
from gui_support import Writer
from gui.queue_model import COLUMNS, ROW_ROLE, QueueModel
from gui.workers import ImmediateRunner, TaskRunner
from inspectd.db import DECISION_CONFIRM_DEFECT, Database

ALL = QueueFilter(review_state=STATE_ALL)


def make_model(db: Database, queue_filter: QueueFilter = ALL, page_size: int = 4) -> QueueModel:
    model = QueueModel(partial(fetch_page, db), ImmediateRunner(), page_size=page_size)
    model.set_filter(queue_filter)
    return model


def loaded_ids(model: QueueModel) -> list[int]:
    return [model.row_at(i).item_id for i in range(model.rowCount())]


def test_model_passes_qtmodeltester(qtmodeltester, db: Database) -> None:
    model = make_model(db)
    qtmodeltester.check(model, force_py=True)
    while model.canFetchMore(QModelIndex()):
        model.fetchMore(QModelIndex())
    qtmodeltester.check(model, force_py=True)
    assert model.rowCount() == len(list(iter_rows(db, ALL)))


def test_pages_are_fetched_on_demand(db: Database) -> None:
    model = make_model(db, page_size=4)
    assert model.rowCount() == 4 and model.canFetchMore()
    model.fetchMore()
    assert model.rowCount() == 8
    while model.canFetchMore():
        model.fetchMore()
    assert loaded_ids(model) == [row.item_id for row in iter_rows(db, ALL)]
    first = model.row_at(0)
    assert model.data(model.index(0, COLUMNS.index("File"))) == first.file_name
    assert model.data(model.index(0, COLUMNS.index("Verdict"))) == first.verdict
    assert model.data(model.index(0, 0), ROW_ROLE) == first
    assert model.headerData(0, Qt.Orientation.Horizontal) == "Time"


def test_live_rows_are_merged_in_order_or_left_to_fetch_more(db: Database) -> None:
    all_rows = list(iter_rows(db, ALL))
    model = make_model(db, page_size=4)
    newest = all_rows[-1]
    early = replace(all_rows[0], item_id=10_000, result_id=10_000, scored_at=all_rows[0].scored_at + timedelta(seconds=1))
    assert model.merge_new([newest, early]) == 1  # the newest lies past the loaded page
    assert loaded_ids(model)[:3] == [all_rows[0].item_id, 10_000, all_rows[1].item_id]
    assert model.merge_new([early]) == 0  # duplicates are ignored
    while model.canFetchMore():
        model.fetchMore()
    assert loaded_ids(model)[-1] == newest.item_id
    later = replace(newest, item_id=10_001, result_id=10_001, scored_at=newest.scored_at + timedelta(hours=1))
    assert model.merge_new([later]) == 1  # everything loaded: appended
    assert loaded_ids(model)[-1] == 10_001


def test_descending_score_order_merges_by_score(db: Database) -> None:
    queue_filter = QueueFilter(review_state=STATE_ALL, sort=SORT_SCORE, descending=True)
    model = make_model(db, queue_filter, page_size=100)
    scored = [model.row_at(i) for i in range(model.rowCount()) if model.row_at(i).normalized_score is not None]
    middle = replace(scored[1], item_id=20_000, result_id=20_000,
                     normalized_score=(scored[1].normalized_score + scored[2].normalized_score) / 2)
    model.merge_new([middle])
    position = model.row_of_item(20_000)
    assert model.row_at(position - 1).item_id == scored[1].item_id
    assert model.row_at(position + 1).item_id == scored[2].item_id


def test_review_updates_change_rows_in_place(qtbot, db: Database) -> None:
    model = make_model(db)
    row = model.row_at(1)
    outcome = Writer(db, "alice").decide(row, DECISION_CONFIRM_DEFECT, tag="spot")
    with qtbot.waitSignal(model.dataChanged) as signal:
        model.set_reviews({row.item_id: outcome.effective})
    assert signal.args[0].row() == 1
    assert model.data(model.index(1, COLUMNS.index("Review"))) == "Defect (spot)"
    assert model.row_at(1).review_state == "reviewed"


def test_pages_load_in_the_background_and_stale_pages_are_dropped(qtbot, db: Database) -> None:
    runner = TaskRunner(threads=2)
    model = QueueModel(partial(fetch_page, db), runner, page_size=4)
    with qtbot.waitSignal(model.pageLoaded, timeout=5000):
        model.set_filter(QueueFilter(review_state=STATE_ALL, product="tiles"))
        model.set_filter(QueueFilter(review_state=STATE_ALL, product="plates"))  # supersedes the first
    qtbot.waitUntil(lambda: model.rowCount() > 0 and not model.loading, timeout=5000)
    runner.wait()
    qtbot.wait(50)
    assert {model.row_at(i).product for i in range(model.rowCount())} == {"plates"}
