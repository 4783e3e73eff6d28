"""Thresholds from good images only (method.md section 4), optionally refined with
known defect images."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import beta

from .metrics import best_f1_threshold


@dataclass(frozen=True)
class Calibration:
    """The threshold a product model carries, and how it was chosen."""

    threshold: float
    method: str  # "conformal", "best_f1", "miss_rate" or "max_good"
    false_alarm_rate: float
    n_good: int
    n_bad: int = 0
    guaranteed: bool = False  # the conformal bound holds (enough held-out images)
    good_mean: float = float("nan")
    good_std: float = float("nan")
    good_max: float = float("nan")
    bad_min: float = float("nan")
    warning: str = ""
    # 0: the good scores come from held-out images the bank never saw; k >= 2: from k
    # cross-fitted folds, and every good image is also in the bank (crossfit.py).
    folds: int = 0

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> "Calibration":
        return cls(**{k: (float("nan") if v is None else v) for k, v in data.items()})


def required_good_images(alpha: float) -> int:
    """Calibration (held-out or cross-fitted) good images needed for the conformal guarantee at false-alarm rate alpha."""
    return math.ceil(1.0 / alpha - 1.0)


@dataclass(frozen=True)
class FalseAlarmSpread:
    """What a conformal threshold from n good scores means for new good images: its
    false-alarm rate is itself random (it depends on which n images calibrated it),
    Beta(n + 1 - r, r) distributed for rank r. Few images spread it widely."""

    mean: float
    low: float  # 5th percentile over enrollments of this size
    high: float  # 95th percentile

    @classmethod
    def of(cls, n: int, alpha: float) -> "FalseAlarmSpread | None":
        rank = math.ceil((n + 1) * (1.0 - alpha))
        if n < 1 or rank > n:
            return None
        above = n + 1 - rank  # how many of the n+1 exchangeable scores reach the threshold
        low, high = beta.ppf([0.05, 0.95], above, rank)
        return cls(above / (n + 1), float(low), float(high))

    def describe(self, n: int) -> str:
        return (f"with {n} images it averages {100 * self.mean:.1f} % and lies between {100 * self.low:.1f} % "
                f"and {100 * self.high:.1f} % in 90 % of enrollments of this size (more images narrow it)")


def conformal_threshold(good_scores: np.ndarray, alpha: float) -> tuple[float, bool]:
    """Score at rank ceil((n+1)(1-alpha)) of the sorted held-out good scores.

    Returns (threshold, guaranteed). With too few scores for that rank the largest good
    score is used and the false-alarm guarantee does not hold.
    """
    scores = np.sort(np.asarray(good_scores, dtype=np.float64))
    n = scores.size
    if n == 0:
        raise ValueError("no held-out good scores to calibrate on")
    rank = math.ceil((n + 1) * (1.0 - alpha))
    if rank > n:
        return float(scores[-1]), False
    return float(scores[rank - 1]), True


def calibrate(good_scores: np.ndarray, alpha: float, *, bad_scores: np.ndarray | None = None,
              mode: str = "conformal", target_miss_rate: float = 0.01, folds: int = 0) -> Calibration:
    """Choose the threshold. NG means score >= threshold.

    mode "conformal" uses only good images; "best_f1" and "miss_rate" need defect
    scores (enroll --bad) and fall back to conformal without them.
    """
    good = np.asarray(good_scores, dtype=np.float64)
    bad = np.asarray(bad_scores if bad_scores is not None else [], dtype=np.float64)
    conformal, guaranteed = conformal_threshold(good, alpha)
    warning = ""
    if not guaranteed:
        kind = "cross-fitted" if folds >= 2 else "held-out"
        warning = (f"only {good.size} {kind} good images: the false-alarm rate {alpha:g} needs at least "
                   f"{required_good_images(alpha)} for its guarantee; the threshold is the highest good score")
    threshold, method = conformal, "conformal" if guaranteed else "max_good"
    if mode != "conformal" and bad.size:
        labels = np.r_[np.zeros(good.size), np.ones(bad.size)]
        scores = np.r_[good, bad]
        if mode == "best_f1":
            threshold, method = float(best_f1_threshold(labels, scores)), "best_f1"
        else:
            # The highest threshold that still catches (1 - target) of the known defects:
            # at most floor(target * n) defect scores may fall below it.
            allowed = math.floor(target_miss_rate * bad.size + 1e-9)
            threshold = float(np.sort(bad)[min(allowed, bad.size - 1)])
            method = "miss_rate"
    elif mode != "conformal":
        warning = (warning + "; " if warning else "") + f"threshold_mode {mode!r} needs defect images (--bad); used conformal"
    return Calibration(
        threshold=threshold, method=method, false_alarm_rate=alpha, n_good=int(good.size), n_bad=int(bad.size),
        guaranteed=guaranteed and method == "conformal", good_mean=float(good.mean()), good_std=float(good.std()),
        good_max=float(good.max()), bad_min=float(bad.min()) if bad.size else float("nan"), warning=warning,
        folds=folds)
