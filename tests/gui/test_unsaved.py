"""Issue 9, point 1: a decision is never lost.  Another process holds a real
``BEGIN EXCLUSIVE`` lock on the real SQLite file: the decision is kept, shown as
"not yet saved" on its row and in a counter, retried in the background for as long
as it takes, and closing the app asks and then waits or keeps it for the next start
(which sends it, signed by whoever made it) without freezing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from gui.decisions import PART_DEFECT, PART_GOOD
from gui.main_window import MainWindow
from gui.queue_model import COLUMNS
from inspectd.config import Config, Person
from inspectd.db import Database, open_database

REVIEW = COLUMNS.index("Review")
LOCKER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()  # hold the lock until told
connection.rollback()
print("released", flush=True)
"""


@contextmanager
def exclusive_lock(db_url: str) -> Iterator[Callable]:
    """Another process holds BEGIN EXCLUSIVE on the database file; call the yielded function to release."""
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, db_url.removeprefix("sqlite:///")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert locker.stdout.readline().strip() == "locked"

    def release() -> None:
        if locker.poll() is None:
            locker.stdin.write("\n")
            locker.stdin.flush()
            assert locker.stdout.readline().strip() == "released"
            locker.wait(timeout=10)

    try:
        yield release
    finally:
        release()


def reviews_in_db(db_url: str, item_id: int) -> list:
    with open_database(db_url, create=False) as other:
        return other.review_history(item_id)


def open_window(qtbot, config: Config, db: Database, person: Person | None = None) -> MainWindow:
    window = MainWindow(config, db, person=person)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.current_row() is not None, timeout=5000)
    return window


def test_a_decision_under_a_long_lock_is_kept_shown_and_stored_later(qtbot, config: Config, db: Database) -> None:
    window = open_window(qtbot, config, db)
    first, second = window.model.row_at(0), window.model.row_at(1)
    with exclusive_lock(config.database_url) as release:
        qtbot.keyClick(window.table, Qt.Key.Key_O)
        qtbot.keyClick(window.table, Qt.Key.Key_D)
        assert window.current_row().item_id == window.model.row_at(2).item_id  # the operator goes on at once
        qtbot.waitUntil(lambda: window.outbox.waiting_s is not None, timeout=5000)
        qtbot.wait(6000)  # longer than any retry budget of the old app (10 s total with 5 s busy waits)
        for row, decision in ((first, PART_GOOD), (second, PART_DEFECT)):
            shown = window.model.row_at(window.model.row_of_item(row.item_id))
            assert shown.review is not None and shown.review.decision == decision  # not back to unreviewed
            assert window.model.data(window.model.index(window.model.row_of_item(row.item_id), REVIEW)).startswith("⚠ ")
            assert reviews_in_db(config.database_url, row.item_id) == []  # readers see nothing stored yet
        assert window.unsaved.text() == "⚠ 2 decisions not yet saved"
        assert "locked by another program" in window.unsaved.toolTip() and window.banner.isVisible()
        with qtbot.waitSignals([window.decisionWritten] * 2, timeout=15000):
            release()
    assert [r.decision for r in reviews_in_db(config.database_url, first.item_id)] == [PART_GOOD]
    assert [r.operator for r in reviews_in_db(config.database_url, second.item_id)] == ["tester"]
    assert window.unsaved.text() == "All decisions saved"
    assert not window.model.unsaved(first.item_id)
    assert window.model.data(window.model.index(0, REVIEW)) == "Good part"
    window.shutdown()


def test_closing_with_unsaved_decisions_keeps_them_for_the_next_start(qtbot, config: Config, db: Database) -> None:
    window = open_window(qtbot, config, db, Person("ana"))
    row = window.current_row()
    asked: list[int] = []
    window.ask_unsaved = lambda count: asked.append(count) or "keep"
    with exclusive_lock(config.database_url):
        qtbot.keyClick(window.table, Qt.Key.Key_D)
        qtbot.waitUntil(lambda: window.outbox.waiting_s is not None, timeout=5000)
        started = time.monotonic()
        assert window.close()
        assert time.monotonic() - started < 3.0  # no 33 s freeze: nothing waits for the lock
        assert asked == [1] and not window.isVisible()
        kept = list((config.review.unsaved_dir).glob("unsaved-*.json"))
        assert len(kept) == 1 and '"operator": "ana"' in kept[0].read_text()
    assert reviews_in_db(config.database_url, row.item_id) == []
    # the next start (another operator signs in) sends the kept decision, signed by ana
    again = MainWindow(config, db, person=Person("ben"))
    qtbot.addWidget(again)
    with qtbot.waitSignal(again.decisionWritten, timeout=10000):
        again.show()
    [stored] = reviews_in_db(config.database_url, row.item_id)
    assert (stored.decision, stored.operator) == (PART_DEFECT, "ana")
    assert not list(config.review.unsaved_dir.glob("unsaved-*.json"))
    again.shutdown()


def test_closing_can_wait_until_the_lock_is_gone(qtbot, config: Config, db: Database) -> None:
    window = open_window(qtbot, config, db)
    row = window.current_row()
    window.ask_unsaved = lambda count: "wait"
    with exclusive_lock(config.database_url) as release:
        qtbot.keyClick(window.table, Qt.Key.Key_S)
        assert not window.close()  # waits, the window stays
        qtbot.wait(1500)
        assert window.isVisible() and reviews_in_db(config.database_url, row.item_id) == []
        release()
        qtbot.waitUntil(lambda: not window.isVisible(), timeout=10000)  # closed by itself once saved
    assert [r.decision for r in reviews_in_db(config.database_url, row.item_id)] == ["skip"]


def test_cancel_at_closing_keeps_the_app_open(qtbot, config: Config, db: Database) -> None:
    window = open_window(qtbot, config, db)
    window.ask_unsaved = lambda count: "cancel"
    with exclusive_lock(config.database_url):
        qtbot.keyClick(window.table, Qt.Key.Key_D)
        assert not window.close() and window.isVisible()
        assert window.outbox.count == 1
    qtbot.waitUntil(lambda: window.outbox.count == 0, timeout=10000)
    window.shutdown()


def test_a_decision_the_database_refuses_is_reported_not_dropped_silently(qtbot, config: Config, db: Database) -> None:
    window = open_window(qtbot, config, db)
    row = window.current_row()
    with sqlite3.connect(config.database_url.removeprefix("sqlite:///")) as connection:
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("DELETE FROM items WHERE id = ?", (row.item_id,))  # someone purged it meanwhile
    with qtbot.waitSignal(window.decisionRejected, timeout=10000) as signal:
        qtbot.keyClick(window.table, Qt.Key.Key_D)
    assert f"no item with id {row.item_id}" in signal.args[1]
    assert "refused" in window.statusBar().currentMessage()
    assert window.outbox.count == 0 and window.unsaved.text() == "All decisions saved"
    window.shutdown()


@pytest.fixture(autouse=True)
def no_leftover_journals(config: Config) -> Iterator[None]:
    yield
    leftovers = [path for path in Path(config.review.unsaved_dir).glob("unsaved-*.json")] \
        if config.review.unsaved_dir and Path(config.review.unsaved_dir).exists() else []
    assert not leftovers, f"decisions left unsent: {leftovers}"
