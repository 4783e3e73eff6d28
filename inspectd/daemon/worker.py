"""The scoring worker: pending items -> one result each (score or error).

Each product's model stays loaded on the device; when another version is activated
(inspectd.active) it is picked up at the next batch. Every fault ends in a clear state: an unreadable image or a
missing model is an error result; a GPU out of memory retries with smaller batches,
then on the CPU; a full disk returns the items to the queue and pauses intake.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..active import active_version
from ..config import Config, WatchFolder
from ..db import Database
from ..db.records import ItemRecord
from ..errors import ImageError, InspectdError
from ..heatmap import save_heatmap, write_map
from ..model import ProductModel, ScoreResult
from ..store import ModelStore
from .outputs import destination, output_paths, relocate

log = logging.getLogger(__name__)
MODEL_CHECK_SECONDS = 1.0


class DiskFullError(InspectdError):
    """Results cannot be written: the disk is full."""


@dataclass
class _Loaded:
    model: ProductModel
    checked_at: float


class ScoringWorker:
    def __init__(self, config: Config, db: Database, device: torch.device,
                 folder_of: Callable[[ItemRecord], WatchFolder | None]):
        self.config, self.db, self.device = config, db, device
        self.folder_of = folder_of
        self.store = ModelStore(config.store_dir)
        self._models: dict[str, _Loaded] = {}
        self._cpu_only: set[str] = set()

    def warm_up(self, products: set[str]) -> None:
        """Load the watched products' models before the first image arrives, and run
        one image through each so the first real one is not slowed by lazy set-up."""
        for product in sorted(products):
            try:
                model = self.model_for(product)
                model.score_images([np.zeros((*model.input_hw, 3), np.float32)])
            except InspectdError as exc:
                log.warning("product %s cannot be scored yet: %s", product, exc)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.store = ModelStore(config.store_dir)

    def run_once(self, limit: int) -> int:
        """Claim up to `limit` pending items, score them, record every outcome.
        Returns the number of items claimed. Raises DiskFullError after returning
        the unfinished items to the queue."""
        items = self.db.claim_pending(None, limit)
        by_product: dict[str, list[ItemRecord]] = defaultdict(list)
        for item in items:
            by_product[item.product].append(item)
        for product, group in by_product.items():
            finished: set[int] = set()
            try:
                self._score_group(product, group, finished)
            except DiskFullError:
                raise
            except Exception as exc:  # a bug or a transient fault must not kill the service
                log.exception("scoring %d %s items failed", len(group), product)
                self._requeue_or_fail([i for i in group if i.id not in finished], exc)
        return len(items)

    def _requeue_or_fail(self, items: list[ItemRecord], exc: Exception) -> None:
        """Retry later, until an item has used its attempts; then it gets an error result."""
        retry = [i.id for i in items if i.attempts < self.config.daemon.max_attempts]
        self.db.return_to_pending(retry, refund_attempt=False)
        for item in items:
            if item.id not in retry:
                self._fail(item, f"scoring failed {item.attempts} times: {type(exc).__name__}: {exc}")

    def model_for(self, product: str) -> ProductModel:
        """The product's active model, reloading when another version was activated."""
        now = time.monotonic()
        loaded = self._models.get(product)
        if loaded is not None and now - loaded.checked_at < MODEL_CHECK_SECONDS:
            return loaded.model
        latest = active_version(self.db, self.store, product).version
        if loaded is not None and loaded.model.version == latest:
            loaded.checked_at = now
            return loaded.model
        device = torch.device("cpu") if product in self._cpu_only else self.device
        model = ProductModel.load(self.store, product, latest, device=device)
        model.set_limits(self.config.images.max_bytes, self.config.images.max_pixels)
        self._register(model)
        log.info("loaded model %s %s (threshold %.4f, bank %d) on %s", product, model.version, model.threshold,
                 model.index.bank.shape[0], device)
        self._models[product] = _Loaded(model, now)
        return model

    def _register(self, model: ProductModel) -> None:
        meta = model.stored.metadata
        self.db.register_model_version(
            model.product, model.version, path=str(model.stored.path), threshold=model.threshold,
            bank_size=int(model.index.bank.shape[0]), backbone=model.settings.backbone,
            metadata={"weights": meta.get("weights"), "calibration": meta.get("calibration"),
                      "created_at": meta.get("created_at")})

    def _score_group(self, product: str, items: list[ItemRecord], finished: set[int]) -> None:
        try:
            model = self.model_for(product)
        except InspectdError as exc:  # no model, corrupt model, changed weights file
            for item in items:
                self._fail(item, f"cannot score: {exc}")
                finished.add(item.id)
            return
        readable: list[tuple[ItemRecord, np.ndarray, np.ndarray, float]] = []
        for item in items:
            started = time.perf_counter()
            try:
                original, prepared = model.read(item.path)
            except ImageError as exc:
                self._fail(item, str(exc), model)
                finished.add(item.id)
                continue
            readable.append((item, original, prepared, (time.perf_counter() - started) * 1000.0))
        if not readable:
            return
        results = self._score_with_fallback(model, [r[2] for r in readable], [r[0].path for r in readable])
        for index, ((item, original, _, decode_ms), result) in enumerate(zip(readable, results)):
            try:
                self._write(item, model, original, result, decode_ms)
            except DiskFullError:
                self.db.return_to_pending([r[0].id for r in readable[index:]])
                raise
            finished.add(item.id)

    def _score_with_fallback(self, model: ProductModel, images: list[np.ndarray], names: list[str]
                             ) -> list[ScoreResult]:
        """Score; on GPU out-of-memory halve the batch, and at one image move to the CPU."""
        try:
            return model.score_images(images, names)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(images) > 1:
                half = len(images) // 2
                log.warning("GPU out of memory with %d images; retrying in halves", len(images))
                return (self._score_with_fallback(model, images[:half], names[:half])
                        + self._score_with_fallback(model, images[half:], names[half:]))
            log.error("GPU out of memory on a single image; %s moves to the CPU", model.product)
            self._cpu_only.add(model.product)
            self._models.pop(model.product, None)
            return self.model_for(model.product).score_images(images, names)

    def _write(self, item: ItemRecord, model: ProductModel, original: np.ndarray, result: ScoreResult,
               decode_ms: float) -> None:
        started = time.perf_counter()
        heatmap, anomaly_map = output_paths(self.config.results_dir, item)
        try:
            save_heatmap(heatmap, original, result.anomaly_map, model.geometry, model.threshold)
            if self.config.daemon.save_anomaly_maps:
                write_map(anomaly_map, result.anomaly_map)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"disk full writing {heatmap}") from exc
            raise
        timings = {"decode": round(decode_ms, 2), **{k: round(v, 2) for k, v in result.timings_ms.items()},
                   "write": round((time.perf_counter() - started) * 1000.0, 2)}
        source = Path(item.path)
        final_path = destination(self.folder_of(item), source)
        self.db.record_result(
            item.id, raw_score=result.score, normalized_score=result.normalized_score, verdict=result.verdict,
            model_version=model.version, threshold=model.threshold, timings=timings, heatmap_path=str(heatmap),
            anomaly_map_path=str(anomaly_map) if self.config.daemon.save_anomaly_maps else None,
            image_path=str(final_path) if final_path else None)
        relocate(source, final_path)
        log.info("%s %s score %.4f (%.2f x threshold) %s", item.product, item.path, result.score,
                 result.normalized_score, result.verdict)

    def _fail(self, item: ItemRecord, message: str, model: ProductModel | None = None) -> None:
        log.error("item %d: %s", item.id, message if item.path in message else f"{item.path}: {message}")
        self.db.record_error(item.id, message, model_version=model.version if model else None,
                             threshold=model.threshold if model else None)
        source = Path(item.path)
        relocate(source, destination(self.folder_of(item), source, failed=True))
