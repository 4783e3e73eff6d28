"""Thresholds from good images (conformal) and refinements with defect scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inspectd.calibration import FalseAlarmSpread, Calibration, calibrate, conformal_threshold, required_good_images
from inspectd.metrics import best_f1_threshold, threshold_metrics


@pytest.mark.parametrize("n, alpha, rank", [
    (10, 0.1, 10),  # ceil(11 * 0.9) = ceil(9.9)
    (10, 0.2, 9),  # ceil(8.8)
    (10, 0.5, 6),  # ceil(5.5)
    (4, 0.2, 4),  # ceil(4.0): exactly enough images
    (19, 0.05, 19),
    (24, 0.1, 23),  # ceil(22.5)
    (99, 0.01, 99),
    (199, 0.01, 198),  # ceil(198.0)
    (200, 0.01, 199),  # ceil(198.99)
])
def test_conformal_rank(n: int, alpha: float, rank: int) -> None:
    scores = np.random.default_rng(n).permutation(np.arange(1, n + 1) * 1.5)  # unsorted input
    threshold, guaranteed = conformal_threshold(scores, alpha)
    assert threshold == rank * 1.5
    assert guaranteed
    assert rank == math.ceil((n + 1) * (1 - alpha))


@pytest.mark.parametrize("alpha, needed", [(0.01, 99), (0.05, 19), (0.1, 9), (0.2, 4), (0.3, 3), (0.5, 1)])
def test_required_images(alpha: float, needed: int) -> None:
    assert required_good_images(alpha) == needed
    scores = np.arange(1.0, needed + 1)
    assert conformal_threshold(scores, alpha) == (float(needed), True)
    if needed > 1:
        assert conformal_threshold(scores[:-1], alpha) == (float(needed - 1), False)


def test_too_few_images_uses_the_max_and_warns() -> None:
    good = np.array([3.0, 1.0, 2.5, 2.0, 1.5])
    calibration = calibrate(good, 0.01)
    assert calibration.threshold == 3.0 == calibration.good_max
    assert calibration.method == "max_good"
    assert calibration.guaranteed is False
    assert "99" in calibration.warning and "only 5" in calibration.warning
    assert calibration.n_good == 5 and calibration.n_bad == 0
    assert calibration.good_mean == pytest.approx(2.0) and calibration.good_std == pytest.approx(good.std())


def test_enough_images_is_guaranteed_without_warning() -> None:
    good = np.linspace(1.0, 2.0, 40)
    calibration = calibrate(good, 0.05)
    assert calibration.method == "conformal" and calibration.guaranteed and calibration.warning == ""
    assert calibration.threshold == pytest.approx(good[math.ceil(41 * 0.95) - 1])


def test_no_scores_is_an_error() -> None:
    with pytest.raises(ValueError):
        conformal_threshold(np.array([]), 0.1)


@pytest.mark.parametrize("n, alpha", [(24, 0.1), (9, 0.1), (19, 0.05), (50, 0.2)])
@pytest.mark.parametrize("distribution", ["normal", "lognormal"])
def test_conformal_false_alarm_rate_is_at_most_alpha(n: int, alpha: float, distribution: str) -> None:
    """Statistical check of the guarantee: draw calibration sets and new good scores from the
    same distribution, many times, and count how often a new good image is flagged."""
    rng = np.random.default_rng(12345 + n)
    trials, new_per_trial = 3000, 50
    draw = (lambda size: rng.normal(5.0, 1.0, size)) if distribution == "normal" else \
        (lambda size: rng.lognormal(0.0, 1.5, size))
    calibration_sets = draw((trials, n))
    new = draw((trials, new_per_trial))
    thresholds = np.array([conformal_threshold(s, alpha)[0] for s in calibration_sets])
    false_alarm = (new >= thresholds[:, None]).mean()
    rank = math.ceil((n + 1) * (1 - alpha))
    exact = (n + 1 - rank) / (n + 1)  # the rate exchangeability gives, <= alpha
    assert exact <= alpha + 1e-12
    assert false_alarm <= alpha + 0.006
    assert false_alarm == pytest.approx(exact, abs=0.006)  # neither looser nor needlessly strict


@pytest.mark.parametrize("n", [20, 40, 200])
def test_the_stated_false_alarm_spread_is_what_enrollments_of_that_size_get(n: int) -> None:
    """Many enrollments of n good images from one distribution: the share of new good
    images each threshold flags averages what the summary states, and 90 % of the
    enrollments fall inside the stated range."""
    rng = np.random.default_rng(777 + n)
    thresholds = np.array([conformal_threshold(rng.normal(0.0, 1.0, n), 0.05)[0] for _ in range(4000)])
    rates = 0.5 * (1.0 - np.vectorize(math.erf)(thresholds / math.sqrt(2.0)))  # exact, for N(0, 1) goods
    spread = FalseAlarmSpread.of(n, 0.05)
    assert rates.mean() == pytest.approx(spread.mean, abs=0.002)
    assert np.mean((rates >= spread.low) & (rates <= spread.high)) == pytest.approx(0.90, abs=0.015)
    assert f"with {n} images it averages" in spread.describe(n)
    assert FalseAlarmSpread.of(10, 0.05) is None  # too few for the rank: nothing to promise


def test_best_f1_with_bad_scores() -> None:
    good = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    bad = np.array([4.5, 6.0, 7.0])
    calibration = calibrate(good, 0.1, bad_scores=bad, mode="best_f1")
    # 4.5: TP 3, FP 1 -> F1 6/7, better than 6.0 (F1 0.8) or 4.0 (F1 0.75)
    assert calibration.threshold == 4.5
    assert calibration.method == "best_f1" and calibration.guaranteed is False
    assert calibration.n_bad == 3 and calibration.bad_min == 4.5
    labels = np.r_[np.zeros(5), np.ones(3)]
    assert calibration.threshold == best_f1_threshold(labels, np.r_[good, bad])


def test_best_f1_separable() -> None:
    rng = np.random.default_rng(0)
    good, bad = rng.normal(1.0, 0.1, 30), rng.normal(3.0, 0.1, 10)
    calibration = calibrate(good, 0.01, bad_scores=bad, mode="best_f1")
    assert good.max() < calibration.threshold <= bad.min()
    metrics = threshold_metrics(np.r_[np.zeros(30), np.ones(10)], np.r_[good, bad], calibration.threshold)
    assert metrics.f1 == 1.0


@pytest.mark.parametrize("n_bad, target", [(100, 0.05), (10, 0.1), (10, 0.05), (37, 0.2), (5, 0.0), (3, 0.5)])
def test_miss_rate_mode(n_bad: int, target: float) -> None:
    bad = np.random.default_rng(n_bad).permutation(np.arange(1.0, n_bad + 1))
    good = np.linspace(0.0, 0.5, 20)
    calibration = calibrate(good, 0.1, bad_scores=bad, mode="miss_rate", target_miss_rate=target)
    assert calibration.method == "miss_rate"
    missed = (bad < calibration.threshold).mean()
    assert missed <= target
    # ...and it is the highest such threshold: the next defect score up would miss too many.
    higher = np.sort(bad)[np.sort(bad) > calibration.threshold]
    if higher.size:
        assert (bad < higher[0]).mean() > target


@pytest.mark.parametrize("mode", ["best_f1", "miss_rate"])
@pytest.mark.parametrize("bad", [None, np.array([])])
def test_modes_fall_back_to_conformal_without_bad_scores(mode: str, bad: np.ndarray | None) -> None:
    good = np.linspace(1.0, 2.0, 30)
    calibration = calibrate(good, 0.1, bad_scores=bad, mode=mode)
    assert calibration.method == "conformal" and calibration.guaranteed
    assert calibration.threshold == conformal_threshold(good, 0.1)[0]
    assert "needs defect images" in calibration.warning and mode in calibration.warning
    few = calibrate(good[:3], 0.1, bad_scores=bad, mode=mode)
    assert few.method == "max_good" and "only 3" in few.warning and "needs defect images" in few.warning


def test_calibration_json_round_trip() -> None:
    calibration = calibrate(np.linspace(1.0, 2.0, 30), 0.1)
    data = calibration.to_json()
    assert data["bad_min"] is None  # NaN is not valid JSON
    restored = Calibration.from_json(data)
    assert math.isnan(restored.bad_min)
    assert restored.threshold == calibration.threshold and restored.method == calibration.method
