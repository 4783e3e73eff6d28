"""Item life cycle: discover, claim, requeue after a crash, return on shutdown.

States: pending -> scoring -> done | error.  ``attempts`` counts claims, so an image
that kills the worker every time is moved to 'error' after ``max_attempts``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import PurePath

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from inspectd.db.exceptions import InvalidValueError
from inspectd.db.products import ensure_product
from inspectd.db.records import ItemRecord
from inspectd.db.results import finish_item
from inspectd.db.schema import (
    STATE_ERROR,
    STATE_PENDING,
    STATE_SCORING,
    VERDICT_ERROR,
    Item,
    Result,
    utcnow,
)
from inspectd.db.session import SessionScope, chunked

log = logging.getLogger(__name__)

# (path, size, mtime_ns, ctime_ns, inode): what a scan knows of a file before reading it.
FileIdentity = tuple[str, int, int, int | None, int | None]

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class ItemOperations(SessionScope):
    """Operations of the watcher and the scoring workers on ``items``."""

    def add_item(
        self,
        path: str | os.PathLike[str],
        size: int,
        mtime_ns: int,
        sha256: str | None,
        product: str,
        station: str,
        *,
        ctime_ns: int | None = None,
        inode: int | None = None,
        discovered_at: datetime | None = None,
        error: str | None = None,
    ) -> tuple[int, bool]:
        """Record a file that landed as a pending item; return (item id, created?).

        *sha256* is the hash of the bytes taken in, or None when nothing could be read.
        A file already recorded is not recorded twice: the same identity, or the same
        content (path, size, mtime, hash) still in place whose inode or ctime changed
        (a chmod, a copy of identical bytes), is the known item, and its stored
        identity is brought up to date so later scans recognise it without reading it.
        The same bytes landing again after the earlier copy was moved away or deleted
        are a new item. With *error*, a new item is recorded finished, with that error
        as its result, in the same transaction (a file that cannot be read at all).
        """
        path = os.fspath(path)
        if sha256 is not None and not _SHA256.fullmatch(sha256):
            raise InvalidValueError(f"sha256 of {path} must be 64 hex digits, got {sha256!r}")
        digest = sha256.lower() if sha256 is not None else None

        def get_or_insert(session: Session) -> tuple[int, bool]:
            existing = _same_content_in_place(session, path, size, mtime_ns, digest)
            if existing is not None:
                existing.ctime_ns, existing.inode = ctime_ns, inode
                return existing.id, False
            ensure_product(session, product)
            now = utcnow()
            item = Item(
                path=path, file_name=PurePath(path).name, size=size, mtime_ns=mtime_ns, ctime_ns=ctime_ns,
                inode=inode, sha256=digest, product=product, station=station,
                discovered_at=discovered_at or now, state=STATE_PENDING, attempts=0, updated_at=now,
            )
            session.add(item)
            session.flush()
            if error is not None:
                finish_item(session, item.id, STATE_ERROR,
                            Result(verdict=VERDICT_ERROR, error=error, image_path=path, scored_at=now))
            return item.id, True

        return self._write_once_more_on_conflict("add_item", get_or_insert)

    def known_identities(self, paths: Iterable[str | os.PathLike[str]]) -> set[FileIdentity]:
        """The identities already recorded for *paths*, so a start-up scan can skip
        those files without reading them."""
        wanted = sorted({os.fspath(path) for path in paths})

        def lookup(session: Session) -> set[FileIdentity]:
            found: set[FileIdentity] = set()
            for chunk in chunked(wanted):
                rows = session.execute(select(Item.path, Item.size, Item.mtime_ns, Item.ctime_ns, Item.inode)
                                       .where(Item.path.in_(chunk)))
                found.update(tuple(row) for row in rows)
            return found

        return self._read("known_identities", lookup) if wanted else set()

    def queued_contents(self) -> set[tuple[str, str]]:
        """(path, content hash) of the items waiting to be scored (pending or scoring)."""

        def lookup(session: Session) -> set[tuple[str, str]]:
            query = select(Item.path, Item.sha256).where(Item.state.in_((STATE_PENDING, STATE_SCORING)),
                                                         Item.sha256.is_not(None))
            return {(path, digest) for path, digest in session.execute(query)}

        return self._read("queued_contents", lookup)

    def get_item(self, item_id: int) -> ItemRecord | None:
        """The item with *item_id*, or None."""

        def load(session: Session) -> ItemRecord | None:
            row = session.get(Item, item_id)
            return None if row is None else ItemRecord.from_row(row)

        return self._read("get_item", load)

    def claim_pending(self, product: str | None, limit: int) -> list[ItemRecord]:
        """Move up to *limit* pending items (oldest first) to 'scoring' for this worker.

        Each claim is a conditional ``UPDATE ... WHERE state='pending'`` whose row count
        proves ownership, so concurrent workers never get the same item; on PostgreSQL
        the candidates are also selected ``FOR UPDATE SKIP LOCKED``.
        """
        if limit <= 0:
            return []

        def claim(session: Session) -> list[ItemRecord]:
            query = select(Item.id).where(Item.state == STATE_PENDING)
            if product is not None:
                query = query.where(Item.product == product)
            query = query.order_by(Item.discovered_at, Item.id).limit(limit).with_for_update(skip_locked=True)
            now = utcnow()
            claimed = [item_id for item_id in session.scalars(query).all() if _mark_scoring(session, item_id, now)]
            return _load_items(session, claimed)

        return self._write("claim_pending", claim)

    def requeue_interrupted(self, max_attempts: int) -> tuple[int, int]:
        """At start-up: items left in 'scoring' by a crash go back to 'pending', or to
        'error' (with an error result) once they were claimed *max_attempts* times.

        Returns (requeued, failed).  Only call this when no other worker is running.
        """
        if max_attempts < 1:
            raise InvalidValueError(f"max_attempts must be >= 1, got {max_attempts}")

        def requeue(session: Session) -> tuple[int, int]:
            stuck = session.execute(select(Item.id, Item.attempts).where(Item.state == STATE_SCORING)).all()
            poison = [(item_id, attempts) for item_id, attempts in stuck if attempts >= max_attempts]
            retry = [item_id for item_id, attempts in stuck if attempts < max_attempts]
            _reset_to_pending(session, retry, refund_attempt=False)
            for item_id, attempts in poison:
                message = f"gave up after {attempts} attempt(s): scoring was interrupted each time (worker crash?)"
                finish_item(session, item_id, STATE_ERROR, Result(verdict=VERDICT_ERROR, error=message, scored_at=utcnow()))
            return len(retry), len(poison)

        requeued, failed = self._write("requeue_interrupted", requeue)
        if requeued or failed:
            log.warning("after an interrupted run: %d item(s) requeued, %d moved to error", requeued, failed)
        return requeued, failed

    def return_to_pending(self, item_ids: Sequence[int], *, refund_attempt: bool = True) -> int:
        """Give claimed ('scoring') items back to the queue; returns how many.

        By default (graceful shutdown, full disk) the claim is not counted as an
        attempt, since the image did not fail; after an unexpected scoring failure
        pass refund_attempt=False so a poison image reaches max_attempts.
        """
        ids = list(item_ids)
        if not ids:
            return 0
        return self._write("return_to_pending",
                           lambda session: _reset_to_pending(session, ids, refund_attempt=refund_attempt))


def _same_content_in_place(session: Session, path: str, size: int, mtime_ns: int,
                           sha256: str | None) -> Item | None:
    """The newest item with this path, size, mtime and hash whose file is still at the
    path (not scored yet, or kept there after scoring), or None."""
    item = session.scalars(
        select(Item).where(Item.path == path, Item.size == size, Item.mtime_ns == mtime_ns,
                           Item.sha256.is_(None) if sha256 is None else Item.sha256 == sha256)
        .order_by(Item.id.desc()).limit(1)
    ).first()
    if item is None:
        return None
    result = session.execute(select(Result.id, Result.image_path).where(Result.item_id == item.id)).first()
    return item if result is None or result.image_path == path else None


def _mark_scoring(session: Session, item_id: int, now: datetime) -> bool:
    """Claim one item if it is still pending; True if this transaction got it."""
    result = session.execute(
        update(Item)
        .where(Item.id == item_id, Item.state == STATE_PENDING)
        .values(state=STATE_SCORING, attempts=Item.attempts + 1, claimed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _reset_to_pending(session: Session, item_ids: Sequence[int], *, refund_attempt: bool) -> int:
    """Move 'scoring' items among *item_ids* back to 'pending'; returns how many."""
    values: dict[str, object] = {"state": STATE_PENDING, "claimed_at": None, "updated_at": utcnow()}
    if refund_attempt:
        values["attempts"] = case((Item.attempts > 0, Item.attempts - 1), else_=0)
    moved = 0
    for chunk in chunked(item_ids):
        result = session.execute(
            update(Item)
            .where(Item.id.in_(chunk), Item.state == STATE_SCORING)
            .values(values)
            .execution_options(synchronize_session=False)
        )
        moved += result.rowcount
    return moved


def _load_items(session: Session, item_ids: list[int]) -> list[ItemRecord]:
    """Snapshots of *item_ids*, oldest first."""
    if not item_ids:
        return []
    rows = session.scalars(select(Item).where(Item.id.in_(item_ids)).order_by(Item.discovered_at, Item.id))
    return [ItemRecord.from_row(row) for row in rows]
