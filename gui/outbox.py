"""Decisions on their way to the database: kept until stored, never dropped.

Every decision goes into the :class:`Outbox` first.  A background thread stores the
entries in order; while the database is locked or unreachable it waits and tries
again, for as long as it takes (each attempt is short, so closing the app never
hangs on it).  The queue is mirrored in a :class:`Journal` file, so decisions that
are still unsaved when the app is closed are sent when it next starts on this PC.

An entry the database refuses for good (its item was deleted, its undo target was
never stored) is reported through ``rejected``; nothing is dropped silently.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from gui.decisions import Outcome, PendingWrite
from gui.qt_compat import emit
from inspectd.db import DatabaseBusyError
from inspectd.errors import DatabaseError

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.5, 1.0, 2.0, 2.0, 5.0)  # then every 5 s


def default_journal_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "inspectd"


def is_transient(exc: BaseException) -> bool:
    """True for failures that pass: a lock, a full disk, a lost connection, a server restarting."""
    if isinstance(exc, DatabaseBusyError):
        return True
    if isinstance(exc, DBAPIError):  # not IntegrityError and the like: those do not pass
        return exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError))
    return False


class Journal:
    """The unsaved decisions of one app instance, in a JSON file next to a lock file.

    Files of instances that are no longer running (their lock is free) are taken over
    at start, so decisions kept at closing time are sent by the next instance.
    """

    def __init__(self, directory: Path, database_url: str) -> None:
        self.directory = directory
        self._prefix = "unsaved-" + hashlib.sha256(database_url.encode()).hexdigest()[:12]
        self.error: str | None = None
        self._lock_handle = None
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = directory / f"{self._prefix}-{token}.json"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_handle = (directory / f"{self._prefix}-{token}.lock").open("w")
            fcntl.flock(self._lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.error = f"cannot keep unsaved decisions in {directory}: {exc.strerror or exc}"
            log.error("%s", self.error)

    def take_over(self) -> list[PendingWrite]:
        """Entries left by instances that are not running any more (their files are removed)."""
        entries: list[PendingWrite] = []
        if self.error is not None:
            return entries
        for lock_path in sorted(self.directory.glob(f"{self._prefix}-*.lock")):
            if lock_path.name == self.path.with_suffix(".lock").name:
                continue
            with lock_path.open("a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # another instance is running
                data_path = lock_path.with_suffix(".json")
                entries.extend(self._read(data_path))
                data_path.unlink(missing_ok=True)
                lock_path.unlink(missing_ok=True)
        return entries

    @staticmethod
    def _read(path: Path) -> list[PendingWrite]:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            kept = path.with_suffix(".unreadable")
            path.replace(kept)
            log.error("unsaved decisions in %s cannot be read (%s); the file is kept as %s", path, exc, kept)
            return []
        entries = []
        for data in raw.get("entries", []):
            try:
                entries.append(PendingWrite.from_json(data))
            except (TypeError, ValueError) as exc:
                log.error("an unsaved decision in %s is not valid and is skipped: %s (%r)", path, exc, data)
        return entries

    def save(self, entries: list[PendingWrite]) -> None:
        """Write *entries* (atomically); an empty list removes the file."""
        if self.error is not None and self._lock_handle is None:
            return
        try:
            if not entries:
                self.path.unlink(missing_ok=True)
                return
            temporary = self.path.with_suffix(".tmp")
            with temporary.open("w", encoding="utf-8") as handle:
                json.dump({"entries": [entry.to_json() for entry in entries]}, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
            self.error = None
        except OSError as exc:
            self.error = f"cannot keep unsaved decisions in {self.path}: {exc.strerror or exc}"
            log.error("%s", self.error)

    def close(self) -> None:
        """Release the lock; the data file stays for the next instance when it holds entries."""
        if self._lock_handle is not None:
            if not self.path.exists():
                Path(self._lock_handle.name).unlink(missing_ok=True)
            self._lock_handle.close()
            self._lock_handle = None


class Outbox(QObject):
    """Stores :class:`PendingWrite` entries in order from a background thread, retrying."""

    changed = Signal()  # the number of entries or the waiting state changed
    written = Signal(object)  # Outcome
    rejected = Signal(object, str)  # PendingWrite, why the database refused it

    def __init__(self, apply: Callable[[PendingWrite], Outcome], journal: Journal | None = None,
                 parent: QObject | None = None, retry_delays: tuple[float, ...] = RETRY_DELAYS_S) -> None:
        super().__init__(parent)
        self._apply, self._journal, self._delays = apply, journal, retry_delays
        self._entries: list[PendingWrite] = []
        self._in_flight: str | None = None
        self._condition = threading.Condition()
        self._stopping = False
        self._waiting_since: float | None = None
        self.last_error: str = ""
        self._thread: threading.Thread | None = None

    # --- the GUI side ---------------------------------------------------------------

    def start(self) -> list[PendingWrite]:
        """Start storing; returns the entries taken over from earlier instances (queued first)."""
        inherited = self._journal.take_over() if self._journal is not None else []
        with self._condition:
            self._entries[:0] = inherited
            self._persist()
        # A daemon thread: the process never waits for a write stuck in the driver.
        self._thread = threading.Thread(target=self._run, name="inspectd-outbox", daemon=True)
        self._thread.start()
        if inherited:
            emit(self.changed)
        return inherited

    def submit(self, entry: PendingWrite) -> None:
        with self._condition:
            self._entries.append(entry)
            self._persist()
            self._condition.notify_all()
        emit(self.changed)

    def cancel(self, client_id: str) -> bool:
        """Withdraw an entry that is not being written yet; False if it is (or is gone)."""
        with self._condition:
            for index, entry in enumerate(self._entries):
                if entry.client_id == client_id and client_id != self._in_flight:
                    del self._entries[index]
                    self._persist()
                    break
            else:
                return False
        emit(self.changed)
        return True

    def entries(self) -> list[PendingWrite]:
        with self._condition:
            return list(self._entries)

    def find(self, client_id: str) -> PendingWrite | None:
        with self._condition:
            return next((entry for entry in self._entries if entry.client_id == client_id), None)

    @property
    def count(self) -> int:
        with self._condition:
            return len(self._entries)

    @property
    def waiting_s(self) -> float | None:
        """How long the head entry has been failing (None: not waiting)."""
        since = self._waiting_since
        return None if since is None else time.monotonic() - since

    def reason(self) -> str:
        """Why the head entry is waiting, in words for the operator ("" when it is not)."""
        if self.waiting_s is None:
            return ""
        text = self.last_error.lower()
        if "locked" in text or "busy" in text:
            return "the database is locked by another program"
        if "full" in text:
            return "the database disk is full"
        return "the database cannot be reached"

    @property
    def journal_error(self) -> str | None:
        return self._journal.error if self._journal is not None else "decisions are not kept on disk"

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop the thread (after the attempt in flight, at most *timeout_s*); entries stay journaled."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        stopped = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            stopped = not self._thread.is_alive()
        if self._journal is not None:
            with self._condition:
                self._persist()
            self._journal.close()
        return stopped

    # --- the thread -------------------------------------------------------------------

    def _persist(self) -> None:
        if self._journal is not None:
            self._journal.save(list(self._entries))

    def _run(self) -> None:
        failures = 0
        while True:
            with self._condition:
                while not self._entries and not self._stopping:
                    self._condition.wait()
                if self._stopping:
                    return
                entry = self._entries[0]
                self._in_flight = entry.client_id
            try:
                outcome = self._apply(entry)
            except Exception as exc:  # noqa: BLE001 - sorted below; nothing may kill this thread
                with self._condition:
                    self._in_flight = None
                if is_transient(exc):
                    failures += 1
                    self._wait_after(exc, failures)
                    continue
                self._finish(entry)
                log.error("the database refused %s: %s", entry.describe(), exc)
                emit(self.rejected, entry, str(exc) if isinstance(exc, DatabaseError) else f"{type(exc).__name__}: {exc}")
                continue
            failures = 0
            self._waiting_since, self.last_error = None, ""
            self._finish(entry)
            emit(self.written, outcome)

    def _finish(self, entry: PendingWrite) -> None:
        with self._condition:
            self._in_flight = None
            self._entries = [e for e in self._entries if e.client_id != entry.client_id]
            self._persist()
        emit(self.changed)

    def _wait_after(self, exc: BaseException, failures: int) -> None:
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        self.last_error = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        log.warning("decision not saved yet (attempt %d): %s", failures, self.last_error)
        emit(self.changed)
        delay = self._delays[min(failures, len(self._delays)) - 1]
        with self._condition:
            if not self._stopping:
                self._condition.wait(delay)
