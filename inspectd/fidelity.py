"""Reduced precision against the fp32 oracle, on one and the same model.

A model enrolled in bf16 chooses its coreset from bf16 features. Its fp32 oracle is
the same model computed exactly: the same bank rows (same images, same positions)
with fp32 features, and fp32 features of the test images. Comparing two separate
enrollments instead mixes in the greedy coreset's sensitivity to tiny changes (two
fp32 enrollments with different coreset seeds differ far more than bf16 and fp32 do),
which says nothing about precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .config import ProductSettings
from .coreset import coreset_size, select_coreset
from .features import PatchFeatureExtractor
from .precision_check import relative_differences
from .scorer import Scorer
from .search import bank_index


@dataclass
class Comparison:
    """Image scores and anomaly maps of the test images, oracle and reduced precision."""

    precision: str
    oracle_scores: np.ndarray
    scores: np.ndarray
    oracle_maps: np.ndarray  # (N, H, W)
    maps: np.ndarray
    uncertified: int = 0
    queries: int = 0

    @property
    def rel_diff(self) -> np.ndarray:
        return relative_differences(self.scores, self.oracle_scores)


def features(extractor: PatchFeatureExtractor, images: Sequence[np.ndarray], precision: str, batch: int
             ) -> torch.Tensor:
    """(N, h, w, D) float16 patch features, stored as enrollment stores them."""
    return torch.cat([extractor(extractor.to_tensor(images[i:i + batch]), precision).to("cpu", torch.float16)
                      for i in range(0, len(images), batch)])


def compare_precisions(extractor: PatchFeatureExtractor, settings: ProductSettings, train: Sequence[np.ndarray],
                       test: Sequence[np.ndarray], precision: str = "bf16") -> Comparison:
    """Enroll `train` in `precision` (coreset from those features), score `test`, and
    score it again with the fp32 oracle of that same model."""
    batch, device = settings.batch_size, extractor.device
    low = features(extractor, train, precision, batch)
    exact = features(extractor, train, "fp32", batch)
    dim = low.shape[-1]
    flat = low.reshape(-1, dim)
    count = coreset_size(flat.shape[0], settings.coreset_ratio, settings.coreset_count)
    rows = torch.from_numpy(np.sort(select_coreset(flat, count, projection_dim=settings.coreset_projection_dim,
                                                   seed=settings.seed, device=device)))
    hw = tuple(test[0].shape[:2])
    low_scorer = Scorer(bank_index(flat[rows].float().to(device), settings), settings, hw)
    oracle = Scorer(bank_index(exact.reshape(-1, dim)[rows].float().to(device), settings, mode="exact"),
                    settings, hw)
    parts: dict[str, list[np.ndarray]] = {"os": [], "s": [], "om": [], "m": []}
    for i in range(0, len(test), batch):
        images = test[i:i + batch]
        for scorer, name, prec in ((oracle, "o", "fp32"), (low_scorer, "", precision)):
            scores, maps = scorer.score_features(extractor(extractor.to_tensor(images), prec))
            parts[name + "s"].append(scores.cpu().numpy())
            parts[name + "m"].append(maps.cpu().numpy())
    stats = low_scorer.index.stats
    return Comparison(precision, np.concatenate(parts["os"]), np.concatenate(parts["s"]),
                      np.concatenate(parts["om"]), np.concatenate(parts["m"]), stats.uncertified, stats.queries)
