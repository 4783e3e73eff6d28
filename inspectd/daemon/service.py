"""`inspectd run`: the long-running inspection service.

One loop in the main thread: take filesystem events, let files settle, record them
as items, score pending items in batches, and keep systemd informed. SIGTERM stops
intake, finishes the batch in hand, commits and exits 0; SIGHUP reloads the
configuration. A crash is safe: items are recorded before they are scored, and
items left half-scored are requeued at the next start.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from types import FrameType

from .. import sdnotify
from ..config import Config, WatchFolder, load_config
from ..db import Database, open_database
from ..db.records import ItemRecord
from ..device import resolve_device
from ..errors import DatabaseError, InspectdError
from ..plant.reporting import Reporting
from .intake import SettleTracker, take_in
from .watcher import FolderWatcher, scan
from .worker import DiskFullError, ScoringWorker

log = logging.getLogger(__name__)
MIN_WAIT = 0.01
MAX_WAIT = 5.0
# Only this daemon adds items, so it knows when there is work; an idle daemon still
# looks at the queue this often, in case items were returned by another process.
IDLE_CLAIM_SECONDS = 30.0
STATUS_SECONDS = 10.0
DATABASE_PAUSE = 5.0
DISK_FULL_PAUSE = (5.0, 60.0)  # first pause and the cap of the doubling back-off


class Daemon:
    def __init__(self, config: Config, config_path: str | None = None):
        self.config = config
        self.config_path = config_path
        self.stop_requested = False
        self.reload_requested = False
        self.db: Database | None = None
        self.tracker = SettleTracker(config.daemon.settle_seconds)
        self.watcher = FolderWatcher(config.watch, config.daemon.poll_seconds)
        self.paused_until = 0.0
        self.work_pending = True  # pending items from before a restart are claimed first
        self.disk_pause = DISK_FULL_PAUSE[0]
        self.scored = 0
        self.reporting = Reporting.off(config)  # MQTT and metrics: started by run()

    # -- signals -------------------------------------------------------------------
    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the batch in hand, then stopping", signal.Signals(signum).name)
        self.stop_requested = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)

    # -- main loop -------------------------------------------------------------------
    def run(self) -> int:
        if not self.config.watch:
            raise InspectdError("no [[watch]] folders in the configuration: nothing to do")
        self.install_signal_handlers()
        self.db = open_database(self.config.database_url)
        requeued, failed = self.db.requeue_interrupted(self.config.daemon.max_attempts, stations=self.config.stations)
        if requeued or failed:
            log.warning("resumed after an interruption: %d items requeued, %d failed after %d attempts",
                        requeued, failed, self.config.daemon.max_attempts)
        device = resolve_device(self.config.device)
        self.reporting = Reporting(self.config)
        self.reporting.start(self.db)
        self.worker = ScoringWorker(self.config, self.db, device, self.folder_of, self.reporting)
        self.worker.warm_up({folder.product for folder in self.config.watch})
        self.watcher.start()
        self.reconcile()
        sdnotify.ready()
        log.info("inspectd running on %s: %d folders, database %s", device, len(self.config.watch), self.db.url)
        try:
            self._loop()
        finally:
            sdnotify.stopping()
            self.watcher.stop()
            self.reporting.stop()
            self.db.close()
        log.info("inspectd stopped cleanly")
        return 0

    def _loop(self) -> None:
        next_reconcile = time.monotonic() + self.config.daemon.reconcile_seconds
        next_status = 0.0
        watchdog = sdnotify.watchdog_interval()
        next_ping = 0.0
        last_claim = 0.0
        while not self.stop_requested:
            now = time.monotonic()
            ready_to_score = self.work_pending and not self.paused
            wait = 0.0 if ready_to_score else self._wait_time(now, next_reconcile)
            for path, folder in self.watcher.drain(wait):
                self.tracker.touch(path, folder)
            try:
                for path, folder, size, mtime_ns in self.tracker.ready():
                    if take_in(self.db, path, folder, size, mtime_ns) is not None:
                        self.work_pending = True
                if (self.work_pending and not self.paused) or time.monotonic() - last_claim > IDLE_CLAIM_SECONDS:
                    last_claim = time.monotonic()
                    self._score_batch()
            except DatabaseError as exc:
                # The db layer already retried with back-off; files not taken in are
                # found again by the next reconciliation.
                log.error("database unavailable: %s; retrying in %.0f s", exc, DATABASE_PAUSE)
                sdnotify.status(f"database unavailable: {exc}")
                self.reporting.pause("database", True)
                time.sleep(DATABASE_PAUSE)
            now = time.monotonic()
            if now >= next_reconcile:
                self.reconcile()
                next_reconcile = now + self.config.daemon.reconcile_seconds
            if watchdog and now >= next_ping:
                sdnotify.watchdog_ping()
                next_ping = now + watchdog / 2
            if now >= next_status:
                sdnotify.status(f"scored {self.scored} images; {len(self.tracker)} settling")
                self._report_queue()
                next_status = now + STATUS_SECONDS
            if not self.watcher.healthy():
                self.watcher.restart()
                self.reconcile()
            if self.reload_requested:
                self.reload()

    def _wait_time(self, now: float, next_reconcile: float) -> float:
        """How long to block for events: until a settling file is due, the next
        reconciliation, the end of a pause, or at most MAX_WAIT (so an idle daemon
        stays idle); a new file's event ends the wait at once."""
        due = self.tracker.next_due(now)
        wait = min(MAX_WAIT, next_reconcile - now, self.paused_until - now if self.paused else MAX_WAIT)
        if due is not None:
            wait = min(wait, due)
        return max(MIN_WAIT, wait)

    @property
    def paused(self) -> bool:
        return time.monotonic() < self.paused_until

    def _score_batch(self) -> bool:
        """Score one batch; True when there may be more pending work right away."""
        if self.paused:
            return False
        self.work_pending = False
        limit = self.config.daemon.batch_size
        try:
            claimed = self.worker.run_once(limit)
        except DiskFullError as exc:
            log.error("%s: pausing scoring for %.0f s", exc, self.disk_pause)
            sdnotify.status(f"PAUSED: {exc}")
            self.paused_until = time.monotonic() + self.disk_pause
            self.reporting.pause("disk_full", True)
            self.disk_pause = min(DISK_FULL_PAUSE[1], self.disk_pause * 2)
            self.work_pending = True  # the items went back to the queue
            return False
        if claimed:
            self.disk_pause = DISK_FULL_PAUSE[0]
            self.reporting.pause("disk_full", False)
        self.reporting.pause("database", False)
        self.scored += claimed
        self.work_pending = claimed >= limit
        if claimed:
            self._report_queue()
        return self.work_pending

    def _report_queue(self) -> None:
        try:
            self.reporting.queue(self.db.queue_depth(self.config.stations), len(self.tracker))
        except DatabaseError as exc:
            log.debug("queue depth not known: %s", exc)

    def reconcile(self) -> None:
        """Scan every folder for files not yet recorded (arrived while down, or events lost)."""
        found = list(scan(self.config.watch))
        if not found:
            return
        known = self.db.known_identities([str(p) for p, _ in found])
        added = 0
        for path, folder in found:
            try:
                stat = path.stat()
            except OSError:
                continue
            if (str(path), stat.st_size, stat.st_mtime_ns) in known or path in self.tracker:
                continue
            self.tracker.touch(path, folder)
            added += 1
        if added:
            log.info("reconciliation found %d new files", added)

    def folder_of(self, item: ItemRecord) -> WatchFolder | None:
        path = Path(item.path)
        for folder in self.config.watch:
            if folder.product == item.product and (path == folder.path or folder.path in path.parents):
                return folder
        return None

    def reload(self) -> None:
        self.reload_requested = False
        sdnotify.notify("RELOADING=1")
        try:
            config = load_config(self.config_path)
        except InspectdError as exc:
            log.error("configuration reload failed, keeping the running one: %s", exc)
            sdnotify.ready()
            return
        if config.database_url != self.config.database_url:
            log.warning("database_url changed: it takes effect at the next restart")
        self.config = config
        self.tracker.settle_seconds = config.daemon.settle_seconds
        self.worker.reconfigure(config)
        self.watcher.stop()
        self.watcher = FolderWatcher(config.watch, config.daemon.poll_seconds)
        self.watcher.start()
        self.reconcile()
        log.info("configuration reloaded from %s", config.source)
        sdnotify.ready()
