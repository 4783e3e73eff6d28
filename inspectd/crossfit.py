"""Cross-fitted calibration: every good image in the final bank, and every calibration
score from a bank that did not see the image.

The good images are dealt into k folds (seeded); each fold's images are scored by one
coreset selected from the patches of every image *outside* the fold, a bank that never
saw them. Each of the n good images gets one out-of-bank score, the threshold is the
conformal rank ceil((n+1)(1-alpha)) of those n scores (method.md section 4), and the
final bank is one coreset of all n images' patches, the same bank as with every image
and no calibration at all.

Why one coreset of the other folds and not the union of per-fold coresets (cheaper: k
coresets of n/k images): a union of separate coresets covers the same patches worse
than one coreset of them with as many rows (each covers only its own fold, and their
rows overlap where the folds do), so the calibration images scored high against it and
the threshold came out conservative: a false-alarm rate of 0.5-2.3 % on new good images
at alpha 0.05 (bench/calibration.py, 40 images, three seeds; 3.5-5.3 % with one coreset,
bench/fold_banks.py compares the two). A fold's bank is not selected
afresh: it resumes the final coreset's greedy selection from FOLD_RESUME_AT of its steps,
restricted to the other folds' patches (coreset.Coreset.narrowed), which saves the costly
early steps. A fold's bank has as many
rows as the final bank (the product's coreset size of all n images), chosen from (k-1)/k
of the images, so it stays a little sparser: new good images still tend to score
slightly lower against the final bank than the calibration images did against theirs
(bench/calibration.py measures the false-alarm rate that gives). This is not the exact
split-conformal bound, which needs calibration images that the scoring bank never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .calibration import FalseAlarmSpread

# Where a fold's bank resumes the final coreset's greedy selection: from the state after
# this share of its steps, restricted to the other folds' patches (coreset.Coreset.narrowed).
# Resuming from the end (1.0) is cheapest but leaves the fold's images covered worse than a
# fresh selection would (the final coreset's centres outside the fold were placed around
# the fold's own centres); from halfway the measured bias is that of a fresh selection
# (bench/fold_banks.py, three categories, three seeds).
FOLD_RESUME_AT = 0.5

SelectBank = Callable[[np.ndarray], torch.Tensor]  # images -> a bank chosen from their patches
Score = Callable[[torch.Tensor, np.ndarray], np.ndarray]  # (bank, images) -> their scores


def fold_of_images(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold number of each of n images: a seeded deal into min(folds, n) folds of
    sizes differing by at most one."""
    if n < 2:
        raise ValueError("cross-fitting needs at least 2 images")
    k = min(folds, n)
    order = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, dtype=np.int64)
    fold[order] = np.arange(n) % k
    return fold


@dataclass
class CrossFit:
    """The out-of-bank score of each image, and the fold banks that gave them."""

    fold: np.ndarray  # fold label of each image
    labels: np.ndarray  # the fold labels, in the order of `banks`
    banks: list[torch.Tensor]  # each fold's scoring bank: a coreset of the other folds' patches
    scores: np.ndarray

    def bank_without(self, label: int) -> torch.Tensor:
        """The bank that scored fold `label`, chosen without its images."""
        return self.banks[int(np.flatnonzero(self.labels == label)[0])]


def cross_fitted_scores(fold: np.ndarray, select_bank: SelectBank, score: Score,
                        before_scoring: Callable[[CrossFit], None] = lambda fitted: None) -> CrossFit:
    """One out-of-bank score per image (fold_banks, then score_folds); `before_scoring`
    sees the fold banks before any image is scored against them."""
    fitted = fold_banks(fold, select_bank)
    before_scoring(fitted)
    score_folds(fitted, score)
    return fitted


def fold_banks(fold: np.ndarray, select_bank: SelectBank) -> CrossFit:
    """Each fold's scoring bank, chosen by `select_bank(images)` from the patches of the
    images outside the fold; the scores are still to be filled in (NaN)."""
    labels = np.unique(fold)
    return CrossFit(fold, labels, [select_bank(np.flatnonzero(fold != f)) for f in labels],
                    np.full(fold.size, np.nan))


def score_folds(fitted: CrossFit, score: Score) -> None:
    """Fold f's images scored, by `score(bank, images)`, against the bank chosen without
    them."""
    for label in fitted.labels:
        inside = np.flatnonzero(fitted.fold == label)
        fitted.scores[inside] = score(fitted.bank_without(label), inside)


def guarantee_note(folds: int, n: int, alpha: float, guaranteed: bool) -> str:
    """What the threshold promises, in one sentence for the enrollment summary."""
    if not guaranteed:
        if folds < 2:
            return f"only {n} held-out good images: no false-alarm guarantee at {alpha:g}"
        return (f"only {n} good images: the threshold is the highest cross-fitted good score, "
                f"no false-alarm guarantee at {alpha:g}")
    spread = FalseAlarmSpread.of(n, alpha)
    if folds < 2:
        return (f"split conformal on {n} held-out good images: false-alarm probability at most {alpha:g} "
                f"on new good images like them; {spread.describe(n)}")
    return (f"cross-fitted conformal ({folds} folds, {n} good images, each scored by a bank without it); "
            f"the final bank holds all {n}, so new good images score a little lower: false-alarm rate "
            f"about {alpha:g} or less (measured by bench/calibration.py, not an exact bound); "
            f"{spread.describe(n)}")
