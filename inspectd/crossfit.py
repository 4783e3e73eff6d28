"""Cross-fitted calibration: every good image in the final bank, and every calibration
score from a bank that did not see the image.

The good images are dealt into k folds (seeded) and a coreset is selected from each
fold's patches; each fold's images are scored by the union of the *other* folds'
coresets, a bank that never saw them. Each of the n good images gets one out-of-bank
score, the threshold is the conformal rank ceil((n+1)(1-alpha)) of those n scores
(method.md section 4), and the final bank is one coreset of all n images' patches, the
same bank as with every image and no calibration at all. (A union of fold coresets as
the final bank would be cheaper, but measured 0.03-0.04 image AUROC lower on 40
synthetic images: bench/calibration.py.)

What holds: a fold's scoring bank has (k-1)/k of the images, and a larger bank finds
nearer neighbours, so a new good image tends to score *lower* against the final bank
than the calibration images did against theirs. The threshold is then
slightly pessimistic: the false-alarm rate on new good images is at most about alpha
(bench/calibration.py measures it). This is not the exact split-conformal bound, which
needs calibration images that the scoring bank never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .calibration import FalseAlarmSpread

SelectPart = Callable[[np.ndarray], torch.Tensor]  # images -> bank rows chosen from their patches
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
    """The out-of-bank score of each image, and the fold coresets that gave them."""

    fold: np.ndarray  # fold label of each image
    labels: np.ndarray  # the fold labels, in the order of `parts`
    parts: list[torch.Tensor]  # each fold's coreset
    scores: np.ndarray

    def bank_without(self, label: int) -> torch.Tensor:
        """The bank that scored fold `label`: the other folds' coresets."""
        return torch.cat([part for other, part in zip(self.labels, self.parts) if other != label])


def cross_fitted_scores(fold: np.ndarray, select_part: SelectPart, score: Score,
                        before_scoring: Callable[[CrossFit], None] = lambda fitted: None) -> CrossFit:
    """One out-of-bank score per image (fold_parts, then score_folds); `before_scoring`
    sees the fold coresets before any image is scored against them."""
    fitted = fold_parts(fold, select_part)
    before_scoring(fitted)
    score_folds(fitted, score)
    return fitted


def fold_parts(fold: np.ndarray, select_part: SelectPart) -> CrossFit:
    """Each fold's coreset, chosen by `select_part(images)` from those images' patches;
    the scores are still to be filled in (NaN). k coresets of n/k images cost less
    than one of n."""
    labels = np.unique(fold)
    return CrossFit(fold, labels, [select_part(np.flatnonzero(fold == f)) for f in labels],
                    np.full(fold.size, np.nan))


def score_folds(fitted: CrossFit, score: Score) -> None:
    """Fold f's images scored, by `score(bank, images)`, against the union of the other
    folds' coresets (k-center coresets compose), a bank that never saw them."""
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
