"""Deciding when a file in a drop folder is complete, by the daemon's own clock.

A camera writes slowly, in chunks, pauses, writes under the final name or renames at
the end, and its clock (hence the file's mtime) may be hours off. So a path is taken
in only when

* its `lstat` signature (size, mtime, ctime, inode) has not changed for the settle
  time as measured by this process's monotonic clock (never by the mtime's age),
* no writer still has it open, where the platform says so (inotify reports a write
  and, later, the close after writing, on local folders), and
* its bytes form a whole image file (see `inspectd.imageformat`).

A file that stays unchanged but incomplete or unreadable for `incomplete_seconds`
is taken in as it is, so that it gets its error row instead of waiting forever.
Links, FIFOs, devices and names that are not valid UTF-8 are never read; they come
out as refusals, each of which becomes an error row.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..config import WatchFolder
from ..imageformat import not_complete
from .landing import (Changed, Signature, Snapshot, Unreadable, Vanished, display_path, name_is_text,
                      not_a_file, read_whole, signature)

log = logging.getLogger(__name__)

# Event types (watchdog's) after which a writer may still be at work, and those that
# say it is done: a close after writing, or a rename into place.
WRITE_EVENTS = frozenset({"modified"})
DONE_EVENTS = frozenset({"closed", "moved"})


_GONE = object()  # the path vanished: drop it without an outcome


@dataclass(frozen=True)
class Landed:
    """A complete (or given-up-on) regular file, read once."""

    path: Path
    folder: WatchFolder
    snapshot: Snapshot


@dataclass(frozen=True)
class Refused:
    """A path that is not read at all; `reason` goes into its error row."""

    path: Path
    folder: WatchFolder
    signature: Signature
    reason: str


@dataclass
class _Entry:
    folder: WatchFolder
    signature: Signature | None
    changed_at: float  # when the signature last changed (or the path was first seen)
    writing: bool = False  # a write was reported and no close after writing yet
    waiting_for: str = "settle time"
    examined: Signature | None = None  # signature whose bytes were found incomplete


class SettleTracker:
    def __init__(self, settle_seconds: float, incomplete_seconds: float, max_bytes: int):
        self.settle_seconds = settle_seconds
        self.incomplete_seconds = incomplete_seconds
        self.max_bytes = max_bytes
        self._entries: dict[Path, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: Path) -> bool:
        return path in self._entries

    def touch(self, path: Path, folder: WatchFolder, event: str | None = None, now: float | None = None) -> None:
        """A path may have changed (an event, or a scan found it)."""
        now = time.monotonic() if now is None else now
        entry = self._entries.get(path)
        if entry is None:
            entry = self._entries[path] = _Entry(folder, signature(path), now)
        if event in WRITE_EVENTS:
            entry.writing = True
        elif event in DONE_EVENTS:
            entry.writing = False
        self._observe(path, entry, now)

    def forget(self, path: Path) -> None:
        self._entries.pop(path, None)

    def waiting(self) -> Counter[str]:
        """How many paths wait, by what they wait for."""
        return Counter(entry.waiting_for for entry in self._entries.values())

    def ready(self, now: float | None = None) -> list[Landed | Refused]:
        """Paths that are complete, or will not become complete; removed from the
        tracker. Vanished paths are dropped."""
        now = time.monotonic() if now is None else now
        done: list[Landed | Refused] = []
        for path, entry in list(self._entries.items()):
            outcome = self._examine(path, entry, now)
            if outcome is not None:
                del self._entries[path]
                if outcome is not _GONE:
                    done.append(outcome)
        return done

    def next_due(self, now: float | None = None) -> float | None:
        """Seconds until some path could be ready (None when nothing is tracked)."""
        if not self._entries:
            return None
        now = time.monotonic() if now is None else now
        due = min(self._due(entry) for entry in self._entries.values())
        return max(0.0, due - now)

    # -- internals -------------------------------------------------------------------
    def _observe(self, path: Path, entry: _Entry, now: float) -> Signature | None:
        current = signature(path)
        if current != entry.signature:
            entry.signature, entry.changed_at, entry.examined = current, now, None
        return current

    def _due(self, entry: _Entry) -> float:
        if entry.writing or entry.examined is not None:
            return entry.changed_at + self.incomplete_seconds
        return entry.changed_at + self.settle_seconds

    def _examine(self, path: Path, entry: _Entry, now: float) -> Landed | Refused | object | None:
        current = self._observe(path, entry, now)
        if current is None:
            log.debug("%s vanished before it settled", display_path(path))
            return _GONE
        quiet = now - entry.changed_at
        if quiet < self.settle_seconds:
            entry.waiting_for = "settle time"
            return None
        gave_up = quiet >= self.incomplete_seconds
        if current.kind != "file":
            return Refused(path, entry.folder, current, not_a_file(path, current.kind))
        if not name_is_text(path):
            return Refused(path, entry.folder, current,
                           "file name is not valid UTF-8 (another code page?): not read; rename the file, "
                           "or mount the share with iocharset=utf8")
        if current.size > self.max_bytes:
            return Refused(path, entry.folder, current,
                           f"file is {current.size} bytes, over the limit of {self.max_bytes} (images.max_bytes)")
        if entry.writing and not gave_up:
            entry.waiting_for = "writer still has the file open"
            return None
        if entry.examined == current and not gave_up:
            return None  # found incomplete already, unchanged since
        try:
            snapshot = read_whole(path, current)
        except Vanished:
            return _GONE
        except Changed:
            entry.changed_at, entry.signature, entry.examined = now, signature(path), None
            return None
        except Unreadable as exc:
            if gave_up:
                return Refused(path, entry.folder, current, str(exc))
            entry.examined, entry.waiting_for = current, str(exc)
            return None
        reason = not_complete(snapshot.data)
        if reason and not gave_up:
            entry.examined, entry.waiting_for = current, reason
            return None
        if reason:
            log.warning("%s unchanged for %.0f s but still incomplete (%s): taking it in as it is",
                        display_path(path), quiet, reason)
        return Landed(path, entry.folder, snapshot)


