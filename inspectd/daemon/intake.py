"""From settled paths to items in the database, each with the bytes it was read with.

A landed file was read once by the settle tracker: its hash is taken from those
bytes, the item is recorded with that hash and the file's identity, and the bytes
wait in memory (up to a budget) and in the spool for the worker, which scores
exactly them. A refused
path (link, FIFO, device, unreadable, undecodable name) is recorded with its error
row at once, so that nothing that lands goes unrecorded.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ..config import WatchFolder
from ..db import STATE_PENDING, STATE_SCORING, Database
from ..hashing import bytes_sha256
from .landing import Signature, display_path
from .settle import Landed, Refused
from .spool import Spool

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


@dataclass(frozen=True)
class Content:
    """The bytes an item was taken in with, and the file's signature at the time
    (None when the file on disk is no longer the one those bytes came from)."""

    data: bytes
    signature: Signature | None


class ContentCache:
    """Bytes of taken-in items waiting to be scored, oldest dropped beyond a budget
    (the worker then reads the file again and checks its hash)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[int, Content] = OrderedDict()
        self._size = 0

    def put(self, item_id: int, content: Content) -> None:
        if len(content.data) > self.max_bytes:
            return
        self._items[item_id] = content
        self._size += len(content.data)
        while self._size > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._size -= len(dropped.data)

    def pop(self, item_id: int) -> Content | None:
        content = self._items.pop(item_id, None)
        if content is not None:
            self._size -= len(content.data)
        return content


def take_in(db: Database, outcome: Landed | Refused, cache: ContentCache, spool: Spool) -> int | None:
    """Record one outcome of the settle tracker; returns the new item id, or None when
    the file was already recorded. DatabaseError propagates (nothing is recorded)."""
    signature = outcome.signature if isinstance(outcome, Refused) else outcome.snapshot.signature
    digest = bytes_sha256(outcome.snapshot.data) if isinstance(outcome, Landed) else None
    name = display_path(outcome.path)
    error = f"{name}: {outcome.reason}" if isinstance(outcome, Refused) else None
    if digest is not None:
        spool.put(name, digest, outcome.snapshot.data)
    item_id, created = db.add_item(name, signature.size, signature.mtime_ns, digest, outcome.folder.product,
                                   outcome.folder.station, ctime_ns=signature.ctime_ns, inode=signature.inode,
                                   error=error)
    if not created:
        known = db.get_item(item_id)
        if known is None or known.state not in (STATE_PENDING, STATE_SCORING):
            spool.discard(name, digest)  # recorded long ago: nothing waits for these bytes
        return None
    if error is not None:
        log.error("item %d: %s", item_id, error)
        return item_id
    cache.put(item_id, Content(outcome.snapshot.data, signature))
    log.debug("intake %s -> item %d (%s)", name, item_id, outcome.folder.product)
    return item_id
