"""`inspectd run`: the long-running inspection service.

One loop in the main thread: take filesystem events, let files settle, record them
as items, score pending items in batches, and keep systemd and `inspectd status`
informed. Nothing a folder, a file, the database or a disk does stops the loop: a
locked, full or unreachable database and a full results disk pause the work with
back-off (shown in `inspectd status`) and it resumes by itself. SIGTERM stops
intake, hands the work in hand back within `stop_timeout_seconds`, and says
truthfully what it could not write; SIGHUP reloads the configuration. A crash is
safe: items are recorded before they are scored, and items left half-scored are
requeued at the next start.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from types import FrameType

from .. import sdnotify
from ..config import Config, WatchFolder, load_config
from ..db import (
    Database,
    DatabaseBusyError,
    DatabaseFullError,
    DatabaseUnreachableError,
    RetryPolicy,
    open_database,
)
from ..db.records import ItemRecord
from ..device import resolve_device
from ..errors import DatabaseError, InspectdError
from ..plant.model_copies import shared_models
from ..plant.reporting import Reporting
from ..plant.offline_queue import OfflineQueue, offline_queue_path
from . import early_stop
from .intake import ContentCache, take_in
from .landing import display_path, signature
from .pauses import Pauses
from .runtime import FolderLocks, runtime_dir, status_path, write_status
from .settle import Refused, SettleTracker
from .spool import Spool
from .watcher import FolderWatcher, scan
from .worker import DiskFullError, ScoringWorker

log = logging.getLogger(__name__)
MIN_WAIT = 0.01
MAX_WAIT = 5.0
FOLDER_CHECK_SECONDS = 1.0
# Only this daemon adds items, so it knows when there is work; an idle daemon still
# looks at the queue this often, in case items were returned by another process.
IDLE_CLAIM_SECONDS = 30.0
STATUS_SECONDS = 10.0
# Each database call of the running daemon gives up after this long while the
# database is locked; the loop pauses and tries again, so SIGTERM is seen in time.
DATABASE_RETRY = RetryPolicy(total_s=5.0)
DATABASE, RESULTS_DISK = "database", "results disk"


class Daemon:
    def __init__(self, config: Config, config_path: str | None = None):
        self.config = config
        self.config_path = config_path
        self.stop_requested = False
        self.reload_requested = False
        self.db: Database | None = None
        self.tracker = self._tracker(config)
        self.watcher = FolderWatcher(config.watch, config.daemon.poll_seconds)
        self.cache = ContentCache(config.daemon.intake_buffer_mb * 1024 * 1024)
        self.reporting = Reporting.off(config)  # MQTT and metrics: run() starts them
        self.shared_models = None  # copies from a shared model store: run() starts them
        self.offline_queue: OfflineQueue | None = None  # the local queue while a database server is unreachable
        self.offline = False
        self.pauses = Pauses(on_change=lambda reason, paused: self.reporting.pause(reason, paused))
        self.work_pending = True  # pending items from before a restart are claimed first
        self.scored = 0
        self.started_at = time.time()
        self.next_reconcile = 0.0
        self.stop_note = ""

    @staticmethod
    def _tracker(config: Config) -> SettleTracker:
        return SettleTracker(config.daemon.settle_seconds, config.daemon.incomplete_seconds,
                             config.images.max_bytes)

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
        if early_stop.stop_signal():
            log.info("received %s during start-up: stopping before taking any work", early_stop.stop_signal())
            self.stop_requested = True
        self.reload_requested = self.reload_requested or early_stop.reload_requested()

    # -- life cycle ------------------------------------------------------------------
    def run(self) -> int:
        if not self.config.watch:
            raise InspectdError("no [[watch]] folders in the configuration: nothing to do")
        self.locks = FolderLocks(runtime_dir(self.config, create=True))
        self.locks.acquire(self.config.watch)
        self.status_file = status_path(self.config, create=True)
        self.install_signal_handlers()
        device = resolve_device(self.config.device)
        self.reporting = Reporting(self.config)
        self.reporting.start()
        self.shared_models = shared_models(self.config)
        queue_path = offline_queue_path(self.config)
        if queue_path is not None:
            self.offline_queue = OfflineQueue(queue_path)
            self.reporting.watch_offline_queue(self.offline_queue.depth)
        self.spool = Spool(self.config.daemon.spool_dir)
        self.worker = ScoringWorker(self.config, None, device, self.folder_of, self.cache, self.spool, self.retake,
                                    self.reporting)
        if not self.stop_requested:
            self.worker.warm_up({folder.product for folder in self.config.watch})
        self.watcher.start()
        sdnotify.ready()
        log.info("inspectd running on %s: %d folders, database %s", device, len(self.config.watch),
                 self.config.database_url)
        try:
            self._loop()
        finally:
            self._stop()
        return 0

    def _stop(self) -> None:
        """Hand back the work in hand within the stop timeout, and say what happened."""
        sdnotify.stopping()
        self._report("stopping")
        self.watcher.stop()
        self.worker.close()
        unrecorded = len(self.worker.unrecorded)
        if self.db is not None:
            self.db.set_retry_policy(RetryPolicy(total_s=max(1.0, self.config.daemon.stop_timeout_seconds - 5.0)))
            try:
                self.worker.flush()
            except DatabaseError as exc:
                if not self._flush_to_offline_queue():
                    self.stop_note = (f"{len(self.worker.unrecorded)} of {unrecorded} finished items could not be "
                                      f"recorded ({exc}); they stay 'scoring' and are scored again at the next start")
            self.reporting.stop()  # the last messages go before the database closes
            self.db.close()
        elif unrecorded and not self._flush_to_offline_queue():
            self.stop_note = f"{unrecorded} finished items could not be recorded: the database was never reachable"
        self.reporting.stop()
        if self.shared_models is not None:
            self.shared_models.stop()
        self._report("stopped")
        if self.offline_queue is not None:
            self.offline_queue.close()
        self.locks.release()
        if self.stop_note:
            log.warning("inspectd stopped, but not cleanly: %s", self.stop_note)
        else:
            log.info("inspectd stopped cleanly")

    # -- main loop -------------------------------------------------------------------
    def _loop(self) -> None:
        next_status = next_folder_check = next_ping = last_claim = 0.0
        watchdog = sdnotify.watchdog_interval()
        while not self.stop_requested:
            now = time.monotonic()
            for path, folder, event in self.watcher.drain(self._wait_time(now, next_status)):
                self.tracker.touch(path, folder, event)
            if time.monotonic() >= next_folder_check:
                next_folder_check = time.monotonic() + FOLDER_CHECK_SECONDS
                if self.watcher.check_folders():
                    self.next_reconcile = 0.0
            if not self.pauses.blocked(DATABASE):
                idle_claim = time.monotonic() - last_claim > IDLE_CLAIM_SECONDS
                if self._database_work(idle_claim):
                    last_claim = time.monotonic()
            elif self.offline:
                self._offline_work()
            now = time.monotonic()
            if watchdog and now >= next_ping:
                sdnotify.watchdog_ping()
                next_ping = now + watchdog / 2
            if now >= next_status:
                self._report("running")
                self._report_queue()
                next_status = now + STATUS_SECONDS
            if self.reload_requested:
                self.reload()

    def _wait_time(self, now: float, next_status: float) -> float:
        """How long to block for events: nothing when work can go on, else until a
        settling file is due, a pause ends, a scan or report is due, or at most
        MAX_WAIT; a new file's event ends the wait at once."""
        if not self.pauses and (self.db is None or self.work_pending or self.worker.unrecorded):
            return 0.0
        if self.offline and (self.offline_queue.has_work() or self.worker.unrecorded):
            return 0.0
        candidates = [MAX_WAIT, self.next_reconcile - now, next_status - now, FOLDER_CHECK_SECONDS]
        settling, retry = self.tracker.next_due(now), self.pauses.next_retry()
        if settling is not None:
            candidates.append(settling)
        if retry is not None:
            candidates.append(retry - now)
        return max(MIN_WAIT, min(candidates))

    def _database_work(self, idle_claim: bool) -> bool:
        """Connect if needed, take in settled files, reconcile when due, score a batch.
        True when the queue was looked at. A database fault pauses all of it."""
        try:
            if self.db is None:
                self._connect()
            if self.offline_queue is not None and self.offline_queue.depth():
                self.offline_queue.drain(self.db, self.reporting, self.folder_of)
            self._intake(self.db)
            if time.monotonic() >= self.next_reconcile:
                self.reconcile()
            looked = False
            wanted = self.work_pending or idle_claim or self.worker.unrecorded
            if wanted and not self.pauses.blocked(RESULTS_DISK):
                self._score_batch()
                looked = True
        except DatabaseError as exc:
            self.pauses.hold(DATABASE, _describe(exc))
            self.offline = self.offline_queue is not None and isinstance(exc, DatabaseUnreachableError)
            self._report("running")
            return False
        self.offline = False
        if self.pauses.clear(DATABASE):
            self._report("running")
        return looked

    def _connect(self) -> None:
        db = open_database(self.config.database_url, retry_policy=DATABASE_RETRY)
        try:
            requeued, failed = db.requeue_interrupted(self.config.daemon.max_attempts, stations=self.config.stations)
            self.reporting.attach(db)
        except DatabaseError:
            db.close()
            raise
        if requeued or failed:
            log.warning("resumed after an interruption: %d items requeued, %d failed after %d attempts",
                        requeued, failed, self.config.daemon.max_attempts)
        queued = db.queued_contents()
        if self.offline_queue is not None:  # taken in while the server was away, not scored yet
            queued |= self.offline_queue.queued_contents()
        self.spool.sweep(queued)
        self.db = self.worker.db = db
        self.next_reconcile = 0.0

    def _intake(self, target: Database | OfflineQueue) -> None:
        outcomes = self.tracker.ready()
        for index, outcome in enumerate(outcomes):
            try:
                item_id = take_in(target, outcome, self.cache, self.spool)
                if item_id is not None:
                    self.work_pending = True
                    if isinstance(outcome, Refused) and target is self.db:  # recorded with its error row
                        self.reporting.refused(self.db.get_item(item_id), outcome.folder)
            except DatabaseError:
                for unrecorded in outcomes[index:]:  # looked at again once the database is back
                    self.tracker.touch(unrecorded.path, unrecorded.folder)
                raise

    def _offline_work(self) -> None:
        """The database server is unreachable: take new files in and score them against
        the local queue, which is written to the database once the server is back."""
        self.worker.db, self.reporting.offline = self.offline_queue, True
        try:
            self._intake(self.offline_queue)
            if (self.offline_queue.has_work() or self.worker.unrecorded) and not self.pauses.blocked(RESULTS_DISK):
                self._score_batch()
        except DatabaseError as exc:  # the local queue itself is unusable (its disk is full)
            self.pauses.hold("local queue", str(exc))
        else:
            self.pauses.clear("local queue")
        finally:
            self.worker.db, self.reporting.offline = self.db, False

    def _flush_to_offline_queue(self) -> bool:
        """At shutdown with the server unreachable: keep the finished items' outcomes
        in the local queue rather than scoring them again. True when all went there."""
        if self.offline_queue is None:
            return False
        if not self.worker.unrecorded:
            return True
        self.worker.db = self.offline_queue
        try:
            self.worker.flush()
            log.info("the database is unreachable: finished outcomes are kept in the local queue %s",
                     self.offline_queue.path)
            return True
        except DatabaseError:
            return False
        finally:
            self.worker.db = self.db

    def _score_batch(self) -> None:
        limit = self.config.daemon.batch_size
        try:
            claimed = self.worker.run_once(limit)
        except DiskFullError as exc:
            self.pauses.hold(RESULTS_DISK, str(exc))
            self.work_pending = True  # the items went back to the queue
            self._report("running")
            return
        if self.pauses.clear(RESULTS_DISK):
            self._report("running")
        self.scored += claimed
        self.work_pending = claimed >= limit
        if claimed:
            self._report_queue()

    def _report_queue(self) -> None:
        """The queue depth for the metrics (skipped while the database is away)."""
        if self.db is None or self.pauses.blocked(DATABASE):
            return
        try:
            self.reporting.queue(self.db.queue_depth(self.config.stations), len(self.tracker))
        except DatabaseError as exc:
            log.debug("queue depth not known: %s", exc)

    def reconcile(self) -> None:
        """Scan every folder for files not yet recorded (arrived while down, events
        lost). A file is known by path, size, mtime, ctime and inode, so new content
        under an old name with an old size and mtime is not mistaken for the old."""
        self.next_reconcile = time.monotonic() + self.config.daemon.reconcile_seconds
        found = list(scan(self.config.watch))
        if not found:
            return
        known = self.db.known_identities([display_path(p) for p, _ in found])
        added = 0
        for path, folder in found:
            current = signature(path)
            if current is None or path in self.tracker:
                continue
            identity = (display_path(path), current.size, current.mtime_ns, current.ctime_ns, current.inode)
            if identity in known:
                continue
            self.tracker.touch(path, folder)
            added += 1
        if added:
            log.info("reconciliation found %d new files", added)

    def retake(self, path: Path, folder: WatchFolder) -> None:
        """Content under a known name changed: let it settle and be taken in again."""
        self.tracker.touch(path, folder)

    def folder_of(self, item: ItemRecord) -> WatchFolder | None:
        path = Path(item.path)
        for folder in self.config.watch:
            if folder.product == item.product and (path == folder.path or folder.path in path.parents):
                return folder
        return None

    # -- reporting -------------------------------------------------------------------
    def _report(self, state: str) -> None:
        """The status report for `inspectd status`, and systemd's STATUS line."""
        problems = {product: {"version": p.version, "problem": p.message, "using": p.using}
                    for product, p in self.worker.models.problems.items()}
        waiting = dict(self.tracker.waiting())
        report = {
            "pid": os.getpid(), "state": state, "started_at": self.started_at, "updated_at": time.time(),
            "config": str(self.config.source) if self.config.source else None,
            "database": self.config.database_url if self.db is None else self.db.url,
            "pauses": self.pauses.report(), "model_problems": problems, "waiting_files": waiting,
            "precision_fallbacks": self.worker.models.precision_fallbacks(),
            "gpu_fallbacks": self.worker.gpu_memory.report(),
            "unrecorded": len(self.worker.unrecorded), "scored": self.scored,
            "offline": self.offline, "local_queue": self.offline_queue.depth() if self.offline_queue is not None else 0,
            "missing_folders": [str(f.path) for f in self.watcher.missing()], "stop_note": self.stop_note,
        }
        try:
            write_status(self.status_file, report)
        except OSError as exc:
            log.warning("cannot write the status report %s: %s", self.status_file, exc.strerror or exc)
        line = "; ".join([f"PAUSED ({p['reason']}): {p['message']}" for p in report["pauses"]]
                         + [f"scored {self.scored} images", f"{len(self.tracker)} settling"])
        sdnotify.status(line)

    def reload(self) -> None:
        self.reload_requested = False
        sdnotify.notify("RELOADING=1")
        try:
            config = load_config(self.config_path)
            self.locks.acquire(config.watch)
        except InspectdError as exc:
            log.error("configuration reload failed, keeping the running one: %s", exc)
            self.locks.acquire(self.config.watch)
            sdnotify.ready()
            return
        if config.database_url != self.config.database_url:
            log.warning("database_url changed: it takes effect at the next restart")
        self.config = config
        self.tracker.settle_seconds = config.daemon.settle_seconds
        self.tracker.incomplete_seconds = config.daemon.incomplete_seconds
        if self.shared_models is not None:
            self.shared_models.stop()
        self.shared_models = shared_models(config)
        self.worker.reconfigure(config)
        self.watcher.stop()
        self.watcher = FolderWatcher(config.watch, config.daemon.poll_seconds)
        self.watcher.start()
        self.next_reconcile = 0.0
        log.info("configuration reloaded from %s", config.source)
        sdnotify.ready()


def _describe(exc: DatabaseError) -> str:
    if isinstance(exc, DatabaseFullError):
        return f"database disk full: {exc}"
    if isinstance(exc, DatabaseBusyError):
        return f"database locked: {exc}"
    return f"database unavailable: {exc}"
