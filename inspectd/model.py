"""A loaded product model version, ready to score images on a device, and the outcome
for one image (ScoreResult, OK/NG verdicts)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .backbone import WeightsInfo
from .calibration import Calibration
from .errors import ImageError, ModelError
from .extractor_cache import new_extractor, shared_extractor
from .imageio import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, apply_geometry, decode_image, read_image
from .precision import enrolled_precision, scoring_precision
from .scorer import Scorer
from .tiled_scorer import make_scorer, tile_layout
from .settings_json import geometry_from_settings, settings_from_json, settings_to_json
from .stopwatch import Stopwatch
from .store import ModelStore, StoredModel

# Re-exported: these lived here before model.py was split, and other code imports them from here.
__all__ = ["NG", "OK", "ProductModel", "ScoreResult", "Scorer", "Stopwatch", "geometry_from_settings",
           "new_extractor", "settings_from_json", "settings_to_json", "shared_extractor"]

OK, NG = "OK", "NG"
log = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    """The outcome for one image. `score` is the raw (reweighted) anomaly score,
    `normalized_score` is score / threshold, so 1.0 is at the threshold for every
    product; the verdict is NG when score >= threshold."""

    name: str
    score: float
    normalized_score: float
    verdict: str
    threshold: float
    anomaly_map: np.ndarray  # (H, W) float32 at the network input geometry
    timings_ms: dict[str, float] = field(default_factory=dict)


class ProductModel:
    """A product model version, ready to score on a device."""

    def __init__(self, stored: StoredModel, device: torch.device, *, search_mode: str | None = None):
        meta = stored.metadata
        self.stored = stored
        self.product, self.version = stored.product, stored.version
        self.device = device
        try:
            self.settings = settings_from_json(meta["settings"])
            self.weights = WeightsInfo.from_json(meta["weights"])
            self.geometry = stored.geometry()
            self.calibration = Calibration.from_json(meta["calibration"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model {self.product} {self.version}: metadata is incomplete ({exc})") from exc
        self.threshold = float(self.calibration.threshold)
        if not np.isfinite(self.threshold) or self.threshold <= 0:
            raise ModelError(f"model {self.product} {self.version}: invalid threshold {self.threshold}")
        self.extractor = shared_extractor(self.settings, self.weights, device)
        self.enrolled_precision = enrolled_precision(meta, device)
        # The threshold belongs to the precision the calibration features were computed in.
        self.precision_choice = scoring_precision(self.enrolled_precision, device)
        self.precision = self.precision_choice.precision
        if self.precision_choice.fallback:
            log.warning("PRECISION FALLBACK: model %s %s %s", self.product, self.version,
                        self.precision_choice.fallback)
        bank = torch.from_numpy(np.asarray(stored.array("bank"), dtype=np.float32))
        self.layout = tile_layout(self.settings, self.geometry.input_hw)
        banks = torch.split(bank, meta["tiling"]["region_sizes"]) if self.layout is not None else [bank]
        self.scorer = make_scorer(banks, self.settings, self.geometry.input_hw, self.layout, device, search_mode)
        self.index = self.scorer.index  # the (first region's) bank; tiled: self.scorer.scorers has all
        self.bank_size = int(bank.shape[0])
        self.max_bytes, self.max_pixels = DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

    @classmethod
    def load(cls, store: ModelStore, product: str, version: str | None = None, *,
             device: torch.device | str = "cpu", search_mode: str | None = None) -> "ProductModel":
        return cls(store.open(product, version), torch.device(device), search_mode=search_mode)

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.geometry.input_hw

    def read(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """(original RGB, network input) of an image file; ImageError names the file."""
        image = read_image(path, max_bytes=self.max_bytes, max_pixels=self.max_pixels)
        return image, apply_geometry(image, self.geometry, str(path))

    def decode(self, data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(original RGB, network input) from an image file's bytes; ImageError names it."""
        image = decode_image(data, name=name, max_pixels=self.max_pixels)
        return image, apply_geometry(image, self.geometry, name)

    def set_limits(self, max_bytes: int, max_pixels: int) -> None:
        self.max_bytes, self.max_pixels = max_bytes, max_pixels

    def features(self, images: Sequence[np.ndarray], watch: Stopwatch | None = None) -> torch.Tensor:
        """(B, h, w, D) patch features of images already in the model's geometry
        ((B * tiles, h, w, D) for a tiled product)."""
        watch = watch or Stopwatch(self.device, enabled=False)
        for image in images:
            if image.shape[:2] != self.input_hw:
                raise ImageError(f"image of size {image.shape[:2]} does not match the model input {self.input_hw}")
        if self.layout is not None:  # tile-major within each image, as TiledScorer reads them
            images = [tile for image in images for tile in self.layout.cut(image)]
        with watch("backbone"):
            maps = self.extractor.backbone(self.extractor.to_tensor(images), self.precision)
        with watch("aggregate"):
            features = self.extractor.aggregate(maps)
        return features

    def score_images(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None,
                     watch: Stopwatch | None = None) -> list[ScoreResult]:
        """Score images already in the model's geometry, in batches of the product's size."""
        names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
        results: list[ScoreResult] = []
        step = self.settings.batch_size
        for start in range(0, len(images), step):
            lap = Stopwatch(self.device)
            batch = images[start:start + step]
            scores, maps = self.scorer.score_features(self.features(batch, lap), lap)
            scores_np, maps_np = scores.cpu().numpy(), maps.cpu().numpy()
            per_image = {stage: ms / len(batch) for stage, ms in lap.totals.items()}
            for i, name in enumerate(names[start:start + step]):
                results.append(self.result(name, float(scores_np[i]), maps_np[i], per_image))
            if watch is not None:
                for stage, ms in lap.totals.items():
                    watch.totals[stage] = watch.totals.get(stage, 0.0) + ms
        return results

    def result(self, name: str, score: float, anomaly_map: np.ndarray, timings: dict[str, float]) -> ScoreResult:
        normalized = score / self.threshold
        return ScoreResult(name=name, score=score, normalized_score=normalized,
                           verdict=NG if score >= self.threshold else OK, threshold=self.threshold,
                           anomaly_map=anomaly_map.astype(np.float32, copy=False), timings_ms=dict(timings))

    def describe(self) -> dict:
        meta = self.stored.metadata
        return {"product": self.product, "version": self.version, "threshold": self.threshold,
                "bank_size": self.bank_size, "backbone": self.settings.backbone,
                "weights": self.weights.source, "created_at": meta.get("created_at"),
                "precision": self.precision, "enrolled_precision": self.enrolled_precision,
                "precision_fallback": self.precision_choice.fallback}
