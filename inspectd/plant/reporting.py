"""What follows a result row beyond the database: its MQTT message and the metrics.

The daemon's worker wraps each result's commit in :meth:`Reporting.recording`: the
message is prepared in the outbox before the commit and released right after it, so
the line hears of exactly the rows that exist, also across a crash.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar

from ..config import Config, WatchFolder
from ..db import Database
from ..db.records import ItemRecord
from ..db.schema import utcnow
from .monitoring import DaemonMetrics
from .mqtt import Verdict, VerdictPublisher
from .outbox import Outbox

log = logging.getLogger(__name__)
T = TypeVar("T")
OUTBOX_FILE = "mqtt-outbox.sqlite3"


def verdict_for(item: ItemRecord, verdict: str, *, score: float | None = None, normalized_score: float | None = None,
                threshold: float | None = None, model_version: str | None = None, heatmap_path: str | None = None,
                image_path: str | None = None, error: str | None = None) -> Verdict:
    """The message about `item`'s result."""
    return Verdict(item_id=item.id, path=item.path, product=item.product, station=item.station, verdict=verdict,
                   score=score, normalized_score=normalized_score, threshold=threshold, model_version=model_version,
                   heatmap_path=heatmap_path, image_path=image_path, error=error, scored_at=utcnow())


class Reporting:
    """MQTT and metrics of one daemon; each part is off unless configured."""

    def __init__(self, config: Config, *, enabled: bool = True):
        self.config = config
        self.metrics = DaemonMetrics() if enabled else None
        self.outbox: Outbox | None = None
        self.publisher: VerdictPublisher | None = None
        self._committed_at: dict[int, float] = {}  # item id -> when its row was committed
        self._lock = threading.Lock()
        self._paused: set[str] = set()
        self._attached = False
        self.offline = False  # the daemon works against its local queue (database unreachable)
        if enabled and config.mqtt.enabled:
            self.outbox = Outbox(config.state_dir / OUTBOX_FILE)
            self.publisher = VerdictPublisher(config.mqtt, self.outbox, on_delivered=self._delivered)

    @classmethod
    def off(cls, config: Config) -> Reporting:
        """Nothing but the database (in-process tests, tools)."""
        return cls(config, enabled=False)

    def start(self) -> None:
        """Open the metrics endpoint."""
        if self.metrics is not None:
            self.metrics.serve(self.config.metrics)

    def attach(self, db: Database) -> None:
        """At the first connection to the database: settle the outbox after a crash
        (which prepared messages had their rows committed?), then deliver it."""
        if self.outbox is None or self.publisher is None or self._attached:
            return
        try:
            released, dropped = self.outbox.recover(db.items_with_results)
        except (sqlite3.Error, OSError) as exc:  # the line keeps running; the log says why MQTT is silent
            log.error("MQTT outbox %s unusable (%s): no verdicts are sent over MQTT", self.outbox.path, exc)
            self._attached = True
            self.outbox = None
            return
        if released or dropped:
            log.warning("MQTT outbox after an interruption: %d messages released (their rows were committed), "
                        "%d dropped (rows never committed)", released, dropped)
        if self.metrics is not None:
            self.metrics.watch_outbox(self.outbox.depth, lambda: self.publisher.connected)
        self.publisher.start()
        self._attached = True

    def stop(self) -> None:
        """Deliver what the broker takes within a moment (the rest waits in the outbox)."""
        if self.publisher is not None and self._attached and self.outbox is not None:
            self.publisher.stop()
        if self.outbox is not None:
            self.outbox.close()
            self.outbox = None
        if self.metrics is not None:
            self.metrics.close()

    @contextmanager
    def recording(self, verdict: Verdict, folder: WatchFolder | None, discovered_at: datetime, *,
                  scored: bool = True) -> Iterator[None]:
        """Around the commit of `verdict`'s row: the message goes only if the body
        (the commit) succeeds. While `offline` the body writes to the local queue: no
        message yet (it goes when the queue is written to the database). `scored`
        False: the image was counted when it was scored (a row from the queue)."""
        message_id = None
        if self.outbox is not None and self._attached and not self.offline and folder is not None:
            message_id = self._outbox_step(verdict, lambda: self.outbox.prepare(
                verdict.item_id, self.config.mqtt_topic(folder), verdict.payload()))
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            if message_id is not None:
                self._outbox_step(verdict, lambda: self.outbox.discard(message_id))
            raise
        write_s = time.perf_counter() - started
        if message_id is not None:
            self._outbox_step(verdict, lambda: self.outbox.release(message_id))
            with self._lock:
                self._committed_at[verdict.item_id] = time.monotonic()
            self.publisher.notify()
        if self.metrics is not None:
            if not self.offline:
                self.metrics.result_write.observe(write_s)
            if scored:
                latency = (utcnow() - discovered_at).total_seconds()
                self.metrics.scored(verdict.product, verdict.station, verdict.verdict, latency)

    def refused(self, item: ItemRecord | None, folder: WatchFolder | None) -> None:
        """A file recorded at intake with its error row (it could not be read at all):
        its message goes now, as the row is already committed."""
        if item is not None:
            verdict = verdict_for(item, "ERROR", error=item.last_error, image_path=item.path)
            with self.recording(verdict, folder, item.discovered_at):
                pass

    def _outbox_step(self, verdict: Verdict, step: Callable[[], T]) -> T | None:
        """An outbox write; a local disk that refuses it must not stop the line (the
        row is still written), so it is logged as a lost message instead."""
        try:
            return step()
        except (sqlite3.Error, OSError) as exc:
            log.error("MQTT outbox %s not writable (%s): the message of item %d (%s) is not sent",
                      self.outbox.path, exc, verdict.item_id, verdict.path)
            return None

    def model_in_use(self, product: str, version: str) -> None:
        if self.metrics is not None:
            self.metrics.model_in_use(product, version)

    def pause(self, reason: str, paused: bool) -> None:
        """Scoring is (or is no longer) paused for `reason`; counted once per pause."""
        if self.metrics is None or (reason in self._paused) == paused:
            return
        if paused:
            self._paused.add(reason)
            self.metrics.pause_started(reason)
        else:
            self._paused.discard(reason)
            self.metrics.pause_ended(reason)

    def watch_offline_queue(self, depth: Callable[[], int]) -> None:
        if self.metrics is not None:
            self.metrics.offline_queue_depth.set_function(depth)

    def queue(self, depth: int, settling: int) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(depth)
            self.metrics.settling.set(settling)

    def _delivered(self, item_id: int) -> None:
        with self._lock:
            committed = self._committed_at.pop(item_id, None)
        if committed is not None and self.metrics is not None:
            self.metrics.mqtt_delivery.observe(time.monotonic() - committed)
