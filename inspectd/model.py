"""A loaded product model: patch features, bank search, anomaly maps, verdicts."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .backbone import WeightsInfo, build_trunk, trunk_for
from .calibration import Calibration
from .config import ProductSettings
from .errors import ImageError, ModelError
from .features import PatchFeatureExtractor
from .imageio import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, Geometry, apply_geometry, decode_image, read_image
from .scoring import anomaly_maps, reweighted_scores
from .search import BankIndex
from .store import ModelStore, StoredModel

OK, NG = "OK", "NG"

_extractors: dict[str, PatchFeatureExtractor] = {}
_new_trunks: dict[str, WeightsInfo] = {}  # weights source as configured -> what it resolved to
_extractors_lock = threading.Lock()


def settings_to_json(settings: ProductSettings) -> dict:
    return {f.name: getattr(settings, f.name) for f in fields(settings)}


def settings_from_json(data: dict) -> ProductSettings:
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
    return ProductSettings(**values)


def geometry_from_settings(settings: ProductSettings) -> Geometry:
    return Geometry(resize=settings.resize, size=settings.size, center_crop=settings.center_crop, roi=settings.roi)


def _extractor_key(settings: ProductSettings, weights: WeightsInfo, device: torch.device) -> str:
    return json.dumps([settings.backbone, settings.layers, weights.to_json(), settings.aggregation,
                       settings.embed_dim, str(device)], sort_keys=True)


def shared_extractor(settings: ProductSettings, weights: WeightsInfo, device: torch.device) -> PatchFeatureExtractor:
    """One extractor per backbone/weights/aggregation/device, shared by all products."""
    key = _extractor_key(settings, weights, device)
    with _extractors_lock:
        if key not in _extractors:
            trunk = trunk_for(settings.backbone, settings.layers, weights)
            _extractors[key] = PatchFeatureExtractor(trunk, settings.aggregation, settings.embed_dim).to(device)
        return _extractors[key]


def new_extractor(settings: ProductSettings, device: torch.device) -> tuple[PatchFeatureExtractor, WeightsInfo]:
    """The extractor for a new enrollment, from the settings' weights source. A
    process that enrolls several products builds each backbone once."""
    source = settings.weights
    if source not in ("imagenet", "random") and Path(source).is_file():
        stat = Path(source).stat()  # a replaced file is a new key; build_trunk hashes it once
        source = f"{source}:{stat.st_size}:{stat.st_mtime_ns}"
    key = json.dumps([settings.backbone, settings.layers, source, settings.weights_seed, settings.aggregation,
                      settings.embed_dim, str(device)])
    with _extractors_lock:
        if key in _new_trunks:
            weights = _new_trunks[key]
            return _extractors[_extractor_key(settings, weights, device)], weights
    trunk, weights = build_trunk(settings.backbone, settings.layers, settings.weights, settings.weights_seed)
    extractor = PatchFeatureExtractor(trunk, settings.aggregation, settings.embed_dim).to(device)
    with _extractors_lock:
        extractor = _extractors.setdefault(_extractor_key(settings, weights, device), extractor)
        _new_trunks[key] = weights
    return extractor, weights


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


class Stopwatch:
    """Adds elapsed milliseconds per stage; synchronises CUDA so GPU time is counted."""

    def __init__(self, device: torch.device, enabled: bool = True):
        self.device = device
        self.enabled = enabled  # disabled: no timing and no CUDA synchronisation
        self.totals: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.totals[stage] = self.totals.get(stage, 0.0) + (time.perf_counter() - start) * 1000.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class Scorer:
    """Patch features -> image scores and anomaly maps against one memory bank."""

    def __init__(self, index: BankIndex, settings: ProductSettings, input_hw: tuple[int, int]):
        self.index, self.settings, self.input_hw = index, settings, input_hw

    def score_features(self, features: torch.Tensor, watch: Stopwatch | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image scores (B,) and anomaly maps (B, H, W) from patch features (B, h, w, D)."""
        watch = watch or Stopwatch(features.device, enabled=False)
        b, h, w, d = features.shape
        features = features.float()
        with watch("search"):
            flat = features.reshape(b * h * w, d)
            dist, index = self.index.nearest(flat)
            scores, _ = reweighted_scores(flat.view(b, h * w, d), dist.view(b, h * w), index.view(b, h * w),
                                          self.index, self.settings.reweight_neighbors)
        with watch("map"):
            maps = anomaly_maps(dist.view(b, h, w), self.input_hw, self.settings.blur_sigma)
        return scores, maps

    def image_scores(self, features: torch.Tensor, batch: int = 16) -> np.ndarray:
        """Scores only, for stored features (N, h, w, D) of any dtype, in batches."""
        out = []
        for start in range(0, features.shape[0], batch):
            block = features[start:start + batch].to(self.index.device)
            out.append(self.score_features(block)[0].cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


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
        bank = torch.from_numpy(np.asarray(stored.array("bank"), dtype=np.float32)).to(device)
        self.index = BankIndex(bank, search_dim=self.settings.search_dim, candidates=self.settings.search_candidates,
                               mode=search_mode or self.settings.search)
        self.scorer = Scorer(self.index, self.settings, self.geometry.input_hw)
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
        """(B, h, w, D) patch features of images already in the model's geometry."""
        watch = watch or Stopwatch(self.device, enabled=False)
        for image in images:
            if image.shape[:2] != self.input_hw:
                raise ImageError(f"image of size {image.shape[:2]} does not match the model input {self.input_hw}")
        with watch("backbone"):
            maps = self.extractor.backbone(self.extractor.to_tensor(images))
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
                "bank_size": int(self.index.bank.shape[0]), "backbone": self.settings.backbone,
                "weights": self.weights.source, "created_at": meta.get("created_at")}
