"""Whether a bf16 enrollment scores like fp32: `auto` keeps bf16 only when it does.

A share of the good images (the one held-out calibration would hold out) is scored
twice, each against a bank that did not see it (its cross-fitting fold's bank, or the
final bank when held out): with the bf16 features the model will use, and with fp32
features of the same images. When any
image score differs by more than the product's `precision_tolerance` (relative),
`auto` enrolls in fp32 instead. This checks the scoring side (the bank is the bf16
one in both); bench/fidelity.py measures the whole pipeline against an fp32 oracle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from .config import ProductSettings
from .errors import InspectdError
from .features import PatchFeatureExtractor
from .precision import PrecisionChoice, enrolled_precision, resolve_precision, scoring_precision
from .scorer import Scorer
from .store import StoredModel


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
        return (f"bf16 image scores of {self.images} out-of-bank good images differ from fp32 by up to "
                f"{100 * self.max_rel_diff:.2f} % (median {100 * self.median_rel_diff:.2f} %, tolerance "
                f"{100 * self.tolerance:.2f} %)")

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def relative_differences(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|scores - reference| / |reference|, per image (0 where both are 0)."""
    scores, reference = np.asarray(scores, np.float64), np.asarray(reference, np.float64)
    return np.abs(scores - reference) / np.maximum(np.abs(reference), np.finfo(np.float64).tiny)


def check_bf16(groups: Sequence[tuple[Scorer, Sequence[np.ndarray], torch.Tensor]], extractor: PatchFeatureExtractor,
               tolerance: float, batch_size: int) -> PrecisionCheck:
    """Each group: a scorer, images (already in the model's geometry) its bank did not
    see, and their bf16 features. Scores them from those and from fp32 features; the
    largest relative difference over all images."""
    diffs = []
    for scorer, images, bf16_features in groups:
        fp32 = torch.cat([extractor(extractor.to_tensor(images[i:i + batch_size]), "fp32")
                          for i in range(0, len(images), batch_size)])
        diffs.append(relative_differences(scorer.image_scores(bf16_features), scorer.image_scores(fp32)))
    if not diffs:
        return PrecisionCheck(0, float("nan"), float("nan"), tolerance)
    diff = np.concatenate(diffs)
    return PrecisionCheck(diff.size, float(diff.max()), float(np.median(diff)), tolerance)


class Bf16Rejected(Exception):
    """A bf16 enrollment that did not pass its check; the product is enrolled in fp32."""

    def __init__(self, check: PrecisionCheck):
        super().__init__(check.describe())
        self.check = check


def enrollment_precision(settings: ProductSettings, parent: StoredModel | None, device: torch.device,
                         rejected: PrecisionCheck | None, tiled: bool) -> PrecisionChoice:
    """The precision of a new enrollment; with --add, the one the extended bank was built in."""
    if rejected is not None:
        return PrecisionChoice("fp32", f"{rejected.describe()}: enrolled in fp32")
    if parent is None:
        choice = resolve_precision(settings.precision, device)
        if tiled and settings.precision == "auto" and choice.precision == "bf16":
            return PrecisionChoice("fp32", "auto: bf16 is not checked against fp32 for tiled products yet: "
                                           "enrolled in fp32")
        return choice
    enrolled = enrolled_precision(parent.metadata, device)
    choice = scoring_precision(enrolled, device)
    if choice.fallback:
        raise InspectdError(f"cannot --add to {parent.product} {parent.version}: it was "
                            f"{choice.fallback.split(':')[0]}; enroll a new model instead")
    return choice
