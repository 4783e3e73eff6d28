"""Scoring a category's labelled images with a product model and measuring accuracy."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..calibration import FalseAlarmSpread
from ..errors import ImageError
from ..imageio import Geometry, apply_geometry, read_image
from ..model import ProductModel
from ..prefetch import prefetched_batches
from .dataset import DatasetError, Sample
from .measures import Metrics, compute_metrics

Progress = Callable[[str, int, int], None]


@dataclass
class Evaluation:
    """A scored category. Arrays are aligned with `samples` (the images that could be
    read); `maps` and `masks` are at the model's input geometry."""

    category: str
    product: str
    version: str
    weights: str
    threshold: float
    geometry: Geometry
    samples: list[Sample]
    scores: np.ndarray  # (N,) raw anomaly scores
    maps: np.ndarray  # (N, H, W) float32
    masks: np.ndarray  # (N, H, W) bool, all zero where there is no mask
    has_mask: np.ndarray  # (N,) bool: counts for pixel metrics (good, or defect with a mask)
    metrics: Metrics
    seconds_per_image: float
    peak_ram_mb: float  # the process's peak resident memory when scoring ended (enrollment included)
    target_false_alarm_rate: float  # what the model's threshold was calibrated for
    calibration_folds: int  # 0: held-out calibration images; k: cross-fitted
    # where the false-alarm rate of a threshold from this many good images lies (5th-95th
    # percentile over enrollments of that size), when the conformal rank exists
    expected_false_alarm: FalseAlarmSpread | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def normalized(self) -> np.ndarray:
        """Scores divided by the threshold: 1.0 is the decision boundary."""
        return self.scores / self.threshold


def load_mask(path: str, source_hw: tuple[int, int], geometry: Geometry, max_pixels: int) -> np.ndarray:
    """A mask file (any non-zero pixel is defect) brought to the model's input geometry
    the way its image is, as bool (H, W). ImageError if it does not fit its image."""
    mask = read_image(path, max_pixels=max_pixels).max(axis=2) > 0
    if mask.shape != tuple(source_hw):
        raise ImageError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, its image {source_hw[1]}x{source_hw[0]}")
    return apply_geometry(mask.astype(np.float32), geometry, path) > 0.5


@dataclass
class _Loaded:
    """A sample read for scoring: the network input, and its mask at the same geometry."""

    prepared: np.ndarray
    mask: np.ndarray | None
    mask_note: str | None  # why a mask the sample names is left out


def _load(model: ProductModel, sample: Sample) -> _Loaded:
    """Read a sample and its mask; ImageError when the image itself cannot be used."""
    original, prepared = model.read(sample.path)
    if sample.mask_path is None:
        return _Loaded(prepared, None, None)
    try:
        return _Loaded(prepared, load_mask(str(sample.mask_path), original.shape[:2], model.geometry,
                                           model.max_pixels), None)
    except ImageError as exc:
        return _Loaded(prepared, None, f"left out of pixel metrics: {exc}")


def evaluate(model: ProductModel, samples: Sequence[Sample], category: str,
             progress: Progress | None = None) -> Evaluation:
    """Score every readable sample and compute the category's metrics."""
    progress = progress or (lambda stage, done, total: None)
    n, (height, width) = len(samples), model.input_hw
    maps = np.empty((n, height, width), dtype=np.float32)
    masks = np.zeros((n, height, width), dtype=bool)
    has_mask, scores, kept = np.zeros(n, dtype=bool), np.empty(n, dtype=np.float64), []
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    scoring_s, done = 0.0, 0
    # the next batch's images and masks are read in threads while this one is scored
    for batch in prefetched_batches(list(samples), lambda sample: _load(model, sample), model.settings.batch_size):
        images = []
        for sample, loaded in batch:
            if isinstance(loaded, ImageError):
                skipped.append((str(sample.path), str(loaded).replace(f"{sample.path}: ", "")))
                continue
            if isinstance(loaded, Exception):
                raise loaded
            row = len(kept)
            has_mask[row] = sample.label == 0 or loaded.mask is not None
            if loaded.mask is not None:
                masks[row] = loaded.mask
            if loaded.mask_note:
                notes.append(loaded.mask_note)
            kept.append(sample)
            images.append(loaded.prepared)
        clock = time.perf_counter()
        results = model.score_images(images, [str(s.path) for s in kept[len(kept) - len(images):]])
        scoring_s += time.perf_counter() - clock
        for row, result in enumerate(results, start=len(kept) - len(images)):
            maps[row], scores[row] = result.anomaly_map, result.score
        done += len(batch)
        progress(f"scoring {category}", done, n)
    if not kept:
        raise DatasetError(f"{category}: none of the {n} test images could be read"
                           + (f" ({skipped[0][0]}: {skipped[0][1]})" if skipped else ""))
    k = len(kept)
    maps, masks, has_mask, scores = (a[:k] if k < n else a for a in (maps, masks, has_mask, scores))
    labels = np.array([s.label for s in kept], dtype=np.int64)
    pixel = slice(None) if has_mask.all() else has_mask  # a slice avoids copying the stacks
    result = compute_metrics(labels, scores, model.threshold, masks[pixel], maps[pixel])
    return Evaluation(category=category, product=model.product, version=model.version,
                      weights=model.weights.source, threshold=model.threshold, geometry=model.geometry,
                      samples=kept, scores=scores, maps=maps, masks=masks, has_mask=has_mask, metrics=result,
                      seconds_per_image=scoring_s / k, peak_ram_mb=peak_ram_mb(),
                      target_false_alarm_rate=model.calibration.false_alarm_rate,
                      calibration_folds=model.calibration.folds,
                      expected_false_alarm=FalseAlarmSpread.of(model.calibration.n_good,
                                                               model.calibration.false_alarm_rate)
                      if model.calibration.guaranteed else None,
                      skipped=skipped, notes=notes)


def peak_ram_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
