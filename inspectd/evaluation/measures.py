"""Per-category accuracy figures from scores, anomaly maps and masks (inspectd.metrics)."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .. import metrics

AUPRO_FPR_LIMIT = 0.3
METRIC_KEYS = ("image_auroc", "pixel_auroc", "aupro", "f1", "miss_rate", "false_alarm_rate")


@dataclass(frozen=True)
class Metrics:
    """Accuracy of one category; a figure that is undefined for the data is nan."""

    image_auroc: float
    pixel_auroc: float
    aupro: float
    f1: float
    miss_rate: float
    false_alarm_rate: float
    n_good: int
    n_defect: int
    n_pixel_images: int  # good images plus defect images with a mask

    def as_dict(self) -> dict:
        return asdict(self)


def compute_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float,
                    masks: np.ndarray, maps: np.ndarray) -> Metrics:
    """Image metrics over all images; pixel metrics over `masks`/`maps`, the (N, H, W)
    stacks of the images that have a mask (good images: all zero)."""
    labels = np.asarray(labels, dtype=np.int64)
    both = 0 < labels.sum() < labels.size
    at_threshold = metrics.threshold_metrics(labels, scores, threshold)
    defect_pixels = int(np.count_nonzero(masks)) if masks.size else 0
    pixel_ok = 0 < defect_pixels < masks.size
    return Metrics(
        image_auroc=metrics.image_auroc(labels, scores) if both else math.nan,
        pixel_auroc=metrics.pixel_auroc(masks, maps) if pixel_ok else math.nan,
        aupro=metrics.aupro(masks, maps, fpr_limit=AUPRO_FPR_LIMIT) if pixel_ok else math.nan,
        f1=at_threshold.f1, miss_rate=at_threshold.miss_rate, false_alarm_rate=at_threshold.false_alarm_rate,
        n_good=int(labels.size - labels.sum()), n_defect=int(labels.sum()), n_pixel_images=int(masks.shape[0]))


def mean_metrics(all_metrics: Sequence[Metrics]) -> dict[str, float]:
    """Mean of each figure over the categories where it is defined (nan if nowhere)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-nan
        return {key: float(np.nanmean([getattr(m, key) for m in all_metrics])) for key in METRIC_KEYS}
