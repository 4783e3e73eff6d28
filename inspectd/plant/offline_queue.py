"""Scoring on while the database server is unreachable: a local queue that catches up.

While the server cannot be reached, the daemon takes new files in and scores them
as usual, but against this queue (a SQLite file in `state_dir`) instead of the
database: it offers the part of the :class:`~inspectd.db.Database` surface that the
intake and the worker use (`add_item`, `claim_pending`, `record_result`,
`record_error`, `return_to_pending`, `register_model_version`). Outcomes of items
claimed from the database before the outage land here too, so nothing waits in
memory only.

When the server answers again, :meth:`OfflineQueue.drain` writes everything in order: each
local item becomes a database item (its database id is kept here as soon as it is
known, so a crash half-way never records a file twice), then its outcome, with its
MQTT message after the commit like any other result. Local item ids are negative,
so they never meet a database id.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

from ..config import Config, WatchFolder
from ..db import Database, DatabaseUnavailableError, DuplicateResultError
from ..db.engine import is_sqlite
from ..db.records import ItemRecord
from ..db.schema import STATE_DONE, STATE_PENDING, STATE_SCORING, utcnow
from .reporting import Reporting, verdict_for

log = logging.getLogger(__name__)
QUEUE_FILE = "offline-queue.sqlite3"


def offline_queue_path(config: Config) -> Path | None:
    """Where the daemon keeps its local queue; None for SQLite, a file that cannot go away."""
    return None if is_sqlite(config.database_url) else config.state_dir / QUEUE_FILE

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    db_item_id INTEGER,            -- known once the database has the item
    item TEXT,                     -- a file taken in offline (JSON), NULL for a database item
    identity TEXT,                 -- its path, size, times, inode and hash: taken in once
    state TEXT NOT NULL,           -- pending, scoring, done
    attempts INTEGER NOT NULL DEFAULT 0,
    outcome TEXT                   -- what finishes it (JSON), once known
);
CREATE INDEX IF NOT EXISTS entries_identity ON entries (identity);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    registration TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class _Entry:
    id: int
    db_item_id: int | None
    item: dict[str, Any] | None
    state: str
    attempts: int
    outcome: dict[str, Any] | None


class OfflineQueue:
    """The local queue; thread-safe, every change committed before it returns."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")  # outcomes here are recorded results
        self._db.executescript(_SCHEMA)
        # An offline batch cut short by a crash is scored again.
        self._db.execute("UPDATE entries SET state = ? WHERE state = ?", (STATE_PENDING, STATE_SCORING))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- what the intake and the worker use while offline ------------------------------
    def add_item(self, path: str | os.PathLike[str], size: int, mtime_ns: int, sha256: str | None, product: str,
                 station: str, *, ctime_ns: int | None = None, inode: int | None = None,
                 discovered_at: datetime | None = None, error: str | None = None) -> tuple[int, bool]:
        item = {"path": os.fspath(path), "size": size, "mtime_ns": mtime_ns, "sha256": sha256, "product": product,
                "station": station, "ctime_ns": ctime_ns, "inode": inode,
                "discovered_at": (discovered_at or utcnow()).isoformat()}
        identity = json.dumps([item[k] for k in ("path", "size", "mtime_ns", "ctime_ns", "inode", "sha256")])
        with self._write() as db:
            known = db.execute("SELECT id FROM entries WHERE identity = ?", (identity,)).fetchone()
            if known is not None:
                return -known[0], False
            outcome = None if error is None else json.dumps({"kind": "intake_error", "message": error})
            cursor = db.execute("INSERT INTO entries (item, identity, state, outcome) VALUES (?, ?, ?, ?)",
                                (json.dumps(item), identity, STATE_DONE if error else STATE_PENDING, outcome))
            return -int(cursor.lastrowid), True

    def get_item(self, item_id: int) -> ItemRecord | None:
        """A file taken in offline (negative id), or None."""
        entries = self._entries(ids=[-item_id]) if item_id < 0 else []
        return _record(entries[0]) if entries and entries[0].item is not None else None

    def queued_contents(self) -> set[tuple[str, str]]:
        """(path, content hash) of the files taken in offline and not scored yet."""
        return {(entry.item["path"], entry.item["sha256"]) for entry in self._entries()
                if entry.item is not None and entry.outcome is None and entry.item["sha256"]}

    def claim_pending(self, product: str | None, limit: int, *,
                      stations: Collection[str] | None = None) -> list[ItemRecord]:
        """The oldest files taken in offline (all this PC's own: `product` and
        `stations` are accepted for the Database signature and not needed)."""
        with self._write() as db:
            rows = db.execute("SELECT id FROM entries WHERE state = ? AND item IS NOT NULL ORDER BY id LIMIT ?",
                              (STATE_PENDING, limit)).fetchall()
            db.executemany("UPDATE entries SET state = ?, attempts = attempts + 1 WHERE id = ?",
                           [(STATE_SCORING, row[0]) for row in rows])
        return [_record(entry) for entry in self._entries(ids=[row[0] for row in rows])]

    def record_result(self, item_id: int, **fields: Any) -> None:
        fields["scored_at"] = (fields.get("scored_at") or utcnow()).isoformat()
        self._finish(item_id, {"kind": "result", **fields})

    def record_error(self, item_id: int, message: str, **fields: Any) -> None:
        self._finish(item_id, {"kind": "error", "message": message, **fields})

    def return_to_pending(self, item_ids: Sequence[int], *, refund_attempt: bool = True) -> int:
        for item_id in item_ids:
            if item_id < 0:
                with self._write() as db:
                    db.execute("UPDATE entries SET state = ?, attempts = attempts - ? WHERE id = ?",
                               (STATE_PENDING, 1 if refund_attempt else 0, -item_id))
            else:
                self._finish(item_id, {"kind": "return", "refund_attempt": refund_attempt})
        return len(item_ids)

    def register_model_version(self, product: str, version: str, **fields: Any) -> None:
        with self._write() as db:
            db.execute("INSERT INTO models (registration) VALUES (?)",
                       (json.dumps({"product": product, "version": version, **fields}, default=str),))

    # -- catching up -------------------------------------------------------------------
    def depth(self) -> int:
        """Entries not yet written to the database."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])

    def has_work(self) -> bool:
        """Files taken in offline and not scored yet."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM entries WHERE state = ? LIMIT 1", (STATE_PENDING,)).fetchone() \
                is not None

    def drain(self, db: Database, reporting: Reporting, folder_of: Callable[[ItemRecord], WatchFolder | None]
              ) -> int:
        """Write everything to the database, oldest first; returns how many entries.
        A DatabaseError stops it with the rest kept."""
        self._register_models(db)
        written = 0
        for entry in self._entries():
            if entry.state == STATE_SCORING:
                continue  # in the worker's hands right now
            db_item_id = entry.db_item_id
            if db_item_id is None:
                db_item_id = self._add_to_database(db, entry)
                if entry.outcome is not None and entry.outcome["kind"] == "intake_error":
                    item = db.get_item(db_item_id)
                    reporting.refused(item, folder_of(item) if item else None)
            if entry.outcome is not None and entry.outcome["kind"] != "intake_error":
                self._write_outcome(db, db_item_id, entry, reporting, folder_of)
            with self._write() as local:
                local.execute("DELETE FROM entries WHERE id = ?", (entry.id,))
            written += 1
        if written:
            log.info("caught up: %d results and files from the time the database was unreachable are recorded",
                     written)
        return written

    def _add_to_database(self, db: Database, entry: _Entry) -> int:
        item = dict(entry.item)
        error = entry.outcome["message"] if entry.outcome and entry.outcome["kind"] == "intake_error" else None
        db_item_id, _ = db.add_item(item.pop("path"), item.pop("size"), item.pop("mtime_ns"), item.pop("sha256"),
                                    item.pop("product"), item.pop("station"), ctime_ns=item["ctime_ns"],
                                    inode=item["inode"], discovered_at=datetime.fromisoformat(item["discovered_at"]),
                                    error=error)
        with self._write() as local:  # from here on a crash cannot make a second database item
            local.execute("UPDATE entries SET db_item_id = ? WHERE id = ?", (db_item_id, entry.id))
        return db_item_id

    def _write_outcome(self, db: Database, db_item_id: int, entry: _Entry, reporting: Reporting,
                       folder_of: Callable[[ItemRecord], WatchFolder | None]) -> None:
        outcome = dict(entry.outcome)
        kind = outcome.pop("kind")
        if kind == "return":
            db.return_to_pending([db_item_id], refund_attempt=outcome["refund_attempt"])
            return
        item = db.get_item(db_item_id)
        if item is None:
            log.error("item %d of the local queue is gone from the database; its outcome is dropped", db_item_id)
            return
        try:
            if kind == "result":
                outcome["scored_at"] = datetime.fromisoformat(outcome["scored_at"])
                verdict = verdict_for(item, outcome["verdict"], score=outcome["raw_score"],
                                      normalized_score=outcome["normalized_score"], threshold=outcome["threshold"],
                                      model_version=outcome["model_version"], heatmap_path=outcome["heatmap_path"],
                                      image_path=outcome.get("image_path"))
                with reporting.recording(verdict, folder_of(item), item.discovered_at, scored=False):
                    db.record_result(db_item_id, **outcome)
            else:
                message = outcome.pop("message")
                verdict = verdict_for(item, "ERROR", threshold=outcome.get("threshold"),
                                      model_version=outcome.get("model_version"), error=message,
                                      image_path=outcome.get("image_path"))
                with reporting.recording(verdict, folder_of(item), item.discovered_at, scored=False):
                    db.record_error(db_item_id, message, **outcome)
        except DuplicateResultError:
            log.info("item %d already had its result (written before a crash); not written again", db_item_id)

    def _register_models(self, db: Database) -> None:
        with self._lock:
            rows = self._db.execute("SELECT id, registration FROM models ORDER BY id").fetchall()
        for row_id, text in rows:
            registration = json.loads(text)
            db.register_model_version(registration.pop("product"), registration.pop("version"), **registration)
            with self._write() as local:
                local.execute("DELETE FROM models WHERE id = ?", (row_id,))

    # -- helpers -----------------------------------------------------------------------
    def _finish(self, item_id: int, outcome: dict[str, Any]) -> None:
        text = json.dumps(outcome, default=str)
        with self._write() as db:
            if item_id < 0:
                db.execute("UPDATE entries SET state = ?, outcome = ? WHERE id = ?", (STATE_DONE, text, -item_id))
            else:  # a database item claimed before the outage
                db.execute("INSERT INTO entries (db_item_id, state, outcome) VALUES (?, ?, ?)",
                           (item_id, STATE_DONE, text))

    def _entries(self, ids: list[int] | None = None) -> list[_Entry]:
        query = "SELECT id, db_item_id, item, state, attempts, outcome FROM entries"
        with self._lock:
            if ids is None:
                rows = self._db.execute(query + " ORDER BY id").fetchall()
            else:
                rows = [row for i in ids for row in self._db.execute(query + " WHERE id = ?", (i,))]
        return [_Entry(r[0], r[1], json.loads(r[2]) if r[2] else None, r[3], r[4], json.loads(r[5]) if r[5] else None)
                for r in rows]

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One local transaction; a local disk that refuses it is a DatabaseError, so the
        daemon pauses instead of stopping."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise DatabaseUnavailableError(f"the local queue {self.path} is unusable: {exc}") from exc


def _record(entry: _Entry) -> ItemRecord:
    item = entry.item
    return ItemRecord(id=-entry.id, path=item["path"], file_name=PurePath(item["path"]).name, size=item["size"],
                      mtime_ns=item["mtime_ns"], sha256=item["sha256"], product=item["product"],
                      station=item["station"], state=entry.state, attempts=entry.attempts,
                      discovered_at=datetime.fromisoformat(item["discovered_at"]), claimed_at=None, last_error=None)
