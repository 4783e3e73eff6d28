"""Patch feature extractors shared within a process: one per backbone, weights,
aggregation and device, so that several products (and several enrollments) built on
the same network load it once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch

from .backbone import WeightsInfo, build_trunk, trunk_for
from .config import ProductSettings
from .features import PatchFeatureExtractor

_extractors: dict[str, PatchFeatureExtractor] = {}
_new_trunks: dict[str, WeightsInfo] = {}  # weights source as configured -> what it resolved to
_extractors_lock = threading.Lock()


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
