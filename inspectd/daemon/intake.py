"""From paths seen in drop folders to pending items in the database.

A camera writes slowly, over the network, or under a temporary name that it renames
at the end. A path is only taken in when its name matches the folder's patterns,
its size and mtime have not changed for the settle time, and its format's end
marker is present (a cheap check of the last bytes; the full decode happens when
scoring). Then its content hash is taken and the item is recorded before scoring.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import WatchFolder
from ..db import Database
from ..hashing import file_sha256
from ..imageio import TAIL_BYTES, sniff_format, truncation

log = logging.getLogger(__name__)


def matches(folder: WatchFolder, path: Path) -> bool:
    """True when `path` belongs to `folder` by its include and ignore patterns."""
    try:
        relative = path.relative_to(folder.path)
    except ValueError:
        return False
    if len(relative.parts) > 1 and not folder.recursive:
        return False
    if any(part.startswith(".") for part in relative.parts):  # hidden files and folders
        return False
    name = path.name.lower()
    if any(fnmatch.fnmatch(name, pattern.lower()) for pattern in folder.ignore):
        return False
    return any(fnmatch.fnmatch(name, pattern.lower()) for pattern in folder.include)


def looks_complete(path: Path) -> bool:
    """The file ends the way its format requires. Unrecognised or empty files count
    as complete: scoring records their error."""
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - TAIL_BYTES))
            tail = handle.read()
    except OSError:
        return False
    kind = sniff_format(head)
    return kind is None or truncation(head, tail, size, kind) is None


@dataclass
class _Watched:
    folder: WatchFolder
    size: int
    mtime_ns: int
    stable_since: float
    first_seen: float


class SettleTracker:
    """Paths waiting for their size and mtime to stop changing."""

    def __init__(self, settle_seconds: float, incomplete_timeout: float = 60.0):
        self.settle_seconds = settle_seconds
        self.incomplete_timeout = incomplete_timeout
        self._watched: dict[Path, _Watched] = {}

    def __len__(self) -> int:
        return len(self._watched)

    def __contains__(self, path: Path) -> bool:
        return path in self._watched

    def touch(self, path: Path, folder: WatchFolder, now: float | None = None) -> None:
        """Start or restart watching a path (an event said it changed)."""
        now = time.monotonic() if now is None else now
        stat = _stat(path)
        if stat is None:
            self._watched.pop(path, None)
            return
        entry = self._watched.get(path)
        if entry is None:
            # A file last written long ago (there before start-up, or renamed in from
            # elsewhere) has already been stable for that long.
            age = max(0.0, time.time() - stat[1] / 1e9)
            self._watched[path] = _Watched(folder, stat[0], stat[1], now - age, now)
        elif (entry.size, entry.mtime_ns) != stat:
            entry.size, entry.mtime_ns, entry.stable_since = stat[0], stat[1], now

    def forget(self, path: Path) -> None:
        self._watched.pop(path, None)

    def ready(self, now: float | None = None) -> list[tuple[Path, WatchFolder, int, int]]:
        """Paths that have been stable long enough and look complete, removed from
        the tracker. Vanished paths are dropped."""
        now = time.monotonic() if now is None else now
        done = []
        for path, entry in list(self._watched.items()):
            stat = _stat(path)
            if stat is None:
                del self._watched[path]
                continue
            if stat != (entry.size, entry.mtime_ns):
                entry.size, entry.mtime_ns, entry.stable_since = stat[0], stat[1], now
                continue
            if now - entry.stable_since < self.settle_seconds:
                continue
            if not looks_complete(path) and now - entry.first_seen < self.incomplete_timeout:
                continue  # stable but unfinished: a writer that pauses; give it time
            del self._watched[path]
            done.append((path, entry.folder, entry.size, entry.mtime_ns))
        return done

    def next_due(self, now: float | None = None) -> float | None:
        """Seconds until the earliest path could become ready (None if none watched)."""
        if not self._watched:
            return None
        now = time.monotonic() if now is None else now
        earliest = min(entry.stable_since for entry in self._watched.values())
        return max(0.0, earliest + self.settle_seconds - now)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return stat.st_size, stat.st_mtime_ns


def take_in(db: Database, path: Path, folder: WatchFolder, size: int, mtime_ns: int) -> int | None:
    """Record one settled file as a pending item; returns the new item id, or None when
    the file was already recorded or vanished meanwhile."""
    try:
        digest = file_sha256(path)
        stat = path.stat()
    except OSError as exc:
        log.warning("%s vanished before intake (%s)", path, exc.strerror or exc)
        return None
    if (stat.st_size, stat.st_mtime_ns) != (size, mtime_ns):
        size, mtime_ns = stat.st_size, stat.st_mtime_ns
    item_id, created = db.add_item(str(path), size, mtime_ns, digest, folder.product, folder.station)
    if created:
        log.debug("intake %s -> item %d (%s)", path, item_id, folder.product)
        return item_id
    return None
