"""Whether a bf16 enrollment scores like fp32: `auto` keeps bf16 only when it does.

The held-out calibration images are scored twice against the new bank: with the bf16
features the model will use, and with fp32 features of the same images. When any
image score differs by more than the product's `precision_tolerance` (relative),
`auto` enrolls in fp32 instead. This checks the scoring side (the bank is the bf16
one in both); bench/fidelity.py measures the whole pipeline against an fp32 oracle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from .features import PatchFeatureExtractor
from .scorer import Scorer


@dataclass(frozen=True)
class PrecisionCheck:
    images: int
    max_rel_diff: float
    median_rel_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.images > 0 and self.max_rel_diff <= self.tolerance

    def describe(self) -> str:
        return (f"bf16 image scores of {self.images} held-out images differ from fp32 by up to "
                f"{100 * self.max_rel_diff:.2f} % (median {100 * self.median_rel_diff:.2f} %, tolerance "
                f"{100 * self.tolerance:.2f} %)")

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def relative_differences(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|scores - reference| / |reference|, per image (0 where both are 0)."""
    scores, reference = np.asarray(scores, np.float64), np.asarray(reference, np.float64)
    return np.abs(scores - reference) / np.maximum(np.abs(reference), np.finfo(np.float64).tiny)


def check_bf16(scorer: Scorer, extractor: PatchFeatureExtractor, images: Sequence[np.ndarray],
               bf16_features: torch.Tensor, tolerance: float, batch_size: int) -> PrecisionCheck:
    """Score `images` (already in the model's geometry) from their bf16 features and
    from fp32 features against the same bank; the largest relative difference."""
    if not len(images):
        return PrecisionCheck(0, float("nan"), float("nan"), tolerance)
    fp32 = torch.cat([extractor(extractor.to_tensor(images[i:i + batch_size]), "fp32")
                      for i in range(0, len(images), batch_size)])
    diff = relative_differences(scorer.image_scores(bf16_features), scorer.image_scores(fp32))
    return PrecisionCheck(len(images), float(diff.max()), float(np.median(diff)), tolerance)
