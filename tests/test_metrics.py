"""Tests for inspectd.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

from inspectd.metrics import (
    ThresholdMetrics,
    aupro,
    best_f1_threshold,
    image_auroc,
    pixel_auroc,
    roc_points,
    threshold_metrics,
)


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _random_masks_maps(seed: int, n: int = 4, h: int = 16, w: int = 16, levels: int | None = 20):
    """Blobby masks (several regions of varied size per image, some images clean) and
    noisy maps that are higher on defects; ``levels`` quantises maps to force ties."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((n, h, w)), sigma=(0, 1.2, 1.2))
    masks = noise > np.quantile(noise, 0.85)
    masks[0] = False  # at least one image without defects
    maps = rng.random((n, h, w)) + 0.6 * masks
    if levels is not None:
        maps = np.round(maps * levels) / levels
    return masks, maps


def _reference_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float) -> float:
    """Deliberately naive AUPRO: loop over every distinct threshold and every region."""
    regions = []
    for mask, amap in zip(masks, maps):
        lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [amap[lab == k] for k in range(1, n + 1)]
    good = maps[~masks.astype(bool)]
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        fpr = float(np.mean(good >= t))
        pro = float(np.mean([np.mean(r >= t) for r in regions]))
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:  # cut the segment at the limit
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


# --------------------------------------------------------------------------- #
# image / pixel AUROC, ROC points
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", range(5))
def test_image_auroc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.3 * labels, 2)  # ties included
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert image_auroc(labels.astype(bool), scores) == pytest.approx(roc_auc_score(labels, scores))


def test_image_auroc_known_values():
    assert image_auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert image_auroc(np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert image_auroc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5


@pytest.mark.parametrize(
    "labels, scores, match",
    [
        (np.zeros(5, int), np.arange(5.0), "only one class"),
        (np.ones(5, int), np.arange(5.0), "only one class"),
        (np.array([0, 1, 1]), np.array([0.1, 0.2]), "same length"),
        (np.array([[0, 1]]), np.array([[0.1, 0.2]]), "1-D"),
        (np.array([0, 2, 1]), np.array([0.1, 0.2, 0.3]), "only 0"),
        (np.array([0, 1, 1]), np.array([0.1, np.nan, 0.3]), "NaN"),
        (np.array([], int), np.array([]), "empty"),
    ],
)
def test_image_auroc_rejects_bad_input(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        image_auroc(labels, scores)


@pytest.mark.parametrize("seed", range(4))
def test_pixel_auroc_matches_sklearn_on_flattened(seed):
    masks, maps = _random_masks_maps(seed, n=5, h=20, w=24)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)
    # 0/1 integer masks and float32 maps give the same answer
    got32 = pixel_auroc(masks.astype(np.uint8), maps.astype(np.float32))
    assert got32 == pytest.approx(roc_auc_score(masks.ravel(), maps.astype(np.float32).ravel()), abs=1e-12)


def test_pixel_auroc_chunking_matches_sklearn(monkeypatch):
    import inspectd.metrics as metrics

    monkeypatch.setattr(metrics, "_CHUNK", 7)  # many chunks, last one partial
    masks, maps = _random_masks_maps(11, n=3, h=10, w=10)
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_pixel_auroc_rejects_bad_input():
    masks, maps = _random_masks_maps(0, n=2, h=8, w=8)
    with pytest.raises(ValueError, match="same shape"):
        pixel_auroc(masks, maps[:, :, :7])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        pixel_auroc(masks[0], maps[0])
    with pytest.raises(ValueError, match="only one class"):
        pixel_auroc(np.zeros_like(masks), maps)
    with pytest.raises(ValueError, match="mask > 0"):
        pixel_auroc(masks.astype(np.uint8) * 255, maps)


def test_roc_points_match_sklearn():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 100)
    scores = rng.random(100) + 0.5 * labels
    fpr, tpr = roc_points(labels, scores)
    ref_fpr, ref_tpr, _ = roc_curve(labels, scores)
    np.testing.assert_array_equal(fpr, ref_fpr)
    np.testing.assert_array_equal(tpr, ref_tpr)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    with pytest.raises(ValueError, match="only one class"):
        roc_points(np.zeros(4, int), scores[:4])


# --------------------------------------------------------------------------- #
# AUPRO
# --------------------------------------------------------------------------- #
def _hand_case():
    """Two 3x3 images, three regions of sizes 2, 1 and 3, twelve good pixels.

    image A (masks / maps)         image B
        R1  R1  .    .9  .4  0       R3  .   .    .9  0   .4
        .   .   .    .8  0   0       .   R3  .    0   .7  0
        .   .   R2   .6  0   .6      .   .   R3   .4  0   .2

    R3 is a diagonal line: one region under 8-connectivity (three under 4).
    Good values: 0.8, 0.6, 0.4, 0.4 and eight zeros (12 good pixels).
    """
    masks = np.zeros((2, 3, 3), dtype=bool)
    maps = np.zeros((2, 3, 3))
    masks[0, 0, 0] = masks[0, 0, 1] = True  # R1, size 2
    maps[0, 0, 0], maps[0, 0, 1] = 0.9, 0.4
    masks[0, 2, 2] = True  # R2, size 1
    maps[0, 2, 2] = 0.6
    for i, v in enumerate((0.9, 0.7, 0.2)):  # R3, size 3, diagonal
        masks[1, i, i] = True
        maps[1, i, i] = v
    maps[0, 1, 0], maps[0, 2, 0] = 0.8, 0.6  # good pixels
    maps[1, 0, 2], maps[1, 2, 0] = 0.4, 0.4
    return masks, maps


def test_aupro_hand_computed():
    masks, maps = _hand_case()
    # t     good>=t  FPR    R1   R2   R3    PRO = mean of the 3 regions
    # 0.9   0        0      1/2  0    1/3   (1/2 + 0 + 1/3)/3   = 5/18
    # 0.8   1        1/12   1/2  0    1/3   5/18
    # 0.7   1        1/12   1/2  0    2/3   (1/2 + 0 + 2/3)/3   = 7/18
    # 0.6   2        1/6    1/2  1    2/3   (1/2 + 1 + 2/3)/3   = 13/18
    # 0.4   4        1/3    1    1    2/3   (1 + 1 + 2/3)/3     = 16/18
    # 0.2   4        1/3    1    1    1     1
    # 0.0   12       1      1    1    1     1
    # Curve from (0, 0): (0,0) (0,5/18) (1/12,5/18) (1/12,7/18) (1/6,13/18) (1/3,16/18) (1/3,1) (1,1)
    #
    # fpr_limit = 1/4 lies between 1/6 and 1/3:
    #   PRO(1/4) = 13/18 + (16/18 - 13/18) * (1/4 - 1/6) / (1/3 - 1/6) = 13/18 + 1.5/18 = 29/36
    #   (vertical steps at FPR 0 and 1/12 have zero width)
    #   area = 1/12 * 5/18                  (0 -> 1/12, flat)   =  5/216 = 20/864
    #        + 1/12 * (7/18 + 13/18) / 2    (1/12 -> 1/6)       = 10/216 = 40/864
    #        + 1/12 * (26/36 + 29/36) / 2   (1/6 -> 1/4)        = 55/864
    #        = 20/864 + 40/864 + 55/864 = 115/864;  / (1/4)  ->  115/216
    assert aupro(masks, maps, fpr_limit=0.25) == pytest.approx(115 / 216, abs=1e-12)
    # fpr_limit = 1/3 ends exactly on the vertical step at FPR 1/3:
    #   extra area 1/6 -> 1/3 at the old end: 1/12 * (29/36 + 32/36) / 2 = 61/864
    #   (115 + 61)/864 = 11/54;  / (1/3)  ->  11/18
    assert aupro(masks, maps, fpr_limit=1 / 3) == pytest.approx(11 / 18, abs=1e-12)
    # Cross-check the hand values against the naive reference.
    assert _reference_aupro(masks, maps, 0.25) == pytest.approx(115 / 216, abs=1e-12)


def test_aupro_regions_in_different_images_are_separate():
    # Both images have a region touching pixel (0, 0). Labelled as one 3-D volume they
    # would merge into one 4-pixel region; per image they are two regions.
    masks = np.zeros((2, 2, 3), dtype=bool)
    maps = np.zeros((2, 2, 3))
    masks[0, 0, 0] = True
    maps[0, 0, 0] = 1.0  # region A: 1 px, score 1.0
    masks[1, 0, 0] = masks[1, 0, 1] = masks[1, 1, 0] = True
    maps[1][masks[1]] = 0.5  # region B: 3 px, score 0.5
    maps[0, 1, 2] = 0.7  # one of the 8 good pixels scores 0.7, the rest 0
    # t=1.0: FPR 0,   PRO (1 + 0)/2 = 1/2
    # t=0.7: FPR 1/8, PRO 1/2
    # t=0.5: FPR 1/8, PRO 1
    # t=0.0: FPR 1,   PRO 1
    # area to 0.3 = 1/8 * 1/2 + (0.3 - 1/8) * 1 = 0.2375;  / 0.3  ->  19/24
    # (one merged region, or pixel-weighted PRO, would give 1/4 at t=1.0 and 0.6875.)
    assert aupro(masks, maps) == pytest.approx(19 / 24, abs=1e-12)


@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_aupro_matches_naive_reference(seed, fpr_limit):
    masks, maps = _random_masks_maps(seed)
    assert aupro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(
        _reference_aupro(masks, maps, fpr_limit), abs=1e-12
    )


@pytest.mark.parametrize("fpr_limit", [0.01, 0.3, 1.0])
def test_aupro_perfect_detector_is_one(fpr_limit):
    masks, _ = _random_masks_maps(5, n=4, h=32, w=32)
    maps = np.where(masks, 0.9, 0.1) + 0.05 * np.random.default_rng(0).random(masks.shape)
    assert aupro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(1.0, abs=1e-12)
    assert aupro(masks, maps, fpr_limit=fpr_limit, num_thresholds=10) == pytest.approx(1.0, abs=1e-12)


def test_aupro_inverted_detector_is_zero():
    masks, _ = _random_masks_maps(6, n=3, h=24, w=24)
    maps = np.where(masks, 0.1, 0.9)
    assert aupro(masks, maps) == pytest.approx(0.0, abs=1e-12)


def test_aupro_quantile_thresholds_close_to_exact():
    masks, maps = _random_masks_maps(7, n=10, h=64, w=64, levels=None)  # continuous values
    maps = maps.astype(np.float32)
    exact = aupro(masks, maps)
    assert 0.3 < exact < 0.99  # a non-trivial case
    for k in (50, 1000):
        approx = aupro(masks, maps, num_thresholds=k)
        assert abs(approx - exact) <= 1 / (2 * (k - 1)) + 1e-9, k
    assert abs(aupro(masks, maps, num_thresholds=1000) - exact) < 1e-3


def test_aupro_nan_without_defect_regions():
    maps = np.random.default_rng(0).random((2, 5, 5))
    assert math.isnan(aupro(np.zeros((2, 5, 5), bool), maps))
    assert math.isnan(aupro(np.ones((2, 5, 5), bool), maps))  # no good pixels either


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fpr_limit": 0.0}, "fpr_limit"),
        ({"fpr_limit": 1.5}, "fpr_limit"),
        ({"num_thresholds": 1}, "num_thresholds"),
        ({"num_thresholds": 10.0}, "num_thresholds"),
    ],
)
def test_aupro_rejects_bad_parameters(kwargs, match):
    masks, maps = _hand_case()
    with pytest.raises(ValueError, match=match):
        aupro(masks, maps, **kwargs)


def test_aupro_rejects_bad_shapes():
    masks, maps = _hand_case()
    with pytest.raises(ValueError, match="same shape"):
        aupro(masks, maps[:1])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        aupro(masks[0], maps[0])


# --------------------------------------------------------------------------- #
# threshold metrics
# --------------------------------------------------------------------------- #
def test_threshold_metrics_counts():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.5, 0.7, 0.5, 0.9, 0.2, 0.6])
    # NG iff score >= 0.5 -> predictions 0 1 1 1 1 0 1 (score == threshold counts as NG)
    m = threshold_metrics(labels, scores, 0.5)
    assert isinstance(m, ThresholdMetrics)
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 2, 1, 1)
    assert m.threshold == 0.5
    assert m.precision == pytest.approx(3 / 5)
    assert m.recall == pytest.approx(3 / 4)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.miss_rate == pytest.approx(1 / 4)
    assert m.false_alarm_rate == pytest.approx(2 / 3)
    with pytest.raises(AttributeError):
        m.tp = 0  # frozen


def test_threshold_metrics_zero_divisions_are_nan():
    m = threshold_metrics(np.zeros(4, int), np.array([0.1, 0.2, 0.3, 0.4]), 0.9)
    assert (m.tp, m.fp, m.tn, m.fn) == (0, 0, 4, 0)
    assert math.isnan(m.precision) and math.isnan(m.recall) and math.isnan(m.f1)
    assert math.isnan(m.miss_rate)
    assert m.false_alarm_rate == 0.0
    m = threshold_metrics(np.ones(3, int), np.array([0.1, 0.2, 0.3]), 0.25)
    assert (m.tp, m.fp, m.tn, m.fn) == (1, 0, 0, 2)
    assert math.isnan(m.false_alarm_rate)
    assert m.f1 == pytest.approx(0.5)


def test_threshold_metrics_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same length"):
        threshold_metrics(np.array([0, 1]), np.array([0.1, 0.2, 0.3]), 0.5)


@pytest.mark.parametrize("seed", range(6))
def test_best_f1_threshold_is_brute_force_maximum(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60) + 0.4 * labels, 1)  # many ties
    f1s = {t: f1_score(labels, scores >= t, zero_division=0) for t in np.unique(scores)}
    best = max(f1s.values())
    t = best_f1_threshold(labels, scores)
    assert t in f1s
    assert f1s[t] == pytest.approx(best, abs=1e-12)
    assert t == min(s for s, v in f1s.items() if v >= best - 1e-12)  # lowest on ties
    assert threshold_metrics(labels, scores, t).f1 == pytest.approx(best, abs=1e-12)


def test_best_f1_threshold_known_case_and_errors():
    # 0.4 catches both defects with one false alarm (F1 0.8); 0.8 catches one (F1 2/3)
    labels = np.array([0, 0, 1, 0, 1])
    scores = np.array([0.1, 0.2, 0.4, 0.5, 0.8])
    assert best_f1_threshold(labels, scores) == 0.4
    # Tie: t=0.1 -> tp 2, fp 2, fn 0 (F1 2/3); t=0.9 -> tp 1, fp 0, fn 1 (F1 2/3).
    # 0.2 and 0.3 score lower (2/5, 1/2). The lowest tied threshold wins.
    assert best_f1_threshold(np.array([1, 0, 0, 1]), np.array([0.1, 0.2, 0.3, 0.9])) == 0.1
    with pytest.raises(ValueError, match="only one class"):
        best_f1_threshold(np.zeros(5, int), scores)
