"""The scoring worker: claimed items -> exactly one recorded outcome each.

Each item is scored from the very bytes it was taken in with (kept in memory since
intake, or read again and checked against the recorded hash); a file whose content
changed in between is not scored under the old hash: its item gets an error row and
the new content is taken in as a new item.

Images are decoded, and heatmaps drawn and written, in I/O threads beside the
scoring: a claim's images are all decoding while its first batch waits for the
backbone, and a batch's heatmaps are written while the next batch is scored.

Every claimed item ends in one database action (its result, its error, or its return
to the queue). Those actions are kept until the database takes them: a locked or
full database pauses the daemon, and the actions are written when it is back, so
no item is stranded in 'scoring' while the daemon runs. A source file is moved or
deleted only after its row is written, and only if it is still the file that was
read.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..config import Config, WatchFolder
from ..db import Database, DuplicateResultError
from ..db.records import ItemRecord
from ..errors import DatabaseError, ImageError, InspectdError
from ..hashing import bytes_sha256
from ..heatmap import save_heatmap, write_map
from ..model import ProductModel, ScoreResult
from ..plant.offline_queue import offline_queue_path
from ..plant.reporting import Reporting, verdict_for
from ..prefetch import io_workers
from ..store import ModelStore
from .active_versions import REMEMBERED_FILE, ActiveVersions
from .gpu_memory import GpuMemoryLimits
from .intake import Content, ContentCache
from .spool import Spool
from .landing import Changed, Signature, Unreadable, Vanished, read_whole, signature
from .models import ModelKeeper
from .outputs import destination, output_paths, relocate

log = logging.getLogger(__name__)


class DiskFullError(InspectdError):
    """Results cannot be written: the disk is full."""


@dataclass
class _Action:
    """The one database write that finishes a claimed item, and what follows it."""

    item: ItemRecord
    write: Callable[[Database], None]
    source: Path | None = None  # the file to move or delete once the row is written ...
    target: Path | None = None
    content: Content | None = None  # ... if it is still the file that was read


@dataclass
class _Decoded:
    """A claimed item's bytes, decoded: the original image and the network's input."""

    item: ItemRecord
    content: Content
    original: np.ndarray
    prepared: np.ndarray
    decode_ms: float


@dataclass
class _Saving:
    """A scored item whose heatmap is being written in an I/O thread."""

    decoded: _Decoded
    result: ScoreResult
    future: Future  # -> milliseconds the write took


def _decode(model: ProductModel, item: ItemRecord, content: Content) -> _Decoded:
    """Runs in an I/O thread (OpenCV releases the GIL); ImageError if the bytes are not a usable image."""
    started = time.perf_counter()
    original, prepared = model.decode(content.data, item.path)
    return _Decoded(item, content, original, prepared, (time.perf_counter() - started) * 1000.0)


def _same_file(item: ItemRecord, current: Signature | None) -> bool:
    """Whether the file on disk is still the one the item was taken in from."""
    return current is not None and (current.size, current.mtime_ns, current.ctime_ns, current.inode) == (
        item.size, item.mtime_ns, item.ctime_ns, item.inode)


class ScoringWorker:
    def __init__(self, config: Config, db: Database | None, device: torch.device,
                 folder_of: Callable[[ItemRecord], WatchFolder | None], cache: ContentCache, spool: Spool,
                 retake: Callable[[Path, WatchFolder], None], reporting: Reporting | None = None):
        self.config, self.db, self.device = config, db, device
        self.folder_of = folder_of
        self.reporting = reporting or Reporting.off(config)  # MQTT and metrics around each result
        self.cache, self.spool = cache, spool
        self.retake = retake  # a path whose content changed: let intake look at it again
        self.gpu_memory = GpuMemoryLimits()  # reduced batches and moves to the CPU after out-of-memory
        self._unregistered: dict[tuple[str, str], ProductModel] = {}
        self.unrecorded: list[_Action] = []
        self.models = self._keeper(config)
        # images are decoded, and heatmaps drawn and written, beside the scoring
        self.io = ThreadPoolExecutor(max_workers=io_workers(), thread_name_prefix="inspectd-io")

    def close(self) -> None:
        self.io.shutdown(wait=True)

    def _keeper(self, config: Config) -> ModelKeeper:
        store = ModelStore(config.store_dir)
        # The version to score with is the product's active one (recorded in the database);
        # a local queue means the server can go away: then the remembered answer is used.
        remembered = config.state_dir / REMEMBERED_FILE if offline_queue_path(config) else None
        active = ActiveVersions(store, remembered)
        return ModelKeeper(store, self._device_for, self._prepare, lambda product: active.version(self.db, product))

    def _device_for(self, product: str) -> torch.device:
        return torch.device("cpu") if self.gpu_memory.on_cpu(product) else self.device

    def _prepare(self, model: ProductModel) -> None:
        model.set_limits(self.config.images.max_bytes, self.config.images.max_pixels)
        self._unregistered[(model.product, model.version)] = model

    def warm_up(self, products: set[str]) -> None:
        """Load the watched products' models before the first image arrives, and run
        one image through each so the first real one is not slowed by lazy set-up."""
        for product in sorted(products):
            try:
                model = self.models.get(product)
                model.score_images([np.zeros((*model.input_hw, 3), np.float32)])
            except InspectdError as exc:
                log.warning("product %s cannot be scored yet: %s", product, exc)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.models = self._keeper(config)

    # -- the database side ---------------------------------------------------------
    def flush(self) -> None:
        """Write the finishing actions not written yet, in order. DatabaseError
        propagates with the rest kept for the next try."""
        assert self.db is not None
        self._register_models()
        while self.unrecorded:
            action = self.unrecorded[0]
            try:
                action.write(self.db)
            except DuplicateResultError:  # written before, though the reply was lost
                log.warning("item %d already had its result recorded", action.item.id)
            self.unrecorded.pop(0)
            self.spool.discard(action.item.path, action.item.sha256)
            self._relocate(action)

    def _register_models(self) -> None:
        for key, model in list(self._unregistered.items()):
            meta = model.stored.metadata
            self.db.register_model_version(
                model.product, model.version, path=str(model.stored.path), threshold=model.threshold,
                bank_size=int(model.index.bank.shape[0]), backbone=model.settings.backbone,
                metadata={"weights": meta.get("weights"), "calibration": meta.get("calibration"),
                          "created_at": meta.get("created_at")})
            del self._unregistered[key]

    def run_once(self, limit: int) -> int:
        """Claim up to `limit` pending items, score them and record every outcome.
        Returns the number claimed. Raises DatabaseError (the outcomes are kept) or
        DiskFullError (the unfinished items are handed back to the queue)."""
        self.flush()
        items = self.db.claim_pending(None, limit, stations=self.config.stations)
        by_product: dict[str, list[ItemRecord]] = defaultdict(list)
        for item in items:
            by_product[item.product].append(item)
        disk_full: DiskFullError | None = None
        for product, group in by_product.items():
            if disk_full is not None:
                self._hand_back(group)
                continue
            try:
                self._score_group(product, group)
            except DiskFullError as exc:
                disk_full = exc
            except Exception as exc:  # a bug or a transient fault must not kill the service
                log.exception("scoring %d %s items failed", len(group), product)
                self._requeue_or_fail([i for i in group if not self._finished(i)], exc)
        self.flush()
        if disk_full is not None:
            raise disk_full
        return len(items)

    def _finished(self, item: ItemRecord) -> bool:
        return any(action.item.id == item.id for action in self.unrecorded)

    def _hand_back(self, items: list[ItemRecord], *, refund: bool = True) -> None:
        for item in items:
            self._finish(item, lambda db, i=item: db.return_to_pending([i.id], refund_attempt=refund))

    def _requeue_or_fail(self, items: list[ItemRecord], exc: Exception) -> None:
        """Retry later, until an item has used its attempts; then it gets an error result."""
        for item in items:
            if item.attempts < self.config.daemon.max_attempts:
                self._hand_back([item], refund=False)
            else:
                self._fail(item, f"scoring failed {item.attempts} times: {type(exc).__name__}: {exc}")

    def _finish(self, item: ItemRecord, write: Callable[[Database], None], **after: object) -> None:
        self.unrecorded.append(_Action(item, write, **after))

    def _relocate(self, action: _Action) -> None:
        """Move or delete the source after its row is written, unless it changed since
        it was read (a camera writing again under the same name): that is new content,
        left in place and taken in again."""
        if action.source is None or action.content is None or action.target == action.source:
            return
        if action.content.signature is None or signature(action.source) != action.content.signature:
            log.warning("%s changed after it was read; left in place and taken in again", action.source)
            folder = self.folder_of(action.item)
            if folder is not None:
                self.retake(action.source, folder)
            return
        relocate(action.source, action.target)

    # -- scoring -------------------------------------------------------------------
    def _score_group(self, product: str, items: list[ItemRecord]) -> None:
        try:
            model = self.models.get(product)
            self.reporting.model_in_use(product, model.version)
        except DatabaseError:  # which version is active cannot be read now: not the images' fault
            self._hand_back(items)
            return
        except InspectdError as exc:  # no model, and no version that loads
            for item in items:
                content = self._content(item)
                if content is not None:
                    self._fail(item, f"cannot score: {exc}", content=content)
            return
        contents = [(item, content) for item in items if (content := self._content(item)) is not None]
        decoding = [(item, content, self.io.submit(_decode, model, item, content)) for item, content in contents]
        saving: list[_Saving] = []
        try:
            start = 0
            while start < len(decoding):
                size = self.gpu_memory.batch_size(product, model.settings.batch_size)
                batch = self._decoded(model, decoding[start:start + size])
                start += size
                if not batch:
                    continue
                model, results = self._score_with_fallback(model, [b.prepared for b in batch],
                                                           [b.item.path for b in batch])
                # the next batch is scored while this one's heatmaps are drawn and written
                saving += [_Saving(b, result, self.io.submit(self._save_maps, b.item, b.original, result, model))
                           for b, result in zip(batch, results)]
            for index, entry in enumerate(saving):
                try:
                    write_ms = entry.future.result()
                except DiskFullError:
                    self._hand_back([s.decoded.item for s in saving[index:]])
                    raise
                self._record(entry.decoded, model, entry.result, write_ms)
        finally:  # on any failure, nothing is left decoding or writing behind the retry
            wait([future for _, _, future in decoding] + [s.future for s in saving])

    def _decoded(self, model: ProductModel, batch: list[tuple[ItemRecord, Content, Future]]) -> list[_Decoded]:
        """The batch's decoded images, in order; an image that does not decode gets its error row."""
        decoded = []
        for item, content, future in batch:
            try:
                decoded.append(future.result())
            except ImageError as exc:
                self._fail(item, str(exc), model, content)
        return decoded

    def _content(self, item: ItemRecord) -> Content | None:
        """The bytes the item was taken in with; None after recording why they are gone."""
        cached = self.cache.pop(item.id)
        if cached is not None:
            return cached
        path = Path(item.path)
        current = signature(path)
        spooled = self.spool.get(item.path, item.sha256)
        if spooled is not None and bytes_sha256(spooled) == item.sha256:  # taken in before a restart
            return Content(spooled, current if _same_file(item, current) else None)
        try:
            if current is None:
                raise Vanished()
            snapshot = read_whole(path, current)
        except Vanished:
            self._fail(item, f"{item.path}: the file vanished before it could be scored", located=False)
            return None
        except (Changed, Unreadable) as exc:
            self._fail(item, f"{item.path}: could not be read again for scoring: {exc}", located=False)
            return None
        digest = bytes_sha256(snapshot.data)
        if digest != item.sha256:
            self._fail(item, f"{item.path}: the file was replaced before it could be scored (it now holds "
                             f"other bytes, sha256 {digest[:12]}...); the new content is taken in as a new item",
                       located=False)
            folder = self.folder_of(item)
            if folder is not None:
                self.retake(path, folder)
            return None
        return Content(snapshot.data, snapshot.signature)

    def _score_with_fallback(self, model: ProductModel, images: list[np.ndarray], names: list[str]
                             ) -> tuple[ProductModel, list[ScoreResult]]:
        """Score; on GPU out-of-memory halve the batch (and keep the smaller size for later
        batches), and at one image move the product to the CPU. Returns the model that
        scored, which later batches use."""
        try:
            return model, model.score_images(images, names)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(images) > 1:
                half = len(images) // 2
                self.gpu_memory.did_not_fit(model.product, model.version, len(images))
                log.warning("GPU out of memory with %d images; retrying in halves, and %s is scored in batches of "
                            "at most %d from now on", len(images), model.product,
                            self.gpu_memory.batch_size(model.product, len(images)))
                model, first = self._score_with_fallback(model, images[:half], names[:half])
                model, second = self._score_with_fallback(model, images[half:], names[half:])
                return model, first + second
            log.error("GPU out of memory on a single image; %s moves to the CPU", model.product)
            self.gpu_memory.moved_to_cpu(model.product, model.version)
            moved = self.models.reload(model.product, model.version)  # the same version: images are prepared for it
            return moved, moved.score_images(images, names)

    def _save_maps(self, item: ItemRecord, original: np.ndarray, result: ScoreResult, model: ProductModel) -> float:
        """Draw and write the item's heatmap (and raw map); milliseconds taken.
        Runs in an I/O thread. DiskFullError when the results disk is full."""
        started = time.perf_counter()
        heatmap, anomaly_map = output_paths(self.config.results_dir, item)
        try:
            save_heatmap(heatmap, original, result.anomaly_map, model.geometry, model.threshold)
            if self.config.daemon.save_anomaly_maps:
                write_map(anomaly_map, result.anomaly_map)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"results disk full writing {heatmap}") from exc
            raise
        return (time.perf_counter() - started) * 1000.0

    def _record(self, decoded: _Decoded, model: ProductModel, result: ScoreResult, write_ms: float) -> None:
        """Queue the result row of an item whose maps are written."""
        item, content = decoded.item, decoded.content
        heatmap, anomaly_map = output_paths(self.config.results_dir, item)
        timings = {"decode": round(decoded.decode_ms, 2), **{k: round(v, 2) for k, v in result.timings_ms.items()},
                   "write": round(write_ms, 2)}
        source = Path(item.path)
        folder = self.folder_of(item)
        final_path = destination(folder, source)
        maps = str(anomaly_map) if self.config.daemon.save_anomaly_maps else None
        image_path = str(final_path) if final_path else None
        verdict = verdict_for(item, result.verdict, score=result.score, normalized_score=result.normalized_score,
                              threshold=model.threshold, model_version=model.version, heatmap_path=str(heatmap),
                              image_path=image_path)

        def record(db: Database) -> None:
            with self.reporting.recording(verdict, folder, item.discovered_at):
                db.record_result(
                    item.id, raw_score=result.score, normalized_score=result.normalized_score,
                    verdict=result.verdict, model_version=model.version, threshold=model.threshold, timings=timings,
                    heatmap_path=str(heatmap), anomaly_map_path=maps, image_path=image_path)
            log.info("%s %s score %.4f (%.2f x threshold) %s", item.product, item.path, result.score,
                     result.normalized_score, result.verdict)

        self._finish(item, record, source=source, target=final_path, content=content)

    def _fail(self, item: ItemRecord, message: str, model: ProductModel | None = None,
              content: Content | None = None, *, located: bool = True) -> None:
        """An error row. With `located`, it says where the file is now (kept, or
        archived: failed images are never deleted); a file that vanished or was
        replaced is not this item's any more, so it is neither named nor moved."""
        log.error("item %d: %s", item.id, message if item.path in message else f"{item.path}: {message}")
        source = Path(item.path)
        folder = self.folder_of(item)
        target = destination(folder, source, failed=True) if located else None
        if content is None and located:
            target = source  # never read: not ours to move
        version, threshold = (model.version, model.threshold) if model else (None, None)
        image_path = str(target) if target is not None else None
        verdict = verdict_for(item, "ERROR", threshold=threshold, model_version=version, error=message,
                              image_path=image_path)

        def record(db: Database) -> None:
            with self.reporting.recording(verdict, folder, item.discovered_at):
                db.record_error(item.id, message, model_version=version, threshold=threshold, image_path=image_path)

        self._finish(item, record, source=source, target=target, content=content)
