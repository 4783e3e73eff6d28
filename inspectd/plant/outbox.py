"""A durable first-in first-out queue of messages on the line PC's own disk (SQLite).

A message is *prepared* before its result row is committed and *released* after: so
neither a crash between the two (the message is recovered from the database's answer
at the next start) nor a message for a row that was never committed can happen. Only
released messages are delivered, oldest first; a message leaves the outbox when the
broker has acknowledged it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    ready INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_ready ON outbox (ready, id);
"""


@dataclass(frozen=True)
class Message:
    id: int
    item_id: int
    topic: str
    payload: bytes


class Outbox:
    """Thread-safe; every change is committed before it returns.

    Only `prepare` waits for the disk (fsync): a prepared message survives a power
    cut, and after one :meth:`recover` releases it if its row was committed. So a
    release or a removal lost with the last moments before a power cut costs nothing
    but a repeat (allowed by at-least-once), and they stay off the latency path.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = self._connect("NORMAL")
        self._db.executescript(_SCHEMA)
        self._durable = self._connect("FULL")

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute(f"PRAGMA synchronous = {synchronous}")
        return connection

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._durable.close()

    def prepare(self, item_id: int, topic: str, payload: bytes) -> int:
        """Store a message that is not to be sent yet (its row is not committed)."""
        with self._lock:
            cursor = self._durable.execute("INSERT INTO outbox (item_id, topic, payload) VALUES (?, ?, ?)",
                                           (item_id, topic, payload))
            return int(cursor.lastrowid)

    def release(self, message_id: int) -> None:
        """The row is committed: the message may go."""
        with self._lock:
            self._db.execute("UPDATE outbox SET ready = 1 WHERE id = ?", (message_id,))

    def discard(self, message_id: int) -> None:
        """The row was not committed (another result won, or an error): drop it."""
        self.remove([message_id])

    def recover(self, committed: Callable[[list[int]], set[int]]) -> tuple[int, int]:
        """After a crash: release the prepared messages whose item has a result in the
        database (`committed` answers which of these item ids do), drop the others.
        Returns (released, dropped)."""
        with self._lock:
            prepared = self._db.execute("SELECT id, item_id FROM outbox WHERE ready = 0").fetchall()
        if not prepared:
            return 0, 0
        done = committed(sorted({item_id for _, item_id in prepared}))
        release = [(message_id,) for message_id, item_id in prepared if item_id in done]
        drop = [(message_id,) for message_id, item_id in prepared if item_id not in done]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE outbox SET ready = 1 WHERE id = ?", release)
            self._db.executemany("DELETE FROM outbox WHERE id = ?", drop)
            self._db.execute("COMMIT")
        return len(release), len(drop)

    def ready_after(self, after_id: int, limit: int) -> list[Message]:
        """Released messages with an id above `after_id`, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT id, item_id, topic, payload FROM outbox WHERE ready = 1 AND id > ? "
                                    "ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
        return [Message(row[0], row[1], row[2], bytes(row[3])) for row in rows]

    def remove(self, message_ids: Iterable[int]) -> None:
        """Delivered (acknowledged by the broker): gone for good."""
        ids = [(message_id,) for message_id in message_ids]
        if not ids:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM outbox WHERE id = ?", ids)
            self._db.execute("COMMIT")

    def depth(self) -> int:
        """Messages waiting for the broker (prepared ones included)."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])
