"""Patch features -> image scores and anomaly maps against one memory bank."""

from __future__ import annotations

import numpy as np
import torch

from .config import ProductSettings
from .scoring import anomaly_maps, reweighted_scores
from .search import BankIndex
from .stopwatch import Stopwatch


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
